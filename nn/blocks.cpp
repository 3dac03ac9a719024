#include "nn/blocks.h"

namespace cxr::nn {

namespace {
std::shared_ptr<Conv2d> conv(int64_t in, int64_t out, int64_t k, int64_t stride, int64_t pad, Generator& gen,
                             int64_t groups = 1) {
  return std::make_shared<Conv2d>(Conv2dConfig{in, out, k, stride, pad, 1, groups, false}, gen);
}

std::shared_ptr<Sequential> projection(int64_t in, int64_t out, int64_t stride, Generator& gen) {
  auto s = std::make_shared<Sequential>();
  s->push_back(conv(in, out, 1, stride, 0, gen));
  s->push_back(std::make_shared<BatchNorm2d>(out));
  return s;
}

std::string block_desc(int64_t in, int64_t out, int64_t stride) {
  return std::to_string(in) + "->" + std::to_string(out) + ", s=" + std::to_string(stride);
}
}  // namespace

BasicBlock::BasicBlock(int64_t in, int64_t ch, int64_t stride, Generator& gen, bool zero_init_last_bn)
    : in_(in), out_(ch), stride_(stride) {
  conv1_ = register_module("conv1", conv(in, ch, 3, stride, 1, gen));
  bn1_ = register_module("bn1", std::make_shared<BatchNorm2d>(ch));
  conv2_ = register_module("conv2", conv(ch, ch, 3, 1, 1, gen));
  bn2_ = register_module("bn2", std::make_shared<BatchNorm2d>(ch));
  // Zero gamma in the last BN makes each block start as the identity (Goyal et al. 2017).
  if (zero_init_last_bn) bn2_->weight.fill_(0.0);
  if (stride != 1 || in != ch) downsample_ = register_module("downsample", projection(in, ch, stride, gen));
}

Tensor BasicBlock::forward(const Tensor& x) {
  Tensor out = relu(bn1_->forward(conv1_->forward(x)));
  out = bn2_->forward(conv2_->forward(out));
  const Tensor shortcut = downsample_ ? downsample_->forward(x) : x;
  return relu(add(out, shortcut));
}

std::string BasicBlock::describe() const { return block_desc(in_, out_, stride_); }

Bottleneck::Bottleneck(int64_t in, int64_t ch, int64_t stride, Generator& gen, bool zero_init_last_bn)
    : in_(in), out_(ch * kExpansion), stride_(stride) {
  conv1_ = register_module("conv1", conv(in, ch, 1, 1, 0, gen));
  bn1_ = register_module("bn1", std::make_shared<BatchNorm2d>(ch));
  conv2_ = register_module("conv2", conv(ch, ch, 3, stride, 1, gen));
  bn2_ = register_module("bn2", std::make_shared<BatchNorm2d>(ch));
  conv3_ = register_module("conv3", conv(ch, out_, 1, 1, 0, gen));
  bn3_ = register_module("bn3", std::make_shared<BatchNorm2d>(out_));
  if (zero_init_last_bn) bn3_->weight.fill_(0.0);
  if (stride != 1 || in != out_) downsample_ = register_module("downsample", projection(in, out_, stride, gen));
}

Tensor Bottleneck::forward(const Tensor& x) {
  Tensor out = relu(bn1_->forward(conv1_->forward(x)));
  out = relu(bn2_->forward(conv2_->forward(out)));
  out = bn3_->forward(conv3_->forward(out));
  const Tensor shortcut = downsample_ ? downsample_->forward(x) : x;
  return relu(add(out, shortcut));
}

std::string Bottleneck::describe() const { return block_desc(in_, out_, stride_); }

InvertedResidual::InvertedResidual(int64_t in, int64_t out, int64_t stride, int64_t expand_ratio, Generator& gen)
    : in_(in), out_(out), stride_(stride), expand_(expand_ratio) {
  CXR_CHECK(stride == 1 || stride == 2, "InvertedResidual: stride must be 1 or 2, got ", stride);
  CXR_CHECK(expand_ratio >= 1, "InvertedResidual: expand_ratio must be >= 1, got ", expand_ratio);
  residual_ = stride == 1 && in == out;
  const int64_t hidden = in * expand_ratio;
  conv_ = std::make_shared<Sequential>();
  auto conv_bn_relu6 = [&](int64_t cin, int64_t cout, int64_t k, int64_t s, int64_t groups) {
    auto block = std::make_shared<Sequential>();
    block->push_back(conv(cin, cout, k, s, (k - 1) / 2, gen, groups));
    block->push_back(std::make_shared<BatchNorm2d>(cout));
    block->push_back(std::make_shared<Activation>(cpu::Act::relu6));
    return block;
  };
  if (expand_ratio != 1) conv_->push_back(conv_bn_relu6(in, hidden, 1, 1, 1));
  conv_->push_back(conv_bn_relu6(hidden, hidden, 3, stride, hidden));  // depthwise
  conv_->push_back(conv(hidden, out, 1, 1, 0, gen));                  // linear bottleneck
  auto last_bn = std::make_shared<BatchNorm2d>(out);
  if (residual_) last_bn->weight.fill_(0.0);  // start residual blocks as the identity
  conv_->push_back(last_bn);
  register_module("conv", conv_);
}

Tensor InvertedResidual::forward(const Tensor& x) {
  Tensor y = conv_->forward(x);
  return residual_ ? add(x, y) : y;
}

std::string InvertedResidual::describe() const {
  return block_desc(in_, out_, stride_) + ", t=" + std::to_string(expand_);
}

}  // namespace cxr::nn
