// Grad-CAM (Selvaraju et al., 2017): where in the image a convolutional classifier looked
// for its decision. For a chosen layer with feature maps A (K x h x w) and a class score
// y_c (the logit), the map is ReLU(sum_k alpha_k A_k) with alpha_k the spatial mean of
// d y_c / d A_k; it is then normalised to [0, 1] (an all-zero map stays zero) and resized
// bilinearly to the input size.
//
// The layer is a module path of the model (as named_modules() names it, e.g. "layer4" or
// "layer4.1" for a ResNet, "8" for a layer-list model) whose output is a 4-D feature map.
// By default it is the last module whose output is 4-D before the network pools to a
// vector (the last convolutional stage).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "nn/zoo.h"
#include "runtime/tensor.h"

namespace cxr::nn {

struct GradCamResult {
  int64_t target = 0;                // class explained
  std::vector<double> probabilities; // softmax of the logits
  int64_t map_height = 0, map_width = 0;
  std::vector<float> map;            // map_height x map_width, in [0, 1], the layer's resolution
  int64_t height = 0, width = 0;     // the input's size
  std::vector<float> upsampled;      // height x width, in [0, 1]
  int64_t peak_y = 0, peak_x = 0;    // argmax of `upsampled` (first in row-major order on ties)
};

// Paths usable as the layer, in forward order: every module reached through plain
// Sequential containers (not the inside of a block such as a BasicBlock) whose output
// is 4-D, found by running one zero image of the model's input size (eval mode, no
// gradients; the model's training flags are restored).
std::vector<std::string> gradcam_layers(Model& model);

// The default layer's path for this model. Throws ValueError if the model has no module
// with a 4-D output.
std::string default_gradcam_layer(Model& model);

// Grad-CAM for each image of x (N, C, H, W, on the model's device; the model is put in
// eval mode). targets: one class index per image, or -1 (or an empty vector) for the
// predicted class. layer: a module path, "" for default_gradcam_layer. Throws ValueError
// for an unknown layer, one inside a block (see gradcam_layers), one whose output is not
// 4-D, or a target out of range. The model's parameter gradients, their requires_grad and
// the thread's grad mode are left as they were.
std::vector<GradCamResult> grad_cam(Model& model, const Tensor& x, const std::vector<int64_t>& targets = {},
                                    const std::string& layer = "");

}  // namespace cxr::nn
