# Evaluation metrics library (tools/metrics, target cxr_metrics) behind `cxr eval`.
# tools/ is configured after tests/, so `if(TARGET cxr_metrics)` would always be false
# here; cxr_metrics exists exactly when CXR_BUILD_TOOLS is on, and linking a target
# defined later is fine (names are resolved when CMake generates).
if(CXR_BUILD_TOOLS)
  cxr_add_test(test_metrics)
  target_link_libraries(test_metrics PRIVATE cxr_metrics)
endif()
