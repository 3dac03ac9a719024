# HTML reports (tools/report): unit tests, and a "browser" test that writes a sample
# report with the unit test binary and renders it with headless Chromium
# (scripts/check_report.sh); the browser test is skipped (exit 77) without `chromium`.
if(CXR_BUILD_TOOLS)
  cxr_add_test(test_report)
  target_link_libraries(test_report PRIVATE cxr_report)
  add_test(NAME report_browser
           COMMAND sh -c "mkdir -p \"$0\" && CXR_REPORT_SAMPLE=\"$0/report.html\" \"$1\" --gtest_filter=ReportSample.* >/dev/null && \"$2\" \"$0/report.html\" \"$0/report.png\""
                   ${CMAKE_CURRENT_BINARY_DIR}/report_sample $<TARGET_FILE:test_report>
                   ${PROJECT_SOURCE_DIR}/scripts/check_report.sh)
  set_tests_properties(report_browser PROPERTIES LABELS "browser" SKIP_RETURN_CODE 77 TIMEOUT 300)
endif()
