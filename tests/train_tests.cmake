# `cxr train` (tools/train, tools/cxr/cmd_train.cpp), driven as a child process.
if(CXR_BUILD_TOOLS)
  cxr_add_test(test_cli_train)
  target_compile_definitions(test_cli_train PRIVATE CXR_CLI_PATH="$<TARGET_FILE:cxr_cli>")
  add_dependencies(test_cli_train cxr_cli)
endif()
# The README's workflow: synth -> train -> infer -> eval -> gradcam -> validate -> bench.
if(CXR_BUILD_TOOLS)
  cxr_add_test(test_workflow)
  target_compile_definitions(test_workflow PRIVATE CXR_CLI_PATH="$<TARGET_FILE:cxr_cli>"
                                                   CXR_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
  add_dependencies(test_workflow cxr_cli)
endif()
# `cxr bench`.
if(CXR_BUILD_TOOLS)
  cxr_add_test(test_cli_bench)
  target_compile_definitions(test_cli_bench PRIVATE CXR_CLI_PATH="$<TARGET_FILE:cxr_cli>")
  add_dependencies(test_cli_bench cxr_cli)
endif()
