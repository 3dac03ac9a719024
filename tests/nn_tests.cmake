set(CXR_NN_TESTS)
foreach(t ${CXR_NN_TESTS})
  cxr_add_test(${t})
endforeach()
