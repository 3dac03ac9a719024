// Grad-CAM on the engine's autograd. The model (a tree of Sequentials) is run child by
// child; the chosen layer's output is replaced by a detached leaf that requires grad, so
// one backward from the sum of each image's target logit leaves d y_c / d A in the leaf's
// grad() (each image's logit depends only on its own feature map). Parameters have
// requires_grad switched off meanwhile, so their gradients are neither computed nor
// touched. The small per-image map math runs on the CPU after copying A and dA down.
#include "nn/gradcam.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <typeinfo>

#include "nn/autograd.h"
#include "nn/functional.h"

namespace cxr::nn {

namespace {

// Called with each visited module's path and output; returns the tensor the forward
// continues with.
using Visit = std::function<Tensor(const std::string& path, Module& m, const Tensor& out)>;

// Only plain Sequentials are opened: a subclass or a block may do more than chain its
// children, so its inside cannot be reproduced from outside.
bool is_plain_sequential(const Module& m) { return typeid(m) == typeid(Sequential); }

// Runs seq's children in order (as Sequential::forward), descending into plain
// Sequentials, and visits every module after it has produced its output.
Tensor walk(Sequential& seq, const std::string& prefix, Tensor h, const Visit& visit) {
  for (const auto& [name, child] : seq.children()) {
    const std::string path = prefix.empty() ? name : prefix + "." + name;
    if (is_plain_sequential(*child)) h = walk(static_cast<Sequential&>(*child), path, h, visit);
    else h = child->forward(h);
    h = visit(path, *child, h);
  }
  return h;
}

// Restores every module's training flag (named_modules is parents first, so a parent's
// recursive train() is overridden by its children's own entries that follow).
class TrainingFlagsGuard {
 public:
  explicit TrainingFlagsGuard(Module& root) {
    for (auto& [path, m] : root.named_modules()) flags_.emplace_back(m, m->is_training());
  }
  ~TrainingFlagsGuard() {  // writes only what changed, so concurrent readers of an eval model see no write
    for (auto& [m, on] : flags_)
      if (m->is_training() != on) m->train(on);
  }
  TrainingFlagsGuard(const TrainingFlagsGuard&) = delete;
  TrainingFlagsGuard& operator=(const TrainingFlagsGuard&) = delete;

 private:
  std::vector<std::pair<Module*, bool>> flags_;
};

// Switches requires_grad off on the parameters that have it, and back on when destroyed.
class FrozenParameters {
 public:
  explicit FrozenParameters(const Module& m) {
    for (Tensor& p : m.parameters())
      if (p.requires_grad()) {
        frozen_.push_back(p);
        p.set_requires_grad(false);
      }
  }
  ~FrozenParameters() {
    for (Tensor& p : frozen_) p.set_requires_grad(true);
  }
  FrozenParameters(const FrozenParameters&) = delete;
  FrozenParameters& operator=(const FrozenParameters&) = delete;

 private:
  std::vector<Tensor> frozen_;
};

class GradModeOn {
 public:
  GradModeOn() : prev_(grad_enabled()) { set_grad_enabled(true); }
  ~GradModeOn() { set_grad_enabled(prev_); }
  GradModeOn(const GradModeOn&) = delete;
  GradModeOn& operator=(const GradModeOn&) = delete;

 private:
  bool prev_;
};

struct Traced {
  std::string path;
  Module* module;
  Shape shape;
};

// Every visited module with its output shape for one zero image of the model's input.
std::vector<Traced> trace(Model& model) {
  DType dtype = DType::f32;
  Device device = Device::cpu();
  for (const auto& [name, t] : model.state_dict())
    if (t.dtype() != DType::i64) {
      dtype = t.dtype();
      device = t.device();
      break;
    }
  TrainingFlagsGuard flags(model);
  if (model.is_training()) model.eval();
  NoGradGuard no_grad;
  const Tensor x =
      Tensor::zeros({1, model.in_channels(), model.input_height(), model.input_width()}, dtype, device);
  std::vector<Traced> out;
  walk(model, "", x, [&](const std::string& path, Module& m, const Tensor& h) {
    out.push_back({path, &m, h.shape()});
    return h;
  });
  return out;
}

std::string layer_list(Model& model) {
  const std::vector<std::string> layers = gradcam_layers(model);
  std::string s;
  const size_t shown = std::min<size_t>(layers.size(), 40);
  for (size_t i = 0; i < shown; ++i) s += (i ? ", " : "") + layers[i];
  if (shown < layers.size()) s += ", ... (" + std::to_string(layers.size()) + " in all)";
  return s.empty() ? "none" : s;
}

// The path must name a module whose ancestors are all plain Sequentials.
void check_layer_path(Model& model, const std::string& layer) {
  if (layer.empty() || model.find(layer) == nullptr)
    throw ValueError("Grad-CAM: unknown layer '" + layer + "'; layers with a 4-D output: " + layer_list(model));
  for (size_t dot = layer.find('.'); dot != std::string::npos; dot = layer.find('.', dot + 1)) {
    const std::string parent = layer.substr(0, dot);
    Module* p = model.find(parent);
    if (p != nullptr && !is_plain_sequential(*p))
      throw ValueError("Grad-CAM: layer '" + layer + "' lies inside the " + p->type_name() + " '" + parent +
                       "', whose inside cannot be captured; use '" + parent + "' or one of: " + layer_list(model));
  }
}

// Bilinear resize of an h x w map to H x W, pixel centres as align_corners = false,
// clamped at the borders.
std::vector<float> upsample(const std::vector<float>& src, int64_t h, int64_t w, int64_t H, int64_t W) {
  struct Tap {
    int64_t i0, i1;
    double f;
  };
  auto taps = [](int64_t n_out, int64_t n_in) {
    std::vector<Tap> t(static_cast<size_t>(n_out));
    const double scale = static_cast<double>(n_in) / static_cast<double>(n_out);
    for (int64_t o = 0; o < n_out; ++o) {
      const double s = std::max(0.0, (static_cast<double>(o) + 0.5) * scale - 0.5);
      const int64_t i0 = std::min<int64_t>(static_cast<int64_t>(s), n_in - 1);
      t[o] = {i0, std::min<int64_t>(i0 + 1, n_in - 1), s - static_cast<double>(i0)};
    }
    return t;
  };
  const std::vector<Tap> ty = taps(H, h), tx = taps(W, w);
  std::vector<float> out(static_cast<size_t>(H * W));
  for (int64_t y = 0; y < H; ++y) {
    const float* r0 = src.data() + ty[y].i0 * w;
    const float* r1 = src.data() + ty[y].i1 * w;
    for (int64_t x = 0; x < W; ++x) {
      const Tap& c = tx[x];
      const double top = r0[c.i0] + c.f * (r0[c.i1] - r0[c.i0]);
      const double bottom = r1[c.i0] + c.f * (r1[c.i1] - r1[c.i0]);
      out[y * W + x] = static_cast<float>(top + ty[y].f * (bottom - top));
    }
  }
  return out;
}

// ReLU(sum_k alpha_k A_k) / max for one image; a and g point at its (K, h, w) block.
std::vector<float> cam_map(const double* a, const double* g, int64_t k, int64_t hw) {
  std::vector<double> cam(static_cast<size_t>(hw), 0.0);
  for (int64_t c = 0; c < k; ++c) {
    double alpha = 0;
    for (int64_t p = 0; p < hw; ++p) alpha += g[c * hw + p];
    alpha /= static_cast<double>(hw);
    if (alpha == 0) continue;
    for (int64_t p = 0; p < hw; ++p) cam[p] += alpha * a[c * hw + p];
  }
  double mx = 0;
  for (double& v : cam) {
    v = std::max(v, 0.0);
    mx = std::max(mx, v);
  }
  std::vector<float> out(static_cast<size_t>(hw), 0.0f);
  if (mx > 0)
    for (int64_t p = 0; p < hw; ++p) out[p] = static_cast<float>(cam[p] / mx);
  return out;
}

}  // namespace

std::vector<std::string> gradcam_layers(Model& model) {
  std::vector<std::string> out;
  for (const Traced& t : trace(model))
    if (t.shape.size() == 4) out.push_back(t.path);
  return out;
}

std::string default_gradcam_layer(Model& model) {
  // The latest module to finish before the first one that pools to a vector or leaves
  // 4-D (for a Sequential and its last child finishing together, the Sequential).
  std::string best;
  for (const Traced& t : trace(model)) {
    if (t.shape.size() != 4 || dynamic_cast<GlobalAvgPool2d*>(t.module) != nullptr) break;
    best = t.path;
  }
  if (best.empty())
    throw ValueError("Grad-CAM: the model has no layer with a 4-D output before it pools to a vector");
  return best;
}

std::vector<GradCamResult> grad_cam(Model& model, const Tensor& x, const std::vector<int64_t>& targets,
                                    const std::string& layer_arg) {
  CXR_CHECK(x.defined() && x.dim() == 4 && x.size(0) >= 1, "grad_cam: input ", x.defined() ? x.str() : "undefined",
            " must be (N, C, H, W) with N >= 1");
  CXR_CHECK(x.size(1) == model.in_channels(), "grad_cam: input ", x.str(), " has ", x.size(1),
            " channels, the model expects ", model.in_channels());
  const int64_t n = x.size(0), classes = model.num_classes();
  CXR_CHECK(targets.empty() || static_cast<int64_t>(targets.size()) == n, "grad_cam: ", targets.size(),
            " targets for a batch of ", n, " images (give one per image, or none)");
  for (int64_t t : targets)
    CXR_CHECK(t == -1 || (t >= 0 && t < classes), "grad_cam: target class ", t, " out of range for a model with ",
              classes, " classes (use -1 for the predicted class)");
  if (!layer_arg.empty()) check_layer_path(model, layer_arg);
  const std::string layer = layer_arg.empty() ? default_gradcam_layer(model) : layer_arg;

  if (model.is_training()) model.eval();  // no write when it already is (other threads may be predicting)
  FrozenParameters frozen(model);
  GradModeOn grad_on;
  Tensor feat;  // (N, K, h, w): the layer's output as a leaf of the rest of the graph
  const Tensor logits = walk(model, "", x.detach(), [&](const std::string& path, Module&, const Tensor& h) {
    if (path != layer) return h;
    if (h.dim() != 4)
      throw ValueError("Grad-CAM: layer '" + layer + "' outputs " + h.str() + ", not a 4-D feature map; layers " +
                       "with a 4-D output: " + layer_list(model));
    feat = h.detach();
    feat.set_requires_grad(true);
    return feat;
  });
  CXR_CHECK(feat.defined(), "Grad-CAM: layer '", layer, "' was not reached by the forward pass");
  CXR_CHECK(logits.dim() == 2 && logits.size(0) == n && logits.size(1) == classes, "Grad-CAM: the model output ",
            logits.str(), " is not (", n, ", ", classes, ") logits");

  std::vector<double> probs;
  {
    NoGradGuard no_grad;
    probs = softmax(logits.detach(), 1).to(Device::cpu()).to_vector();
  }
  std::vector<int64_t> chosen(static_cast<size_t>(n));
  std::vector<double> onehot(static_cast<size_t>(n * classes), 0.0);
  for (int64_t i = 0; i < n; ++i) {
    int64_t t = targets.empty() ? -1 : targets[i];
    if (t < 0) t = std::max_element(probs.begin() + i * classes, probs.begin() + (i + 1) * classes) -
                   (probs.begin() + i * classes);
    chosen[i] = t;
    onehot[i * classes + t] = 1.0;
  }
  const Tensor mask = Tensor::from_vector(onehot, {n, classes}).to(logits.dtype()).to(logits.device());
  backward(sum(mul(logits, mask)));

  const int64_t k = feat.size(1), h = feat.size(2), w = feat.size(3), hw = h * w;
  const std::vector<double> a = feat.detach().to(Device::cpu()).to_vector();
  const Tensor grad = feat.grad();
  const std::vector<double> g =
      grad.defined() ? grad.to(Device::cpu()).to_vector() : std::vector<double>(a.size(), 0.0);

  std::vector<GradCamResult> out(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    GradCamResult& r = out[i];
    r.target = chosen[i];
    r.probabilities.assign(probs.begin() + i * classes, probs.begin() + (i + 1) * classes);
    r.map_height = h;
    r.map_width = w;
    r.map = cam_map(a.data() + i * k * hw, g.data() + i * k * hw, k, hw);
    r.height = x.size(2);
    r.width = x.size(3);
    r.upsampled = upsample(r.map, h, w, r.height, r.width);
    const int64_t peak = std::max_element(r.upsampled.begin(), r.upsampled.end()) - r.upsampled.begin();
    r.peak_y = peak / r.width;
    r.peak_x = peak % r.width;
  }
  return out;
}

}  // namespace cxr::nn
