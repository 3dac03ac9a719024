set(CXR_OPS_TESTS
  test_tensor
  test_rng
  test_thread_pool
  test_ops_grad
  test_ops_errors
)
foreach(t ${CXR_OPS_TESTS})
  cxr_add_test(${t})
endforeach()
