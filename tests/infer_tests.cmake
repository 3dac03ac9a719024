# The `cxr infer` command (tools/cxr/cmd_infer.cpp), driven as a child process.
if(CXR_BUILD_TOOLS)
  cxr_add_test(test_cli_infer)
  # Drives the real binary; tools/ is configured after tests/, which generator expressions allow.
  target_compile_definitions(test_cli_infer PRIVATE CXR_CLI_PATH="$<TARGET_FILE:cxr_cli>")
  add_dependencies(test_cli_infer cxr_cli)
endif()
