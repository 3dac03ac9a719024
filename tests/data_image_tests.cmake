# data/image: PNG/JPEG decoding against files written by libpng and libjpeg themselves,
# PNG encoding, EXIF orientation, DCT scaling, threads (test_image), and a corpus of
# broken and hostile files (test_image_corpus). The tests call libpng and libjpeg
# directly to make their inputs.
foreach(t test_image test_image_corpus)
  cxr_add_test(${t})
  target_link_libraries(${t} PRIVATE PNG::PNG JPEG::JPEG)
endforeach()
