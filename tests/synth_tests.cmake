# Synthetic X-ray generator (data/synth) and the `cxr synth` command.
cxr_add_test(test_synth)
if(CXR_BUILD_TOOLS)
  cxr_add_test(test_cli_synth)
  # Drives the real binary; tools/ is configured after tests/, which generator expressions allow.
  target_compile_definitions(test_cli_synth PRIVATE CXR_CLI_PATH="$<TARGET_FILE:cxr_cli>")
  add_dependencies(test_cli_synth cxr_cli)
endif()
