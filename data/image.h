// Images: decoding (PNG through libpng, JPEG through libjpeg-turbo), encoding to PNG, and
// the in-memory Image every transform works on.
//
// An Image is planar float: channel c, row y, column x at data[(c*height + y)*width + x],
// values in [0, 1] (8-bit samples / 255, 16-bit samples / 65535, so 16-bit X-rays keep
// their precision). Channel counts: 1 (gray) or 3 (RGB); decoders drop alpha (composited
// onto black) and convert to the requested count (gray -> RGB by replication, RGB -> gray
// by the ITU-R BT.601 luma weights 0.299, 0.587, 0.114).
//
// Hostile input: every decoder checks the file size, the pixel count (DecodeLimits) and,
// for JPEG, the number of progressive scans before allocating pixel memory. A truncated,
// empty, mislabelled or corrupt file throws cxr::FileError naming the file and the reason;
// the libraries' errors are turned into exceptions without longjmp crossing C++ frames.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "runtime/error.h"

namespace cxr::data {

struct Image {
  int channels = 0, height = 0, width = 0;
  std::vector<float> data;  // channels * height * width, planar

  Image() = default;
  Image(int c, int h, int w, float fill = 0.0f)
      : channels(c), height(h), width(w), data(static_cast<size_t>(c) * h * w, fill) {}
  // Sets the dimensions and sizes `data` to match, keeping its allocation when it is
  // large enough; the values are unspecified afterwards (the caller overwrites them).
  // Lets a worker decode image after image into one buffer.
  void reshape(int c, int h, int w) {
    channels = c, height = h, width = w;
    data.resize(static_cast<size_t>(c) * h * w);
  }
  bool empty() const { return data.empty(); }
  size_t plane_size() const { return static_cast<size_t>(height) * width; }
  float* plane(int c) { return data.data() + c * plane_size(); }
  const float* plane(int c) const { return data.data() + c * plane_size(); }
  float& at(int c, int y, int x) { return data[(static_cast<size_t>(c) * height + y) * width + x]; }
  float at(int c, int y, int x) const { return data[(static_cast<size_t>(c) * height + y) * width + x]; }
};

struct DecodeLimits {
  int64_t max_pixels = 90'000'000;          // width * height, checked before allocation
  int64_t max_file_bytes = int64_t(1) << 30;  // files larger than this are refused unread
  int max_jpeg_scans = 256;                 // progressive JPEG scans (a scan bomb has thousands)
};

enum class ImageFormat : uint8_t { unknown, png, jpeg };
const char* format_name(ImageFormat f);
// Format from the first bytes (magic numbers), not from the file name.
ImageFormat sniff_format(const void* data, size_t size);

struct ImageInfo {
  ImageFormat format = ImageFormat::unknown;
  int width = 0, height = 0;
  int channels = 0;   // in the file, alpha included (1 gray, 2 gray+alpha, 3 RGB, 4 RGBA / CMYK)
  int bit_depth = 8;  // 8 or 16 (JPEG: 8)
  bool progressive = false;  // interlaced PNG or progressive JPEG
};

// Reads only the header (dimensions, format); throws FileError like the decoders.
ImageInfo probe_image(const std::string& path, const DecodeLimits& limits = {});

struct DecodeOptions {
  int channels = 0;  // 1 or 3; 0 keeps the file's color channels (gray -> 1, color -> 3)
  // When > 0, a JPEG may be decoded at a reduced scale (libjpeg-turbo's DCT scaling,
  // 1/2, 1/4 or 1/8) as long as the result stays at least this large in both dims; the
  // caller resizes anyway, and decoding fewer pixels is much faster. PNG ignores it.
  int min_width = 0, min_height = 0;
  DecodeLimits limits;
};

// Decodes a PNG or JPEG file (format from its magic bytes, so a .png holding a JPEG
// decodes fine and a text file named .png is a clear error). `name` names the source in
// errors.
Image decode_image(const std::string& path, const DecodeOptions& opts = {});
Image decode_image_memory(const void* data, size_t size, const std::string& name, const DecodeOptions& opts = {});
// The same, decoding into `out` (reshaped; its allocation is reused when large enough), so
// a loop over files allocates pixel memory once. On an error `out` is left valid but its
// contents unspecified.
void decode_image_into(const std::string& path, const DecodeOptions& opts, Image& out);
void decode_image_memory_into(const void* data, size_t size, const std::string& name, const DecodeOptions& opts,
                              Image& out);

// 8-bit interleaved pixels (HWC), for overlays and viewers. Values are clamped to [0, 1]
// and rounded: v8 = round(v * 255).
std::vector<uint8_t> to_u8_interleaved(const Image& img);

// PNG encoding of an Image with 1 or 3 channels at 8 or 16 bits per sample (values
// clamped to [0, 1]; v16 = round(v * 65535)).
std::vector<uint8_t> encode_png(const Image& img, int bit_depth = 8);
// Interleaved 8-bit pixels (channels 1, 2, 3 or 4) to PNG.
std::vector<uint8_t> encode_png_u8(const uint8_t* pixels, int width, int height, int channels);
// Writes a PNG atomically (temp file, fsync, rename): a crash leaves the old file or the new one.
void write_png(const std::string& path, const Image& img, int bit_depth = 8);

}  // namespace cxr::data
