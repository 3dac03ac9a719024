# The model registry (registry/): the library, multi-process concurrency and crash tests,
# and `cxr registry` / `cxr infer registry:...` driven as child processes.
cxr_add_test(test_registry)
target_link_libraries(test_registry PRIVATE cxr_registry)
cxr_add_test(test_registry_stress)
target_link_libraries(test_registry_stress PRIVATE cxr_registry)
if(CXR_BUILD_TOOLS)
  cxr_add_test(test_registry_cli)
  target_link_libraries(test_registry_cli PRIVATE cxr_registry)
  target_compile_definitions(test_registry_cli PRIVATE CXR_CLI_PATH="$<TARGET_FILE:cxr_cli>")
  add_dependencies(test_registry_cli cxr_cli)
endif()
