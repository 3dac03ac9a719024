// The engine's public C++ API for applications: load a trained model, classify and explain
// images, in-process. (docs/embedding.md walks through it; cxr/cxr.h is the C API.)
//
//   #include <cxr/cxr.hpp>
//   cxr::Model m = cxr::Model::load("model.safetensors");        // or "registry:chest@production"
//   cxr::Prediction p = m.predict("xray.png");
//   std::printf("%s %.3f\n", p.class_name.c_str(), p.probabilities[p.label]);
//   cxr::Explanation e = m.explain("xray.png");                 // Grad-CAM
//   cxr::data::write_png("cam.png", e.overlay);
//
// Preprocessing is the model file's own (input size, channels, normalisation), exactly as
// `cxr infer` does it, so results match the command line.
//
// Threads: a Model is a cheap handle (copies share one network). predict() and explain()
// may be called from any number of threads at once on the same Model: the weights are
// only read, gradient recording is per thread, and CPU kernels share the process-wide
// thread pool (a call that finds the pool busy runs its kernels on its own thread, with
// identical results). The only process-wide state is that pool (cxr::set_num_threads) and,
// with CUDA, one context per device; nothing needs initialising or tearing down.
//
// Errors: cxr::Error and its subclasses (runtime/error.h): FileError for missing or corrupt
// files, ValueError for bad arguments. Nothing aborts.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "data/image.h"
#include "runtime/error.h"
#include "runtime/tensor.h"

namespace cxr {

namespace nn {
class Model;
}

struct Prediction {
  int label = 0;                     // index of the most probable class
  std::string class_name;            // class_names()[label]
  std::vector<double> probabilities; // one per class, summing to 1
};

struct Explanation {
  int target = 0;                    // class explained
  std::vector<double> probabilities; // the prediction's probabilities
  int map_height = 0, map_width = 0;
  std::vector<float> map;            // Grad-CAM at the model's input size, values in [0, 1]
  int peak_x = 0, peak_y = 0;        // the map's maximum, in the image's own pixels
  data::Image overlay;               // RGB: the image in grayscale at its own size under a colour map
};

struct LoadOptions {
  std::string device = "auto";       // "auto" (a GPU when there is one), "cpu", "cuda", "cuda:1"
  // For "registry:NAME[@VERSION|@production|@staging]" references: the registry directory
  // (default: $CXR_REGISTRY, else ./registry).
  std::string registry;
};

class Model {
 public:
  // A model file (.safetensors written by `cxr train` or nn::save_model), or a registry
  // reference "registry:NAME[@...]" (the artifact's SHA-256 is checked on load).
  static Model load(const std::string& path_or_ref, const LoadOptions& options = {});
  // Wraps a model built in code (e.g. with nn::build_model after training it).
  static Model from(std::shared_ptr<nn::Model> model, std::vector<std::string> class_names,
                    std::vector<double> mean = {0.5}, std::vector<double> stddev = {0.25});

  const std::vector<std::string>& class_names() const;
  int channels() const;
  int height() const;
  int width() const;
  Device device() const;
  std::string source() const;        // path or registry reference it came from
  nn::Model& network() const;        // the underlying network (for advanced use)

  Prediction predict(const std::string& image_path) const;
  Prediction predict(const data::Image& image) const;  // any size and channel count
  std::vector<Prediction> predict(const std::vector<data::Image>& images) const;  // one batch
  // Grad-CAM of `target` (-1: the predicted class) at `layer` ("" = last conv stage).
  Explanation explain(const std::string& image_path, int target = -1, const std::string& layer = "",
                      float alpha = 0.4f) const;
  Explanation explain(const data::Image& image, int target = -1, const std::string& layer = "",
                      float alpha = 0.4f) const;

 private:
  struct Impl;
  std::shared_ptr<const Impl> impl_;
};

// The model input for one image: channels converted, resized to (height, width) and
// normalised with mean/stddev per channel; planar CHW floats.
std::vector<float> preprocess(const data::Image& image, int channels, int height, int width,
                              const std::vector<double>& mean, const std::vector<double>& stddev);

// The overlays' jet-like colour map: dark blue, blue, cyan, yellow, red, dark red as v
// goes 0 -> 1 (v in [0, 1]).
void jet_colour(float v, float rgb[3]);

// `heat` (values in [0, 1], map_h x map_w) resized bilinearly to the image's size and
// blended in a jet-like colour map over the image in grayscale: an RGB image.
data::Image heatmap_overlay(const data::Image& image, const std::vector<float>& heat, int map_h, int map_w,
                            float alpha = 0.4f);

}  // namespace cxr
