# The public C++ API (cxr/cxr.hpp) and the C API (cxr/cxr.h).
cxr_add_test(test_api)
# Install into a temporary prefix and build an out-of-tree application (C++ and C) with
# find_package(cxr) and with pkg-config (scripts/test_install.sh).
add_test(NAME install_consumer COMMAND ${PROJECT_SOURCE_DIR}/scripts/test_install.sh ${PROJECT_BINARY_DIR})
set_tests_properties(install_consumer PROPERTIES LABELS "install" TIMEOUT 900)
