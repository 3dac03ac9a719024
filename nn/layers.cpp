#include "nn/layers.h"

#include <cmath>
#include <mutex>
#include <sstream>

#include "nn/autograd.h"
#include "nn/init.h"

namespace cxr::nn {

Conv2d::Conv2d(const Conv2dConfig& c, Generator& gen) : cfg_(c), pack_(std::make_shared<PackCache>()) {
  CXR_CHECK(c.in_channels > 0 && c.out_channels > 0 && c.kernel > 0 && c.stride > 0 && c.dilation > 0 &&
                c.groups > 0 && c.padding >= 0,
            "Conv2d: invalid configuration ", describe());
  CXR_CHECK(c.in_channels % c.groups == 0 && c.out_channels % c.groups == 0, "Conv2d: channels ", c.in_channels,
            "->", c.out_channels, " not divisible by groups ", c.groups);
  weight = Tensor::empty({c.out_channels, c.in_channels / c.groups, c.kernel, c.kernel});
  init::kaiming_normal(weight, gen, init::FanMode::fan_out);
  register_parameter("weight", weight);
  if (c.bias) {
    bias = Tensor::zeros({c.out_channels});
    register_parameter("bias", bias);
  }
}

struct Conv2d::PackCache {
  std::mutex mutex;
  uint64_t version = 0;  // weight.version() the packing was made from
  std::shared_ptr<const cpu::PackedConvWeights> packed;
};

std::shared_ptr<const cpu::PackedConvWeights> Conv2d::packed_weights() {
  cpu::Conv2dShape s;
  s.C = cfg_.in_channels;
  s.K = cfg_.out_channels;
  s.R = s.S = cfg_.kernel;
  s.groups = cfg_.groups;
  if (!weight.defined() || !weight.device().is_cpu() || weight.dtype() != DType::f32 ||
      weight.shape() != Shape{s.K, s.C / s.groups, s.R, s.S} || !cpu::conv2d_uses_packed_weights(s))
    return nullptr;
  std::lock_guard<std::mutex> lock(pack_->mutex);
  const uint64_t v = weight.version();
  if (!pack_->packed || pack_->version != v) {
    auto p = std::make_shared<cpu::PackedConvWeights>();
    cpu::conv2d_pack_weights(s, weight.data<float>(), *p);
    pack_->packed = std::move(p);
    pack_->version = v;
  }
  return pack_->packed;
}

Tensor Conv2d::forward(const Tensor& x) {
  Conv2dOptions o = Conv2dOptions::make(cfg_.stride, cfg_.padding, cfg_.dilation, cfg_.groups);
  if (!needs_record({&x, &weight, &bias})) {
    if (x.defined() && x.device().is_cpu() && x.dtype() == DType::f32) {
      if (auto packed = packed_weights()) return conv2d(x, weight, bias, o, packed.get());
    }
  } else {
    std::lock_guard<std::mutex> lock(pack_->mutex);
    pack_->packed.reset();
  }
  return conv2d(x, weight, bias, o);
}

std::string Conv2d::describe() const {
  std::ostringstream os;
  os << cfg_.in_channels << "->" << cfg_.out_channels << ", k=" << cfg_.kernel << ", s=" << cfg_.stride
     << ", p=" << cfg_.padding;
  if (cfg_.dilation != 1) os << ", d=" << cfg_.dilation;
  if (cfg_.groups != 1) os << ", groups=" << cfg_.groups;
  if (!cfg_.bias) os << ", no bias";
  return os.str();
}

BatchNorm2d::BatchNorm2d(int64_t channels, double eps, double momentum)
    : channels_(channels), eps_(eps), momentum_(momentum) {
  CXR_CHECK(channels > 0, "BatchNorm2d: channels must be > 0, got ", channels);
  CXR_CHECK(momentum >= 0 && momentum <= 1, "BatchNorm2d: momentum ", momentum, " must be in [0, 1]");
  weight = register_parameter("weight", Tensor::ones({channels}));
  bias = register_parameter("bias", Tensor::zeros({channels}));
  running_mean = register_buffer("running_mean", Tensor::zeros({channels}));
  running_var = register_buffer("running_var", Tensor::ones({channels}));
  num_batches_tracked = register_buffer("num_batches_tracked", Tensor::zeros({}, DType::i64));
}

Tensor BatchNorm2d::forward(const Tensor& x) {
  CXR_CHECK(x.defined() && x.dim() >= 2 && x.size(1) == channels_, "BatchNorm2d(", channels_, "): input ", x.str(),
            " must have ", channels_, " channels");
  if (is_training()) num_batches_tracked.data<int64_t>()[0] += 1;
  // Running statistics are cast to the input's dtype when a model runs in f64 (gradient checks).
  return batch_norm(x, weight, bias, running_mean, running_var, is_training(), momentum_, eps_);
}

std::string BatchNorm2d::describe() const { return std::to_string(channels_); }

Linear::Linear(int64_t in, int64_t out, bool has_bias, Generator& gen) : in_(in), out_(out) {
  CXR_CHECK(in > 0 && out > 0, "Linear: features must be > 0, got ", in, "->", out);
  const double bound = 1.0 / std::sqrt(static_cast<double>(in));
  weight = Tensor::empty({out, in});
  init::uniform(weight, gen, bound);
  register_parameter("weight", weight);
  if (has_bias) {
    bias = Tensor::empty({out});
    init::uniform(bias, gen, bound);
    register_parameter("bias", bias);
  }
}

Tensor Linear::forward(const Tensor& x) { return linear(x, weight, bias); }

std::string Linear::describe() const { return std::to_string(in_) + "->" + std::to_string(out_); }

Dropout::Dropout(double p, uint64_t seed) : p_(p), gen_(seed) {
  CXR_CHECK(p >= 0 && p < 1, "Dropout: p = ", p, " must be in [0, 1)");
}

Tensor Dropout::forward(const Tensor& x) { return dropout(x, p_, is_training(), gen_); }

std::string Dropout::describe() const {
  std::ostringstream os;
  os << "p=" << p_;
  return os.str();
}

std::string Activation::type_name() const {
  switch (act_) {
    case cpu::Act::relu: return "ReLU";
    case cpu::Act::leaky_relu: return "LeakyReLU";
    case cpu::Act::relu6: return "ReLU6";
    case cpu::Act::sigmoid: return "Sigmoid";
    case cpu::Act::tanh: return "Tanh";
    case cpu::Act::gelu: return "GELU";
    case cpu::Act::silu: return "SiLU";
  }
  return "Activation";
}

std::string Activation::describe() const {
  if (act_ != cpu::Act::leaky_relu) return "";
  std::ostringstream os;
  os << "slope=" << alpha_;
  return os.str();
}

static std::string pool_desc(const Pool2dOptions& o) {
  std::ostringstream os;
  os << "k=" << o.kernel_h << ", s=" << o.stride_h << ", p=" << o.pad_h;
  return os.str();
}
std::string MaxPool2d::describe() const { return pool_desc(o_); }
std::string AvgPool2d::describe() const { return pool_desc(o_); }

Sequential::Sequential(std::vector<ModulePtr> layers) {
  for (auto& m : layers) push_back(std::move(m));
}

void Sequential::push_back(ModulePtr m) { add_child(std::to_string(children().size()), std::move(m)); }

void Sequential::add(const std::string& name, ModulePtr m) { add_child(name, std::move(m)); }

Tensor Sequential::forward(const Tensor& x) {
  Tensor h = x;
  for (auto& [name, m] : children()) h = m->forward(h);
  return h;
}

Tensor Sequential::forward_capture(const Tensor& x, const std::string& capture, Tensor* captured) {
  CXR_CHECK(find(capture) != nullptr && capture.find('.') == std::string::npos, "forward_capture: no child named '",
            capture, "'");
  Tensor h = x;
  for (auto& [name, m] : children()) {
    h = m->forward(h);
    if (name == capture && captured) *captured = h;
  }
  return h;
}

}  // namespace cxr::nn
