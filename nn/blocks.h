// Composite blocks, written as their papers draw them.
#pragma once

#include "nn/layers.h"

namespace cxr::nn {

// ResNet basic block (He et al. 2016): two 3x3 conv-BN, identity (or 1x1 conv-BN
// projection when the shape changes) added before the final ReLU.
// Children: conv1 bn1 conv2 bn2 [downsample.0 conv, downsample.1 bn] (torchvision names).
class BasicBlock : public Module {
 public:
  static constexpr int64_t kExpansion = 1;
  BasicBlock(int64_t in_channels, int64_t channels, int64_t stride, Generator& gen, bool zero_init_last_bn = true);
  Tensor forward(const Tensor& x) override;
  std::string type_name() const override { return "BasicBlock"; }
  std::string describe() const override;

 private:
  std::shared_ptr<Conv2d> conv1_, conv2_;
  std::shared_ptr<BatchNorm2d> bn1_, bn2_;
  std::shared_ptr<Sequential> downsample_;
  int64_t in_, out_, stride_;
};

// ResNet bottleneck: 1x1 reduce, 3x3 (stride here, as torchvision "v1.5"), 1x1 expand x4.
class Bottleneck : public Module {
 public:
  static constexpr int64_t kExpansion = 4;
  Bottleneck(int64_t in_channels, int64_t channels, int64_t stride, Generator& gen, bool zero_init_last_bn = true);
  Tensor forward(const Tensor& x) override;
  std::string type_name() const override { return "Bottleneck"; }
  std::string describe() const override;

 private:
  std::shared_ptr<Conv2d> conv1_, conv2_, conv3_;
  std::shared_ptr<BatchNorm2d> bn1_, bn2_, bn3_;
  std::shared_ptr<Sequential> downsample_;
  int64_t in_, out_, stride_;
};

// MobileNetV2 inverted residual (Sandler et al. 2018): 1x1 expand + ReLU6 (skipped when
// expand_ratio is 1), 3x3 depthwise + ReLU6, 1x1 linear projection; residual when
// stride is 1 and channels are unchanged. Child "conv" is a Sequential as in torchvision.
class InvertedResidual : public Module {
 public:
  InvertedResidual(int64_t in_channels, int64_t out_channels, int64_t stride, int64_t expand_ratio, Generator& gen);
  Tensor forward(const Tensor& x) override;
  std::string type_name() const override { return "InvertedResidual"; }
  std::string describe() const override;

 private:
  std::shared_ptr<Sequential> conv_;
  bool residual_;
  int64_t in_, out_, stride_, expand_;
};

}  // namespace cxr::nn
