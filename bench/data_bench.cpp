// Input-pipeline throughput: decode only, decode + pipeline (resize, optional flip,
// normalize) and the full Loader, over a folder of JPEGs or PNGs, with 1 and N threads.
// One JSON line per measurement; bench/compare_decode.sh puts them beside tjbench.
//
//   bench_data --dir DIR [--size 224] [--channels 1] [--threads N] [--hflip] [--iters 5]
//              [--no-dct-scaling] [--no-loader]
//   bench_data --make-jpegs DIR [--count 64] [--size 1024] [--quality 90]
//
// --dir takes an ImageFolder (DIR/<class>/<image>) or a flat folder of images. Files are
// read into memory first, so decode rates exclude the disk (as tjbench's do); the loader
// rows read the files from disk (the page cache, after the first pass). Rates are the
// median over --iters passes over all files, after one warm-up pass; megapixels are of
// the source images (width x height in the file), whatever the decoder's DCT scaling.
//
// --make-jpegs writes synthetic radiograph-like test images (a smooth body, ribs, mild
// noise): DIR/gray_jpeg and DIR/rgb_jpeg (libjpeg, the given quality, 4:2:0 for RGB), and
// DIR/gray_png and DIR/rgb_png (8-bit), --count files each, --size pixels square.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <csetjmp>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

// jpeglib.h needs stdio.h and stddef.h first.
#include <jpeglib.h>

#include "data/dataset.h"
#include "data/image.h"
#include "data/loader.h"
#include "data/transforms.h"
#include "runtime/rng.h"

namespace fs = std::filesystem;
using namespace cxr;
using namespace cxr::data;

namespace {

struct Args {
  std::string dir, make_dir;
  int size = 224;  // output size (bench) or image size (--make-jpegs, default 1024)
  bool size_given = false;
  int channels = 1;
  int threads = 0;
  bool hflip = false;
  int iters = 5;
  bool dct_scaling = true;
  bool loader = true;
  int count = 64;
  int quality = 90;
};

[[noreturn]] void usage(const std::string& why) {
  std::fprintf(stderr,
               "error: %s\n"
               "usage: bench_data --dir DIR [--size 224] [--channels 1|3] [--threads N] [--hflip] [--iters 5]\n"
               "                  [--no-dct-scaling] [--no-loader]\n"
               "       bench_data --make-jpegs DIR [--count 64] [--size 1024] [--quality 90]\n",
               why.c_str());
  std::exit(2);
}

Args parse(int argc, char** argv) {
  Args a;
  auto value = [&](int& i) -> std::string {
    if (i + 1 >= argc) usage(std::string(argv[i]) + " needs a value");
    return argv[++i];
  };
  auto integer = [&](int& i, int lo) {
    const std::string name = argv[i], v = value(i);
    try {
      size_t used = 0;
      const int x = std::stoi(v, &used);
      if (used != v.size() || x < lo) throw std::invalid_argument(v);
      return x;
    } catch (const std::exception&) {
      usage(name + " expects an integer >= " + std::to_string(lo) + ", got '" + v + "'");
    }
  };
  for (int i = 1; i < argc; ++i) {
    const std::string s = argv[i];
    if (s == "--dir") a.dir = value(i);
    else if (s == "--make-jpegs") a.make_dir = value(i);
    else if (s == "--size") a.size = integer(i, 1), a.size_given = true;
    else if (s == "--channels") a.channels = integer(i, 1);
    else if (s == "--threads") a.threads = integer(i, 0);
    else if (s == "--iters") a.iters = integer(i, 1);
    else if (s == "--count") a.count = integer(i, 1);
    else if (s == "--quality") a.quality = integer(i, 1);
    else if (s == "--hflip") a.hflip = true;
    else if (s == "--no-dct-scaling") a.dct_scaling = false;
    else if (s == "--no-loader") a.loader = false;
    else if (s == "-h" || s == "--help") usage("help");
    else usage("unknown argument '" + s + "'");
  }
  if (a.dir.empty() == a.make_dir.empty()) usage("give exactly one of --dir and --make-jpegs");
  if (a.channels != 1 && a.channels != 3) usage("--channels must be 1 or 3");
  if (a.quality > 100) usage("--quality must be in [1, 100]");
  if (a.threads == 0) a.threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  return a;
}

// ---------------------------------------------------------------- test images

struct JpegError {
  jpeg_error_mgr mgr;
  std::jmp_buf jump;
};
extern "C" void jpeg_error_jump(j_common_ptr c) { std::longjmp(reinterpret_cast<JpegError*>(c->err)->jump, 1); }

// Only C objects live in this frame, so the longjmp skips no destructor.
bool encode_jpeg_c(const uint8_t* px, int w, int h, int ch, int quality, unsigned char** out, unsigned long* size) {
  jpeg_compress_struct c;
  JpegError err;
  c.err = jpeg_std_error(&err.mgr);
  err.mgr.error_exit = jpeg_error_jump;
  if (setjmp(err.jump)) {
    jpeg_destroy_compress(&c);
    return false;
  }
  jpeg_create_compress(&c);
  jpeg_mem_dest(&c, out, size);
  c.image_width = static_cast<JDIMENSION>(w);
  c.image_height = static_cast<JDIMENSION>(h);
  c.input_components = ch;
  c.in_color_space = ch == 1 ? JCS_GRAYSCALE : JCS_RGB;
  jpeg_set_defaults(&c);
  jpeg_set_quality(&c, quality, TRUE);
  jpeg_start_compress(&c, TRUE);
  while (c.next_scanline < c.image_height) {
    JSAMPROW row = const_cast<uint8_t*>(px + static_cast<size_t>(c.next_scanline) * w * ch);
    jpeg_write_scanlines(&c, &row, 1);
  }
  jpeg_finish_compress(&c);
  jpeg_destroy_compress(&c);
  return true;
}

void write_jpeg(const fs::path& p, const Image& img, int quality) {
  const std::vector<uint8_t> px = to_u8_interleaved(img);
  unsigned char* buf = nullptr;
  unsigned long size = 0;
  bool ok = encode_jpeg_c(px.data(), img.width, img.height, img.channels, quality, &buf, &size);
  if (ok) {
    std::ofstream f(p, std::ios::binary);
    f.write(reinterpret_cast<const char*>(buf), static_cast<std::streamsize>(size));
    ok = static_cast<bool>(f);
  }
  std::free(buf);
  if (!ok) throw std::runtime_error("cannot encode or write the JPEG " + p.string());
}

// A radiograph-like picture: a bright elliptical body, darker lungs, rib arcs, mild
// noise; varied per index. RGB images get a slight tint per channel.
Image radiograph(int index, int size, int channels) {
  Image img(channels, size, size);
  const double cx = 0.5 + 0.03 * std::sin(index * 1.7), cy = 0.52 + 0.03 * std::cos(index * 2.3);
  const double rib_phase = index * 0.37;
  for (int y = 0; y < size; ++y)
    for (int x = 0; x < size; ++x) {
      const double u = (x + 0.5) / size - cx, v = (y + 0.5) / size - cy;
      const double body = std::exp(-std::pow((u * u) / 0.16 + (v * v) / 0.22, 2.0));
      const double lung = std::exp(-std::pow(((std::abs(u) - 0.17) * (std::abs(u) - 0.17)) / 0.012 + (v * v) / 0.06, 2.0));
      const double ribs = 0.5 + 0.5 * std::cos(60.0 * (v + 0.15 * u * u) + rib_phase);
      const uint32_t bits = philox_bits(static_cast<uint64_t>(index), 0, static_cast<uint64_t>(y) * size + x);
      const double noise = (bits_to_uniform(bits) - 0.5) * 0.04;
      const double g = 0.08 + 0.65 * body - 0.35 * lung + 0.06 * ribs * body + noise;
      for (int c = 0; c < channels; ++c)
        img.at(c, y, x) = static_cast<float>(std::clamp(g * (channels == 3 ? 0.9 + 0.05 * c : 1.0), 0.0, 1.0));
    }
  return img;
}

int make_images(const Args& a) {
  const int size = a.size_given ? a.size : 1024;
  const fs::path root(a.make_dir);
  for (const char* sub : {"gray_jpeg", "rgb_jpeg", "gray_png", "rgb_png"}) fs::create_directories(root / sub);
  for (int i = 0; i < a.count; ++i) {
    char name[32];
    for (int channels : {1, 3}) {
      const Image img = radiograph(i, size, channels);
      const std::string prefix = channels == 1 ? "gray" : "rgb";
      std::snprintf(name, sizeof(name), "img_%04d.jpg", i);
      write_jpeg(root / (prefix + "_jpeg") / name, img, a.quality);
      std::snprintf(name, sizeof(name), "img_%04d.png", i);
      write_png((root / (prefix + "_png") / name).string(), img);
    }
  }
  std::printf("wrote %d images each to %s/{gray_jpeg,rgb_jpeg,gray_png,rgb_png} (%dx%d, JPEG quality %d)\n", a.count,
              a.make_dir.c_str(), size, size, a.quality);
  return 0;
}

// ---------------------------------------------------------------- measurement

struct File {
  std::string path;
  std::vector<uint8_t> bytes;
  int64_t pixels = 0;  // in the file
  ImageFormat format = ImageFormat::unknown;
};

std::vector<std::string> list_files(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    std::string ext = e.path().extension().string();
    std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    if (name[0] != '.' && e.is_regular_file() && (ext == ".png" || ext == ".jpg" || ext == ".jpeg"))
      out.push_back(e.path().string());
  }
  std::sort(out.begin(), out.end());
  if (out.empty())  // not flat: an ImageFolder
    for (const Sample& s : Dataset::image_folder(dir).samples) out.push_back(s.path);
  return out;
}

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

// Runs fn(file index, thread) over every file on `threads` threads per pass; returns the
// seconds of each of `iters` passes after one warm-up pass.
template <typename F>
std::vector<double> time_passes(size_t n, int threads, int iters, F&& fn) {
  std::vector<double> times;
  for (int pass = -1; pass < iters; ++pass) {
    std::atomic<size_t> next{0};
    std::vector<std::thread> pool;
    const double t0 = now();
    for (int t = 0; t < threads; ++t)
      pool.emplace_back([&, t] {
        for (size_t i; (i = next.fetch_add(1)) < n;) fn(i, t, pass);
      });
    for (auto& th : pool) th.join();
    if (pass >= 0) times.push_back(now() - t0);
  }
  return times;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t m = v.size() / 2;
  return v.size() % 2 ? v[m] : 0.5 * (v[m - 1] + v[m]);
}

void report(const char* mode, const std::string& format, const Args& a, int threads, size_t files, int64_t src_pixels,
            const std::vector<double>& times, const std::string& source, const std::string& decoded) {
  const double med = median(times), best = *std::min_element(times.begin(), times.end());
  const double ips = static_cast<double>(files) / med;
  std::printf(
      "{\"bench\": \"data\", \"mode\": \"%s\", \"format\": \"%s\", \"files\": %zu, \"channels\": %d, \"size\": %d, "
      "\"hflip\": %s, \"dct_scaling\": %s, \"threads\": %d, \"iters\": %d, \"source\": \"%s\", \"decoded\": \"%s\", "
      "\"images_per_s\": %.2f, \"images_per_s_best\": %.2f, \"per_thread_images_per_s\": %.2f, "
      "\"mpix_per_s\": %.2f, \"per_thread_mpix_per_s\": %.2f}\n",
      mode, format.c_str(), files, a.channels, a.size, a.hflip ? "true" : "false", a.dct_scaling ? "true" : "false",
      threads, a.iters, source.c_str(), decoded.c_str(), ips, static_cast<double>(files) / best, ips / threads,
      static_cast<double>(src_pixels) / med / 1e6, static_cast<double>(src_pixels) / med / 1e6 / threads);
  std::fflush(stdout);
}

int run_bench(const Args& a) {
  const std::vector<std::string> paths = list_files(a.dir);
  if (paths.empty()) usage("no images in " + a.dir);
  std::vector<File> files(paths.size());
  int64_t src_pixels = 0;
  bool jpeg = false, png = false;
  for (size_t i = 0; i < paths.size(); ++i) {
    File& f = files[i];
    f.path = paths[i];
    std::ifstream in(f.path, std::ios::binary);
    f.bytes.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    const ImageInfo info = probe_image(f.path);
    f.pixels = static_cast<int64_t>(info.width) * info.height;
    f.format = info.format;
    jpeg |= f.format == ImageFormat::jpeg;
    png |= f.format == ImageFormat::png;
    src_pixels += f.pixels;
  }
  const std::string format = jpeg && png ? "mixed" : jpeg ? "jpeg" : "png";

  DecodeOptions dopt;
  dopt.channels = a.channels;
  if (a.dct_scaling) dopt.min_width = dopt.min_height = a.size;
  Pipeline p;
  p.channels = a.channels;
  p.height = p.width = a.size;
  p.mean.assign(1, 0.5f);
  p.stddev.assign(1, 0.25f);
  p.augment.hflip = a.hflip;
  const Image first = decode_image_memory(files[0].bytes.data(), files[0].bytes.size(), files[0].path, dopt);
  const std::string decoded = std::to_string(first.width) + "x" + std::to_string(first.height);
  const ImageInfo first_info = probe_image(files[0].path);
  const std::string source = std::to_string(first_info.width) + "x" + std::to_string(first_info.height);

  std::vector<int> thread_counts{1};
  if (a.threads > 1) thread_counts.push_back(a.threads);
  for (int t : thread_counts) {
    // One output Image per thread, reused from file to file as the Loader's workers do
    // (and as tjbench reuses its output buffer).
    std::vector<Image> imgs(static_cast<size_t>(t));
    auto times = time_passes(files.size(), t, a.iters, [&](size_t i, int th, int) {
      Image& img = imgs[static_cast<size_t>(th)];
      decode_image_memory_into(files[i].bytes.data(), files[i].bytes.size(), files[i].path, dopt, img);
      if (img.empty()) std::abort();
    });
    report("decode", format, a, t, files.size(), src_pixels, times, source, decoded);

    std::vector<std::vector<float>> out(static_cast<size_t>(t),
                                        std::vector<float>(static_cast<size_t>(a.channels) * a.size * a.size));
    times = time_passes(files.size(), t, a.iters, [&](size_t i, int th, int pass) {
      Image& img = imgs[static_cast<size_t>(th)];
      decode_image_memory_into(files[i].bytes.data(), files[i].bytes.size(), files[i].path, dopt, img);
      run_pipeline(img, p, /*train=*/true, SampleRng{0, pass, static_cast<int64_t>(i)}, out[th].data());
    });
    report("decode+pipeline", format, a, t, files.size(), src_pixels, times, source, decoded);

    if (a.loader) {
      Dataset ds;
      ds.root = a.dir;
      ds.class_names = {"all"};
      for (const File& f : files) ds.samples.push_back({f.path, 0});
      LoaderOptions lo;
      lo.batch_size = 32;
      lo.workers = t;
      lo.pipeline = p;
      lo.jpeg_dct_scaling = a.dct_scaling;
      Loader loader(ds, lo);
      std::vector<double> epoch_times;
      for (int e = -1; e < a.iters; ++e) {
        const double t0 = now();
        loader.start_epoch(e + 1);
        Batch b;
        int64_t n = 0;
        while (loader.next(b)) n += b.images.size(0);
        if (n != ds.size()) std::fprintf(stderr, "warning: loader delivered %lld of %lld\n", static_cast<long long>(n),
                                         static_cast<long long>(ds.size()));
        if (e >= 0) epoch_times.push_back(now() - t0);
      }
      report("loader", format, a, t, files.size(), src_pixels, epoch_times, source, decoded);
    }
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const Args a = parse(argc, argv);
  try {
    return a.make_dir.empty() ? run_bench(a) : make_images(a);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
