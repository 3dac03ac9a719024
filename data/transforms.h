// Image transforms and seeded augmentation (planar float Images, see data/image.h).
//
// Geometry: pixel centres at integer coordinates; resizing maps centres the way
// PyTorch's align_corners=false does. Resize is bilinear when enlarging and an exact area
// average when shrinking (each output pixel the mean of the input area it covers), per
// axis.
//
// Augmentation randomness comes from (seed, epoch, sample index) only, through the
// counter-based Philox generator: a sample gets the same augmentation whichever worker
// thread processes it and however many there are.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "data/image.h"

namespace cxr::data {

// ---- deterministic transforms ----
Image resize(const Image& img, int height, int width);
// Central height x width window (the image must be at least that large).
Image center_crop(const Image& img, int height, int width);
// Crop of the window (top, left, height, width); the window may extend outside the
// image, where it is filled with `fill`.
Image crop(const Image& img, int top, int left, int height, int width, float fill = 0.0f);
Image pad(const Image& img, int top, int bottom, int left, int right, float fill = 0.0f);
// 1 -> 3 replicates; 3 -> 1 uses BT.601 luma; same count returns a copy.
Image convert_channels(const Image& img, int channels);
Image hflip(const Image& img);
Image vflip(const Image& img);
// Rotation by `degrees` (counter-clockwise) about the centre, bilinear, same size,
// outside filled with `fill`.
Image rotate(const Image& img, double degrees, float fill = 0.0f);
// x = (x - mean[c]) / std[c]; mean/std of size 1 apply to every channel.
void normalize(Image& img, const std::vector<float>& mean, const std::vector<float>& stddev);

// ---- augmentation ----
struct AugmentOptions {
  double rotation = 0;       // degrees: angle uniform in [-rotation, rotation]
  double shift_x = 0;        // fraction of the width: shift uniform in [-shift_x, shift_x]
  double shift_y = 0;        // fraction of the height
  double zoom = 0;           // scale uniform in [1 - zoom, 1 + zoom]
  bool random_resized_crop = false;  // crop of area fraction in [crop_scale_min, 1] and
  double crop_scale_min = 0.08;      // aspect in [3/4, 4/3] (log-uniform), resized to the output
  bool hflip = false;        // with probability 0.5
  bool vflip = false;        // with probability 0.5
  double brightness = 0;     // 0 <= r <= 1: values times a factor uniform in [1 - r, 1 + r]
  double contrast = 0;       // 0 <= r <= 1: factor uniform in [1 - r, 1 + r] about the mean
  double noise_std = 0;      // Gaussian noise of this standard deviation (in [0, 1] units)
  double erase_prob = 0;     // random erasing: probability of blanking one rectangle of
  double erase_area_max = 0.2;  // up to this area fraction (and at least 0.02)

  // Throws ValueError naming the field for any value out of range.
  void validate() const;
  bool any() const;
};

// Per-sample random stream: the same (seed, epoch, index) always gives the same draws.
struct SampleRng {
  uint64_t seed = 0;
  int64_t epoch = 0, index = 0;
};

// Geometric and photometric augmentation of one sample (output the same size as the
// input except random_resized_crop, which the pipeline resizes afterwards).
Image augment(const Image& img, const AugmentOptions& opts, const SampleRng& rng);

// Everything between a decoded file and the model's input tensor for one sample:
// channels -> [train: augment] -> resize to (height, width) -> normalize. `out` receives
// channels * height * width floats (planar, the NCHW slice of one sample).
struct Pipeline {
  int channels = 1;
  int height = 224, width = 224;
  std::vector<float> mean{0.5f}, stddev{0.25f};
  AugmentOptions augment;  // used only when `train`
  void validate() const;
};
void run_pipeline(const Image& decoded, const Pipeline& p, bool train, const SampleRng& rng, float* out);

}  // namespace cxr::data
