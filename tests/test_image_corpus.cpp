// data/image on hostile input: a corpus of broken files (truncated at many offsets,
// empty, mislabelled, garbage, corrupt chunks, lying headers, scan bombs, limits,
// directories, missing files). Every one must throw cxr::FileError whose message starts
// with the file name; none may crash, hang, or allocate what the header claims.
#include <gtest/gtest.h>

#include <chrono>

#include "data/image.h"
#include "image_test_util.h"

namespace cxr::data {
namespace {

using testimg::JpegSpec;
using testimg::TempDir;

std::vector<uint8_t> gradient(int w, int h, int comps) {
  std::vector<uint8_t> px(static_cast<size_t>(w) * h * comps);
  for (size_t i = 0; i < px.size(); ++i) px[i] = static_cast<uint8_t>((i * 7 / comps + i % comps * 50) & 0xFF);
  return px;
}

std::vector<uint8_t> valid_png(bool interlaced = false) {
  const int w = 40, h = 30;
  std::vector<std::vector<uint8_t>> rows(h, std::vector<uint8_t>(w * 3));
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w * 3; ++x) rows[y][x] = static_cast<uint8_t>((x * 5 + y * 11) & 0xFF);
  testimg::PngSpec spec;
  spec.width = w, spec.height = h, spec.color_type = PNG_COLOR_TYPE_RGB, spec.interlaced = interlaced;
  return testimg::libpng_write(spec, rows);
}

std::vector<uint8_t> valid_jpeg(bool progressive, int comps = 3) {
  JpegSpec spec;
  spec.width = 40, spec.height = 32, spec.components = comps, spec.progressive = progressive;
  return testimg::libjpeg_write(spec, gradient(40, 32, comps));
}

// Writes `bytes` to dir/name, decodes and probes it, and checks both throw FileError
// naming the file and containing `part`. Returns the decode message.
std::string expect_file_error(const TempDir& dir, const std::string& name, const std::vector<uint8_t>& bytes,
                              const std::string& part = "", const DecodeOptions& opts = {}) {
  const std::string path = dir.file(name);
  testimg::write_bytes(path, bytes);
  std::string msg;
  try {
    decode_image(path, opts);
    ADD_FAILURE() << name << ": decoded without error";
  } catch (const FileError& e) {
    msg = e.what();
    EXPECT_EQ(msg.rfind(path + ": ", 0), 0u) << "message does not start with the file name: " << msg;
    EXPECT_NE(msg.find(part), std::string::npos) << "'" << part << "' not in: " << msg;
  } catch (const std::exception& e) {
    ADD_FAILURE() << name << ": expected FileError, got " << e.what();
  }
  // From memory, the given name leads the message too.
  try {
    decode_image_memory(bytes.data(), bytes.size(), "mem:" + name, opts);
    ADD_FAILURE() << name << ": decoded from memory without error";
  } catch (const FileError& e) {
    EXPECT_EQ(std::string(e.what()).rfind("mem:" + name + ": ", 0), 0u) << e.what();
  }
  return msg;
}

TEST(Corpus, TruncatedEverywhere) {
  TempDir dir;
  struct Src {
    const char* name;
    std::vector<uint8_t> bytes;
  };
  const Src srcs[] = {{"png", valid_png()},
                      {"png_adam7", valid_png(true)},
                      {"jpeg_baseline", valid_jpeg(false)},
                      {"jpeg_progressive", valid_jpeg(true)},
                      {"jpeg_gray_progressive", valid_jpeg(true, 1)}};
  for (const Src& s : srcs) {
    const size_t n = s.bytes.size();
    // the intact file decodes
    ASSERT_NO_THROW(decode_image_memory(s.bytes.data(), n, s.name, {})) << s.name;
    for (size_t cut : {size_t(1), size_t(2), size_t(8), size_t(33), n / 4, n / 2, n - 2, n - 1}) {
      SCOPED_TRACE(std::string(s.name) + " cut at " + std::to_string(cut));
      const std::vector<uint8_t> part(s.bytes.begin(), s.bytes.begin() + cut);
      const std::string msg = expect_file_error(dir, std::string(s.name) + "_" + std::to_string(cut), part);
      EXPECT_NE(msg.find("truncated"), std::string::npos) << msg;
    }
  }
}

TEST(Corpus, EmptyFile) {
  TempDir dir;
  expect_file_error(dir, "empty.png", {}, "file is empty");
}

TEST(Corpus, WrongMagic) {
  TempDir dir;
  const std::string text = "<html>not an image</html>";
  const std::string msg =
      expect_file_error(dir, "page.png", std::vector<uint8_t>(text.begin(), text.end()), "not a PNG or JPEG file");
  EXPECT_NE(msg.find("3c 68 74 6d"), std::string::npos) << msg;  // "<htm" in hex
  const uint8_t gif[] = {'G', 'I', 'F', '8', '9', 'a', 1, 0, 1, 0};
  expect_file_error(dir, "anim.jpg", std::vector<uint8_t>(gif, gif + sizeof gif), "not a PNG or JPEG file");
}

TEST(Corpus, ExtensionDoesNotMatter) {
  TempDir dir;
  testimg::write_bytes(dir.file("really_png.jpg"), valid_png());
  testimg::write_bytes(dir.file("really_jpeg.png"), valid_jpeg(false));
  EXPECT_EQ(decode_image(dir.file("really_png.jpg")).width, 40);
  EXPECT_EQ(decode_image(dir.file("really_jpeg.png")).width, 40);
  EXPECT_EQ(probe_image(dir.file("really_png.jpg")).format, ImageFormat::png);
}

TEST(Corpus, GarbageAfterHeader) {
  TempDir dir;
  const auto garbage = testimg::pseudo_random_bytes(4096, 7);
  // PNG: signature + IHDR, then noise where the next chunk should be.
  auto png = valid_png();
  png.resize(33);
  png.insert(png.end(), garbage.begin(), garbage.end());
  expect_file_error(dir, "garbage.png", png);
  // JPEG: every header segment through SOS, then noise for entropy data, with and
  // without an EOI at the end.
  for (bool progressive : {false, true}) {
    auto jpg = valid_jpeg(progressive);
    size_t first_sos = 0;
    for (size_t i = 2; i + 1 < jpg.size() && !first_sos; ++i)
      if (jpg[i] == 0xFF && jpg[i + 1] == 0xDA) first_sos = i;
    ASSERT_NE(first_sos, 0u);
    const size_t header_end = first_sos + 2 + ((jpg[first_sos + 2] << 8) | jpg[first_sos + 3]);
    jpg.resize(header_end);
    jpg.insert(jpg.end(), garbage.begin(), garbage.end());
    expect_file_error(dir, progressive ? "garbage_p.jpg" : "garbage.jpg", jpg);
    jpg.push_back(0xFF);
    jpg.push_back(0xD9);
    expect_file_error(dir, progressive ? "garbage_eoi_p.jpg" : "garbage_eoi.jpg", jpg);
  }
}

// Offsets of a PNG chunk: (start of length field), found by walking the chunk list.
size_t find_chunk(const std::vector<uint8_t>& png, const char* type) {
  size_t pos = 8;
  while (pos + 8 <= png.size()) {
    const uint32_t len = (png[pos] << 24) | (png[pos + 1] << 16) | (png[pos + 2] << 8) | png[pos + 3];
    if (std::memcmp(&png[pos + 4], type, 4) == 0) return pos;
    pos += 12 + len;
  }
  return std::string::npos;
}

TEST(Corpus, CorruptChunksAndCrc) {
  TempDir dir;
  const auto png = valid_png();
  const size_t idat = find_chunk(png, "IDAT");
  ASSERT_NE(idat, std::string::npos);
  const uint32_t len = (png[idat] << 24) | (png[idat + 1] << 16) | (png[idat + 2] << 8) | png[idat + 3];
  auto data_flip = png;
  data_flip[idat + 8 + len / 2] ^= 0x5A;
  expect_file_error(dir, "idat_data.png", data_flip, "corrupt PNG");  // zlib's check or the CRC
  auto crc_flip = png;
  crc_flip[idat + 8 + len] ^= 0x01;
  expect_file_error(dir, "idat_crc.png", crc_flip, "CRC");
  auto ihdr_flip = png;
  ihdr_flip[8 + 8 + 12] ^= 0x01;  // IHDR bit depth byte, CRC now wrong
  expect_file_error(dir, "ihdr_crc.png", ihdr_flip, "CRC");
  // A corrupt zlib stream with a correct CRC: libpng's inflate must reject it.
  auto zlib_bad = png;
  for (uint32_t i = 2; i < len; ++i) zlib_bad[idat + 8 + i] = static_cast<uint8_t>(0xFF - i);
  const uint32_t crc = testimg::crc32(&zlib_bad[idat + 4], len + 4);
  testimg::put_be32(&zlib_bad[idat + 8 + len], crc);
  expect_file_error(dir, "zlib_bad.png", zlib_bad, "corrupt PNG");
  // IDAT with too little image data: a valid 1-row stream for a 30-row image.
  auto one_row = valid_png();
  {
    testimg::PngSpec s;
    s.width = 40, s.height = 1, s.color_type = PNG_COLOR_TYPE_RGB;
    auto small = testimg::libpng_write(s, {std::vector<uint8_t>(120, 9)});
    const size_t si = find_chunk(small, "IDAT");
    const uint32_t slen = (small[si] << 24) | (small[si + 1] << 16) | (small[si + 2] << 8) | small[si + 3];
    std::vector<uint8_t> out(png.begin(), png.begin() + idat);
    out.insert(out.end(), small.begin() + si, small.begin() + si + 12 + slen);
    out.insert(out.end(), png.end() - 12, png.end());  // IEND
    one_row = out;
  }
  expect_file_error(dir, "short_idat.png", one_row, "corrupt PNG");
}

// A valid PNG with IHDR patched to claim w x h (CRC fixed up).
std::vector<uint8_t> png_claiming(uint32_t w, uint32_t h) {
  auto png = valid_png();
  testimg::put_be32(&png[16], w);
  testimg::put_be32(&png[20], h);
  testimg::put_be32(&png[29], testimg::crc32(&png[12], 17));
  return png;
}

TEST(Corpus, PngHeaderClaimingHugeImage) {
  TempDir dir;
  const auto t0 = std::chrono::steady_clock::now();
  const std::string msg = expect_file_error(dir, "huge.png", png_claiming(100000, 100000), "100000x100000");
  EXPECT_NE(msg.find("max_pixels"), std::string::npos) << msg;
  try {
    probe_image(dir.file("huge.png"));
    ADD_FAILURE() << "probe accepted a 100000x100000 PNG";
  } catch (const FileError& e) {
    EXPECT_NE(std::string(e.what()).find("max_pixels"), std::string::npos) << e.what();
  }
  // Refused from the header alone: no 30 GB allocation, no decode of rows.
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5));
  // A width beyond what PNG allows at all is libpng's own error.
  expect_file_error(dir, "wide.png", png_claiming(0x90000000u, 1));
}

TEST(Corpus, JpegSofClaimingHugeImage) {
  TempDir dir;
  for (bool progressive : {false, true}) {
    auto jpg = valid_jpeg(progressive);
    size_t sof = std::string::npos;
    for (size_t i = 2; i + 9 < jpg.size(); ++i)
      if (jpg[i] == 0xFF && (jpg[i + 1] == 0xC0 || jpg[i + 1] == 0xC2)) {
        sof = i;
        break;
      }
    ASSERT_NE(sof, std::string::npos);
    // FF C0, length(2), precision(1), height(2), width(2)
    jpg[sof + 5] = 65000 >> 8, jpg[sof + 6] = 65000 & 0xFF;
    jpg[sof + 7] = 65000 >> 8, jpg[sof + 8] = 65000 & 0xFF;
    const std::string msg =
        expect_file_error(dir, progressive ? "huge_p.jpg" : "huge.jpg", jpg, "65000x65000 = 4225000000 pixels");
    EXPECT_NE(msg.find("max_pixels"), std::string::npos) << msg;
  }
}

// A progressive script with one scan per coefficient per bit plane: 64 coefficients x
// 11 scans (a first pass at Al = 10, then 10 refinements) per component, DC scans
// shared: 11 * (1 + 3 * 63) = 2090 scans for 3 components. Valid, and what libjpeg's encoder will write.
std::vector<jpeg_scan_info> thousands_of_scans(int comps) {
  std::vector<jpeg_scan_info> s;
  constexpr int kAl = 10;
  for (int al = kAl; al >= 0; --al) {
    jpeg_scan_info dc{};
    dc.comps_in_scan = comps;
    for (int c = 0; c < comps; ++c) dc.component_index[c] = c;
    dc.Ss = dc.Se = 0;
    dc.Ah = al == kAl ? 0 : al + 1;
    dc.Al = al;
    s.push_back(dc);
    for (int c = 0; c < comps; ++c)
      for (int k = 1; k < 64; ++k) {
        jpeg_scan_info ac{};
        ac.comps_in_scan = 1;
        ac.component_index[0] = c;
        ac.Ss = ac.Se = k;
        ac.Ah = al == kAl ? 0 : al + 1;
        ac.Al = al;
        s.push_back(ac);
      }
  }
  return s;
}

TEST(Corpus, ProgressiveScanBombFromTheEncoder) {
  TempDir dir;
  JpegSpec spec;
  spec.width = 16, spec.height = 16, spec.components = 3, spec.scans = thousands_of_scans(3);
  ASSERT_EQ(spec.scans.size(), 11u * (1 + 3 * 63));
  const auto px = gradient(16, 16, 3);
  const auto jpg = testimg::libjpeg_write(spec, px);
  const std::string msg = expect_file_error(dir, "scans.jpg", jpg, "more than 256 scans");
  EXPECT_NE(msg.find("max_jpeg_scans"), std::string::npos) << msg;
  // The file itself is valid: with the limit raised it decodes like libjpeg decodes it.
  DecodeOptions lax;
  lax.limits.max_jpeg_scans = 5000;
  const Image img = decode_image_memory(jpg.data(), jpg.size(), "scans.jpg", lax);
  const testimg::Decoded ref = testimg::libjpeg_read(jpg, JCS_RGB);
  ASSERT_EQ(img.width, 16);
  for (int y = 0; y < 16; ++y)
    for (int x = 0; x < 16; ++x)
      for (int c = 0; c < 3; ++c) ASSERT_EQ(img.at(c, y, x), ref.pixels[(y * 16 + x) * 3 + c] / 255.0f);
  // A lower limit applies as well.
  DecodeOptions strict;
  strict.limits.max_jpeg_scans = 4;
  expect_file_error(dir, "scans4.jpg", valid_jpeg(true), "more than 4 scans", strict);
}

TEST(Corpus, ProgressiveScanBombByDuplication) {
  TempDir dir;
  // The last scan of a progressive file (a refinement scan) repeated 5000 times.
  const auto jpg = valid_jpeg(true);
  const size_t sos = testimg::find_last_marker(jpg, 0xDA);
  const size_t eoi = testimg::find_last_marker(jpg, 0xD9);
  ASSERT_NE(sos, std::string::npos);
  ASSERT_EQ(eoi, jpg.size() - 2);
  std::vector<uint8_t> bomb(jpg.begin(), jpg.begin() + eoi);
  for (int i = 0; i < 5000; ++i) bomb.insert(bomb.end(), jpg.begin() + sos, jpg.begin() + eoi);
  bomb.push_back(0xFF);
  bomb.push_back(0xD9);
  const auto t0 = std::chrono::steady_clock::now();
  expect_file_error(dir, "bomb.jpg", bomb, "scans");
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(10));
}

TEST(Corpus, LimitsLowered) {
  TempDir dir;
  DecodeOptions o;
  o.limits.max_pixels = 1000;  // 40x30 = 1200
  expect_file_error(dir, "pixels.png", valid_png(), "40x30 = 1200 pixels, more than the limit of 1000", o);
  expect_file_error(dir, "pixels.jpg", valid_jpeg(false), "40x32 = 1280 pixels", o);
  DecodeOptions f;
  f.limits.max_file_bytes = 100;
  expect_file_error(dir, "bytes.png", valid_png(), "max_file_bytes", f);
  try {
    probe_image(dir.file("pixels.png"), o.limits);
    ADD_FAILURE() << "probe ignored max_pixels";
  } catch (const FileError& e) {
    EXPECT_NE(std::string(e.what()).find("max_pixels"), std::string::npos);
  }
}

TEST(Corpus, DirectoryAndMissingPath) {
  TempDir dir;
  for (auto fn : {+[](const std::string& p) { decode_image(p); }, +[](const std::string& p) { probe_image(p); }}) {
    try {
      fn(dir.path().string());
      ADD_FAILURE() << "a directory decoded";
    } catch (const FileError& e) {
      EXPECT_EQ(std::string(e.what()), dir.path().string() + ": is a directory, not an image file");
    }
    const std::string missing = dir.file("nope.png");
    try {
      fn(missing);
      ADD_FAILURE() << "a missing file decoded";
    } catch (const FileError& e) {
      EXPECT_EQ(std::string(e.what()), missing + ": cannot open: No such file or directory");
    }
  }
}

TEST(Corpus, ProbeOfBrokenFiles) {
  TempDir dir;
  auto png = valid_png();
  png.resize(20);
  testimg::write_bytes(dir.file("cut.png"), png);
  testimg::write_bytes(dir.file("empty.jpg"), {});
  for (const char* name : {"cut.png", "empty.jpg"}) {
    try {
      probe_image(dir.file(name));
      ADD_FAILURE() << name;
    } catch (const FileError& e) {
      EXPECT_EQ(std::string(e.what()).rfind(dir.file(name) + ": ", 0), 0u) << e.what();
    }
  }
  // A header longer than the probe's first read, cut before its end: two 65000-byte APP1
  // segments, the file cut inside the second.
  {
    JpegSpec spec;
    spec.width = 16, spec.height = 16, spec.app1.assign(65000, 'x');
    auto big = testimg::libjpeg_write(spec, gradient(16, 16, 1));
    size_t app1 = 2;
    while (!(big[app1] == 0xFF && big[app1 + 1] == 0xE1)) app1 += 2 + ((big[app1 + 2] << 8) | big[app1 + 3]);
    const size_t app1_len = 2 + ((big[app1 + 2] << 8) | big[app1 + 3]);
    std::vector<uint8_t> seg(big.begin() + app1, big.begin() + app1 + app1_len);
    big.insert(big.begin() + app1, seg.begin(), seg.end());
    big.resize(100000);
    testimg::write_bytes(dir.file("long_header.jpg"), big);
    try {
      probe_image(dir.file("long_header.jpg"));
      ADD_FAILURE() << "probe accepted a cut header";
    } catch (const FileError& e) {
      EXPECT_EQ(std::string(e.what()).rfind(dir.file("long_header.jpg") + ": truncated JPEG", 0), 0u) << e.what();
    }
  }
  // Probing reads the header only: a file cut after its header probes fine.
  auto jpg = valid_jpeg(false);
  jpg.resize(jpg.size() / 2);
  testimg::write_bytes(dir.file("half.jpg"), jpg);
  EXPECT_EQ(probe_image(dir.file("half.jpg")).width, 40);
}

}  // namespace
}  // namespace cxr::data
