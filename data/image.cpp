// Image decoding (PNG through libpng, JPEG through libjpeg-turbo's libjpeg API), PNG
// encoding, and the conversions between the libraries' interleaved 8/16-bit rows and the
// planar float Image.
//
// Error handling: both libraries report errors by longjmp. Every call into them happens in
// a small "phase" function (png_*_phase, jpeg_*_phase) that calls setjmp first and holds
// no C++ object with a destructor, and every callback they call (read, error, progress)
// holds none either; so a longjmp never skips a destructor. A phase returns false after
// an error; its C++ caller then throws cxr::FileError with the message the callback saved.
// The libraries' own structures are released by RAII owners that live in the callers.
//
// JPEG policy: the corrupt-data warnings that mean pixels were lost (premature end of a
// data segment, bad Huffman/arithmetic code, lost restart sync, premature end of file) are
// errors, since libjpeg would otherwise pad with gray; the benign ones (extraneous bytes
// before a marker, inconsistent progression, unknown JFIF revision) are ignored. CMYK and
// YCCK JPEGs are converted to RGB (Adobe files store inverted CMYK: R = C*K/255; files
// without the Adobe marker store plain CMYK: R = (255-C)*(255-K)/255). The EXIF
// orientation (APP1 "Exif", tag 0x0112) is applied; PNG eXIf chunks are not read.
#include "data/image.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <climits>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <memory>
#include <system_error>

#include <jpeglib.h>  // needs <cstdio> first
#include <jerror.h>
#include <png.h>

#include "runtime/file_util.h"

namespace cxr::data {
namespace {

// ------------------------------------------------------------------ common helpers

constexpr uint8_t kPngMagic[8] = {0x89, 'P', 'N', 'G', 0x0D, 0x0A, 0x1A, 0x0A};
constexpr uint8_t kJpegMagic[3] = {0xFF, 0xD8, 0xFF};

// v / 255 for every 8-bit sample value: the 8-bit conversions are one table lookup.
constexpr std::array<float, 256> make_u8_lut() {
  std::array<float, 256> t{};
  for (int i = 0; i < 256; ++i) t[i] = static_cast<float>(i) / 255.0f;
  return t;
}
constexpr std::array<float, 256> kU8ToFloat = make_u8_lut();

[[noreturn]] void fail(const std::string& name, const std::string& why) { throw FileError(name + ": " + why); }

std::string hex_prefix(const uint8_t* p, size_t n) {
  std::string s;
  char buf[4];
  for (size_t i = 0; i < std::min<size_t>(n, 8); ++i) {
    std::snprintf(buf, sizeof buf, "%s%02x", i ? " " : "", p[i]);
    s += buf;
  }
  return s;
}

void check_options(const DecodeOptions& o) {
  CXR_CHECK(o.channels == 0 || o.channels == 1 || o.channels == 3,
            "DecodeOptions::channels must be 0, 1 or 3, got ", o.channels);
  CXR_CHECK(o.min_width >= 0 && o.min_height >= 0, "DecodeOptions min_width/min_height must be >= 0, got ",
            o.min_width, "x", o.min_height);
  CXR_CHECK(o.limits.max_pixels > 0 && o.limits.max_file_bytes > 0 && o.limits.max_jpeg_scans > 0,
            "DecodeLimits must be positive, got max_pixels=", o.limits.max_pixels,
            " max_file_bytes=", o.limits.max_file_bytes, " max_jpeg_scans=", o.limits.max_jpeg_scans);
}

void check_pixels(const std::string& name, int64_t w, int64_t h, const DecodeLimits& limits) {
  if (w <= 0 || h <= 0) fail(name, detail::cat("image has no pixels (", w, "x", h, ")"));
  if (w * h > limits.max_pixels)
    fail(name, detail::cat("image is ", w, "x", h, " = ", w * h, " pixels, more than the limit of ",
                           limits.max_pixels, " (DecodeLimits::max_pixels)"));
}

// Closes a POSIX file descriptor on scope exit.
struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

struct FileBytes {
  std::unique_ptr<uint8_t[]> data;
  size_t size = 0;       // bytes read
  int64_t file_size = 0;  // bytes in the file
};

// Reads at most `prefix` bytes (0: the whole file) of `path`, refusing files larger than
// limits.max_file_bytes before reading anything.
FileBytes read_file(const std::string& path, const DecodeLimits& limits, size_t prefix) {
  Fd f;
  do f.fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  while (f.fd < 0 && errno == EINTR);
  if (f.fd < 0) fail(path, "cannot open: " + std::generic_category().message(errno));
  struct stat st {};
  if (::fstat(f.fd, &st) != 0) fail(path, "cannot stat: " + std::generic_category().message(errno));
  if (S_ISDIR(st.st_mode)) fail(path, "is a directory, not an image file");
  if (!S_ISREG(st.st_mode)) fail(path, "is not a regular file");
  const int64_t size = st.st_size;
  if (size > limits.max_file_bytes)
    fail(path, detail::cat("file is ", size, " bytes, more than the limit of ", limits.max_file_bytes,
                           " (DecodeLimits::max_file_bytes)"));
  FileBytes out;
  out.file_size = size;
  const size_t want = prefix ? std::min<size_t>(prefix, static_cast<size_t>(size)) : static_cast<size_t>(size);
  out.data = std::make_unique_for_overwrite<uint8_t[]>(std::max<size_t>(want, 1));
  while (out.size < want) {
    const ssize_t n = ::read(f.fd, out.data.get() + out.size, want - out.size);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) fail(path, "read failed: " + std::generic_category().message(errno));
    if (n == 0) break;  // the file shrank while we read it: decode what is there
    out.size += static_cast<size_t>(n);
  }
  return out;
}

// Format check with messages for the cases sniff_format cannot name.
ImageFormat sniff_or_throw(const uint8_t* p, size_t n, const std::string& name) {
  if (n == 0) fail(name, "file is empty");
  const ImageFormat f = sniff_format(p, n);
  if (f != ImageFormat::unknown) return f;
  if (n < sizeof kPngMagic && std::memcmp(p, kPngMagic, n) == 0)
    fail(name, detail::cat("truncated PNG: the file is only ", n, " bytes"));
  if (n < sizeof kJpegMagic && std::memcmp(p, kJpegMagic, n) == 0)
    fail(name, detail::cat("truncated JPEG: the file is only ", n, " bytes"));
  fail(name, "not a PNG or JPEG file (starts with " + hex_prefix(p, n) + ")");
}

// ------------------------------------------------------------------ row conversion

// One sample of an interleaved row as a float in [0, 1]; 16-bit samples are big-endian.
template <bool Wide>
inline float sample(const uint8_t* row, int i) {
  if constexpr (Wide) return static_cast<float>((row[2 * i] << 8) | row[2 * i + 1]) / 65535.0f;
  else return kU8ToFloat[row[i]];
}

inline float luma(float r, float g, float b) { return 0.299f * r + 0.587f * g + 0.114f * b; }

// Interleaved row (Src channels: 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA) to Out planar rows.
// Alpha is composited onto black (v * a) and dropped.
template <int Src, int Out, bool Wide>
void convert_row(const uint8_t* row, int width, float* const* dst) {
  if constexpr (Src == 1 && Out == 1 && !Wide) {
    // The common X-ray case. A division the compiler vectorizes beats table lookups,
    // and gives the same values as the table.
    float* out = dst[0];
    for (int x = 0; x < width; ++x) out[x] = static_cast<float>(row[x]) / 255.0f;
    return;
  }
  if constexpr (Src == 3 && Out == 3 && !Wide) {  // RGB JPEGs and PNGs: the same, de-interleaving
    float* __restrict r = dst[0];
    float* __restrict g = dst[1];
    float* __restrict b = dst[2];
    for (int x = 0; x < width; ++x) {
      r[x] = static_cast<float>(row[3 * x]) / 255.0f;
      g[x] = static_cast<float>(row[3 * x + 1]) / 255.0f;
      b[x] = static_cast<float>(row[3 * x + 2]) / 255.0f;
    }
    return;
  }
  constexpr bool kColor = Src >= 3;
  constexpr bool kAlpha = Src == 2 || Src == 4;
  for (int x = 0; x < width; ++x) {
    float s[Src];
    for (int c = 0; c < Src; ++c) s[c] = sample<Wide>(row, x * Src + c);
    if constexpr (kAlpha)
      for (int c = 0; c < Src - 1; ++c) s[c] *= s[Src - 1];
    if constexpr (Out == 1) {
      if constexpr (kColor) dst[0][x] = luma(s[0], s[1], s[2]);
      else dst[0][x] = s[0];
    } else {
      for (int c = 0; c < 3; ++c) dst[c][x] = s[kColor ? c : 0];
    }
  }
}

using RowFn = void (*)(const uint8_t*, int, float* const*);

template <int Src, int Out>
RowFn pick_row_fn(bool wide) {
  return wide ? &convert_row<Src, Out, true> : &convert_row<Src, Out, false>;
}

RowFn row_fn(int src_channels, int out_channels, bool wide) {
  const bool one = out_channels == 1;
  switch (src_channels) {
    case 1: return one ? pick_row_fn<1, 1>(wide) : pick_row_fn<1, 3>(wide);
    case 2: return one ? pick_row_fn<2, 1>(wide) : pick_row_fn<2, 3>(wide);
    case 3: return one ? pick_row_fn<3, 1>(wide) : pick_row_fn<3, 3>(wide);
    default: return one ? pick_row_fn<4, 1>(wide) : pick_row_fn<4, 3>(wide);
  }
}

// In-place CMYK -> RGB of one 8-bit row (writes 3 bytes per pixel from the front).
void cmyk_row_to_rgb(uint8_t* row, int width, bool inverted) {
  for (int x = 0; x < width; ++x) {
    int c = row[4 * x], m = row[4 * x + 1], y = row[4 * x + 2], k = row[4 * x + 3];
    if (!inverted) c = 255 - c, m = 255 - m, y = 255 - y, k = 255 - k;
    row[3 * x] = static_cast<uint8_t>((c * k + 127) / 255);
    row[3 * x + 1] = static_cast<uint8_t>((m * k + 127) / 255);
    row[3 * x + 2] = static_cast<uint8_t>((y * k + 127) / 255);
  }
}

// ------------------------------------------------------------------ EXIF orientation

// Orientation (1..8) from an APP1 payload ("Exif\0\0" + TIFF); 1 when absent or malformed.
int exif_orientation(const uint8_t* p, size_t n) {
  if (n < 6 + 8 || std::memcmp(p, "Exif\0\0", 6) != 0) return 1;
  const uint8_t* t = p + 6;
  const size_t tn = n - 6;
  bool le;
  if (t[0] == 'I' && t[1] == 'I') le = true;
  else if (t[0] == 'M' && t[1] == 'M') le = false;
  else return 1;
  auto u16 = [&](size_t o) -> uint32_t { return le ? t[o] | (t[o + 1] << 8) : (t[o] << 8) | t[o + 1]; };
  auto u32 = [&](size_t o) -> uint32_t {
    return le ? t[o] | (t[o + 1] << 8) | (t[o + 2] << 16) | (uint32_t(t[o + 3]) << 24)
              : (uint32_t(t[o]) << 24) | (t[o + 1] << 16) | (t[o + 2] << 8) | t[o + 3];
  };
  if (u16(2) != 42) return 1;
  const size_t ifd = u32(4);
  if (ifd > tn || tn - ifd < 2) return 1;
  const size_t count = u16(ifd);
  for (size_t i = 0; i < count; ++i) {
    const size_t e = ifd + 2 + 12 * i;
    if (e > tn || tn - e < 12) return 1;
    if (u16(e) != 0x0112) continue;
    if (u16(e + 2) != 3 /* SHORT */ || u32(e + 4) != 1) return 1;
    const uint32_t v = u16(e + 8);
    return v >= 1 && v <= 8 ? static_cast<int>(v) : 1;
  }
  return 1;
}

bool orientation_swaps(int o) { return o >= 5; }

// Turns `img` into the displayed image for an EXIF orientation: displayed (x, y) takes
// stored (sx, sy). Orientation 1 (or an unknown value) leaves it as it is.
void apply_orientation(Image& img, int o) {
  if (o <= 1 || o > 8) return;
  const Image in = std::move(img);
  const int w = in.width, h = in.height;
  Image out = orientation_swaps(o) ? Image(in.channels, w, h) : Image(in.channels, h, w);
  for (int c = 0; c < in.channels; ++c) {
    const float* s = in.plane(c);
    float* d = out.plane(c);
    for (int y = 0; y < out.height; ++y) {
      float* drow = d + static_cast<size_t>(y) * out.width;
      for (int x = 0; x < out.width; ++x) {
        int sx, sy;
        switch (o) {
          case 2: sx = w - 1 - x, sy = y; break;
          case 3: sx = w - 1 - x, sy = h - 1 - y; break;
          case 4: sx = x, sy = h - 1 - y; break;
          case 5: sx = y, sy = x; break;
          case 6: sx = y, sy = h - 1 - x; break;
          case 7: sx = w - 1 - y, sy = h - 1 - x; break;
          default: sx = w - 1 - y, sy = x; break;  // 8
        }
        drow[x] = s[static_cast<size_t>(sy) * w + sx];
      }
    }
  }
  img = std::move(out);
}

// ------------------------------------------------------------------ JPEG

struct JpegError {
  jpeg_error_mgr pub;  // first: libjpeg hands back a pointer to it
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX + 96];
  bool truncated;
  size_t data_size;  // for the truncation message
};

struct JpegProgress {
  jpeg_progress_mgr pub;  // first, as above
  int max_scans;
};

// Owns one decompressor; every libjpeg call on it happens in a jpeg_*_phase function.
struct JpegDecoder {
  jpeg_decompress_struct cinfo{};
  JpegError err{};
  JpegProgress progress{};
  jpeg_source_mgr src{};
  bool created = false;
  JpegDecoder() = default;
  JpegDecoder(const JpegDecoder&) = delete;
  JpegDecoder& operator=(const JpegDecoder&) = delete;
  ~JpegDecoder() {
    if (created) jpeg_destroy_decompress(&cinfo);
  }
};

[[noreturn]] void jpeg_fail(j_common_ptr cinfo, const char* msg) {
  auto* e = reinterpret_cast<JpegError*>(cinfo->err);
  std::snprintf(e->message, sizeof e->message, "%s", msg);
  std::longjmp(e->jump, 1);
}

[[noreturn]] void jpeg_on_error(j_common_ptr cinfo) {
  char buf[JMSG_LENGTH_MAX];
  (*cinfo->err->format_message)(cinfo, buf);
  jpeg_fail(cinfo, buf);
}

void jpeg_on_message(j_common_ptr cinfo, int level) {
  if (level >= 0) return;  // trace messages
  switch (cinfo->err->msg_code) {
    case JWRN_HIT_MARKER:
    case JWRN_HUFF_BAD_CODE:
    case JWRN_ARITH_BAD_CODE:
    case JWRN_MUST_RESYNC:
    case JWRN_JPEG_EOF: jpeg_on_error(cinfo);
    default: cinfo->err->num_warnings++;
  }
}

void jpeg_silent(j_common_ptr) {}

void jpeg_src_init(j_decompress_ptr) {}
void jpeg_src_term(j_decompress_ptr) {}
// All the data is in the buffer from the start: asking for more means the file is cut.
boolean jpeg_src_fill(j_decompress_ptr cinfo) {
  auto* e = reinterpret_cast<JpegError*>(cinfo->err);
  e->truncated = true;
  char buf[128];
  std::snprintf(buf, sizeof buf, "truncated JPEG: the data ends after %zu bytes, before the image does", e->data_size);
  jpeg_fail(reinterpret_cast<j_common_ptr>(cinfo), buf);
}
void jpeg_src_skip(j_decompress_ptr cinfo, long n) {
  if (n <= 0) return;
  jpeg_source_mgr* s = cinfo->src;
  if (static_cast<size_t>(n) > s->bytes_in_buffer) jpeg_src_fill(cinfo);
  s->next_input_byte += n;
  s->bytes_in_buffer -= static_cast<size_t>(n);
}

void jpeg_on_progress(j_common_ptr cinfo) {
  if (!cinfo->is_decompressor) return;
  auto* p = reinterpret_cast<JpegProgress*>(cinfo->progress);
  if (reinterpret_cast<j_decompress_ptr>(cinfo)->input_scan_number > p->max_scans) {
    char buf[160];
    std::snprintf(buf, sizeof buf, "progressive JPEG has more than %d scans (DecodeLimits::max_jpeg_scans)",
                  p->max_scans);
    jpeg_fail(cinfo, buf);
  }
}

// Creates the decompressor and reads the header (markers up to the first SOS).
bool jpeg_header_phase(JpegDecoder* d, const uint8_t* data, size_t size, int max_scans) {
  d->cinfo.err = jpeg_std_error(&d->err.pub);
  d->err.pub.error_exit = jpeg_on_error;
  d->err.pub.emit_message = jpeg_on_message;
  d->err.pub.output_message = jpeg_silent;
  d->err.data_size = size;
  if (setjmp(d->err.jump)) return false;
  d->created = true;
  jpeg_create_decompress(&d->cinfo);
  d->src.init_source = jpeg_src_init;
  d->src.fill_input_buffer = jpeg_src_fill;
  d->src.skip_input_data = jpeg_src_skip;
  d->src.resync_to_restart = jpeg_resync_to_restart;
  d->src.term_source = jpeg_src_term;
  d->src.next_input_byte = data;
  d->src.bytes_in_buffer = size;
  d->cinfo.src = &d->src;
  d->progress.pub.progress_monitor = jpeg_on_progress;
  d->progress.max_scans = max_scans;
  d->cinfo.progress = &d->progress.pub;
  jpeg_save_markers(&d->cinfo, JPEG_APP0 + 1, 0xFFFF);
  jpeg_read_header(&d->cinfo, TRUE);
  return true;
}

bool jpeg_calc_phase(JpegDecoder* d, unsigned denom) {
  if (setjmp(d->err.jump)) return false;
  d->cinfo.scale_num = 1;
  d->cinfo.scale_denom = denom;
  jpeg_calc_output_dimensions(&d->cinfo);
  return true;
}

struct JpegRows {
  uint8_t* strip;     // kStripRows rows of `stride` bytes
  size_t stride;
  float* planes[3];   // output planes (stored orientation)
  RowFn convert;
  int cmyk;           // 0: no, 1: plain CMYK, 2: inverted (Adobe) CMYK
};
constexpr int kStripRows = 16;

bool jpeg_decode_phase(JpegDecoder* d, const JpegRows* r) {
  if (setjmp(d->err.jump)) return false;
  j_decompress_ptr c = &d->cinfo;
  jpeg_start_decompress(c);
  const int w = static_cast<int>(c->output_width);
  while (c->output_scanline < c->output_height) {
    JSAMPROW rows[kStripRows];
    for (int i = 0; i < kStripRows; ++i) rows[i] = r->strip + i * r->stride;
    const size_t y0 = c->output_scanline;
    const int n = static_cast<int>(jpeg_read_scanlines(c, rows, kStripRows));
    for (int i = 0; i < n; ++i) {
      if (r->cmyk) cmyk_row_to_rgb(rows[i], w, r->cmyk == 2);
      const size_t off = (y0 + i) * w;
      float* dst[3] = {r->planes[0] + off, r->planes[1] ? r->planes[1] + off : nullptr,
                       r->planes[2] ? r->planes[2] + off : nullptr};
      r->convert(rows[i], w, dst);
    }
  }
  jpeg_finish_decompress(c);
  return true;
}

[[noreturn]] void jpeg_throw(const JpegDecoder& d, const std::string& name) {
  fail(name, std::string(d.err.message));
}

int jpeg_orientation(const jpeg_decompress_struct& c) {
  for (jpeg_saved_marker_ptr m = c.marker_list; m; m = m->next)
    if (m->marker == JPEG_APP0 + 1 && m->data_length >= 6 && std::memcmp(m->data, "Exif\0\0", 6) == 0)
      return exif_orientation(m->data, m->data_length);
  return 1;
}

// Scale denominator (8, 4, 2 or 1) giving the smallest output that still covers the
// minimum size in the displayed orientation.
unsigned jpeg_pick_denom(const jpeg_decompress_struct& c, int orientation, int min_w, int min_h) {
  if (min_w <= 0 && min_h <= 0) return 1;
  if (orientation_swaps(orientation)) std::swap(min_w, min_h);  // minimums in stored orientation
  for (unsigned denom : {8u, 4u, 2u}) {
    const int64_t w = (int64_t(c.image_width) + denom - 1) / denom;
    const int64_t h = (int64_t(c.image_height) + denom - 1) / denom;
    if (w >= min_w && h >= min_h) return denom;
  }
  return 1;
}

ImageInfo jpeg_info(const JpegDecoder& d, int orientation) {
  ImageInfo info;
  info.format = ImageFormat::jpeg;
  info.width = static_cast<int>(d.cinfo.image_width);
  info.height = static_cast<int>(d.cinfo.image_height);
  if (orientation_swaps(orientation)) std::swap(info.width, info.height);
  info.channels = d.cinfo.num_components;
  info.bit_depth = 8;
  info.progressive = d.cinfo.progressive_mode;
  return info;
}

void decode_jpeg(const uint8_t* data, size_t size, const std::string& name, const DecodeOptions& opts, Image& img) {
  JpegDecoder d;
  if (!jpeg_header_phase(&d, data, size, opts.limits.max_jpeg_scans)) jpeg_throw(d, name);
  jpeg_decompress_struct& c = d.cinfo;
  check_pixels(name, c.image_width, c.image_height, opts.limits);
  // Bound libjpeg's big buffers (the whole-image coefficient arrays of progressive files:
  // at most 3 full-size components of 2-byte coefficients) so a lie in the header cannot
  // make it allocate more than the pixel limit allows.
  const int64_t mem = std::min<int64_t>(opts.limits.max_pixels, (LONG_MAX - (64 << 20)) / 8) * 8 + (64 << 20);
  c.mem->max_memory_to_use = static_cast<long>(mem);

  const int orientation = jpeg_orientation(c);
  const bool color = c.num_components >= 3;
  const int out_ch = opts.channels ? opts.channels : (color ? 3 : 1);
  int cmyk = 0;
  int src_ch = 1;
  if (c.jpeg_color_space == JCS_CMYK || c.jpeg_color_space == JCS_YCCK) {
    c.out_color_space = JCS_CMYK;
    cmyk = c.saw_Adobe_marker ? 2 : 1;
    src_ch = 3;  // after cmyk_row_to_rgb
  } else if (!color || out_ch == 1) {
    c.out_color_space = JCS_GRAYSCALE;  // libjpeg skips chroma entirely
  } else {
    c.out_color_space = JCS_RGB;
    src_ch = 3;
  }
  const unsigned denom = jpeg_pick_denom(c, orientation, opts.min_width, opts.min_height);
  if (!jpeg_calc_phase(&d, denom)) jpeg_throw(d, name);
  const int w = static_cast<int>(c.output_width), h = static_cast<int>(c.output_height);

  img.reshape(out_ch, h, w);
  const size_t stride = static_cast<size_t>(w) * c.output_components;
  std::vector<uint8_t> strip(stride * kStripRows);
  JpegRows rows{};
  rows.strip = strip.data();
  rows.stride = stride;
  rows.convert = row_fn(src_ch, out_ch == 1 || src_ch == 1 ? 1 : 3, false);
  rows.planes[0] = img.plane(0);
  if (out_ch == 3 && src_ch == 3) rows.planes[1] = img.plane(1), rows.planes[2] = img.plane(2);
  rows.cmyk = cmyk;
  if (!jpeg_decode_phase(&d, &rows)) jpeg_throw(d, name);
  if (out_ch == 3 && src_ch == 1) {  // gray file, RGB asked: replicate
    std::copy_n(img.plane(0), img.plane_size(), img.plane(1));
    std::copy_n(img.plane(0), img.plane_size(), img.plane(2));
  }
  apply_orientation(img, orientation);
}

ImageInfo probe_jpeg(const uint8_t* data, size_t size, const std::string& name, const DecodeLimits& limits,
                     bool* truncated) {
  JpegDecoder d;
  if (!jpeg_header_phase(&d, data, size, limits.max_jpeg_scans)) {
    if (truncated && d.err.truncated) {
      *truncated = true;
      return {};
    }
    jpeg_throw(d, name);
  }
  check_pixels(name, d.cinfo.image_width, d.cinfo.image_height, limits);
  return jpeg_info(d, jpeg_orientation(d.cinfo));
}

// ------------------------------------------------------------------ PNG decode

struct PngReader {
  png_structp png = nullptr;
  png_infop info = nullptr;
  const uint8_t* data = nullptr;
  size_t size = 0, pos = 0;
  bool truncated = false;
  char message[256] = {};
  PngReader() = default;
  PngReader(const PngReader&) = delete;
  PngReader& operator=(const PngReader&) = delete;
  ~PngReader() {
    if (png) png_destroy_read_struct(&png, info ? &info : nullptr, nullptr);
  }
};

void png_on_error(png_structp png, png_const_charp msg) {
  auto* r = static_cast<PngReader*>(png_get_error_ptr(png));
  std::snprintf(r->message, sizeof r->message, "%s", msg);
  png_longjmp(png, 1);
}

void png_on_warning(png_structp, png_const_charp) {}

void png_on_read(png_structp png, png_bytep out, size_t n) {
  auto* r = static_cast<PngReader*>(png_get_io_ptr(png));
  if (n > r->size - r->pos) {
    r->truncated = true;
    char buf[128];
    std::snprintf(buf, sizeof buf, "truncated PNG: the data ends after %zu bytes, before the image does", r->size);
    png_error(png, buf);
  }
  std::memcpy(out, r->data + r->pos, n);
  r->pos += n;
}

// Signature, IHDR and every chunk up to the first IDAT.
bool png_header_phase(PngReader* r, const DecodeLimits* limits) {
  if (setjmp(png_jmpbuf(r->png))) return false;
  const int64_t dim = std::min<int64_t>(limits->max_pixels, PNG_UINT_31_MAX);
  png_set_user_limits(r->png, static_cast<png_uint_32>(dim), static_cast<png_uint_32>(dim));
  png_set_read_fn(r->png, r, png_on_read);
  png_read_info(r->png, r->info);
  return true;
}

// Asks libpng for 8- or 16-bit samples, 1-4 channels, and the Adam7 passes combined.
bool png_configure_phase(PngReader* r) {
  if (setjmp(png_jmpbuf(r->png))) return false;
  png_structp p = r->png;
  const int ct = png_get_color_type(p, r->info);
  if (ct == PNG_COLOR_TYPE_PALETTE || png_get_bit_depth(p, r->info) < 8 || png_get_valid(p, r->info, PNG_INFO_tRNS))
    png_set_expand(p);  // palette -> RGB, 1/2/4-bit gray -> 8-bit, tRNS -> alpha
  png_set_interlace_handling(p);
  png_read_update_info(p, r->info);
  return true;
}

struct PngRows {
  uint8_t* buffer;  // one row, or every row for interlaced images
  size_t rowbytes;
  bool interlaced;
  png_bytep* row_ptrs;  // interlaced: height pointers into buffer
  float* planes[3];
  RowFn convert;
  int width, height;
};

bool png_decode_phase(PngReader* r, const PngRows* rows) {
  if (setjmp(png_jmpbuf(r->png))) return false;
  const size_t w = static_cast<size_t>(rows->width);
  if (rows->interlaced) png_read_image(r->png, rows->row_ptrs);
  for (int y = 0; y < rows->height; ++y) {
    uint8_t* row = rows->interlaced ? rows->row_ptrs[y] : rows->buffer;
    if (!rows->interlaced) png_read_row(r->png, row, nullptr);
    const size_t off = y * w;
    float* dst[3] = {rows->planes[0] + off, rows->planes[1] ? rows->planes[1] + off : nullptr,
                     rows->planes[2] ? rows->planes[2] + off : nullptr};
    rows->convert(row, rows->width, dst);
  }
  png_read_end(r->png, nullptr);
  return true;
}

[[noreturn]] void png_throw(const PngReader& r, const std::string& name) {
  if (r.truncated) fail(name, r.message);
  fail(name, std::string("corrupt PNG: ") + r.message);
}

void png_open(PngReader& r, const uint8_t* data, size_t size, const std::string& name) {
  r.data = data;
  r.size = size;
  r.png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &r, png_on_error, png_on_warning);
  if (!r.png) fail(name, "cannot create a PNG reader (out of memory)");
  r.info = png_create_info_struct(r.png);
  if (!r.info) fail(name, "cannot create a PNG reader (out of memory)");
}

ImageInfo png_info(const PngReader& r) {
  ImageInfo info;
  info.format = ImageFormat::png;
  info.width = static_cast<int>(png_get_image_width(r.png, r.info));
  info.height = static_cast<int>(png_get_image_height(r.png, r.info));
  const int ct = png_get_color_type(r.png, r.info);
  const bool trns = png_get_valid(r.png, r.info, PNG_INFO_tRNS) != 0;
  info.channels = ((ct & PNG_COLOR_MASK_COLOR) ? 3 : 1) + (((ct & PNG_COLOR_MASK_ALPHA) || trns) ? 1 : 0);
  info.bit_depth = png_get_bit_depth(r.png, r.info) == 16 ? 16 : 8;
  info.progressive = png_get_interlace_type(r.png, r.info) != PNG_INTERLACE_NONE;
  return info;
}

void decode_png(const uint8_t* data, size_t size, const std::string& name, const DecodeOptions& opts, Image& img) {
  PngReader r;
  png_open(r, data, size, name);
  if (!png_header_phase(&r, &opts.limits)) png_throw(r, name);
  const ImageInfo info = png_info(r);
  check_pixels(name, info.width, info.height, opts.limits);
  if (!png_configure_phase(&r)) png_throw(r, name);

  const int src_ch = png_get_channels(r.png, r.info);
  const bool wide = png_get_bit_depth(r.png, r.info) == 16;
  const bool color = src_ch >= 3;
  const int out_ch = opts.channels ? opts.channels : (color ? 3 : 1);
  const int w = info.width, h = info.height;
  img.reshape(out_ch, h, w);

  PngRows rows{};
  rows.rowbytes = png_get_rowbytes(r.png, r.info);
  rows.interlaced = info.progressive;
  rows.width = w;
  rows.height = h;
  std::vector<uint8_t> buffer(rows.rowbytes * (rows.interlaced ? h : 1));
  std::vector<png_bytep> ptrs(rows.interlaced ? h : 0);
  for (size_t y = 0; y < ptrs.size(); ++y) ptrs[y] = buffer.data() + y * rows.rowbytes;
  rows.buffer = buffer.data();
  rows.row_ptrs = ptrs.data();
  const int conv_out = (out_ch == 1 || !color) ? 1 : 3;
  rows.convert = row_fn(src_ch, conv_out, wide);
  rows.planes[0] = img.plane(0);
  if (conv_out == 3) rows.planes[1] = img.plane(1), rows.planes[2] = img.plane(2);
  if (!png_decode_phase(&r, &rows)) png_throw(r, name);
  if (out_ch == 3 && conv_out == 1) {
    std::copy_n(img.plane(0), img.plane_size(), img.plane(1));
    std::copy_n(img.plane(0), img.plane_size(), img.plane(2));
  }
}

ImageInfo probe_png(const uint8_t* data, size_t size, const std::string& name, const DecodeLimits& limits,
                    bool* truncated) {
  PngReader r;
  png_open(r, data, size, name);
  if (!png_header_phase(&r, &limits)) {
    if (truncated && r.truncated) {
      *truncated = true;
      return {};
    }
    png_throw(r, name);
  }
  ImageInfo info = png_info(r);
  check_pixels(name, info.width, info.height, limits);
  return info;
}

// ------------------------------------------------------------------ PNG encode

struct PngWriter {
  png_structp png = nullptr;
  png_infop info = nullptr;
  std::vector<uint8_t>* out = nullptr;
  bool out_of_memory = false;
  char message[256] = {};
  PngWriter() = default;
  PngWriter(const PngWriter&) = delete;
  PngWriter& operator=(const PngWriter&) = delete;
  ~PngWriter() {
    if (png) png_destroy_write_struct(&png, info ? &info : nullptr);
  }
};

void png_on_write(png_structp png, png_bytep data, size_t n) {
  auto* w = static_cast<PngWriter*>(png_get_io_ptr(png));
  try {
    w->out->insert(w->out->end(), data, data + n);
  } catch (...) {
    w->out_of_memory = true;
  }
  if (w->out_of_memory) png_error(png, "out of memory while encoding");
}

void png_on_flush(png_structp) {}

void png_on_error_w(png_structp png, png_const_charp msg) {
  auto* w = static_cast<PngWriter*>(png_get_error_ptr(png));
  std::snprintf(w->message, sizeof w->message, "%s", msg);
  png_longjmp(png, 1);
}

// Produces row y (packed samples, 16-bit big-endian) into `row`.
using RowSource = void (*)(const void* ctx, int y, uint8_t* row);

struct PngEncodeJob {
  int width, height, bit_depth, color_type;
  RowSource source;  // null: rows are read straight from `pixels`
  const void* ctx;
  const uint8_t* pixels;
  size_t rowbytes;
  uint8_t* row;  // scratch row of rowbytes
};

// Fast settings: the synthetic data generator writes thousands of PNGs. Zlib level 1 with
// the Sub filter was the fastest setting tried on a noisy 1024x1024 gray image (25 ms,
// 515 KB, against 810 ms and 436 KB for level 6 with every filter).
bool png_encode_phase(PngWriter* w, const PngEncodeJob* job) {
  if (setjmp(png_jmpbuf(w->png))) return false;
  png_set_write_fn(w->png, w, png_on_write, png_on_flush);
  png_set_IHDR(w->png, w->info, job->width, job->height, job->bit_depth, job->color_type, PNG_INTERLACE_NONE,
               PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_set_compression_level(w->png, 1);
  png_set_filter(w->png, PNG_FILTER_TYPE_BASE, PNG_FILTER_SUB);
  png_write_info(w->png, w->info);
  for (int y = 0; y < job->height; ++y) {
    if (job->source) {
      job->source(job->ctx, y, job->row);
      png_write_row(w->png, job->row);
    } else {
      png_write_row(w->png, job->pixels + y * job->rowbytes);
    }
  }
  png_write_end(w->png, nullptr);
  return true;
}

std::vector<uint8_t> png_encode(PngEncodeJob job) {
  std::vector<uint8_t> out;
  out.reserve(job.rowbytes * job.height / 4 + 1024);
  std::vector<uint8_t> row(job.source ? job.rowbytes : 0);
  job.row = row.data();
  PngWriter w;
  w.out = &out;
  w.png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &w, png_on_error_w, png_on_warning);
  if (!w.png) throw Error("encode_png: cannot create a PNG writer (out of memory)");
  w.info = png_create_info_struct(w.png);
  if (!w.info) throw Error("encode_png: cannot create a PNG writer (out of memory)");
  if (!png_encode_phase(&w, &job)) {
    if (w.out_of_memory) throw OutOfMemory("encode_png: out of memory for the encoded PNG");
    throw Error(std::string("encode_png: libpng error: ") + w.message);
  }
  return out;
}

struct FloatRows {
  const Image* img;
  bool wide;
};

inline uint32_t quantize(float v, float scale) {
  if (!(v > 0.0f)) return 0;  // also NaN
  if (v >= 1.0f) return static_cast<uint32_t>(scale);
  return static_cast<uint32_t>(v * scale + 0.5f);
}

void float_row_source(const void* ctx, int y, uint8_t* row) {
  const auto* f = static_cast<const FloatRows*>(ctx);
  const Image& img = *f->img;
  const int ch = img.channels, w = img.width;
  for (int c = 0; c < ch; ++c) {
    const float* src = img.plane(c) + static_cast<size_t>(y) * w;
    if (f->wide) {
      for (int x = 0; x < w; ++x) {
        const uint32_t v = quantize(src[x], 65535.0f);
        row[2 * (x * ch + c)] = static_cast<uint8_t>(v >> 8);
        row[2 * (x * ch + c) + 1] = static_cast<uint8_t>(v & 0xFF);
      }
    } else {
      for (int x = 0; x < w; ++x) row[x * ch + c] = static_cast<uint8_t>(quantize(src[x], 255.0f));
    }
  }
}

// With `truncated` non-null, a header cut short by the end of the data sets *truncated
// instead of throwing (the caller then reads more of the file).
ImageInfo probe_memory(const uint8_t* p, size_t n, const std::string& name, const DecodeLimits& limits,
                       bool* truncated) {
  if (truncated) *truncated = false;
  return sniff_or_throw(p, n, name) == ImageFormat::png ? probe_png(p, n, name, limits, truncated)
                                                        : probe_jpeg(p, n, name, limits, truncated);
}

}  // namespace

// ------------------------------------------------------------------ public API

const char* format_name(ImageFormat f) {
  switch (f) {
    case ImageFormat::png: return "PNG";
    case ImageFormat::jpeg: return "JPEG";
    default: return "unknown";
  }
}

ImageFormat sniff_format(const void* data, size_t size) {
  const auto* p = static_cast<const uint8_t*>(data);
  if (!p) return ImageFormat::unknown;
  if (size >= sizeof kPngMagic && std::memcmp(p, kPngMagic, sizeof kPngMagic) == 0) return ImageFormat::png;
  if (size >= sizeof kJpegMagic && std::memcmp(p, kJpegMagic, sizeof kJpegMagic) == 0) return ImageFormat::jpeg;
  return ImageFormat::unknown;
}

ImageInfo probe_image(const std::string& path, const DecodeLimits& limits) {
  check_options(DecodeOptions{.limits = limits});
  // The header is nearly always in the first 64 KiB; a file with more metadata before
  // its image data is read whole.
  constexpr size_t kPrefix = 64 << 10;
  FileBytes f = read_file(path, limits, kPrefix);
  const bool partial = static_cast<int64_t>(f.size) < f.file_size;
  bool truncated = false;
  ImageInfo info = probe_memory(f.data.get(), f.size, path, limits, partial ? &truncated : nullptr);
  if (!truncated) return info;
  f = read_file(path, limits, 0);
  return probe_memory(f.data.get(), f.size, path, limits, nullptr);
}

void decode_image_memory_into(const void* data, size_t size, const std::string& name, const DecodeOptions& opts,
                              Image& out) {
  check_options(opts);
  CXR_CHECK(data || size == 0, "decode_image_memory: null data with size ", size, " for '", name, "'");
  if (static_cast<uint64_t>(size) > static_cast<uint64_t>(opts.limits.max_file_bytes))
    fail(name, detail::cat("file is ", size, " bytes, more than the limit of ", opts.limits.max_file_bytes,
                           " (DecodeLimits::max_file_bytes)"));
  const auto* p = static_cast<const uint8_t*>(data);
  if (sniff_or_throw(p, size, name) == ImageFormat::png) decode_png(p, size, name, opts, out);
  else decode_jpeg(p, size, name, opts, out);
}

Image decode_image_memory(const void* data, size_t size, const std::string& name, const DecodeOptions& opts) {
  Image img;
  decode_image_memory_into(data, size, name, opts, img);
  return img;
}

void decode_image_into(const std::string& path, const DecodeOptions& opts, Image& out) {
  check_options(opts);
  const FileBytes f = read_file(path, opts.limits, 0);
  decode_image_memory_into(f.data.get(), f.size, path, opts, out);
}

Image decode_image(const std::string& path, const DecodeOptions& opts) {
  Image img;
  decode_image_into(path, opts, img);
  return img;
}

std::vector<uint8_t> to_u8_interleaved(const Image& img) {
  CXR_CHECK(img.channels >= 1 && img.height >= 0 && img.width >= 0 &&
                img.data.size() == static_cast<size_t>(img.channels) * img.plane_size(),
            "to_u8_interleaved: bad image ", img.channels, "x", img.height, "x", img.width, " with ",
            img.data.size(), " values");
  const int ch = img.channels;
  const size_t n = img.plane_size();
  std::vector<uint8_t> out(n * ch);
  for (int c = 0; c < ch; ++c) {
    const float* src = img.plane(c);
    for (size_t i = 0; i < n; ++i) out[i * ch + c] = static_cast<uint8_t>(quantize(src[i], 255.0f));
  }
  return out;
}

std::vector<uint8_t> encode_png(const Image& img, int bit_depth) {
  CXR_CHECK(bit_depth == 8 || bit_depth == 16, "encode_png: bit_depth must be 8 or 16, got ", bit_depth);
  CXR_CHECK(img.channels == 1 || img.channels == 3, "encode_png: channels must be 1 or 3, got ", img.channels);
  CXR_CHECK(img.width > 0 && img.height > 0, "encode_png: empty image ", img.height, "x", img.width);
  CXR_CHECK(img.data.size() == static_cast<size_t>(img.channels) * img.plane_size(), "encode_png: image ",
            img.channels, "x", img.height, "x", img.width, " holds ", img.data.size(), " values");
  const FloatRows rows{&img, bit_depth == 16};
  PngEncodeJob job{};
  job.width = img.width;
  job.height = img.height;
  job.bit_depth = bit_depth;
  job.color_type = img.channels == 1 ? PNG_COLOR_TYPE_GRAY : PNG_COLOR_TYPE_RGB;
  job.source = float_row_source;
  job.ctx = &rows;
  job.rowbytes = static_cast<size_t>(img.width) * img.channels * (bit_depth / 8);
  return png_encode(job);
}

std::vector<uint8_t> encode_png_u8(const uint8_t* pixels, int width, int height, int channels) {
  CXR_CHECK(channels >= 1 && channels <= 4, "encode_png_u8: channels must be 1-4, got ", channels);
  CXR_CHECK(width > 0 && height > 0, "encode_png_u8: empty image ", height, "x", width);
  CXR_CHECK(pixels, "encode_png_u8: null pixels");
  static constexpr int kTypes[4] = {PNG_COLOR_TYPE_GRAY, PNG_COLOR_TYPE_GRAY_ALPHA, PNG_COLOR_TYPE_RGB,
                                    PNG_COLOR_TYPE_RGB_ALPHA};
  PngEncodeJob job{};
  job.width = width;
  job.height = height;
  job.bit_depth = 8;
  job.color_type = kTypes[channels - 1];
  job.pixels = pixels;
  job.rowbytes = static_cast<size_t>(width) * channels;
  return png_encode(job);
}

void write_png(const std::string& path, const Image& img, int bit_depth) {
  const std::vector<uint8_t> png = encode_png(img, bit_depth);
  try {
    write_file_atomic(path, std::string(png.begin(), png.end()));
  } catch (const FileError& e) {
    throw FileError(path + ": cannot write: " + e.what());
  }
}

}  // namespace cxr::data
