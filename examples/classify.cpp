// Classify image files with a trained model through the public API (cxr/cxr.hpp).
//   classify MODEL IMAGE...        prints: path  class  probability
#include <cstdio>

#include "cxr/cxr.hpp"

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: classify MODEL.safetensors IMAGE...\n");
    return 2;
  }
  try {
    const cxr::Model model = cxr::Model::load(argv[1]);
    int failed = 0;
    for (int i = 2; i < argc; ++i) {
      try {
        const cxr::Prediction p = model.predict(argv[i]);
        std::printf("%s\t%s\t%.4f\n", argv[i], p.class_name.c_str(), p.probabilities[p.label]);
      } catch (const cxr::Error& e) {  // a bad image does not stop the others
        std::fprintf(stderr, "classify: %s\n", e.what());
        ++failed;
      }
    }
    return failed > 0 ? 1 : 0;
  } catch (const cxr::Error& e) {
    std::fprintf(stderr, "classify: %s\n", e.what());
    return 1;
  }
}
