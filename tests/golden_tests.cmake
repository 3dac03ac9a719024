# End-to-end check of one simple_cnn training step against PyTorch golden files
# (tests/data/golden_*, made by tools/golden/make_simple_cnn_golden.py).
cxr_add_test(test_golden)

# safetensors files written by cxr load in Hugging Face's Python package and the other
# way round. Skipped (exit 77) when the interpreter lacks numpy or safetensors; point
# CXR_PYTHON at another interpreter to use its packages.
add_executable(safetensors_writer safetensors_writer.cpp)
target_link_libraries(safetensors_writer PRIVATE cxr nlohmann_json::nlohmann_json)
find_program(CXR_PYTHON NAMES python3 python DOC "Python interpreter for the safetensors interoperability test")
if(CXR_PYTHON)
  add_test(NAME safetensors_python
           COMMAND ${CXR_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/check_safetensors.py
                   $<TARGET_FILE:safetensors_writer> ${CMAKE_CURRENT_BINARY_DIR}/safetensors_python)
  set_tests_properties(safetensors_python PROPERTIES LABELS "cpu" SKIP_RETURN_CODE 77 TIMEOUT 300)
else()
  message(STATUS "cxr: no Python interpreter found; the safetensors_python test is not registered")
endif()
