// Image transforms, seeded augmentation and the per-sample pipeline (data/transforms.h).
//
// Conventions fixed here, beyond the header:
// * Coordinates: pixel (x, y) has its centre at the integer point (x, y); x grows to the
//   right, y grows downwards (image rows).
// * resize, per axis with scale = in / out:
//   - out >= in: bilinear as PyTorch's align_corners=false: src = (o + 0.5) * scale - 0.5,
//     clamped below at 0; taps floor(src) and floor(src) + 1 (clamped to in - 1), the
//     second weighted by src - floor(src).
//   - out < in: exact area average: output o is the mean of the input interval
//     [o * scale, (o + 1) * scale), where input pixel i covers [i, i + 1); partly covered
//     pixels get their covered fraction as weight. Overlaps are computed in integers
//     (units of 1/out) so weights such as 1/2 for a factor of 2 are exact.
//   Weight tables are built once per call. When the height shrinks or stays, each output
//   row combines its input rows first and then takes the horizontal pass; when it grows,
//   every input row takes the horizontal pass first. (Float rounding follows that order.)
// * center_crop puts the window at top = (H - h) / 2, left = (W - w) / 2, rounded down.
// * rotate(img, deg): a positive angle turns the picture counter-clockwise as displayed
//   (y down), about c = ((w - 1) / 2, (h - 1) / 2). Output pixel p samples the input at
//     sx = cx + cos(a) * (px - cx) - sin(a) * (py - cy)
//     sy = cy + sin(a) * (px - cx) + cos(a) * (py - cy)
//   bilinearly, the input extended by `fill` outside (so a sample within one pixel of the
//   border blends with the fill). Multiples of 90 degrees use exact sines and cosines.
// * Augmentation affine: forward map p' = c + s * R(a) * (p - c) + t, with R the same
//   counter-clockwise rotation, s the zoom (s > 1 enlarges the content) and t = (tx, ty)
//   in pixels (positive tx moves content right, positive ty moves it down); one
//   inverse-mapped bilinear warp with fill 0.
// * Contrast blends every channel with the mean luma of the whole image (the plain mean
//   for one channel; BT.601 weights for three), computed in double.
// * Brightness and contrast (when either is on) end with a clamp to [0, 1]. Noise is
//   added after that clamp and the result is clamped to [0, 1] again, so augmented
//   images keep the Image contract (the geometric steps cannot leave [0, 1]).
//
// Random numbers. Every draw is one 32-bit lane of
//   philox4x32(key = seed ^ 0x9E3779B97F4A7C15,
//              counter_lo = uint64(index),
//              counter_hi = (uint64(epoch) << 32) | block)
// where draw number j uses block j / 4, lane j % 4 (epoch is taken modulo 2^32). Each
// step owns fixed draw numbers, so switching one option on or off never changes another
// step's draws:
//   random_resized_crop  0..19 (attempt k: area 2k, log-aspect 2k+1), 20 top, 21 left
//   affine               32 angle, 33 shift x, 34 shift y, 35 zoom
//   flips                36 hflip, 37 vflip (flip when the uniform is < 0.5)
//   photometric          40 brightness, 41 contrast
//   random erasing       48 apply?, 49 top, 50 left, 52..71 (attempt k: area 52+2k,
//                        log-aspect 53+2k)
//   Gaussian noise       element i (flat CHW index) uses block 2^31 + i / 4: lanes
//                        (0, 1) and (2, 3) each give two normals by Box-Muller
//                        (u1 in (0, 1] from the first lane, u2 in [0, 1) from the second;
//                        z = sqrt(-2 ln u1) * {cos, sin}(2 pi u2)).
#include "data/transforms.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/cpu/scratch.h"
#include "runtime/rng.h"

namespace cxr::data {
namespace {

void check_image(const Image& img, const char* op) {
  CXR_CHECK(img.channels > 0 && img.height > 0 && img.width > 0 &&
                img.data.size() == static_cast<size_t>(img.channels) * img.height * img.width,
            op, ": invalid image (", img.channels, " x ", img.height, " x ", img.width, " with ",
            img.data.size(), " values)");
}

void check_size(int height, int width, const char* op) {
  CXR_CHECK(height > 0 && width > 0, op, ": output size must be positive, got ", height, " x ", width);
}

// ---------------------------------------------------------------- resize

// One axis of a separable resize: output o = sum_k w[o * taps + k] * in[first[o] + k].
// Windows are shifted (with zero weights) so first[o] + taps - 1 < in always.
struct AxisTable {
  bool identity = false;
  int taps = 0;
  std::vector<int> first;
  std::vector<float> w;
};

AxisTable make_axis_table(int in, int out) {
  AxisTable t;
  if (in == out) {
    t.identity = true;
    return t;
  }
  t.first.resize(out);
  if (out > in) {  // bilinear, align_corners = false
    t.taps = in == 1 ? 1 : 2;
    t.w.assign(static_cast<size_t>(out) * t.taps, 0.0f);
    const double scale = static_cast<double>(in) / out;
    for (int o = 0; o < out; ++o) {
      if (t.taps == 1) {
        t.first[o] = 0;
        t.w[o] = 1.0f;
        continue;
      }
      const double src = std::max((o + 0.5) * scale - 0.5, 0.0);
      int i0 = static_cast<int>(src);
      double lambda = src - i0;
      if (i0 >= in - 1) {  // clamped at the last pixel: weight 1 on it
        i0 = in - 1;
        lambda = 0.0;
      }
      if (i0 == in - 1) {
        t.first[o] = in - 2;
        t.w[2 * o + 1] = 1.0f;
      } else {
        t.first[o] = i0;
        t.w[2 * o] = static_cast<float>(1.0 - lambda);
        t.w[2 * o + 1] = static_cast<float>(lambda);
      }
    }
    return t;
  }
  // Area average. In units of 1/out, output o spans [o * in, (o + 1) * in) and input
  // pixel i spans [i * out, (i + 1) * out).
  const int64_t in64 = in, out64 = out;
  int taps = 0;
  for (int o = 0; o < out; ++o) {
    const int64_t lo = o * in64, hi = (o + 1) * in64;
    const int i0 = static_cast<int>(lo / out64), i1 = static_cast<int>((hi - 1) / out64);
    taps = std::max(taps, i1 - i0 + 1);
  }
  t.taps = taps;
  t.w.assign(static_cast<size_t>(out) * taps, 0.0f);
  for (int o = 0; o < out; ++o) {
    const int64_t lo = o * in64, hi = (o + 1) * in64;
    const int i0 = static_cast<int>(lo / out64), i1 = static_cast<int>((hi - 1) / out64);
    const int first = std::min(i0, in - taps);
    t.first[o] = first;
    for (int i = i0; i <= i1; ++i) {
      const int64_t overlap = std::min(hi, (i + 1) * out64) - std::max(lo, i * out64);
      t.w[static_cast<size_t>(o) * taps + (i - first)] = static_cast<float>(static_cast<double>(overlap) / in64);
    }
  }
  return t;
}

// Horizontal pass over one row of `in` floats into `out = table size` floats. With
// Mirror the row is read reversed (input i is src[in - 1 - i]) with the same weights in
// the same order, so the result equals resizing a flipped row bit for bit. T > 0 fixes the
// tap count at compile time; T == 0 reads it from `taps`.
template <int T, bool Mirror>
void hpass_fixed(const float* src, int in, float* dst, int out, const int* first, const float* w, int taps) {
  const int n = T > 0 ? T : taps;
  for (int o = 0; o < out; ++o) {
    const float* wt = w + static_cast<size_t>(o) * n;
    float acc;
    if constexpr (Mirror) {
      const float* s = src + (in - 1 - first[o]);
      acc = wt[0] * s[0];
      for (int k = 1; k < n; ++k) acc += wt[k] * s[-k];
    } else {
      const float* s = src + first[o];
      acc = wt[0] * s[0];
      for (int k = 1; k < n; ++k) acc += wt[k] * s[k];
    }
    dst[o] = acc;
  }
}

template <bool Mirror>
void hpass_taps(const float* src, int in, float* dst, const AxisTable& t) {
  const int out = static_cast<int>(t.first.size());
  const int* first = t.first.data();
  const float* w = t.w.data();
  switch (t.taps) {
    case 1: return hpass_fixed<1, Mirror>(src, in, dst, out, first, w, 1);
    case 2: return hpass_fixed<2, Mirror>(src, in, dst, out, first, w, 2);
    case 3: return hpass_fixed<3, Mirror>(src, in, dst, out, first, w, 3);
    case 4: return hpass_fixed<4, Mirror>(src, in, dst, out, first, w, 4);
    case 5: return hpass_fixed<5, Mirror>(src, in, dst, out, first, w, 5);
    case 6: return hpass_fixed<6, Mirror>(src, in, dst, out, first, w, 6);
    case 7: return hpass_fixed<7, Mirror>(src, in, dst, out, first, w, 7);
    case 8: return hpass_fixed<8, Mirror>(src, in, dst, out, first, w, 8);
    default: return hpass_fixed<0, Mirror>(src, in, dst, out, first, w, t.taps);
  }
}

// Horizontal pass over one row of `in` floats (identity tables copy), mirrored on request.
void hpass(const float* src, int in, float* dst, const AxisTable& t, bool mirror) {
  if (t.identity) {
    if (mirror) std::reverse_copy(src, src + in, dst);
    else std::memcpy(dst, src, sizeof(float) * in);
    return;
  }
  if (mirror) hpass_taps<true>(src, in, dst, t);
  else hpass_taps<false>(src, in, dst, t);
}

// Vertical combination for output row o: dst = sum_k w_k * row(first + k), rows of `n`
// floats, `row(i)` giving input row i. Zero weights are skipped (they come from window
// shifts).
template <class RowAt>
void vpass_row(RowAt row, int n, float* dst, const AxisTable& t, int o) {
  const float* wt = t.w.data() + static_cast<size_t>(o) * t.taps;
  bool started = false;
  for (int k = 0; k < t.taps; ++k) {
    const float wk = wt[k];
    if (wk == 0.0f) continue;
    const float* __restrict s = row(t.first[o] + k);
    float* __restrict d = dst;
    if (!started) {
      for (int x = 0; x < n; ++x) d[x] = wk * s[x];
      started = true;
    } else {
      for (int x = 0; x < n; ++x) d[x] += wk * s[x];
    }
  }
  if (!started) std::fill(dst, dst + n, 0.0f);
}

// Per-channel normalization applied to each finished output row.
struct Norm {
  std::vector<float> mean, stddev;  // one per channel
};

inline void finish_row(float* row, int n, const Norm* norm, int c) {
  if (!norm) return;
  const float m = norm->mean[c], s = norm->stddev[c];
  for (int i = 0; i < n; ++i) row[i] = (row[i] - m) / s;
}

// Resizes `img` into `out` (channels * oh * ow floats), normalizing each output row
// while it is in cache when `norm` is given. flip_h / flip_v resize the mirrored image
// (bit-identical to flipping first) by reading the input reversed.
//
// Order of the passes: when the height shrinks (or stays), each output row first
// combines its input rows at full width (contiguous, vectorized) and then takes one
// horizontal pass, so the horizontal pass runs over oh rows instead of ih and no
// intermediate plane exists. When the height grows, every input row takes its horizontal
// pass first (into an ih x ow plane) and output rows combine those.
void resize_into(const Image& img, int oh, int ow, float* out, const Norm* norm, bool flip_h = false,
                 bool flip_v = false) {
  const int ih = img.height, iw = img.width;
  const AxisTable tx = make_axis_table(iw, ow), ty = make_axis_table(ih, oh);
  const size_t out_plane = static_cast<size_t>(oh) * ow;
  const bool rows_first = !ty.identity && oh <= ih;
  const bool direct = tx.identity && !flip_h;  // a horizontal pass would be a plain copy
  float* tmp = nullptr;  // one row of iw (rows first) or the ih x ow plane
  if (!ty.identity && !direct)
    tmp = cpu::thread_scratch(cpu::kScratchResize, rows_first ? static_cast<size_t>(iw) : static_cast<size_t>(ih) * ow);
  for (int c = 0; c < img.channels; ++c) {
    const float* src = img.plane(c);
    const auto in_row = [&](int y) { return src + static_cast<size_t>(flip_v ? ih - 1 - y : y) * iw; };
    float* dst = out + c * out_plane;
    if (ty.identity) {
      for (int y = 0; y < oh; ++y) {
        float* row = dst + static_cast<size_t>(y) * ow;
        hpass(in_row(y), iw, row, tx, flip_h);
        finish_row(row, ow, norm, c);
      }
    } else if (rows_first) {
      for (int y = 0; y < oh; ++y) {
        float* row = dst + static_cast<size_t>(y) * ow;
        if (direct) {
          vpass_row(in_row, iw, row, ty, y);
        } else {
          vpass_row(in_row, iw, tmp, ty, y);
          hpass(tmp, iw, row, tx, flip_h);
        }
        finish_row(row, ow, norm, c);
      }
    } else {
      const auto tmp_row = [&](int y) { return tmp + static_cast<size_t>(y) * ow; };
      if (!direct)
        for (int y = 0; y < ih; ++y) hpass(in_row(y), iw, tmp + static_cast<size_t>(y) * ow, tx, flip_h);
      for (int y = 0; y < oh; ++y) {
        float* row = dst + static_cast<size_t>(y) * ow;
        if (direct) vpass_row(in_row, ow, row, ty, y);
        else vpass_row(tmp_row, ow, row, ty, y);
        finish_row(row, ow, norm, c);
      }
    }
  }
}

Norm make_norm(const std::vector<float>& mean, const std::vector<float>& stddev, int channels, const char* op) {
  CXR_CHECK(mean.size() == 1 || mean.size() == static_cast<size_t>(channels), op, ": mean has ", mean.size(),
            " values, expected 1 or ", channels, " (the channel count)");
  CXR_CHECK(stddev.size() == 1 || stddev.size() == static_cast<size_t>(channels), op, ": std has ",
            stddev.size(), " values, expected 1 or ", channels, " (the channel count)");
  Norm n;
  for (int c = 0; c < channels; ++c) {
    const float m = mean.size() == 1 ? mean[0] : mean[c];
    const float s = stddev.size() == 1 ? stddev[0] : stddev[c];
    CXR_CHECK(std::isfinite(m), op, ": mean[", c, "] = ", m, " is not finite");
    CXR_CHECK(s > 0.0f && std::isfinite(s), op, ": std[", c, "] = ", s, ", expected a finite value > 0");
    n.mean.push_back(m);
    n.stddev.push_back(s);
  }
  return n;
}

// ---------------------------------------------------------------- warps

// Inverse map of an affine warp about the centre c: output p samples the input at
//   s = c + M * (p - c - t),  M = [[a, b], [d, e]].
struct InverseAffine {
  double a = 1, b = 0, d = 0, e = 1;
  double tx = 0, ty = 0;
};

// cos and sin of `degrees`, exact for multiples of 90.
void cos_sin_degrees(double degrees, double& cs, double& sn) {
  double r = std::fmod(degrees, 360.0);
  if (r < 0) r += 360.0;
  if (r == 0.0) { cs = 1; sn = 0; return; }
  if (r == 90.0) { cs = 0; sn = 1; return; }
  if (r == 180.0) { cs = -1; sn = 0; return; }
  if (r == 270.0) { cs = 0; sn = -1; return; }
  const double rad = r * (3.14159265358979323846 / 180.0);
  cs = std::cos(rad);
  sn = std::sin(rad);
}

// Bilinear warp, same size as the input, outside extended by `fill`.
Image warp_affine(const Image& img, const InverseAffine& m, float fill) {
  const int C = img.channels, H = img.height, W = img.width;
  Image out(C, H, W);
  const size_t plane = img.plane_size();
  const double cx = (W - 1) * 0.5, cy = (H - 1) * 0.5;
  for (int y = 0; y < H; ++y) {
    const double dy = y - cy - m.ty;
    for (int x = 0; x < W; ++x) {
      const double dx = x - cx - m.tx;
      const double sx = cx + m.a * dx + m.b * dy;
      const double sy = cy + m.d * dx + m.e * dy;
      const size_t o = static_cast<size_t>(y) * W + x;
      if (!(sx > -1.0 && sx < W && sy > -1.0 && sy < H)) {
        for (int c = 0; c < C; ++c) out.data[c * plane + o] = fill;
        continue;
      }
      const double fx0 = std::floor(sx), fy0 = std::floor(sy);
      const int x0 = static_cast<int>(fx0), y0 = static_cast<int>(fy0);
      const float fx = static_cast<float>(sx - fx0), fy = static_cast<float>(sy - fy0);
      const bool inside = x0 >= 0 && y0 >= 0 && x0 + 1 < W && y0 + 1 < H;
      for (int c = 0; c < C; ++c) {
        const float* p = img.plane(c);
        float v00, v01, v10, v11;
        if (inside) {
          const float* r0 = p + static_cast<size_t>(y0) * W + x0;
          v00 = r0[0]; v01 = r0[1]; v10 = r0[W]; v11 = r0[W + 1];
        } else {
          auto at = [&](int yy, int xx) {
            return (xx >= 0 && xx < W && yy >= 0 && yy < H) ? p[static_cast<size_t>(yy) * W + xx] : fill;
          };
          v00 = at(y0, x0); v01 = at(y0, x0 + 1); v10 = at(y0 + 1, x0); v11 = at(y0 + 1, x0 + 1);
        }
        const float top = (1.0f - fx) * v00 + fx * v01;
        const float bottom = (1.0f - fx) * v10 + fx * v11;
        out.data[c * plane + o] = (1.0f - fy) * top + fy * bottom;
      }
    }
  }
  return out;
}

void hflip_inplace(Image& img) {
  for (int c = 0; c < img.channels; ++c)
    for (int y = 0; y < img.height; ++y) {
      float* row = img.plane(c) + static_cast<size_t>(y) * img.width;
      std::reverse(row, row + img.width);
    }
}

void vflip_inplace(Image& img) {
  const int W = img.width;
  for (int c = 0; c < img.channels; ++c) {
    float* p = img.plane(c);
    for (int y = 0, z = img.height - 1; y < z; ++y, --z)
      std::swap_ranges(p + static_cast<size_t>(y) * W, p + static_cast<size_t>(y + 1) * W, p + static_cast<size_t>(z) * W);
  }
}

// ---------------------------------------------------------------- randomness

constexpr uint64_t kAugmentKeyMix = 0x9E3779B97F4A7C15ull;
constexpr uint64_t kNoiseBlockBase = uint64_t{1} << 31;

struct Draws {
  uint64_t key, lo, hi;
  explicit Draws(const SampleRng& r)
      : key(r.seed ^ kAugmentKeyMix),
        lo(static_cast<uint64_t>(r.index)),
        hi(static_cast<uint64_t>(r.epoch) << 32) {}
  PhiloxBlock block(uint64_t b) const { return philox4x32(key, lo, hi | b); }
  uint32_t bits(int j) const { return block(static_cast<uint64_t>(j) >> 2).v[j & 3]; }
  // Uniform in [0, 1) with 32 bits of resolution.
  double uniform(int j) const { return bits(j) * (1.0 / 4294967296.0); }
  double uniform(int j, double lo_v, double hi_v) const { return lo_v + (hi_v - lo_v) * uniform(j); }
  // Integer uniform in [0, n).
  int below(int j, int n) const { return std::min(static_cast<int>(uniform(j) * n), n - 1); }
};

enum DrawIndex : int {
  kCropAttempts = 0, kCropTop = 20, kCropLeft = 21,
  kAngle = 32, kShiftX = 33, kShiftY = 34, kZoom = 35,
  kHflip = 36, kVflip = 37,
  kBrightness = 40, kContrast = 41,
  kErase = 48, kEraseTop = 49, kEraseLeft = 50, kEraseAttempts = 52,
};
constexpr int kAttempts = 10;

// Whether a sample is flipped (each asked-for flip with probability 1/2).
struct Flips {
  bool h = false, v = false;
};
Flips draw_flips(const AugmentOptions& o, const Draws& d) {
  return {o.hflip && d.uniform(kHflip) < 0.5, o.vflip && d.uniform(kVflip) < 0.5};
}

// torchvision's RandomResizedCrop sampling: area fraction in [scale_min, 1], aspect
// log-uniform in [3/4, 4/3]; after 10 misses, the largest centred crop with the aspect
// clamped to that range.
Image random_resized_crop(const Image& img, double scale_min, const Draws& d) {
  const int H = img.height, W = img.width;
  const double area = static_cast<double>(H) * W;
  const double log_lo = std::log(3.0 / 4.0), log_hi = std::log(4.0 / 3.0);
  for (int k = 0; k < kAttempts; ++k) {
    const double target = area * d.uniform(kCropAttempts + 2 * k, scale_min, 1.0);
    const double ratio = std::exp(d.uniform(kCropAttempts + 2 * k + 1, log_lo, log_hi));
    const int w = static_cast<int>(std::lround(std::sqrt(target * ratio)));
    const int h = static_cast<int>(std::lround(std::sqrt(target / ratio)));
    if (w > 0 && h > 0 && w <= W && h <= H)
      return crop(img, d.below(kCropTop, H - h + 1), d.below(kCropLeft, W - w + 1), h, w);
  }
  const double in_ratio = static_cast<double>(W) / H;
  int w = W, h = H;
  if (in_ratio < 3.0 / 4.0) h = std::min(H, static_cast<int>(std::lround(W / (3.0 / 4.0))));
  else if (in_ratio > 4.0 / 3.0) w = std::min(W, static_cast<int>(std::lround(H * (4.0 / 3.0))));
  return crop(img, (H - h) / 2, (W - w) / 2, h, w);
}

// torchvision's RandomErasing rectangle: area fraction in [0.02, area_max], aspect
// log-uniform in [0.3, 1/0.3], up to 10 attempts to fit strictly inside; filled with 0.
void random_erase(Image& img, double area_max, const Draws& d) {
  const int H = img.height, W = img.width;
  const double area = static_cast<double>(H) * W;
  const double log_lo = std::log(0.3), log_hi = std::log(1.0 / 0.3);
  for (int k = 0; k < kAttempts; ++k) {
    const double target = area * d.uniform(kEraseAttempts + 2 * k, 0.02, area_max);
    const double ratio = std::exp(d.uniform(kEraseAttempts + 2 * k + 1, log_lo, log_hi));
    const int h = static_cast<int>(std::lround(std::sqrt(target * ratio)));
    const int w = static_cast<int>(std::lround(std::sqrt(target / ratio)));
    if (h <= 0 || w <= 0 || h >= H || w >= W) continue;
    const int top = d.below(kEraseTop, H - h + 1), left = d.below(kEraseLeft, W - w + 1);
    for (int c = 0; c < img.channels; ++c)
      for (int y = top; y < top + h; ++y) {
        float* row = img.plane(c) + static_cast<size_t>(y) * W + left;
        std::fill(row, row + w, 0.0f);
      }
    return;
  }
}

void add_noise(Image& img, double stddev, const Draws& d) {
  const float s = static_cast<float>(stddev);
  const float two_pi = 6.28318530717958647692f;
  const size_t n = img.data.size();
  float* p = img.data.data();
  for (size_t base = 0; base < n; base += 4) {
    const PhiloxBlock b = d.block(kNoiseBlockBase + base / 4);
    float z[4];
    for (int pair = 0; pair < 2; ++pair) {
      const float u1 = static_cast<float>(bits_to_uniform_open(b.v[2 * pair]));
      const float u2 = bits_to_uniform(b.v[2 * pair + 1]);
      const float r = std::sqrt(-2.0f * std::log(u1));
      z[2 * pair] = r * std::cos(two_pi * u2);
      z[2 * pair + 1] = r * std::sin(two_pi * u2);
    }
    const size_t m = std::min<size_t>(4, n - base);
    for (size_t k = 0; k < m; ++k) p[base + k] = std::clamp(p[base + k] + s * z[k], 0.0f, 1.0f);
  }
}

double mean_luma(const Image& img) {
  const size_t n = img.plane_size();
  double sum = 0;
  if (img.channels == 3) {
    const float *r = img.plane(0), *g = img.plane(1), *b = img.plane(2);
    for (size_t i = 0; i < n; ++i) sum += 0.299 * r[i] + 0.587 * g[i] + 0.114 * b[i];
    return sum / n;
  }
  for (float v : img.data) sum += v;
  return sum / img.data.size();
}

void check_range(double v, double lo, double hi, bool lo_open, bool hi_open, const char* field) {
  const bool ok = (lo_open ? v > lo : v >= lo) && (hi_open ? v < hi : v <= hi);
  CXR_CHECK(ok, "AugmentOptions.", field, " = ", v, ": expected ", lo, lo_open ? " < " : " <= ", field,
            hi_open ? " < " : " <= ", hi);
}

}  // namespace

// ---------------------------------------------------------------- deterministic transforms

Image resize(const Image& img, int height, int width) {
  check_image(img, "resize");
  check_size(height, width, "resize");
  if (height == img.height && width == img.width) return img;
  Image out(img.channels, height, width);
  resize_into(img, height, width, out.data.data(), nullptr);
  return out;
}

Image center_crop(const Image& img, int height, int width) {
  check_image(img, "center_crop");
  check_size(height, width, "center_crop");
  CXR_CHECK(height <= img.height && width <= img.width, "center_crop: window ", height, " x ", width,
            " is larger than the image ", img.height, " x ", img.width);
  return crop(img, (img.height - height) / 2, (img.width - width) / 2, height, width);
}

Image crop(const Image& img, int top, int left, int height, int width, float fill) {
  check_image(img, "crop");
  check_size(height, width, "crop");
  Image out(img.channels, height, width, fill);
  // Rows and columns of the window that lie inside the image.
  const int64_t y0 = std::max<int64_t>(0, top), y1 = std::min<int64_t>(img.height, int64_t{top} + height);
  const int64_t x0 = std::max<int64_t>(0, left), x1 = std::min<int64_t>(img.width, int64_t{left} + width);
  if (y0 >= y1 || x0 >= x1) return out;
  for (int c = 0; c < img.channels; ++c)
    for (int64_t y = y0; y < y1; ++y) {
      const float* s = img.plane(c) + y * img.width + x0;
      float* d = out.plane(c) + (y - top) * width + (x0 - left);
      std::memcpy(d, s, sizeof(float) * (x1 - x0));
    }
  return out;
}

Image pad(const Image& img, int top, int bottom, int left, int right, float fill) {
  check_image(img, "pad");
  CXR_CHECK(top >= 0 && bottom >= 0 && left >= 0 && right >= 0, "pad: amounts must be >= 0, got top ", top,
            " bottom ", bottom, " left ", left, " right ", right);
  return crop(img, -top, -left, img.height + top + bottom, img.width + left + right, fill);
}

Image convert_channels(const Image& img, int channels) {
  check_image(img, "convert_channels");
  CXR_CHECK(channels == 1 || channels == 3, "convert_channels: channels must be 1 or 3, got ", channels);
  CXR_CHECK(img.channels == 1 || img.channels == 3, "convert_channels: image has ", img.channels,
            " channels, expected 1 or 3");
  if (img.channels == channels) return img;
  const size_t n = img.plane_size();
  if (channels == 3) {
    Image out(3, img.height, img.width);
    for (int c = 0; c < 3; ++c) std::memcpy(out.plane(c), img.plane(0), sizeof(float) * n);
    return out;
  }
  Image out(1, img.height, img.width);
  const float *r = img.plane(0), *g = img.plane(1), *b = img.plane(2);
  float* d = out.plane(0);
  for (size_t i = 0; i < n; ++i) d[i] = 0.299f * r[i] + 0.587f * g[i] + 0.114f * b[i];
  return out;
}

Image hflip(const Image& img) {
  check_image(img, "hflip");
  Image out = img;
  hflip_inplace(out);
  return out;
}

Image vflip(const Image& img) {
  check_image(img, "vflip");
  Image out = img;
  vflip_inplace(out);
  return out;
}

Image rotate(const Image& img, double degrees, float fill) {
  check_image(img, "rotate");
  CXR_CHECK(std::isfinite(degrees), "rotate: angle must be finite, got ", degrees);
  double cs, sn;
  cos_sin_degrees(degrees, cs, sn);
  if (cs == 1.0) return img;
  InverseAffine m;
  m.a = cs; m.b = -sn; m.d = sn; m.e = cs;
  return warp_affine(img, m, fill);
}

void normalize(Image& img, const std::vector<float>& mean, const std::vector<float>& stddev) {
  check_image(img, "normalize");
  const Norm n = make_norm(mean, stddev, img.channels, "normalize");
  for (int c = 0; c < img.channels; ++c) finish_row(img.plane(c), static_cast<int>(img.plane_size()), &n, c);
}

// ---------------------------------------------------------------- augmentation

void AugmentOptions::validate() const {
  check_range(rotation, 0, 180, false, false, "rotation");
  check_range(shift_x, 0, 1, false, true, "shift_x");
  check_range(shift_y, 0, 1, false, true, "shift_y");
  check_range(zoom, 0, 1, false, true, "zoom");
  check_range(crop_scale_min, 0, 1, true, false, "crop_scale_min");
  check_range(brightness, 0, 1, false, false, "brightness");
  check_range(contrast, 0, 1, false, false, "contrast");
  CXR_CHECK(noise_std >= 0 && std::isfinite(noise_std), "AugmentOptions.noise_std = ", noise_std,
            ": expected a finite value >= 0");
  check_range(erase_prob, 0, 1, false, false, "erase_prob");
  check_range(erase_area_max, 0.02, 1, false, false, "erase_area_max");
}

bool AugmentOptions::any() const {
  return rotation > 0 || shift_x > 0 || shift_y > 0 || zoom > 0 || random_resized_crop || hflip || vflip ||
         brightness > 0 || contrast > 0 || noise_std > 0 || erase_prob > 0;
}

Image augment(const Image& img, const AugmentOptions& opts, const SampleRng& rng) {
  check_image(img, "augment");
  opts.validate();
  const Draws d(rng);
  // `cur` owns the working image once a step has produced one; until then the input is
  // read in place, so the first geometric step copies nothing extra.
  Image cur;
  const Image* src = &img;
  if (opts.random_resized_crop) {
    cur = random_resized_crop(img, opts.crop_scale_min, d);
    src = &cur;
  }
  if (opts.rotation > 0 || opts.shift_x > 0 || opts.shift_y > 0 || opts.zoom > 0) {
    const double angle = d.uniform(kAngle, -opts.rotation, opts.rotation);
    const double tx = d.uniform(kShiftX, -opts.shift_x, opts.shift_x) * src->width;
    const double ty = d.uniform(kShiftY, -opts.shift_y, opts.shift_y) * src->height;
    const double s = d.uniform(kZoom, 1.0 - opts.zoom, 1.0 + opts.zoom);
    double cs, sn;
    cos_sin_degrees(angle, cs, sn);
    InverseAffine m;  // (1/s) R(-angle)
    m.a = cs / s; m.b = -sn / s; m.d = sn / s; m.e = cs / s;
    m.tx = tx; m.ty = ty;
    Image warped = warp_affine(*src, m, 0.0f);
    cur = std::move(warped);
    src = &cur;
  }
  if (src != &cur) cur = img;
  const Flips f = draw_flips(opts, d);
  if (f.h) hflip_inplace(cur);
  if (f.v) vflip_inplace(cur);

  if (opts.brightness > 0 || opts.contrast > 0) {
    if (opts.brightness > 0) {
      const float f = static_cast<float>(d.uniform(kBrightness, 1.0 - opts.brightness, 1.0 + opts.brightness));
      for (float& v : cur.data) v *= f;
    }
    if (opts.contrast > 0) {
      const float f = static_cast<float>(d.uniform(kContrast, 1.0 - opts.contrast, 1.0 + opts.contrast));
      const float mean = static_cast<float>(mean_luma(cur));
      for (float& v : cur.data) v = (v - mean) * f + mean;
    }
    for (float& v : cur.data) v = std::clamp(v, 0.0f, 1.0f);
  }
  if (opts.noise_std > 0) add_noise(cur, opts.noise_std, d);
  if (opts.erase_prob > 0 && d.uniform(kErase) < opts.erase_prob) random_erase(cur, opts.erase_area_max, d);
  return cur;
}

// ---------------------------------------------------------------- pipeline

void Pipeline::validate() const {
  CXR_CHECK(height > 0 && width > 0, "Pipeline: output size must be positive, got ", height, " x ", width);
  CXR_CHECK(channels == 1 || channels == 3, "Pipeline: channels must be 1 or 3, got ", channels);
  make_norm(mean, stddev, channels, "Pipeline");
  augment.validate();
}

void run_pipeline(const Image& decoded, const Pipeline& p, bool train, const SampleRng& rng, float* out) {
  check_image(decoded, "run_pipeline");
  CXR_CHECK(out != nullptr, "run_pipeline: output pointer is null");
  p.validate();
  const Norm norm = make_norm(p.mean, p.stddev, p.channels, "Pipeline");
  // Only the steps that change the image make a new one; the final resize reads the
  // latest image and writes normalized rows straight into `out`.
  const Image* cur = &decoded;
  Image converted, augmented;
  if (decoded.channels != p.channels) {
    converted = convert_channels(decoded, p.channels);
    cur = &converted;
  }
  bool flip_h = false, flip_v = false;
  if (train && p.augment.any()) {
    AugmentOptions rest = p.augment;
    rest.hflip = rest.vflip = false;
    if (rest.any()) {
      augmented = augment(*cur, p.augment, rng);
      cur = &augmented;
    } else {
      // Flips alone: the resize reads the image mirrored (bit-identical to flipping a copy
      // first, with the same draws as augment), so the decoded image is not copied.
      const Flips f = draw_flips(p.augment, Draws(rng));
      flip_h = f.h;
      flip_v = f.v;
    }
  }
  resize_into(*cur, p.height, p.width, out, &norm, flip_h, flip_v);
}

}  // namespace cxr::data
