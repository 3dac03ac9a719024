# Module, model zoo, optimizer, LR schedule, file format and determinism tests.
set(CXR_NN_TESTS
  test_module
  test_zoo
  test_optim
  test_lr_schedule
  test_serialize
  test_determinism
)
foreach(t ${CXR_NN_TESTS})
  cxr_add_test(${t})
endforeach()
