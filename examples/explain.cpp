// Grad-CAM heat map of one image as a PNG overlay, through the public API.
//   explain MODEL IMAGE OUT.png [CLASS_INDEX]
#include <cstdio>
#include <cstdlib>

#include "cxr/cxr.hpp"

int main(int argc, char** argv) {
  if (argc < 4 || argc > 5) {
    std::fprintf(stderr, "usage: explain MODEL.safetensors IMAGE OUT.png [CLASS_INDEX]\n");
    return 2;
  }
  try {
    const cxr::Model model = cxr::Model::load(argv[1]);
    const int target = argc == 5 ? std::atoi(argv[4]) : -1;
    const cxr::Explanation e = model.explain(argv[2], target);
    cxr::data::write_png(argv[3], e.overlay);
    std::printf("%s: class %s (p = %.4f), peak at (%d, %d); wrote %s\n", argv[2],
                model.class_names()[static_cast<size_t>(e.target)].c_str(), e.probabilities[static_cast<size_t>(e.target)],
                e.peak_x, e.peak_y, argv[3]);
    return 0;
  } catch (const cxr::Error& e) {
    std::fprintf(stderr, "explain: %s\n", e.what());
    return 1;
  }
}
