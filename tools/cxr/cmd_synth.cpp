// `cxr synth`: writes a synthetic chest X-ray data set (data/synth.h) with a progress
// line and a summary of the counts per split and class.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <memory>
#include <string>

#include <CLI/CLI.hpp>

#include "data/synth.h"
#include "runtime/error.h"
#include "tools/cxr/commands.h"

namespace cxr::cli {

namespace {

struct SynthArgs {
  std::string out;
  data::SynthOptions opts;
  bool no_masks = false;
};

std::string format_duration(double s) {
  char buf[32];
  if (s < 60) std::snprintf(buf, sizeof buf, "%.0fs", s);
  else if (s < 3600) std::snprintf(buf, sizeof buf, "%dm%02ds", static_cast<int>(s) / 60, static_cast<int>(s) % 60);
  else std::snprintf(buf, sizeof buf, "%dh%02dm", static_cast<int>(s) / 3600, static_cast<int>(s) / 60 % 60);
  return buf;
}

// On a terminal: one line rewritten in place. Otherwise (a log file, a pipe): a line at
// every tenth of the work.
class Progress {
 public:
  Progress() : tty_(::isatty(::fileno(stderr)) == 1), t0_(std::chrono::steady_clock::now()) {}
  void operator()(int64_t done, int64_t total) {
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
    const double rate = secs > 0 ? static_cast<double>(done) / secs : 0.0;
    const int pct = static_cast<int>(100 * done / total);
    if (tty_) {
      const std::string eta = rate > 0 ? format_duration(static_cast<double>(total - done) / rate) : "?";
      std::fprintf(stderr, "\rsynth: %lld/%lld images (%d%%)  %.0f images/s  ETA %s   ", static_cast<long long>(done),
                   static_cast<long long>(total), pct, rate, eta.c_str());
      if (done == total) std::fputc('\n', stderr);
      std::fflush(stderr);
    } else if (done < total && pct / 10 > last_decile_) {
      last_decile_ = pct / 10;
      std::fprintf(stderr, "synth: %lld/%lld images (%d%%), %.0f images/s\n", static_cast<long long>(done),
                   static_cast<long long>(total), pct, rate);
    }
  }

 private:
  bool tty_;
  std::chrono::steady_clock::time_point t0_;
  int last_decile_ = 0;
};

void print_summary(const std::string& out, const data::SynthOptions& o, const data::SynthSummary& s) {
  const double rate = s.seconds > 0 ? static_cast<double>(s.total) / s.seconds : 0.0;
  std::printf("wrote %lld images of %dx%d (%lld NORMAL, %lld PNEUMONIA; masks: %lld), seed %llu, in %.1f s (%.0f images/s)\n",
              static_cast<long long>(s.total), o.size, o.size, static_cast<long long>(s.class_total(false)),
              static_cast<long long>(s.class_total(true)), static_cast<long long>(s.masks),
              static_cast<unsigned long long>(o.seed), s.seconds, rate);
  std::printf("  %-6s %9s %9s\n", "split", "NORMAL", "PNEUMONIA");
  for (data::Split sp : {data::Split::train, data::Split::val, data::Split::test})
    std::printf("  %-6s %9lld %9lld\n", data::split_name(sp), static_cast<long long>(s.count(sp, false)),
                static_cast<long long>(s.count(sp, true)));
  std::printf("output: %s (manifest.csv, synth.json)\n", out.c_str());
}

std::function<int()> setup(CLI::App& app) {
  auto a = std::make_shared<SynthArgs>();
  data::SynthOptions& o = a->opts;
  o.count = 2000;
  app.add_option("-o,--out", a->out, "output directory (created if needed)")->required();
  app.add_option("-n,--count", o.count, "number of images")
      ->check(CLI::Range(int64_t(1), data::kSynthMaxCount))
      ->capture_default_str();
  app.add_option("--size", o.size, "image width and height in pixels")
      ->check(CLI::Range(data::kSynthMinSize, data::kSynthMaxSize))
      ->capture_default_str();
  app.add_option("--seed", o.seed, "random seed: the same seed and options give the same files")
      ->check(CLI::Validator(
          [](std::string& v) { return v.find('-') == std::string::npos ? std::string() : "must be >= 0, got " + v; },
          "", "non-negative"))
      ->capture_default_str();
  app.add_option("--pneumonia-fraction", o.pneumonia_fraction, "fraction of PNEUMONIA images")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  app.add_option("--val", o.val_fraction, "fraction of each class in the validation split")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  app.add_option("--test", o.test_fraction, "fraction of each class in the test split")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  app.add_flag("--no-masks", a->no_masks, "do not write lesion masks");
  app.add_option("--bit-depth", o.bit_depth, "bits per sample of the image PNGs (8 or 16; masks are 8-bit)")
      ->check(CLI::IsMember({8, 16}))
      ->capture_default_str();
  app.add_option("-j,--threads", o.threads, "worker threads (0: two per core, so rendering overlaps the waits for disk writes)")
      ->check(CLI::Range(0, 1024))
      ->capture_default_str();
  app.add_flag("--overwrite", o.overwrite, "replace a data set already in --out");
  app.footer(
      "Layout: OUT/{train,val,test}/{NORMAL,PNEUMONIA}/<split>_<index>.png, masks in OUT/masks/<split>/,\n"
      "OUT/manifest.csv (path,label,split,mask) and OUT/synth.json (options, versions, counts).");

  return [a] {
    data::SynthOptions opts = a->opts;
    opts.masks = !a->no_masks;
    if (opts.val_fraction + opts.test_fraction >= 1.0)
      throw UsageError(detail::cat("--val + --test must be below 1 (some images must stay in train), got ",
                                   opts.val_fraction + opts.test_fraction));
    try {
      opts.validate();
    } catch (const ValueError& e) {
      throw UsageError(e.what());
    }
    Progress progress;
    const data::SynthSummary s =
        data::write_synthetic_dataset(a->out, opts, [&progress](int64_t d, int64_t t) { progress(d, t); });
    print_summary(a->out, opts, s);
    return 0;
  };
}

}  // namespace

Command synth_command() {
  return {"synth", "generate a synthetic chest X-ray data set (NORMAL / PNEUMONIA, with lesion masks)", setup};
}

}  // namespace cxr::cli
