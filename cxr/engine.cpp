// The public C++ API (cxr/cxr.hpp): model loading, preprocessing, prediction and Grad-CAM.
#include "cxr/cxr.hpp"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <mutex>

#include "data/transforms.h"
#include "nn/autograd.h"
#include "nn/functional.h"
#include "nn/gradcam.h"
#include "nn/serialize.h"
#include "nn/zoo.h"
#include "registry/registry.h"
#include "runtime/cuda.h"

namespace cxr {

struct Model::Impl {
  std::shared_ptr<nn::Model> net;
  std::vector<std::string> classes;
  std::vector<double> mean, stddev;
  Device device = Device::cpu();
  std::string source;
  // Grad-CAM switches parameters' requires_grad off and back while it runs, so explain()
  // calls on one model take turns; predict() never waits for it.
  mutable std::mutex explain_mutex;
};

namespace {

Device pick_device(const std::string& d) {
  if (d == "auto") return cuda::available() ? Device::cuda(0) : Device::cpu();
  Device dev = Device::parse(d);
  if (dev.is_cuda() && dev.index >= cuda::device_count())
    throw ValueError("device '" + d + "': " + std::to_string(cuda::device_count()) + " CUDA device(s) available");
  return dev;
}

std::vector<std::string> fill_names(std::vector<std::string> names, int64_t k) {
  if (static_cast<int64_t>(names.size()) != k) {
    names.clear();
    for (int64_t i = 0; i < k; ++i) names.push_back("class_" + std::to_string(i));
  }
  return names;
}

data::DecodeOptions decode_options(const nn::Model& m) {
  data::DecodeOptions o;
  o.channels = static_cast<int>(m.in_channels());
  o.min_width = static_cast<int>(m.input_width());
  o.min_height = static_cast<int>(m.input_height());
  return o;
}

}  // namespace

std::vector<float> preprocess(const data::Image& image, int channels, int height, int width,
                              const std::vector<double>& mean, const std::vector<double>& stddev) {
  if (image.channels < 1 || image.height < 1 || image.width < 1 ||
      image.data.size() != static_cast<size_t>(image.channels) * image.height * image.width)
    throw ValueError("preprocess: the image is empty or its data does not match " + std::to_string(image.channels) +
                     "x" + std::to_string(image.height) + "x" + std::to_string(image.width));
  data::Pipeline p;
  p.channels = channels;
  p.height = height;
  p.width = width;
  p.mean.assign(mean.begin(), mean.end());
  p.stddev.assign(stddev.begin(), stddev.end());
  p.validate();
  std::vector<float> out(static_cast<size_t>(channels) * height * width);
  data::run_pipeline(image, p, false, data::SampleRng{}, out.data());
  return out;
}

void jet_colour(float v, float rgb[3]) {
  auto ramp = [](float t) { return std::clamp(1.5f - std::fabs(t), 0.0f, 1.0f); };
  rgb[0] = ramp(4.0f * v - 3.0f);
  rgb[1] = ramp(4.0f * v - 2.0f);
  rgb[2] = ramp(4.0f * v - 1.0f);
}

data::Image heatmap_overlay(const data::Image& image, const std::vector<float>& heat, int map_h, int map_w, float alpha) {
  if (map_h < 1 || map_w < 1 || heat.size() != static_cast<size_t>(map_h) * map_w)
    throw ValueError("heatmap_overlay: the map has " + std::to_string(heat.size()) + " values, expected " +
                     std::to_string(map_h) + "x" + std::to_string(map_w));
  if (!(alpha >= 0 && alpha <= 1)) throw ValueError("heatmap_overlay: alpha must be in [0, 1]");
  data::Image h(1, map_h, map_w);
  h.data = heat;
  const data::Image hm = data::resize(h, image.height, image.width);
  const data::Image gray = data::convert_channels(image, 1);
  data::Image out(3, image.height, image.width);
  const size_t n = static_cast<size_t>(image.height) * image.width;
  for (size_t i = 0; i < n; ++i) {
    const float v = std::clamp(hm.data[i], 0.0f, 1.0f), g = std::clamp(gray.data[i], 0.0f, 1.0f);
    float rgb[3];
    jet_colour(v, rgb);
    for (int c = 0; c < 3; ++c) out.data[c * n + i] = (1.0f - alpha) * g + alpha * rgb[c];
  }
  return out;
}

Model Model::load(const std::string& path_or_ref, const LoadOptions& options) {
  nn::LoadedModel lm;
  if (path_or_ref.rfind("registry:", 0) == 0) {
    std::string dir = options.registry;
    if (dir.empty()) {
      const char* env = std::getenv("CXR_REGISTRY");
      dir = env != nullptr && *env != '\0' ? env : "registry";
    }
    // Checks the artifact's SHA-256 and records the load in the registry's audit log.
    lm = registry::Registry::open(dir).load(path_or_ref.substr(9)).model;
  } else {
    lm = nn::load_model(path_or_ref);
  }
  Model m = from(lm.model, lm.info.class_names, lm.info.mean, lm.info.stddev);
  auto impl = std::const_pointer_cast<Impl>(m.impl_);
  impl->source = path_or_ref;
  impl->device = pick_device(options.device);
  impl->net->to(impl->device);
  return m;
}

Model Model::from(std::shared_ptr<nn::Model> model, std::vector<std::string> class_names, std::vector<double> mean,
                  std::vector<double> stddev) {
  if (!model) throw ValueError("Model::from: no network given");
  auto impl = std::make_shared<Impl>();
  impl->net = std::move(model);
  impl->net->eval();
  impl->classes = fill_names(std::move(class_names), impl->net->num_classes());
  impl->mean = std::move(mean);
  impl->stddev = std::move(stddev);
  for (const Tensor& p : impl->net->parameters())
    if (p.defined()) {
      impl->device = p.device();
      break;
    }
  impl->source = "(in memory)";
  Model m;
  m.impl_ = std::move(impl);
  return m;
}

const std::vector<std::string>& Model::class_names() const { return impl_->classes; }
int Model::channels() const { return static_cast<int>(impl_->net->in_channels()); }
int Model::height() const { return static_cast<int>(impl_->net->input_height()); }
int Model::width() const { return static_cast<int>(impl_->net->input_width()); }
Device Model::device() const { return impl_->device; }
std::string Model::source() const { return impl_->source; }
nn::Model& Model::network() const { return *impl_->net; }

std::vector<Prediction> Model::predict(const std::vector<data::Image>& images) const {
  if (images.empty()) return {};
  const int C = channels(), H = height(), W = width();
  const size_t sample = static_cast<size_t>(C) * H * W;
  std::vector<float> batch(sample * images.size());
  for (size_t i = 0; i < images.size(); ++i) {
    const auto x = preprocess(images[i], C, H, W, impl_->mean, impl_->stddev);
    std::copy(x.begin(), x.end(), batch.begin() + static_cast<std::ptrdiff_t>(i * sample));
  }
  const auto n = static_cast<int64_t>(images.size());
  std::vector<double> probs;
  {
    nn::NoGradGuard ng;
    Tensor x = Tensor::from_vector(batch, {n, C, H, W}).to(impl_->device);
    probs = nn::softmax(impl_->net->forward(x), 1).to(Device::cpu()).to(DType::f64).to_vector();
  }
  const size_t k = impl_->classes.size();
  std::vector<Prediction> out(images.size());
  for (size_t i = 0; i < images.size(); ++i) {
    Prediction& p = out[i];
    p.probabilities.assign(probs.begin() + static_cast<std::ptrdiff_t>(i * k),
                           probs.begin() + static_cast<std::ptrdiff_t>((i + 1) * k));
    p.label = static_cast<int>(std::max_element(p.probabilities.begin(), p.probabilities.end()) - p.probabilities.begin());
    p.class_name = impl_->classes[static_cast<size_t>(p.label)];
  }
  return out;
}

Prediction Model::predict(const data::Image& image) const { return predict(std::vector<data::Image>{image})[0]; }

Prediction Model::predict(const std::string& image_path) const {
  return predict(data::decode_image(image_path, decode_options(*impl_->net)));
}

Explanation Model::explain(const data::Image& image, int target, const std::string& layer, float alpha) const {
  const int C = channels(), H = height(), W = width();
  const auto x = preprocess(image, C, H, W, impl_->mean, impl_->stddev);
  std::vector<nn::GradCamResult> r;
  {
    std::lock_guard<std::mutex> lock(impl_->explain_mutex);
    const Tensor t = Tensor::from_vector(x, {1, C, H, W}).to(impl_->device);
    r = nn::grad_cam(*impl_->net, t, {target}, layer);
  }
  const nn::GradCamResult& g = r.at(0);
  Explanation e;
  e.target = static_cast<int>(g.target);
  e.probabilities = g.probabilities;
  e.map_height = static_cast<int>(g.height);
  e.map_width = static_cast<int>(g.width);
  e.map = g.upsampled;
  e.peak_x = static_cast<int>(std::min<int64_t>(image.width - 1, (2 * g.peak_x + 1) * image.width / (2 * g.width)));
  e.peak_y = static_cast<int>(std::min<int64_t>(image.height - 1, (2 * g.peak_y + 1) * image.height / (2 * g.height)));
  e.overlay = heatmap_overlay(image, e.map, e.map_height, e.map_width, alpha);
  return e;
}

Explanation Model::explain(const std::string& image_path, int target, const std::string& layer, float alpha) const {
  data::DecodeOptions o;  // full size: the overlay is drawn on the image as it is
  o.channels = channels();
  return explain(data::decode_image(image_path, o), target, layer, alpha);
}

}  // namespace cxr
