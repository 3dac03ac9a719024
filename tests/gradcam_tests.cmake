# Grad-CAM: the library (nn/gradcam) and the `cxr gradcam` command, driven as a child process.
cxr_add_test(test_gradcam)
if(CXR_BUILD_TOOLS)
  cxr_add_test(test_cli_gradcam)
  # Drives the real binary; tools/ is configured after tests/, which generator expressions allow.
  target_compile_definitions(test_cli_gradcam PRIVATE CXR_CLI_PATH="$<TARGET_FILE:cxr_cli>")
  add_dependencies(test_cli_gradcam cxr_cli)
endif()
