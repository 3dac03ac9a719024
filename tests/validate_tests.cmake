# Model summaries (nn/summary) and the `cxr validate` command.
cxr_add_test(test_summary)
if(CXR_BUILD_TOOLS)
  cxr_add_test(test_cli_validate)
  # Drives the real binary; tools/ is configured after tests/, which generator expressions allow.
  target_compile_definitions(test_cli_validate PRIVATE CXR_CLI_PATH="$<TARGET_FILE:cxr_cli>")
  add_dependencies(test_cli_validate cxr_cli)
endif()
