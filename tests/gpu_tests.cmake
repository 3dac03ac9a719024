# CUDA backend tests (tests/gpu): the runtime (device tensors, allocator, pinned memory,
# settings), every op and optimizer against the CPU, whole models, and the data loader's
# device batches. Label "gpu".
# Every test skips (GTEST_SKIP "no CUDA device") on a machine or a build without CUDA;
# ctest then reports the executable as skipped rather than passed.
# CXR_GPU_TESTS_ON_CPU=1 in the environment runs the comparisons with the CPU standing in
# for the device, to check the tests themselves (see tests/gpu/cuda_test_util.h).
set(CXR_GPU_TESTS
  test_cuda_runtime
  test_cuda_ops
  test_cuda_models
  test_cuda_loader
)
foreach(t ${CXR_GPU_TESTS})
  add_executable(${t} gpu/${t}.cpp)
  target_link_libraries(${t} PRIVATE cxr GTest::gtest GTest::gtest_main nlohmann_json::nlohmann_json)
  target_include_directories(${t} PRIVATE ${CMAKE_CURRENT_SOURCE_DIR} ${CMAKE_CURRENT_SOURCE_DIR}/gpu)
  add_test(NAME ${t} COMMAND ${t})
  set_tests_properties(${t} PROPERTIES LABELS "gpu" TIMEOUT 900 SKIP_REGULAR_EXPRESSION "no CUDA device")
endforeach()
