// data/image: decoding of PNGs written by libpng (every color type, 1-16 bit, palette +
// tRNS, Adam7) pixel-exact, of JPEGs written by libjpeg (baseline, progressive, gray,
// color, CMYK) against libjpeg's own decode, EXIF orientations 1-8, DCT scaling, PNG
// encode round trips, probing, and decoding from several threads at once. Broken files
// are in test_image_corpus.cpp.
#include <gtest/gtest.h>

#include <cmath>
#include <thread>

#include "data/image.h"
#include "expect_error.h"
#include "image_test_util.h"

namespace cxr::data {
namespace {

using testimg::JpegSpec;
using testimg::PngSpec;

// Deterministic sample values for tests.
uint32_t hash(uint32_t x) {
  x ^= x >> 16, x *= 0x7feb352d, x ^= x >> 15, x *= 0x846ca68b, x ^= x >> 16;
  return x;
}

int channels_of(int color_type) {
  switch (color_type) {
    case PNG_COLOR_TYPE_GRAY: return 1;
    case PNG_COLOR_TYPE_GRAY_ALPHA: return 2;
    case PNG_COLOR_TYPE_RGB: return 3;
    default: return 4;
  }
}

// A PNG of random samples at 8 or 16 bits and the image it must decode to (alpha
// composited onto black, computed the way the header specifies).
struct PngCase {
  std::vector<uint8_t> bytes;
  Image expected;
};

PngCase make_png(int color_type, int bit_depth, bool interlaced, int w = 13, int h = 11, uint32_t seed = 1) {
  const int ch = channels_of(color_type);
  const bool color = ch >= 3, alpha = ch == 2 || ch == 4;
  const int bps = bit_depth / 8;
  std::vector<std::vector<uint8_t>> rows(h, std::vector<uint8_t>(static_cast<size_t>(w) * ch * bps));
  PngCase pc;
  pc.expected = Image(color ? 3 : 1, h, w);
  const float scale = bit_depth == 16 ? 65535.0f : 255.0f;
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      float s[4];
      for (int c = 0; c < ch; ++c) {
        uint32_t v = hash(seed * 1000003u + (y * w + x) * 4 + c) & (bit_depth == 16 ? 0xFFFF : 0xFF);
        if (alpha && c == ch - 1 && x == 0) v = 0;                                  // transparent
        if (alpha && c == ch - 1 && x == 1) v = bit_depth == 16 ? 0xFFFF : 0xFF;  // opaque
        uint8_t* p = rows[y].data() + (x * ch + c) * bps;
        if (bps == 2) p[0] = uint8_t(v >> 8), p[1] = uint8_t(v);
        else p[0] = uint8_t(v);
        s[c] = static_cast<float>(v) / scale;
      }
      for (int c = 0; c < (color ? 3 : 1); ++c) pc.expected.at(c, y, x) = alpha ? s[c] * s[ch - 1] : s[c];
    }
  PngSpec spec;
  spec.width = w, spec.height = h, spec.color_type = color_type, spec.bit_depth = bit_depth;
  spec.interlaced = interlaced;
  pc.bytes = testimg::libpng_write(spec, rows);
  return pc;
}

void expect_same(const Image& got, const Image& want, float tol = 0.0f) {
  ASSERT_EQ(got.channels, want.channels);
  ASSERT_EQ(got.height, want.height);
  ASSERT_EQ(got.width, want.width);
  ASSERT_EQ(got.data.size(), want.data.size());
  size_t bad = 0;
  for (size_t i = 0; i < got.data.size(); ++i)
    if (!(std::fabs(got.data[i] - want.data[i]) <= tol) && bad++ < 5)
      ADD_FAILURE() << "value " << i << ": got " << got.data[i] << " want " << want.data[i];
  EXPECT_EQ(bad, 0u);
}

Image decode(const std::vector<uint8_t>& b, const DecodeOptions& o = {}) {
  return decode_image_memory(b.data(), b.size(), "mem", o);
}

// ------------------------------------------------------------------ PNG

struct PngParam {
  int color_type, bit_depth;
  bool interlaced;
};

class PngDecode : public ::testing::TestWithParam<PngParam> {};

TEST_P(PngDecode, PixelExact) {
  const PngParam p = GetParam();
  const PngCase pc = make_png(p.color_type, p.bit_depth, p.interlaced);
  expect_same(decode(pc.bytes), pc.expected);
}

TEST_P(PngDecode, ChannelConversion) {
  const PngParam p = GetParam();
  const PngCase pc = make_png(p.color_type, p.bit_depth, p.interlaced);
  const Image& e = pc.expected;
  Image gray = decode(pc.bytes, {.channels = 1});
  Image rgb = decode(pc.bytes, {.channels = 3});
  Image want_gray(1, e.height, e.width), want_rgb(3, e.height, e.width);
  for (int y = 0; y < e.height; ++y)
    for (int x = 0; x < e.width; ++x) {
      const bool color = e.channels == 3;
      want_gray.at(0, y, x) =
          color ? 0.299f * e.at(0, y, x) + 0.587f * e.at(1, y, x) + 0.114f * e.at(2, y, x) : e.at(0, y, x);
      for (int c = 0; c < 3; ++c) want_rgb.at(c, y, x) = e.at(color ? c : 0, y, x);
    }
  expect_same(gray, want_gray, 1e-6f);
  expect_same(rgb, want_rgb);
}

std::vector<PngParam> png_params() {
  std::vector<PngParam> v;
  for (int ct : {PNG_COLOR_TYPE_GRAY, PNG_COLOR_TYPE_GRAY_ALPHA, PNG_COLOR_TYPE_RGB, PNG_COLOR_TYPE_RGB_ALPHA})
    for (int bd : {8, 16})
      for (bool il : {false, true}) v.push_back({ct, bd, il});
  return v;
}

std::string png_param_name(const ::testing::TestParamInfo<PngParam>& i) {
  std::string name;
  switch (i.param.color_type) {
    case PNG_COLOR_TYPE_GRAY: name = "gray"; break;
    case PNG_COLOR_TYPE_GRAY_ALPHA: name = "gray_alpha"; break;
    case PNG_COLOR_TYPE_RGB: name = "rgb"; break;
    default: name = "rgba"; break;
  }
  return name + "_" + std::to_string(i.param.bit_depth) + (i.param.interlaced ? "_adam7" : "");
}

INSTANTIATE_TEST_SUITE_P(AllTypes, PngDecode, ::testing::ValuesIn(png_params()), png_param_name);

TEST(PngDecode, SixteenBitKeepsPrecision) {
  // Neighbouring 16-bit values must stay distinct (an 8-bit path would merge them).
  std::vector<std::vector<uint8_t>> rows(1, std::vector<uint8_t>(8));
  const uint16_t vals[4] = {1000, 1001, 1002, 65535};
  for (int x = 0; x < 4; ++x) rows[0][2 * x] = uint8_t(vals[x] >> 8), rows[0][2 * x + 1] = uint8_t(vals[x]);
  PngSpec spec;
  spec.width = 4, spec.height = 1, spec.bit_depth = 16;
  const Image img = decode(testimg::libpng_write(spec, rows));
  for (int x = 0; x < 4; ++x) EXPECT_EQ(img.at(0, 0, x), vals[x] / 65535.0f);
}

TEST(PngDecode, LowBitDepthGray) {
  for (int bd : {1, 2, 4}) {
    for (bool il : {false, true}) {
      const int w = 11, h = 5, maxv = (1 << bd) - 1;
      std::vector<std::vector<uint8_t>> rows(h, std::vector<uint8_t>((w * bd + 7) / 8, 0));
      Image want(1, h, w);
      for (int y = 0; y < h; ++y)
        for (int x = 0; x < w; ++x) {
          const int v = static_cast<int>(hash(y * w + x + bd * 100) % (maxv + 1));
          const int bit = x * bd;
          rows[y][bit / 8] |= static_cast<uint8_t>(v << (8 - bd - bit % 8));
          want.at(0, y, x) = static_cast<float>(v * (255 / maxv)) / 255.0f;
        }
      PngSpec spec;
      spec.width = w, spec.height = h, spec.bit_depth = bd, spec.interlaced = il;
      SCOPED_TRACE("bit depth " + std::to_string(bd) + (il ? " adam7" : ""));
      expect_same(decode(testimg::libpng_write(spec, rows)), want);
    }
  }
}

TEST(PngDecode, PaletteWithTransparency) {
  for (int bd : {8, 4}) {
    for (bool il : {false, true}) {
      const int w = 9, h = 7, n = bd == 8 ? 200 : 16;
      PngSpec spec;
      spec.width = w, spec.height = h, spec.color_type = PNG_COLOR_TYPE_PALETTE, spec.bit_depth = bd;
      spec.interlaced = il;
      for (int i = 0; i < n; ++i)
        spec.palette.push_back({uint8_t(hash(i) & 0xFF), uint8_t(hash(i + 500) & 0xFF), uint8_t(hash(i + 900) & 0xFF)});
      for (int i = 0; i < n / 2; ++i) spec.palette_alpha.push_back(uint8_t(i * 37 % 256));  // the rest opaque
      std::vector<std::vector<uint8_t>> rows(h, std::vector<uint8_t>((w * bd + 7) / 8, 0));
      Image want(3, h, w);
      for (int y = 0; y < h; ++y)
        for (int x = 0; x < w; ++x) {
          const int idx = static_cast<int>(hash(y * 31 + x) % n);
          if (bd == 8) rows[y][x] = uint8_t(idx);
          else rows[y][x / 2] |= uint8_t(idx << (x % 2 ? 0 : 4));
          const float a = idx < n / 2 ? spec.palette_alpha[idx] / 255.0f : 1.0f;
          const png_color& pc = spec.palette[idx];
          want.at(0, y, x) = pc.red / 255.0f * a;
          want.at(1, y, x) = pc.green / 255.0f * a;
          want.at(2, y, x) = pc.blue / 255.0f * a;
        }
      SCOPED_TRACE("palette bit depth " + std::to_string(bd) + (il ? " adam7" : ""));
      expect_same(decode(testimg::libpng_write(spec, rows)), want);
    }
  }
}

TEST(PngDecode, GrayAndRgbTransparentColor) {
  const int w = 6, h = 2;
  PngSpec gray;
  gray.width = w, gray.height = h, gray.has_trans_color = true, gray.trans_color.gray = 77;
  std::vector<std::vector<uint8_t>> grows = {{77, 10, 77, 255, 0, 78}, {1, 2, 3, 77, 5, 6}};
  Image g = decode(testimg::libpng_write(gray, grows));
  ASSERT_EQ(g.channels, 1);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) EXPECT_EQ(g.at(0, y, x), grows[y][x] == 77 ? 0.0f : grows[y][x] / 255.0f);

  PngSpec rgb;
  rgb.width = 2, rgb.height = 1, rgb.color_type = PNG_COLOR_TYPE_RGB, rgb.has_trans_color = true;
  rgb.trans_color.red = 10, rgb.trans_color.green = 20, rgb.trans_color.blue = 30;
  Image c = decode(testimg::libpng_write(rgb, {{10, 20, 30, 10, 20, 31}}));
  ASSERT_EQ(c.channels, 3);
  EXPECT_EQ(c.at(0, 0, 0), 0.0f);
  EXPECT_EQ(c.at(2, 0, 0), 0.0f);
  EXPECT_EQ(c.at(0, 0, 1), 10 / 255.0f);
  EXPECT_EQ(c.at(2, 0, 1), 31 / 255.0f);
}

// ------------------------------------------------------------------ PNG encode

Image random_image(int c, int h, int w, uint32_t seed) {
  Image img(c, h, w);
  for (size_t i = 0; i < img.data.size(); ++i) img.data[i] = static_cast<float>(hash(seed + i) % 100001) / 100000.0f;
  return img;
}

TEST(PngEncode, RoundTripEightAndSixteenBit) {
  for (int ch : {1, 3}) {
    for (int bd : {8, 16}) {
      Image img = random_image(ch, 17, 23, ch * 10 + bd);
      img.data[0] = -0.5f;  // clamped
      img.data[1] = 2.0f;
      img.data[2] = std::nanf("");
      const auto png = encode_png(img, bd);
      const Image back = decode(png);
      const float scale = bd == 16 ? 65535.0f : 255.0f;
      Image want = img;
      for (float& v : want.data) {
        const float cl = v > 0.0f ? std::min(v, 1.0f) : 0.0f;
        v = std::round(cl * scale) / scale;
      }
      SCOPED_TRACE(std::to_string(ch) + " channels, " + std::to_string(bd) + " bit");
      expect_same(back, want);
      // and a second round trip is the identity
      expect_same(decode(encode_png(back, bd)), back);
      const ImageInfo info = [&] {
        testimg::TempDir dir;
        write_png(dir.file("a.png"), img, bd);
        return probe_image(dir.file("a.png"));
      }();
      EXPECT_EQ(info.bit_depth, bd);
      EXPECT_EQ(info.channels, ch);
    }
  }
}

TEST(PngEncode, U8InterleavedAllChannelCounts) {
  const int w = 7, h = 5;
  for (int ch = 1; ch <= 4; ++ch) {
    std::vector<uint8_t> px(static_cast<size_t>(w) * h * ch);
    for (size_t i = 0; i < px.size(); ++i) px[i] = uint8_t(hash(i + ch) & 0xFF);
    const Image img = decode(encode_png_u8(px.data(), w, h, ch));
    const bool color = ch >= 3, alpha = ch == 2 || ch == 4;
    ASSERT_EQ(img.channels, color ? 3 : 1);
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x)
        for (int c = 0; c < img.channels; ++c) {
          const uint8_t* p = px.data() + (static_cast<size_t>(y) * w + x) * ch;
          const float want = alpha ? (p[c] / 255.0f) * (p[ch - 1] / 255.0f) : p[c] / 255.0f;
          EXPECT_EQ(img.at(c, y, x), want);
        }
  }
}

TEST(PngEncode, ToU8Interleaved) {
  Image img(3, 1, 2);
  const float v[6] = {0.0f, 1.0f, 0.5f, -1.0f, 1.5f, std::nanf("")};  // planar: r0 r1 g0 g1 b0 b1
  std::copy(v, v + 6, img.data.begin());
  EXPECT_EQ(to_u8_interleaved(img), (std::vector<uint8_t>{0, 128, 255, 255, 0, 0}));
}

TEST(PngEncode, WritePngIsAtomicAndOverwrites) {
  testimg::TempDir dir;
  const std::string path = dir.file("out.png");
  Image a = random_image(1, 9, 8, 3), b = random_image(3, 4, 5, 4);
  write_png(path, a);
  write_png(path, b, 16);
  const Image back = decode_image(path);
  EXPECT_EQ(back.channels, 3);
  EXPECT_EQ(back.width, 5);
  size_t files = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir.path())) files += e.is_regular_file();
  EXPECT_EQ(files, 1u);  // no temp file left behind
  expect_error([&] { write_png(dir.file("missing_dir/x.png"), a); }, {"missing_dir/x.png"});
}

TEST(PngEncode, BadArguments) {
  Image two(2, 3, 3);
  EXPECT_THROW(encode_png(two), ValueError);
  EXPECT_THROW(encode_png(Image(1, 3, 3), 12), ValueError);
  EXPECT_THROW(encode_png(Image()), ValueError);
  uint8_t px[4] = {};
  EXPECT_THROW(encode_png_u8(px, 2, 2, 5), ValueError);
  EXPECT_THROW(encode_png_u8(nullptr, 2, 2, 1), ValueError);
  EXPECT_THROW(decode(encode_png(Image(1, 2, 2)), {.channels = 2}), ValueError);
}

// ------------------------------------------------------------------ JPEG

// Smooth content (what quality-95 JPEG keeps within a level or two).
std::vector<uint8_t> smooth_pixels(int w, int h, int comps) {
  std::vector<uint8_t> px(static_cast<size_t>(w) * h * comps);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < comps; ++c) {
        const double v = 128 + 90 * std::sin(0.07 * x + 0.05 * y + c) * std::cos(0.04 * y - 0.5 * c);
        px[(static_cast<size_t>(y) * w + x) * comps + c] = static_cast<uint8_t>(std::lround(v));
      }
  return px;
}

Image planar_from(const testimg::Decoded& d) {
  Image img(d.components, d.height, d.width);
  for (int y = 0; y < d.height; ++y)
    for (int x = 0; x < d.width; ++x)
      for (int c = 0; c < d.components; ++c)
        img.at(c, y, x) = d.pixels[(static_cast<size_t>(y) * d.width + x) * d.components + c] / 255.0f;
  return img;
}

struct JpegParam {
  int components;
  bool progressive, full_chroma;
};

class JpegDecode : public ::testing::TestWithParam<JpegParam> {};

TEST_P(JpegDecode, MatchesLibjpegAndSource) {
  const JpegParam p = GetParam();
  const int w = 45, h = 37;
  JpegSpec spec;
  spec.width = w, spec.height = h, spec.components = p.components, spec.quality = 98;
  spec.progressive = p.progressive, spec.full_chroma = p.full_chroma;
  const auto px = smooth_pixels(w, h, p.components);
  const auto jpg = testimg::libjpeg_write(spec, px);
  const J_COLOR_SPACE cs = p.components == 1 ? JCS_GRAYSCALE : JCS_RGB;
  const Image got = decode(jpg);
  expect_same(got, planar_from(testimg::libjpeg_read(jpg, cs)));
  // Against the source: within a couple of levels for gray; color conversion rounding and
  // chroma subsampling cost a few more.
  const float tol = (p.components == 1 ? 2.5f : p.full_chroma ? 4.5f : 6.0f) / 255.0f;
  expect_same(got, planar_from({w, h, p.components, px}), tol);
  // Gray output of a color file is libjpeg's luma.
  expect_same(decode(jpg, {.channels = 1}), planar_from(testimg::libjpeg_read(jpg, JCS_GRAYSCALE)));
  const Image rgb = decode(jpg, {.channels = 3});
  ASSERT_EQ(rgb.channels, 3);
  if (p.components == 1)
    for (int c = 1; c < 3; ++c) EXPECT_TRUE(std::equal(rgb.plane(0), rgb.plane(0) + rgb.plane_size(), rgb.plane(c)));
}

INSTANTIATE_TEST_SUITE_P(Kinds, JpegDecode,
                         ::testing::Values(JpegParam{1, false, false}, JpegParam{1, true, false},
                                           JpegParam{3, false, false}, JpegParam{3, false, true},
                                           JpegParam{3, true, false}, JpegParam{3, true, true}),
                         [](const ::testing::TestParamInfo<JpegParam>& i) {
                           return std::string(i.param.components == 1 ? "gray" : "color") +
                                  (i.param.progressive ? "_progressive" : "_baseline") +
                                  (i.param.full_chroma ? "_444" : "");
                         });

TEST(JpegDecodeCmyk, ConvertedToRgb) {
  const int w = 16, h = 8;
  const auto px = smooth_pixels(w, h, 4);
  JpegSpec spec;
  spec.width = w, spec.height = h, spec.components = 4;
  const auto jpg = testimg::libjpeg_write(spec, px);  // libjpeg writes an Adobe marker: inverted CMYK
  const testimg::Decoded ref = testimg::libjpeg_read(jpg, JCS_CMYK);
  const Image img = decode(jpg);
  ASSERT_EQ(img.channels, 3);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      const uint8_t* p = ref.pixels.data() + (static_cast<size_t>(y) * w + x) * 4;
      for (int c = 0; c < 3; ++c) EXPECT_EQ(img.at(c, y, x), ((p[c] * p[3] + 127) / 255) / 255.0f);
    }
  const ImageInfo info = [&] {
    testimg::TempDir dir;
    testimg::write_bytes(dir.file("cmyk.jpg"), jpg);
    return probe_image(dir.file("cmyk.jpg"));
  }();
  EXPECT_EQ(info.channels, 4);
}

// A stored image whose four quadrants (16x8 each, whole 8x8 blocks) have distinct levels.
constexpr int kQw = 32, kQh = 16;
constexpr uint8_t kTL = 30, kTR = 90, kBL = 160, kBR = 230;

std::vector<uint8_t> quadrant_pixels() {
  std::vector<uint8_t> px(kQw * kQh);
  for (int y = 0; y < kQh; ++y)
    for (int x = 0; x < kQw; ++x) px[y * kQw + x] = y < kQh / 2 ? (x < kQw / 2 ? kTL : kTR) : (x < kQw / 2 ? kBL : kBR);
  return px;
}

// Level of the displayed corner pixel, as a byte.
int corner(const Image& img, bool right, bool bottom) {
  return static_cast<int>(std::lround(img.at(0, bottom ? img.height - 1 : 0, right ? img.width - 1 : 0) * 255));
}

// Reference orientation transform, written independently of the decoder's table:
// composition of flips and transposes.
Image reference_orient(const Image& s, int o) {
  auto flip_h = [](const Image& a) {
    Image b = a;
    for (int y = 0; y < a.height; ++y)
      for (int x = 0; x < a.width; ++x) b.at(0, y, x) = a.at(0, y, a.width - 1 - x);
    return b;
  };
  auto flip_v = [](const Image& a) {
    Image b = a;
    for (int y = 0; y < a.height; ++y)
      for (int x = 0; x < a.width; ++x) b.at(0, y, x) = a.at(0, a.height - 1 - y, x);
    return b;
  };
  auto transpose = [](const Image& a) {
    Image b(1, a.width, a.height);
    for (int y = 0; y < b.height; ++y)
      for (int x = 0; x < b.width; ++x) b.at(0, y, x) = a.at(0, x, y);
    return b;
  };
  switch (o) {
    case 2: return flip_h(s);
    case 3: return flip_v(flip_h(s));
    case 4: return flip_v(s);
    case 5: return transpose(s);
    case 6: return flip_h(transpose(s));  // 90 degrees clockwise
    case 7: return flip_v(flip_h(transpose(s)));
    case 8: return flip_v(transpose(s));  // 90 degrees counter-clockwise
    default: return s;
  }
}

TEST(JpegExif, AllOrientationsBothByteOrders) {
  // Where the stored top-left and top-right corners appear, from the EXIF definition
  // ("row 0 is at the visual ..., column 0 at the visual ...").
  struct Where {
    bool tl_right, tl_bottom, tr_right, tr_bottom;
  };
  const Where where[9] = {{}, {0, 0, 1, 0}, {1, 0, 0, 0}, {1, 1, 0, 1}, {0, 1, 1, 1},
                          {0, 0, 0, 1}, {1, 0, 1, 1}, {1, 1, 1, 0}, {0, 1, 0, 0}};
  const auto px = quadrant_pixels();
  JpegSpec spec;
  spec.width = kQw, spec.height = kQh, spec.quality = 100;
  const Image plain = decode(testimg::libjpeg_write(spec, px));
  for (bool be : {false, true}) {
    for (int o = 1; o <= 8; ++o) {
      SCOPED_TRACE("orientation " + std::to_string(o) + (be ? " big-endian" : " little-endian"));
      spec.app1 = testimg::exif_app1(o, be);
      const auto jpg = testimg::libjpeg_write(spec, px);
      const Image img = decode(jpg);
      const bool swap = o >= 5;
      EXPECT_EQ(img.width, swap ? kQh : kQw);
      EXPECT_EQ(img.height, swap ? kQw : kQh);
      EXPECT_NEAR(corner(img, where[o].tl_right, where[o].tl_bottom), kTL, 2);
      EXPECT_NEAR(corner(img, where[o].tr_right, where[o].tr_bottom), kTR, 2);
      expect_same(img, reference_orient(plain, o));
      testimg::TempDir dir;
      testimg::write_bytes(dir.file("o.jpg"), jpg);
      const ImageInfo info = probe_image(dir.file("o.jpg"));
      EXPECT_EQ(info.width, img.width);
      EXPECT_EQ(info.height, img.height);
    }
  }
}

TEST(JpegExif, MalformedExifIsIgnored) {
  const auto px = quadrant_pixels();
  JpegSpec spec;
  spec.width = kQw, spec.height = kQh;
  for (int cut : {7, 12, 16, 20, 27}) {
    spec.app1 = testimg::exif_app1(6, false);
    spec.app1.resize(cut);  // IFD cut short
    const Image img = decode(testimg::libjpeg_write(spec, px));
    EXPECT_EQ(img.width, kQw) << cut;
  }
  spec.app1 = testimg::exif_app1(9, true);  // out of range
  EXPECT_EQ(decode(testimg::libjpeg_write(spec, px)).width, kQw);
}

TEST(JpegScale, PicksSmallestCoveringScale) {
  const int w = 64, h = 48;
  JpegSpec spec;
  spec.width = w, spec.height = h, spec.components = 3;
  const auto jpg = testimg::libjpeg_write(spec, smooth_pixels(w, h, 3));
  struct Case {
    int min_w, min_h, want_w, want_h;
    unsigned denom;
  };
  for (const Case& c : {Case{0, 0, 64, 48, 1}, Case{8, 6, 8, 6, 8}, Case{9, 1, 16, 12, 4}, Case{16, 12, 16, 12, 4},
                        Case{17, 0, 32, 24, 2}, Case{0, 25, 64, 48, 1}, Case{500, 500, 64, 48, 1}}) {
    const Image img = decode(jpg, {.min_width = c.min_w, .min_height = c.min_h});
    EXPECT_EQ(img.width, c.want_w) << c.min_w << "x" << c.min_h;
    EXPECT_EQ(img.height, c.want_h) << c.min_w << "x" << c.min_h;
    expect_same(img, planar_from(testimg::libjpeg_read(jpg, JCS_RGB, c.denom)));
  }
  // PNG ignores the minimum.
  const Image png = decode(encode_png(Image(1, 40, 40)), {.min_width = 5, .min_height = 5});
  EXPECT_EQ(png.width, 40);
}

TEST(JpegScale, OrientationSwapsTheMinimums) {
  // Stored 64x48, displayed 48x64 (orientation 6).
  JpegSpec spec;
  spec.width = 64, spec.height = 48, spec.app1 = testimg::exif_app1(6, false);
  const auto jpg = testimg::libjpeg_write(spec, smooth_pixels(64, 48, 1));
  Image a = decode(jpg, {.min_width = 12, .min_height = 16});  // stored 16x12 covers it
  EXPECT_EQ(a.width, 12);
  EXPECT_EQ(a.height, 16);
  Image b = decode(jpg, {.min_width = 13, .min_height = 16});  // needs stored height >= 13
  EXPECT_EQ(b.width, 24);
  EXPECT_EQ(b.height, 32);
}

// ------------------------------------------------------------------ probe, sniff, files

TEST(Probe, ReportsHeaderFacts) {
  testimg::TempDir dir;
  const PngCase pc = make_png(PNG_COLOR_TYPE_GRAY_ALPHA, 16, true, 21, 19);
  testimg::write_bytes(dir.file("a.png"), pc.bytes);
  ImageInfo i = probe_image(dir.file("a.png"));
  EXPECT_EQ(i.format, ImageFormat::png);
  EXPECT_EQ(i.width, 21);
  EXPECT_EQ(i.height, 19);
  EXPECT_EQ(i.channels, 2);
  EXPECT_EQ(i.bit_depth, 16);
  EXPECT_TRUE(i.progressive);

  JpegSpec spec;
  spec.width = 30, spec.height = 20, spec.components = 3, spec.progressive = true;
  // Metadata bigger than the probe's first read: it must read on.
  spec.app1.assign(65000, 'x');
  std::vector<uint8_t> jpg = testimg::libjpeg_write(spec, smooth_pixels(30, 20, 3));
  ASSERT_GT(jpg.size(), 65000u);
  testimg::write_bytes(dir.file("b.jpeg"), jpg);
  i = probe_image(dir.file("b.jpeg"));
  EXPECT_EQ(i.format, ImageFormat::jpeg);
  EXPECT_EQ(i.width, 30);
  EXPECT_EQ(i.height, 20);
  EXPECT_EQ(i.channels, 3);
  EXPECT_EQ(i.bit_depth, 8);
  EXPECT_TRUE(i.progressive);
  EXPECT_STREQ(format_name(i.format), "JPEG");
  EXPECT_STREQ(format_name(ImageFormat::png), "PNG");
}

TEST(Sniff, MagicBytes) {
  const uint8_t png[8] = {0x89, 'P', 'N', 'G', 0x0D, 0x0A, 0x1A, 0x0A};
  const uint8_t jpg[3] = {0xFF, 0xD8, 0xFF};
  EXPECT_EQ(sniff_format(png, 8), ImageFormat::png);
  EXPECT_EQ(sniff_format(png, 7), ImageFormat::unknown);
  EXPECT_EQ(sniff_format(jpg, 3), ImageFormat::jpeg);
  EXPECT_EQ(sniff_format(jpg, 2), ImageFormat::unknown);
  EXPECT_EQ(sniff_format("GIF89a", 6), ImageFormat::unknown);
  EXPECT_EQ(sniff_format(nullptr, 0), ImageFormat::unknown);
}

TEST(Decode, FromFileMatchesMemory) {
  testimg::TempDir dir;
  const PngCase pc = make_png(PNG_COLOR_TYPE_RGB, 8, false);
  testimg::write_bytes(dir.file("x.png"), pc.bytes);
  expect_same(decode_image(dir.file("x.png")), pc.expected);
}

TEST(Decode, IntoReusesOneImage) {
  // One Image takes file after file: each result equals a fresh decode, a smaller image
  // reuses the allocation, and a bad file in between leaves the buffer usable.
  testimg::TempDir dir;
  const PngCase rgb = make_png(PNG_COLOR_TYPE_RGB, 8, false);
  const PngCase gray16 = make_png(PNG_COLOR_TYPE_GRAY, 16, true);
  JpegSpec spec;
  spec.width = kQw, spec.height = kQh, spec.quality = 95;
  spec.app1 = testimg::exif_app1(6, false);
  const auto jpg = testimg::libjpeg_write(spec, quadrant_pixels());
  Image buf;
  DecodeOptions three;
  three.channels = 3;
  decode_image_memory_into(rgb.bytes.data(), rgb.bytes.size(), "rgb.png", three, buf);
  expect_same(buf, rgb.expected);
  const float* first = buf.data.data();
  decode_image_memory_into(gray16.bytes.data(), gray16.bytes.size(), "g16.png", {}, buf);
  expect_same(buf, gray16.expected);
  if (gray16.expected.data.size() <= rgb.expected.data.size()) EXPECT_EQ(buf.data.data(), first);
  const std::vector<uint8_t> cut(jpg.begin(), jpg.begin() + static_cast<std::ptrdiff_t>(jpg.size() / 2));
  EXPECT_THROW(decode_image_memory_into(cut.data(), cut.size(), "cut.jpg", {}, buf), FileError);
  decode_image_memory_into(jpg.data(), jpg.size(), "o6.jpg", {}, buf);
  expect_same(buf, decode_image_memory(jpg.data(), jpg.size(), "o6.jpg"));
  testimg::write_bytes(dir.file("x.png"), rgb.bytes);
  decode_image_into(dir.file("x.png"), three, buf);
  expect_same(buf, rgb.expected);
}

// ------------------------------------------------------------------ threads

TEST(Decode, FourThreadsAtOnce) {
  std::vector<std::vector<uint8_t>> files;
  std::vector<Image> want;
  for (int i = 0; i < 4; ++i) {
    if (i % 2 == 0) {
      const PngCase pc = make_png(i == 0 ? PNG_COLOR_TYPE_RGBA : PNG_COLOR_TYPE_GRAY, 8 * (1 + i / 2), i == 2, 40, 30, i);
      files.push_back(pc.bytes);
    } else {
      JpegSpec spec;
      spec.width = 48, spec.height = 40, spec.components = i == 1 ? 3 : 1, spec.progressive = i == 3;
      files.push_back(testimg::libjpeg_write(spec, smooth_pixels(48, 40, spec.components)));
    }
    want.push_back(decode(files.back()));
  }
  std::vector<int> mismatches(4, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (int k = 0; k < 25; ++k) {
        const int i = (t + k) % 4;
        const Image img = decode_image_memory(files[i].data(), files[i].size(), "t", {});
        if (img.data != want[i].data) ++mismatches[t];
        // errors from several threads at once stay separate too
        try {
          decode_image_memory(files[i].data(), files[i].size() / 2, "half", {});
          ++mismatches[t];
        } catch (const FileError&) {
        }
      }
    });
  for (auto& th : threads) th.join();
  for (int t = 0; t < 4; ++t) EXPECT_EQ(mismatches[t], 0) << "thread " << t;
}

}  // namespace
}  // namespace cxr::data
