# Datasets (ImageFolder, CSV, splits) and the threaded batch loader.
cxr_add_test(test_dataset)
cxr_add_test(test_loader)
target_link_libraries(test_loader PRIVATE JPEG::JPEG PNG::PNG)
