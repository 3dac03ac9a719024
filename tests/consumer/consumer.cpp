// Builds a small network, saves it, writes a synthetic X-ray, then loads the model through
// the public API and classifies and explains the image. Prints the model and image paths
// for the C consumer. Usage: consumer_cpp WORK_DIR
#include <cstdio>
#include <string>

#include <cxr/cxr.hpp>

#include "data/synth.h"
#include "nn/serialize.h"
#include "nn/zoo.h"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: consumer_cpp WORK_DIR\n");
    return 2;
  }
  const std::string dir = argv[1];
  try {
    auto net = cxr::nn::build_model(cxr::nn::arch_spec("simple_cnn", 1, 2, 32, 32), 1);
    cxr::nn::save_model(dir + "/model.safetensors", *net, {.class_names = {"NORMAL", "PNEUMONIA"}});
    cxr::data::write_png(dir + "/xray.png", cxr::data::synth_xray(64, 1, 0, true).image);

    const cxr::Model m = cxr::Model::load(dir + "/model.safetensors", {.device = "cpu"});
    const cxr::Prediction p = m.predict(dir + "/xray.png");
    const cxr::Explanation e = m.explain(dir + "/xray.png");
    cxr::data::write_png(dir + "/cam.png", e.overlay);
    std::printf("cpp: %s %.6f %.6f (map %dx%d)\n", p.class_name.c_str(), p.probabilities[0], p.probabilities[1],
                e.map_height, e.map_width);
  } catch (const cxr::Error& e) {
    std::fprintf(stderr, "consumer_cpp: %s\n", e.what());
    return 1;
  }
  return 0;
}
