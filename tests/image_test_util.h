// Test-only image makers for the data/image tests: PNG files written by libpng's own
// encoder and JPEG files written by libjpeg's own encoder (every color type, bit depth,
// interlacing, progressive scripts, an EXIF orientation marker built by hand), libjpeg's
// own decode of a JPEG to compare against, and small byte-level helpers (CRC-32, a temp
// directory). Errors inside the libraries become std::runtime_error.
#pragma once

#include <stdlib.h>
#include <unistd.h>

#include <csetjmp>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <jpeglib.h>
#include <png.h>

#include "temp_dir.h"

namespace cxr::testimg {

namespace fs = std::filesystem;

// A fresh directory under the system temp directory, removed afterwards.
using cxr_test::TempDir;

inline void write_bytes(const std::string& path, const std::vector<uint8_t>& b) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
  if (!f) throw std::runtime_error("cannot write " + path);
}

inline uint32_t crc32(const uint8_t* p, size_t n) {
  uint32_t c = 0xFFFFFFFFu;
  for (size_t i = 0; i < n; ++i) {
    c ^= p[i];
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
  }
  return c ^ 0xFFFFFFFFu;
}

inline void put_be32(uint8_t* p, uint32_t v) {
  p[0] = uint8_t(v >> 24), p[1] = uint8_t(v >> 16), p[2] = uint8_t(v >> 8), p[3] = uint8_t(v);
}

// Deterministic bytes (xorshift), so failures reproduce.
inline std::vector<uint8_t> pseudo_random_bytes(size_t n, uint32_t seed) {
  std::vector<uint8_t> out(n);
  uint32_t s = seed * 2654435761u + 1;
  for (auto& b : out) {
    s ^= s << 13, s ^= s >> 17, s ^= s << 5;
    b = static_cast<uint8_t>(s >> 24);
  }
  return out;
}

// ------------------------------------------------------------------ PNG through libpng

struct PngSpec {
  int width = 0, height = 0;
  int color_type = PNG_COLOR_TYPE_GRAY;
  int bit_depth = 8;
  bool interlaced = false;
  std::vector<png_color> palette;   // PNG_COLOR_TYPE_PALETTE
  std::vector<uint8_t> palette_alpha;  // tRNS for a palette
  bool has_trans_color = false;     // tRNS for gray / RGB
  png_color_16 trans_color{};
};

namespace detail {
struct PngSink {
  std::vector<uint8_t> bytes;
};
inline void png_sink_write(png_structp p, png_bytep d, size_t n) {
  auto* s = static_cast<PngSink*>(png_get_io_ptr(p));
  s->bytes.insert(s->bytes.end(), d, d + n);
}
inline void png_sink_flush(png_structp) {}
inline bool libpng_write_phase(png_structp png, png_infop info, const PngSpec* s, png_bytep* rows, PngSink* sink) {
  if (setjmp(png_jmpbuf(png))) return false;
  png_set_write_fn(png, sink, png_sink_write, png_sink_flush);
  png_set_IHDR(png, info, s->width, s->height, s->bit_depth, s->color_type,
               s->interlaced ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
               PNG_FILTER_TYPE_DEFAULT);
  if (!s->palette.empty()) png_set_PLTE(png, info, s->palette.data(), static_cast<int>(s->palette.size()));
  if (!s->palette_alpha.empty())
    png_set_tRNS(png, info, s->palette_alpha.data(), static_cast<int>(s->palette_alpha.size()), nullptr);
  if (s->has_trans_color) png_set_tRNS(png, info, nullptr, 0, const_cast<png_color_16*>(&s->trans_color));
  png_write_info(png, info);
  png_write_image(png, rows);
  png_write_end(png, nullptr);
  return true;
}
}  // namespace detail

// `rows`: height rows of packed samples exactly as PNG stores them (16-bit big-endian,
// sub-byte depths packed most significant bits first).
inline std::vector<uint8_t> libpng_write(const PngSpec& spec, std::vector<std::vector<uint8_t>> rows) {
  detail::PngSink sink;
  std::vector<png_bytep> ptrs;
  for (auto& r : rows) ptrs.push_back(r.data());
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png_create_info_struct(png);
  const bool ok = detail::libpng_write_phase(png, info, &spec, ptrs.data(), &sink);
  png_destroy_write_struct(&png, &info);
  if (!ok) throw std::runtime_error("libpng_write failed");
  return std::move(sink.bytes);
}

// ------------------------------------------------------------------ JPEG through libjpeg

struct JpegSpec {
  int width = 0, height = 0;
  int components = 1;  // 1 gray, 3 RGB, 4 CMYK (written with an Adobe marker)
  int quality = 95;
  bool progressive = false;   // jpeg_simple_progression
  bool full_chroma = false;   // 4:4:4 instead of libjpeg's default 4:2:0
  std::vector<jpeg_scan_info> scans;  // custom progressive script when not empty
  std::vector<uint8_t> app1;  // written as an APP1 marker when not empty
};

namespace detail {
struct JpegErr {
  jpeg_error_mgr pub;
  std::jmp_buf jump;
};
inline void jpeg_err_exit(j_common_ptr c) { std::longjmp(reinterpret_cast<JpegErr*>(c->err)->jump, 1); }
inline void jpeg_err_silent(j_common_ptr) {}

inline bool libjpeg_write_phase(jpeg_compress_struct* c, const JpegSpec* s, const uint8_t* px, unsigned char** out,
                                unsigned long* out_size) {
  if (setjmp(reinterpret_cast<JpegErr*>(c->err)->jump)) return false;
  jpeg_create_compress(c);
  jpeg_mem_dest(c, out, out_size);
  c->image_width = s->width;
  c->image_height = s->height;
  c->input_components = s->components;
  c->in_color_space = s->components == 1 ? JCS_GRAYSCALE : s->components == 3 ? JCS_RGB : JCS_CMYK;
  jpeg_set_defaults(c);
  jpeg_set_quality(c, s->quality, TRUE);
  if (s->full_chroma)
    for (int i = 0; i < c->num_components; ++i) c->comp_info[i].h_samp_factor = c->comp_info[i].v_samp_factor = 1;
  if (s->progressive) jpeg_simple_progression(c);
  if (!s->scans.empty()) {
    c->scan_info = s->scans.data();
    c->num_scans = static_cast<int>(s->scans.size());
  }
  jpeg_start_compress(c, TRUE);
  if (!s->app1.empty()) jpeg_write_marker(c, JPEG_APP0 + 1, s->app1.data(), static_cast<unsigned>(s->app1.size()));
  const size_t stride = static_cast<size_t>(s->width) * s->components;
  while (c->next_scanline < c->image_height) {
    JSAMPROW row = const_cast<JSAMPROW>(px + c->next_scanline * stride);
    jpeg_write_scanlines(c, &row, 1);
  }
  jpeg_finish_compress(c);
  return true;
}

inline bool libjpeg_read_phase(jpeg_decompress_struct* c, const std::vector<uint8_t>* in, J_COLOR_SPACE space,
                               unsigned denom, std::vector<uint8_t>* out, int* w, int* h, int* comps) {
  if (setjmp(reinterpret_cast<JpegErr*>(c->err)->jump)) return false;
  jpeg_create_decompress(c);
  jpeg_mem_src(c, in->data(), static_cast<unsigned long>(in->size()));
  jpeg_read_header(c, TRUE);
  c->out_color_space = space;
  c->scale_num = 1;
  c->scale_denom = denom;
  jpeg_start_decompress(c);
  *w = static_cast<int>(c->output_width);
  *h = static_cast<int>(c->output_height);
  *comps = c->output_components;
  const size_t stride = static_cast<size_t>(*w) * *comps;
  out->assign(stride * *h, 0);  // allocation only: libjpeg calls cannot longjmp out of it
  while (c->output_scanline < c->output_height) {
    JSAMPROW row = out->data() + c->output_scanline * stride;
    jpeg_read_scanlines(c, &row, 1);
  }
  jpeg_finish_decompress(c);
  return true;
}
}  // namespace detail

// `pixels`: interleaved 8-bit samples, height * width * components.
inline std::vector<uint8_t> libjpeg_write(const JpegSpec& spec, const std::vector<uint8_t>& pixels) {
  jpeg_compress_struct c{};
  detail::JpegErr err{};
  c.err = jpeg_std_error(&err.pub);
  err.pub.error_exit = detail::jpeg_err_exit;
  err.pub.output_message = detail::jpeg_err_silent;
  unsigned char* buf = nullptr;
  unsigned long size = 0;
  const bool ok = detail::libjpeg_write_phase(&c, &spec, pixels.data(), &buf, &size);
  jpeg_destroy_compress(&c);
  std::vector<uint8_t> out;
  if (ok) out.assign(buf, buf + size);
  free(buf);
  if (!ok) throw std::runtime_error("libjpeg_write failed");
  return out;
}

struct Decoded {
  int width = 0, height = 0, components = 0;
  std::vector<uint8_t> pixels;  // interleaved
};

// libjpeg's own decode (default settings: islow IDCT, fancy upsampling).
inline Decoded libjpeg_read(const std::vector<uint8_t>& bytes, J_COLOR_SPACE space, unsigned denom = 1) {
  jpeg_decompress_struct c{};
  detail::JpegErr err{};
  c.err = jpeg_std_error(&err.pub);
  err.pub.error_exit = detail::jpeg_err_exit;
  err.pub.output_message = detail::jpeg_err_silent;
  Decoded d;
  const bool ok = detail::libjpeg_read_phase(&c, &bytes, space, denom, &d.pixels, &d.width, &d.height, &d.components);
  jpeg_destroy_decompress(&c);
  if (!ok) throw std::runtime_error("libjpeg_read failed");
  return d;
}

// APP1 payload "Exif\0\0" + TIFF header + IFD0 with a Make tag and the Orientation tag.
inline std::vector<uint8_t> exif_app1(int orientation, bool big_endian) {
  std::vector<uint8_t> b = {'E', 'x', 'i', 'f', 0, 0};
  auto u16 = [&](uint32_t v) {
    if (big_endian) b.push_back(uint8_t(v >> 8)), b.push_back(uint8_t(v));
    else b.push_back(uint8_t(v)), b.push_back(uint8_t(v >> 8));
  };
  auto u32 = [&](uint32_t v) {
    if (big_endian) u16(v >> 16), u16(v & 0xFFFF);
    else u16(v & 0xFFFF), u16(v >> 16);
  };
  b.push_back(big_endian ? 'M' : 'I');
  b.push_back(big_endian ? 'M' : 'I');
  u16(42);
  u32(8);  // IFD0 right after the header
  u16(2);  // entries
  u16(0x010F), u16(2), u32(4), b.insert(b.end(), {'c', 'x', 'r', 0});  // Make = "cxr"
  u16(0x0112), u16(3), u32(1), u16(static_cast<uint32_t>(orientation)), u16(0);
  u32(0);  // no next IFD
  return b;
}

// The byte offset of the last marker `code` (0xFF code) in a JPEG, or npos.
inline size_t find_last_marker(const std::vector<uint8_t>& j, uint8_t code) {
  size_t found = std::string::npos;
  for (size_t i = 0; i + 1 < j.size(); ++i)
    if (j[i] == 0xFF && j[i + 1] == code) found = i;
  return found;
}

}  // namespace cxr::testimg
