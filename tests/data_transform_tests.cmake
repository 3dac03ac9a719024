# data/transforms: resize, crops, flips, rotation, normalization, augmentation, pipeline
cxr_add_test(test_transforms)
