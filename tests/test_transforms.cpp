// data/transforms: resize (bilinear up, exact area down), crops, pads, channel
// conversion, flips, rotation, normalization, seeded augmentation, the per-sample
// pipeline, argument validation, and reproducibility across thread counts.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <thread>
#include <vector>

#include "data/transforms.h"
#include "expect_error.h"
#include "runtime/rng.h"
#include "runtime/thread_pool.h"

namespace cxr::data {
namespace {

template <typename F>
Image make_image(int c, int h, int w, F fn) {
  Image img(c, h, w);
  for (int k = 0; k < c; ++k)
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x) img.at(k, y, x) = static_cast<float>(fn(k, y, x));
  return img;
}

// Values that are multiples of 1/256 in [0, 1): sums of a few of them are exact in float.
Image dyadic_image(int c, int h, int w, uint64_t seed) {
  return make_image(c, h, w, [&](int k, int y, int x) {
    return (philox4x32(seed, (uint64_t(k) * h + y) * w + x, 0).v[0] & 255u) / 256.0;
  });
}

bool same_bytes(const Image& a, const Image& b) {
  return a.channels == b.channels && a.height == b.height && a.width == b.width &&
         std::memcmp(a.data.data(), b.data.data(), a.data.size() * sizeof(float)) == 0;
}

Image transpose(const Image& img) {
  return make_image(img.channels, img.width, img.height, [&](int k, int y, int x) { return img.at(k, x, y); });
}

struct Centroid {
  double x = 0, y = 0, mass = 0;
};
Centroid centroid(const Image& img) {
  Centroid c;
  for (int y = 0; y < img.height; ++y)
    for (int x = 0; x < img.width; ++x) {
      const double v = img.at(0, y, x);
      c.x += v * x;
      c.y += v * y;
      c.mass += v;
    }
  c.x /= c.mass;
  c.y /= c.mass;
  return c;
}

Image blob(int h, int w, double cx, double cy, double sigma) {
  return make_image(1, h, w, [&](int, int y, int x) {
    return std::exp(-((x - cx) * (x - cx) + (y - cy) * (y - cy)) / (2 * sigma * sigma));
  });
}

// ---------------------------------------------------------------- resize

TEST(Resize, ConstantStaysConstant) {
  const int sizes[][4] = {{17, 23, 5, 9}, {5, 9, 17, 23}, {7, 33, 13, 5}, {1, 1, 3, 5}, {64, 48, 64, 20}, {10, 10, 3, 3}};
  for (const auto& s : sizes) {
    const Image img = make_image(3, s[0], s[1], [](int k, int, int) { return 0.2 + 0.3 * k; });
    const Image out = resize(img, s[2], s[3]);
    ASSERT_EQ(out.channels, 3);
    ASSERT_EQ(out.height, s[2]);
    ASSERT_EQ(out.width, s[3]);
    for (int k = 0; k < 3; ++k)
      for (int y = 0; y < s[2]; ++y)
        for (int x = 0; x < s[3]; ++x) EXPECT_NEAR(out.at(k, y, x), 0.2 + 0.3 * k, 1e-6) << s[0] << "x" << s[1];
  }
}

TEST(Resize, AreaDownscaleByTwoIsBlockMeanExactly) {
  const Image img = dyadic_image(2, 8, 6, 11);
  const Image out = resize(img, 4, 3);
  for (int k = 0; k < 2; ++k)
    for (int y = 0; y < 4; ++y)
      for (int x = 0; x < 3; ++x) {
        const float mean = (img.at(k, 2 * y, 2 * x) + img.at(k, 2 * y, 2 * x + 1) + img.at(k, 2 * y + 1, 2 * x) +
                            img.at(k, 2 * y + 1, 2 * x + 1)) / 4.0f;
        EXPECT_EQ(out.at(k, y, x), mean) << k << " " << y << " " << x;
      }
}

TEST(Resize, AreaDownscaleFractionalWeights) {
  // 5 -> 2: output 0 covers [0, 2.5): pixels 0, 1 and half of 2; output 1 the rest.
  const Image img = make_image(1, 1, 5, [](int, int, int x) { return 0.1 * (x + 1) * (x + 1); });
  const Image out = resize(img, 1, 2);
  const double v[5] = {0.1, 0.4, 0.9, 1.6, 2.5};
  EXPECT_NEAR(out.at(0, 0, 0), (v[0] + v[1] + 0.5 * v[2]) / 2.5, 1e-6);
  EXPECT_NEAR(out.at(0, 0, 1), (0.5 * v[2] + v[3] + v[4]) / 2.5, 1e-6);
  // Same along the vertical axis.
  const Image col = resize(transpose(img), 2, 1);
  EXPECT_NEAR(col.at(0, 0, 0), out.at(0, 0, 0), 1e-6);
  EXPECT_NEAR(col.at(0, 1, 0), out.at(0, 0, 1), 1e-6);
  // The mean of the image is preserved by an area resize.
  const Image big = dyadic_image(1, 37, 29, 3), small = resize(big, 10, 7);
  double a = 0, b = 0;
  for (float x : big.data) a += x;
  for (float x : small.data) b += x;
  EXPECT_NEAR(a / big.data.size(), b / small.data.size(), 1e-5);
}

TEST(Resize, BilinearUpscaleMatchesHandValues) {
  // PyTorch: F.interpolate([[0,1],[2,3]], size=(4,4), mode="bilinear", align_corners=False)
  const Image img = make_image(1, 2, 2, [](int, int y, int x) { return 2 * y + x; });
  const Image out = resize(img, 4, 4);
  const float expect[4][4] = {{0, 0.25f, 0.75f, 1}, {0.5f, 0.75f, 1.25f, 1.5f}, {1.5f, 1.75f, 2.25f, 2.5f}, {2, 2.25f, 2.75f, 3}};
  for (int y = 0; y < 4; ++y)
    for (int x = 0; x < 4; ++x) EXPECT_FLOAT_EQ(out.at(0, y, x), expect[y][x]) << y << " " << x;
  // 1 x 4 ramp -> 1 x 8: src = 0.5 o - 0.25, clamped at both ends.
  const Image ramp = make_image(1, 1, 4, [](int, int, int x) { return x; });
  const Image up = resize(ramp, 1, 8);
  const float e8[8] = {0, 0.25f, 0.75f, 1.25f, 1.75f, 2.25f, 2.75f, 3};
  for (int x = 0; x < 8; ++x) EXPECT_FLOAT_EQ(up.at(0, 0, x), e8[x]);
}

TEST(Resize, BilinearUpscaleOfRampStaysLinearInInterior) {
  // Ramp in x (the same on every row), 6 x 9 -> 11 x 20: interior outputs equal their
  // source coordinate (o + 0.5) * 9/20 - 0.5; every row identical.
  const Image ramp = make_image(1, 6, 9, [](int, int, int x) { return x / 8.0; });
  const Image out = resize(ramp, 11, 20);
  for (int y = 0; y < 11; ++y)
    for (int x = 0; x < 20; ++x) {
      const double src = (x + 0.5) * 9.0 / 20.0 - 0.5;
      const double expect = std::clamp(src, 0.0, 8.0) / 8.0;
      EXPECT_NEAR(out.at(0, y, x), expect, 1e-6) << y << " " << x;
    }
  // Ramp in y, upscaled vertically only.
  const Image vr = make_image(1, 5, 3, [](int, int y, int) { return y / 4.0; });
  const Image vout = resize(vr, 12, 3);
  for (int y = 0; y < 12; ++y) {
    const double src = std::clamp((y + 0.5) * 5.0 / 12.0 - 0.5, 0.0, 4.0);
    for (int x = 0; x < 3; ++x) EXPECT_NEAR(vout.at(0, y, x), src / 4.0, 1e-6);
  }
}

TEST(Resize, IdentityIsExact) {
  const Image img = dyadic_image(3, 13, 7, 5);
  EXPECT_TRUE(same_bytes(resize(img, 13, 7), img));
}

TEST(Resize, MixedAxes) {
  // Up in x, down in y: a ramp in x keeps its bilinear values on every row.
  const Image img = make_image(1, 8, 3, [](int, int, int x) { return x / 2.0; });
  const Image out = resize(img, 4, 6);
  for (int y = 0; y < 4; ++y)
    for (int x = 0; x < 6; ++x)
      EXPECT_NEAR(out.at(0, y, x), std::clamp((x + 0.5) * 0.5 - 0.5, 0.0, 2.0) / 2.0, 1e-6);
}

TEST(Resize, Errors) {
  const Image img(1, 4, 4);
  expect_error([&] { resize(img, 0, 4); }, {"resize", "0 x 4"});
  expect_error([&] { resize(Image(), 4, 4); }, {"resize", "invalid image"});
  Image bad(1, 4, 4);
  bad.data.resize(3);
  expect_error([&] { resize(bad, 2, 2); }, {"resize", "3 values"});
}

TEST(Resize, TimingInformation) {
  // Not an assertion: prints the time of the data loader's common resize.
  const Image img = dyadic_image(1, 512, 512, 9);
  double best = 1e9;
  for (int r = 0; r < 20; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    const Image out = resize(img, 224, 224);
    const auto t1 = std::chrono::steady_clock::now();
    ASSERT_EQ(out.width, 224);
    best = std::min(best, std::chrono::duration<double, std::micro>(t1 - t0).count());
  }
  std::printf("[info] resize 1x512x512 -> 224x224: best of 20 = %.1f us\n", best);
}

// ---------------------------------------------------------------- crops, pads, channels

TEST(Crop, WindowsAndFill) {
  const Image img = make_image(2, 5, 6, [](int k, int y, int x) { return 100 * k + 10 * y + x; });
  const Image c = crop(img, 1, 2, 3, 2);
  for (int k = 0; k < 2; ++k)
    for (int y = 0; y < 3; ++y)
      for (int x = 0; x < 2; ++x) EXPECT_EQ(c.at(k, y, x), 100 * k + 10 * (y + 1) + (x + 2));
  // Partly outside: top-left corner at (-1, -2), 3 x 4, fill 7.
  const Image o = crop(img, -1, -2, 3, 4, 7.0f);
  for (int y = 0; y < 3; ++y)
    for (int x = 0; x < 4; ++x) {
      const int sy = y - 1, sx = x - 2;
      EXPECT_EQ(o.at(1, y, x), (sy >= 0 && sx >= 0) ? 100 + 10 * sy + sx : 7.0f);
    }
  // Entirely outside.
  const Image far = crop(img, 10, 10, 2, 2, 0.5f);
  for (float v : far.data) EXPECT_EQ(v, 0.5f);
  expect_error([&] { crop(img, 0, 0, 0, 3); }, {"crop"});
}

TEST(Crop, CenterCrop) {
  const Image img = make_image(1, 5, 6, [](int, int y, int x) { return 10 * y + x; });
  const Image c = center_crop(img, 2, 3);  // top (5-2)/2 = 1, left (6-3)/2 = 1
  for (int y = 0; y < 2; ++y)
    for (int x = 0; x < 3; ++x) EXPECT_EQ(c.at(0, y, x), 10 * (y + 1) + (x + 1));
  const Image d = center_crop(img, 3, 4);  // top 1, left 1
  EXPECT_EQ(d.at(0, 0, 0), 11);
  EXPECT_TRUE(same_bytes(center_crop(img, 5, 6), img));
  expect_error([&] { center_crop(img, 6, 2); }, {"center_crop", "6 x 2", "5 x 6"});
}

TEST(Crop, Pad) {
  const Image img = make_image(1, 2, 3, [](int, int y, int x) { return 1 + 10 * y + x; });
  const Image p = pad(img, 1, 2, 3, 0, -1.0f);
  ASSERT_EQ(p.height, 5);
  ASSERT_EQ(p.width, 6);
  for (int y = 0; y < 5; ++y)
    for (int x = 0; x < 6; ++x) {
      const bool in = y >= 1 && y < 3 && x >= 3;
      EXPECT_EQ(p.at(0, y, x), in ? 1 + 10 * (y - 1) + (x - 3) : -1.0f);
    }
  expect_error([&] { pad(img, -1, 0, 0, 0); }, {"pad", "-1"});
}

TEST(Channels, Convert) {
  const Image rgb = make_image(3, 1, 4, [](int k, int, int x) {
    const double px[4][3] = {{1, 0, 0}, {0, 1, 0}, {0, 0, 1}, {0.5, 0.5, 0.5}};
    return px[x][k];
  });
  const Image g = convert_channels(rgb, 1);
  ASSERT_EQ(g.channels, 1);
  EXPECT_FLOAT_EQ(g.at(0, 0, 0), 0.299f);
  EXPECT_FLOAT_EQ(g.at(0, 0, 1), 0.587f);
  EXPECT_FLOAT_EQ(g.at(0, 0, 2), 0.114f);
  EXPECT_NEAR(g.at(0, 0, 3), 0.5f, 1e-6);
  const Image back = convert_channels(g, 3);
  ASSERT_EQ(back.channels, 3);
  for (int k = 0; k < 3; ++k)
    for (int x = 0; x < 4; ++x) EXPECT_EQ(back.at(k, 0, x), g.at(0, 0, x));
  EXPECT_TRUE(same_bytes(convert_channels(rgb, 3), rgb));
  expect_error([&] { convert_channels(rgb, 2); }, {"convert_channels", "2"});
  expect_error([&] { convert_channels(Image(2, 2, 2), 1); }, {"convert_channels", "2 channels"});
}

TEST(Normalize, PerChannelAndBroadcast) {
  Image img = make_image(3, 2, 2, [](int k, int y, int x) { return 0.1 * k + 0.2 * y + 0.05 * x; });
  const Image orig = img;
  normalize(img, {0.5f, 0.4f, 0.3f}, {0.25f, 0.5f, 2.0f});
  const float m[3] = {0.5f, 0.4f, 0.3f}, s[3] = {0.25f, 0.5f, 2.0f};
  for (int k = 0; k < 3; ++k)
    for (int y = 0; y < 2; ++y)
      for (int x = 0; x < 2; ++x) EXPECT_FLOAT_EQ(img.at(k, y, x), (orig.at(k, y, x) - m[k]) / s[k]);
  Image one = orig;
  normalize(one, {0.5f}, {0.25f});
  for (size_t i = 0; i < one.data.size(); ++i) EXPECT_FLOAT_EQ(one.data[i], (orig.data[i] - 0.5f) / 0.25f);
  expect_error([&] { normalize(img, {0.5f}, {0.0f}); }, {"normalize", "std[0]", "> 0"});
  expect_error([&] { normalize(img, {0.5f}, {0.2f, -1.0f, 0.2f}); }, {"std[1]", "-1"});
  expect_error([&] { normalize(img, {0.5f, 0.5f}, {0.2f}); }, {"mean has 2 values", "1 or 3"});
  expect_error([&] { normalize(img, {0.5f}, {}); }, {"std has 0 values"});
}

// ---------------------------------------------------------------- flips and rotation

TEST(Flip, GradientsReverse) {
  const Image hg = make_image(2, 3, 7, [](int k, int, int x) { return x / 6.0 + k; });
  const Image h = hflip(hg);
  for (int k = 0; k < 2; ++k)
    for (int y = 0; y < 3; ++y)
      for (int x = 0; x < 7; ++x) EXPECT_EQ(h.at(k, y, x), hg.at(k, y, 6 - x));
  EXPECT_TRUE(same_bytes(vflip(hg), hg));  // a horizontal gradient has equal rows
  const Image vg = make_image(1, 6, 4, [](int, int y, int) { return y / 5.0; });
  const Image v = vflip(vg);
  for (int y = 0; y < 6; ++y)
    for (int x = 0; x < 4; ++x) EXPECT_EQ(v.at(0, y, x), vg.at(0, 5 - y, x));
  const Image r = dyadic_image(3, 5, 8, 1);
  EXPECT_TRUE(same_bytes(hflip(hflip(r)), r));
  EXPECT_TRUE(same_bytes(vflip(vflip(r)), r));
}

// An asymmetric pattern: an L shape plus a dot, on a square.
Image asymmetric_square(int n) {
  return make_image(2, n, n, [&](int k, int y, int x) {
    const bool l = (x == 1 && y >= 1 && y < n - 1) || (y == n - 2 && x >= 1 && x < n - 2);
    const bool dot = x == n - 2 && y == 1;
    return (l ? 0.75 : 0.0) + (dot ? 0.5 : 0.0) + 0.125 * k;
  });
}

TEST(Rotate, NinetyIsTransposeThenVflip) {
  for (int n : {6, 7}) {
    const Image img = asymmetric_square(n);
    const Image r = rotate(img, 90.0, 0.0f);
    // Counter-clockwise as displayed: out(y, x) = in(x, n - 1 - y), i.e. vflip(transpose).
    EXPECT_TRUE(same_bytes(r, vflip(transpose(img)))) << n;
    EXPECT_TRUE(same_bytes(rotate(img, -90.0), hflip(transpose(img)))) << n;
    EXPECT_TRUE(same_bytes(rotate(img, 270.0), rotate(img, -90.0))) << n;
  }
  // The top-right dot of the pattern moves to the top-left corner region.
  const Image r = rotate(asymmetric_square(7), 90.0);
  EXPECT_EQ(r.at(0, 1, 1), 0.5f);
}

TEST(Rotate, FullTurnsAndHalfTurn) {
  const Image img = dyadic_image(3, 7, 9, 4);
  EXPECT_TRUE(same_bytes(rotate(img, 360.0), img));
  EXPECT_TRUE(same_bytes(rotate(img, -720.0), img));
  EXPECT_TRUE(same_bytes(rotate(img, 180.0), hflip(vflip(img))));
  const Image even = dyadic_image(1, 6, 8, 5);
  EXPECT_TRUE(same_bytes(rotate(even, 180.0), hflip(vflip(even))));
  // Close to (not exactly) a full turn: within bilinear error of the identity.
  const Image smooth = blob(21, 21, 10, 10, 4);
  const Image almost = rotate(smooth, 359.999);
  for (size_t i = 0; i < smooth.data.size(); ++i) EXPECT_NEAR(almost.data[i], smooth.data[i], 1e-3);
}

TEST(Rotate, DirectionAndFill) {
  // A blob 6 px right of the centre, rotated +30 degrees, goes up and left.
  const Image img = blob(31, 31, 21, 15, 1.5);
  const Centroid c = centroid(rotate(img, 30.0));
  const double a = 30.0 * 3.14159265358979323846 / 180.0;
  EXPECT_NEAR(c.x, 15 + 6 * std::cos(a), 0.05);
  EXPECT_NEAR(c.y, 15 - 6 * std::sin(a), 0.05);
  // Outside the rotated image is the fill value; the centre keeps its value.
  const Image ones(1, 21, 21, 1.0f);
  const Image r = rotate(ones, 45.0, 0.25f);
  EXPECT_EQ(r.at(0, 0, 0), 0.25f);
  EXPECT_EQ(r.at(0, 20, 20), 0.25f);
  EXPECT_EQ(r.at(0, 10, 10), 1.0f);
  expect_error([&] { rotate(ones, std::nan("")); }, {"rotate", "finite"});
}

// ---------------------------------------------------------------- augmentation options

TEST(AugmentOptions, ValidateNamesField) {
  AugmentOptions ok;
  EXPECT_NO_THROW(ok.validate());
  ok.rotation = 180; ok.brightness = 1; ok.contrast = 1; ok.erase_area_max = 0.02; ok.crop_scale_min = 1;
  EXPECT_NO_THROW(ok.validate());
  auto bad = [](auto set, std::initializer_list<const char*> parts) {
    AugmentOptions o;
    set(o);
    expect_error([&] { o.validate(); }, parts);
  };
  bad([](AugmentOptions& o) { o.rotation = 181; }, {"rotation", "181"});
  bad([](AugmentOptions& o) { o.rotation = -1; }, {"rotation", "-1"});
  bad([](AugmentOptions& o) { o.rotation = std::nan(""); }, {"rotation", "nan"});
  bad([](AugmentOptions& o) { o.shift_x = 1; }, {"shift_x", "1"});
  bad([](AugmentOptions& o) { o.shift_y = -0.1; }, {"shift_y", "-0.1"});
  bad([](AugmentOptions& o) { o.zoom = 1; }, {"zoom", "1"});
  bad([](AugmentOptions& o) { o.crop_scale_min = 0; }, {"crop_scale_min", "0"});
  bad([](AugmentOptions& o) { o.crop_scale_min = 1.5; }, {"crop_scale_min", "1.5"});
  bad([](AugmentOptions& o) { o.brightness = 1.5; }, {"brightness", "1.5"});
  bad([](AugmentOptions& o) { o.contrast = 1.01; }, {"contrast", "1.01"});
  bad([](AugmentOptions& o) { o.contrast = -0.5; }, {"contrast", "-0.5"});
  bad([](AugmentOptions& o) { o.noise_std = -0.2; }, {"noise_std", "-0.2"});
  bad([](AugmentOptions& o) { o.noise_std = std::numeric_limits<double>::infinity(); }, {"noise_std", "inf"});
  bad([](AugmentOptions& o) { o.erase_prob = 1.5; }, {"erase_prob", "1.5"});
  bad([](AugmentOptions& o) { o.erase_area_max = 0.01; }, {"erase_area_max", "0.01"});
  bad([](AugmentOptions& o) { o.erase_area_max = 2; }, {"erase_area_max", "2"});
}

TEST(AugmentOptions, Any) {
  EXPECT_FALSE(AugmentOptions{}.any());
  auto on = [](auto set) {
    AugmentOptions o;
    set(o);
    return o.any();
  };
  EXPECT_TRUE(on([](AugmentOptions& o) { o.rotation = 5; }));
  EXPECT_TRUE(on([](AugmentOptions& o) { o.shift_x = 0.1; }));
  EXPECT_TRUE(on([](AugmentOptions& o) { o.shift_y = 0.1; }));
  EXPECT_TRUE(on([](AugmentOptions& o) { o.zoom = 0.1; }));
  EXPECT_TRUE(on([](AugmentOptions& o) { o.random_resized_crop = true; }));
  EXPECT_TRUE(on([](AugmentOptions& o) { o.hflip = true; }));
  EXPECT_TRUE(on([](AugmentOptions& o) { o.vflip = true; }));
  EXPECT_TRUE(on([](AugmentOptions& o) { o.brightness = 0.1; }));
  EXPECT_TRUE(on([](AugmentOptions& o) { o.contrast = 0.1; }));
  EXPECT_TRUE(on([](AugmentOptions& o) { o.noise_std = 0.1; }));
  EXPECT_TRUE(on([](AugmentOptions& o) { o.erase_prob = 0.1; }));
}

// ---------------------------------------------------------------- augmentation

SampleRng srng(int64_t index, int64_t epoch = 0, uint64_t seed = 42) { return SampleRng{seed, epoch, index}; }

TEST(Augment, NothingOnIsCopy) {
  const Image img = dyadic_image(3, 9, 11, 2);
  EXPECT_TRUE(same_bytes(augment(img, {}, srng(0)), img));
  AugmentOptions bad;
  bad.zoom = 2;
  expect_error([&] { augment(img, bad, srng(0)); }, {"zoom"});
}

TEST(Augment, BrightnessFactorWithinRange) {
  const Image img = make_image(1, 12, 10, [](int, int y, int x) { return 0.05 + 0.45 * (y * 10 + x) / 119.0; });
  AugmentOptions o;
  o.brightness = 0.5;
  double lo = 2, hi = 0;
  for (int i = 0; i < 64; ++i) {
    const Image out = augment(img, o, srng(i));
    const double f = out.data[0] / img.data[0];
    EXPECT_GE(f, 0.5 - 1e-6);
    EXPECT_LE(f, 1.5 + 1e-6);
    for (size_t k = 0; k < img.data.size(); ++k) EXPECT_NEAR(out.data[k] / img.data[k], f, 1e-5);  // one factor
    lo = std::min(lo, f);
    hi = std::max(hi, f);
  }
  EXPECT_LT(lo, 0.7);
  EXPECT_GT(hi, 1.3);
}

TEST(Augment, ContrastPreservesMean) {
  const Image img = make_image(1, 16, 16, [](int, int y, int x) { return 0.25 + 0.5 * ((x * 7 + y * 3) % 16) / 15.0; });
  double mean_in = 0;
  for (float v : img.data) mean_in += v;
  mean_in /= img.data.size();
  AugmentOptions o;
  o.contrast = 0.5;
  bool stronger = false, weaker = false;
  for (int i = 0; i < 32; ++i) {
    const Image out = augment(img, o, srng(i));
    double mean_out = 0;
    for (float v : out.data) mean_out += v;
    mean_out /= out.data.size();
    EXPECT_NEAR(mean_out, mean_in, 1e-5);
    const double f = (out.data[1] - mean_in) / (img.data[1] - mean_in);
    EXPECT_GE(f, 0.5 - 1e-4);
    EXPECT_LE(f, 1.5 + 1e-4);
    stronger |= f > 1.1;
    weaker |= f < 0.9;
  }
  EXPECT_TRUE(stronger && weaker);
  // Three channels: the blend is towards the mean luma, which is preserved.
  const Image rgb = make_image(3, 8, 8, [](int k, int y, int x) { return 0.3 + 0.1 * k + 0.02 * ((x + y) % 5); });
  const Image out = augment(rgb, o, srng(3));
  auto luma_mean = [](const Image& im) {
    double s = 0;
    for (size_t i = 0; i < im.plane_size(); ++i) s += 0.299 * im.plane(0)[i] + 0.587 * im.plane(1)[i] + 0.114 * im.plane(2)[i];
    return s / im.plane_size();
  };
  EXPECT_NEAR(luma_mean(out), luma_mean(rgb), 1e-5);
}

TEST(Augment, ErasingMakesBoundedZeroRectangle) {
  const Image img(2, 40, 50, 1.0f);
  AugmentOptions o;
  o.erase_prob = 1.0;
  o.erase_area_max = 0.3;
  for (int i = 0; i < 32; ++i) {
    const Image out = augment(img, o, srng(i));
    int y0 = 1 << 30, y1 = -1, x0 = 1 << 30, x1 = -1, zeros = 0;
    for (int y = 0; y < 40; ++y)
      for (int x = 0; x < 50; ++x) {
        const float v = out.at(0, y, x);
        ASSERT_TRUE(v == 0.0f || v == 1.0f);
        EXPECT_EQ(out.at(1, y, x), v);  // every channel erased alike
        if (v == 0.0f) {
          ++zeros;
          y0 = std::min(y0, y); y1 = std::max(y1, y);
          x0 = std::min(x0, x); x1 = std::max(x1, x);
        }
      }
    ASSERT_GT(zeros, 0) << i;
    EXPECT_EQ(zeros, (y1 - y0 + 1) * (x1 - x0 + 1));  // a filled rectangle
    const double frac = zeros / 2000.0;
    EXPECT_GE(frac, 0.02 - 0.01);
    EXPECT_LE(frac, 0.3 + 0.03);  // h and w are rounded
    EXPECT_LT(y1 - y0 + 1, 40);
    EXPECT_LT(x1 - x0 + 1, 50);
  }
  o.erase_prob = 0.5;
  int erased = 0;
  for (int i = 0; i < 40; ++i) {
    const Image out = augment(img, o, srng(i));
    erased += *std::min_element(out.data.begin(), out.data.end()) == 0.0f;
  }
  EXPECT_GT(erased, 5);
  EXPECT_LT(erased, 35);
}

TEST(Augment, NoiseStdOnFlatImage) {
  const Image img(1, 128, 128, 0.5f);
  AugmentOptions o;
  o.noise_std = 0.1;
  const Image out = augment(img, o, srng(7));
  double s = 0, s2 = 0;
  for (float v : out.data) {
    s += v - 0.5;
    s2 += (v - 0.5) * (v - 0.5);
  }
  const double n = out.data.size(), mean = s / n, sd = std::sqrt(s2 / n - mean * mean);
  EXPECT_NEAR(mean, 0.0, 0.004);
  EXPECT_NEAR(sd, 0.1, 0.004);
  // Clamped to [0, 1].
  o.noise_std = 2.0;
  const Image loud = augment(img, o, srng(7));
  for (float v : loud.data) {
    EXPECT_GE(v, 0.0f);
    EXPECT_LE(v, 1.0f);
  }
}

TEST(Augment, ShiftMovesDotWithinRange) {
  const int n = 41;
  Image img(1, n, n);
  img.at(0, 20, 20) = 1.0f;
  AugmentOptions o;
  o.shift_x = 0.2;
  double max_dx = 0;
  for (int i = 0; i < 40; ++i) {
    const Centroid c = centroid(augment(img, o, srng(i)));
    EXPECT_NEAR(c.mass, 1.0, 1e-5);  // a pure translation keeps the dot whole
    EXPECT_LE(std::abs(c.x - 20), 0.2 * n + 1e-6);
    EXPECT_NEAR(c.y, 20.0, 1e-6);  // no vertical shift asked for
    max_dx = std::max(max_dx, std::abs(c.x - 20));
  }
  EXPECT_GT(max_dx, 0.5 * 0.2 * n);
  o.shift_x = 0;
  o.shift_y = 0.1;
  for (int i = 0; i < 20; ++i) {
    const Centroid c = centroid(augment(img, o, srng(i)));
    EXPECT_NEAR(c.x, 20.0, 1e-6);
    EXPECT_LE(std::abs(c.y - 20), 0.1 * n + 1e-6);
  }
}

TEST(Augment, RotationAndZoomMoveBlobAsExpected) {
  const Image img = blob(41, 41, 30, 20, 1.5);  // 10 px right of the centre (20, 20)
  AugmentOptions o;
  o.rotation = 40;
  for (int i = 0; i < 16; ++i) {
    const Centroid c = centroid(augment(img, o, srng(i)));
    const double r = std::hypot(c.x - 20, c.y - 20);
    const double angle = std::atan2(-(c.y - 20), c.x - 20) * 180 / 3.14159265358979323846;
    EXPECT_NEAR(r, 10, 0.05);
    EXPECT_LE(std::abs(angle), 40 + 0.5);
  }
  AugmentOptions z;
  z.zoom = 0.3;
  for (int i = 0; i < 16; ++i) {
    const Centroid c = centroid(augment(img, z, srng(i)));
    EXPECT_NEAR(c.y, 20, 0.05);
    EXPECT_GE(c.x - 20, 10 * 0.7 - 0.1);
    EXPECT_LE(c.x - 20, 10 * 1.3 + 0.1);
  }
}

TEST(Augment, FlipsHappenHalfTheTime) {
  const Image img = dyadic_image(1, 6, 7, 8);
  AugmentOptions o;
  o.hflip = true;
  o.vflip = true;
  int counts[4] = {0, 0, 0, 0};
  const Image h = hflip(img), v = vflip(img), hv = hflip(vflip(img));
  for (int i = 0; i < 80; ++i) {
    const Image out = augment(img, o, srng(i));
    const int kind = same_bytes(out, img) ? 0 : same_bytes(out, h) ? 1 : same_bytes(out, v) ? 2 : same_bytes(out, hv) ? 3 : -1;
    ASSERT_GE(kind, 0) << i;
    ++counts[kind];
  }
  for (int k = 0; k < 4; ++k) EXPECT_GT(counts[k], 5) << k;
}

TEST(Augment, RandomResizedCropIsASubWindow) {
  const Image img = make_image(1, 60, 80, [](int, int y, int x) { return (y * 80 + x) / 4800.0; });
  AugmentOptions o;
  o.random_resized_crop = true;
  o.crop_scale_min = 0.2;
  bool differs = false;
  for (int i = 0; i < 32; ++i) {
    const Image out = augment(img, o, srng(i));
    const double frac = double(out.height) * out.width / (60.0 * 80.0);
    const double aspect = double(out.width) / out.height;
    EXPECT_GE(frac, 0.2 * 0.9);
    EXPECT_LE(frac, 1.0);
    EXPECT_GE(aspect, 0.75 * 0.9);
    EXPECT_LE(aspect, 4.0 / 3.0 * 1.1);
    // An exact copy of the window starting where its first pixel came from.
    const int top = static_cast<int>(std::lround(out.at(0, 0, 0) * 4800)) / 80;
    const int left = static_cast<int>(std::lround(out.at(0, 0, 0) * 4800)) % 80;
    EXPECT_TRUE(same_bytes(out, crop(img, top, left, out.height, out.width)));
    differs |= out.height != 60 || out.width != 80;
  }
  EXPECT_TRUE(differs);
}

TEST(Augment, DrawLayoutAsDocumented) {
  // hflip's draw is number 36: block 9, lane 0 of the documented counter layout.
  const Image img = dyadic_image(1, 5, 9, 3);
  AugmentOptions o;
  o.hflip = true;
  for (int64_t i = 0; i < 32; ++i) {
    const uint64_t seed = 1234, epoch = 5;
    const PhiloxBlock b = philox4x32(seed ^ 0x9E3779B97F4A7C15ull, static_cast<uint64_t>(i), (epoch << 32) | 9);
    const bool flip = b.v[0] * (1.0 / 4294967296.0) < 0.5;
    EXPECT_TRUE(same_bytes(augment(img, o, SampleRng{seed, static_cast<int64_t>(epoch), i}), flip ? hflip(img) : img));
  }
}

TEST(Augment, StepsKeepTheirDrawsWhenOthersToggle) {
  const Image img = make_image(1, 10, 12, [](int, int y, int x) { return 0.05 + 0.4 * ((x * 5 + y * 3) % 17) / 16.0; });
  double sum_in = 0;
  for (float v : img.data) sum_in += v;
  AugmentOptions a;
  a.brightness = 0.4;
  AugmentOptions b = a;
  b.hflip = b.vflip = true;
  b.erase_prob = 0.0;
  AugmentOptions c;
  c.hflip = true;
  AugmentOptions d = c;
  d.contrast = 0.3;
  d.noise_std = 0.0;
  d.rotation = 0.0;
  for (int i = 0; i < 24; ++i) {
    const Image oa = augment(img, a, srng(i)), ob = augment(img, b, srng(i));
    double sa = 0, sb = 0;
    for (float v : oa.data) sa += v;
    for (float v : ob.data) sb += v;
    EXPECT_NEAR(sa / sum_in, sb / sum_in, 1e-6);  // same brightness factor with flips on
    // Whether hflip fires does not depend on contrast being on: compare column order.
    const Image oc = augment(img, c, srng(i)), od = augment(img, d, srng(i));
    const bool flipped_c = !same_bytes(oc, img);
    const double left_d = od.at(0, 0, 0), right_d = od.at(0, 0, 11);
    const double left_i = img.at(0, 0, 0), right_i = img.at(0, 0, 11);
    // Contrast is monotone increasing, so the order of two pixels tells the flip.
    EXPECT_EQ(flipped_c, (left_d < right_d) != (left_i < right_i)) << i;
  }
}

AugmentOptions everything() {
  AugmentOptions o;
  o.rotation = 15;
  o.shift_x = 0.1;
  o.shift_y = 0.05;
  o.zoom = 0.1;
  o.random_resized_crop = true;
  o.crop_scale_min = 0.5;
  o.hflip = o.vflip = true;
  o.brightness = 0.2;
  o.contrast = 0.2;
  o.noise_std = 0.02;
  o.erase_prob = 0.5;
  return o;
}

TEST(Augment, DeterministicPerSample) {
  const Image img = dyadic_image(3, 33, 47, 21);
  const AugmentOptions o = everything();
  const Image a = augment(img, o, srng(5, 2, 99));
  EXPECT_TRUE(same_bytes(a, augment(img, o, srng(5, 2, 99))));
  EXPECT_FALSE(same_bytes(a, augment(img, o, srng(6, 2, 99))));
  EXPECT_FALSE(same_bytes(a, augment(img, o, srng(5, 3, 99))));
  EXPECT_FALSE(same_bytes(a, augment(img, o, srng(5, 2, 98))));
}

// ---------------------------------------------------------------- pipeline

TEST(Pipeline, Validate) {
  Pipeline p;
  EXPECT_NO_THROW(p.validate());
  auto bad = [](auto set, std::initializer_list<const char*> parts) {
    Pipeline q;
    set(q);
    expect_error([&] { q.validate(); }, parts);
  };
  bad([](Pipeline& q) { q.height = 0; }, {"Pipeline", "0 x 224"});
  bad([](Pipeline& q) { q.width = -3; }, {"Pipeline", "224 x -3"});
  bad([](Pipeline& q) { q.channels = 2; }, {"channels", "2"});
  bad([](Pipeline& q) { q.channels = 3; q.mean = {0.1f, 0.2f}; }, {"mean has 2 values", "1 or 3"});
  bad([](Pipeline& q) { q.stddev = {0.0f}; }, {"std[0]"});
  bad([](Pipeline& q) { q.augment.brightness = 3; }, {"brightness", "3"});
  Pipeline rgb;
  rgb.channels = 3;
  rgb.mean = {0.485f, 0.456f, 0.406f};
  rgb.stddev = {0.229f, 0.224f, 0.225f};
  EXPECT_NO_THROW(rgb.validate());
}

TEST(Pipeline, EvalEqualsComposition) {
  const Image decoded = dyadic_image(3, 50, 61, 17);
  Pipeline p;
  p.channels = 1;
  p.height = 32;
  p.width = 40;
  p.mean = {0.4f};
  p.stddev = {0.3f};
  p.augment = everything();  // ignored when not training
  std::vector<float> out(32 * 40, std::nanf(""));
  run_pipeline(decoded, p, false, srng(0), out.data());
  Image expect = resize(convert_channels(decoded, 1), 32, 40);
  normalize(expect, p.mean, p.stddev);
  EXPECT_EQ(std::memcmp(out.data(), expect.data.data(), out.size() * sizeof(float)), 0);
  // Already the right size: no resize, normalization only; per-channel statistics.
  Pipeline q;
  q.channels = 3;
  q.height = 50;
  q.width = 61;
  q.mean = {0.1f, 0.2f, 0.3f};
  q.stddev = {0.5f, 0.25f, 2.0f};
  std::vector<float> out3(3 * 50 * 61, std::nanf(""));
  run_pipeline(decoded, q, true, srng(0), out3.data());  // train with no augmentation
  Image e3 = decoded;
  normalize(e3, q.mean, q.stddev);
  EXPECT_EQ(std::memcmp(out3.data(), e3.data.data(), out3.size() * sizeof(float)), 0);
  expect_error([&] { run_pipeline(decoded, q, false, srng(0), nullptr); }, {"run_pipeline", "null"});
}

TEST(Pipeline, TrainEqualsComposition) {
  const Image decoded = dyadic_image(1, 70, 64, 23);
  Pipeline p;
  p.channels = 3;
  p.height = 48;
  p.width = 48;
  p.augment = everything();
  for (int i = 0; i < 4; ++i) {
    std::vector<float> out(3 * 48 * 48, std::nanf(""));
    run_pipeline(decoded, p, true, srng(i, 1), out.data());
    Image expect = resize(augment(convert_channels(decoded, 3), p.augment, srng(i, 1)), 48, 48);
    normalize(expect, p.mean, p.stddev);
    EXPECT_EQ(std::memcmp(out.data(), expect.data.data(), out.size() * sizeof(float)), 0) << i;
  }
}

TEST(Pipeline, FlipsAloneEqualFlipThenResize) {
  // With flips as the only augmentation the pipeline resizes the decoded image read
  // mirrored instead of flipping a copy; the bytes must equal the composition for every
  // resize path (shrink, enlarge, identity, mixed axes) and every flip outcome.
  const int shapes[][4] = {{37, 53, 16, 20}, {12, 9, 30, 25}, {20, 30, 20, 30}, {20, 31, 20, 12},
                           {20, 31, 44, 31}, {41, 10, 13, 22}, {9, 40, 27, 11}, {64, 64, 7, 64}};
  for (const auto& sh : shapes) {
    for (int ch : {1, 3}) {
      const Image decoded = dyadic_image(ch, sh[0], sh[1], 7 + sh[0]);
      for (int mode = 1; mode <= 3; ++mode) {
        Pipeline p;
        p.channels = ch;
        p.height = sh[2];
        p.width = sh[3];
        p.augment.hflip = mode & 1;
        p.augment.vflip = mode & 2;
        const size_t n = static_cast<size_t>(ch) * sh[2] * sh[3];
        bool flipped = false;
        for (int i = 0; i < 8; ++i) {
          SCOPED_TRACE(std::to_string(sh[0]) + "x" + std::to_string(sh[1]) + " -> " + std::to_string(sh[2]) + "x" +
                       std::to_string(sh[3]) + " ch " + std::to_string(ch) + " mode " + std::to_string(mode) +
                       " sample " + std::to_string(i));
          std::vector<float> out(n, std::nanf(""));
          run_pipeline(decoded, p, true, srng(i, 2), out.data());
          const Image aug = augment(decoded, p.augment, srng(i, 2));
          flipped |= !same_bytes(aug, decoded);
          Image expect = resize(aug, sh[2], sh[3]);
          normalize(expect, p.mean, p.stddev);
          ASSERT_EQ(std::memcmp(out.data(), expect.data.data(), n * sizeof(float)), 0);
        }
        EXPECT_TRUE(flipped);
      }
    }
  }
}

// ---------------------------------------------------------------- threads

TEST(Reproducibility, SameBytesAcrossThreadCountsAndOrders) {
  constexpr int kSamples = 64;
  std::vector<Image> inputs;
  for (int i = 0; i < kSamples; ++i) inputs.push_back(dyadic_image(1 + 2 * (i % 2), 40 + i % 7, 52 - i % 5, 100 + i));
  Pipeline p;
  p.channels = 1;
  p.height = 32;
  p.width = 32;
  p.augment = everything();
  const size_t per = 32 * 32;
  auto sample = [&](int i, float* out, Image* aug) {
    run_pipeline(inputs[i], p, true, srng(i, 3, 7), out);
    *aug = augment(inputs[i], p.augment, srng(i, 3, 7));
  };
  // One thread, in order.
  std::vector<float> serial(kSamples * per);
  std::vector<Image> serial_aug(kSamples);
  for (int i = 0; i < kSamples; ++i) sample(i, serial.data() + i * per, &serial_aug[i]);
  // Four std::threads, interleaved and in reverse order.
  std::vector<float> threaded(kSamples * per, std::nanf(""));
  std::vector<Image> threaded_aug(kSamples);
  std::vector<std::thread> workers;
  for (int t = 0; t < 4; ++t)
    workers.emplace_back([&, t] {
      for (int i = kSamples - 1 - t; i >= 0; i -= 4) sample(i, threaded.data() + i * per, &threaded_aug[i]);
    });
  for (auto& w : workers) w.join();
  EXPECT_EQ(std::memcmp(serial.data(), threaded.data(), serial.size() * sizeof(float)), 0);
  for (int i = 0; i < kSamples; ++i) EXPECT_TRUE(same_bytes(serial_aug[i], threaded_aug[i])) << i;
  // The engine's pool with 4 threads, samples handed out on demand.
  ThreadPool pool(4);
  std::vector<float> pooled(kSamples * per, std::nanf(""));
  std::vector<Image> pooled_aug(kSamples);
  pool.parallel_for(kSamples, 1, [&](int64_t b, int64_t e) {
    for (int64_t i = e - 1; i >= b; --i) sample(static_cast<int>(i), pooled.data() + i * per, &pooled_aug[i]);
  });
  EXPECT_EQ(std::memcmp(serial.data(), pooled.data(), serial.size() * sizeof(float)), 0);
  for (int i = 0; i < kSamples; ++i) EXPECT_TRUE(same_bytes(serial_aug[i], pooled_aug[i])) << i;
  // Different samples really are augmented differently.
  EXPECT_NE(std::memcmp(serial.data(), serial.data() + per, per * sizeof(float)), 0);
}

}  // namespace
}  // namespace cxr::data
