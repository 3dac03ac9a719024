// Synthetic chest radiographs: a procedural generator of grayscale PA chest X-rays
// (NORMAL and PNEUMONIA with lesion masks) and a writer for whole labelled data sets.
//
// Every image is a pure function of (size, seed, index, class): its random numbers come
// from Philox keyed by the seed with counters built from the image index, so image i is
// the same whatever the thread count and however many images the data set holds. The
// anatomy, exposure and noise of image i do not depend on its class either: the
// PNEUMONIA version of image i is its NORMAL version plus the consolidations.
//
// Radiograph convention: values in [0, 1], dense tissue bright, air dark. The patient
// faces the viewer (PA view), so the heart lies right of the image centre (patient's left).
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "data/image.h"

namespace cxr::data {

// Version of the rendering algorithm, recorded in synth.json; bumped whenever the same
// (size, seed, index, class) would render differently.
inline constexpr int kSynthGeneratorVersion = 1;

// Range of a consolidation's peak added density, in the generator's density units (about
// the same as output intensity: a lesion of contrast c brightens the lung by roughly c).
inline constexpr float kSynthMinLesionContrast = 0.05f;
inline constexpr float kSynthMaxLesionContrast = 0.30f;
// A mask pixel is set where a consolidation adds more than this fraction of its contrast.
inline constexpr float kSynthMaskThreshold = 0.35f;

inline constexpr int kSynthMinSize = 16, kSynthMaxSize = 4096;
inline constexpr int64_t kSynthMaxCount = 100'000'000;

struct SynthOptions {
  int size = 256;                  // images are size x size, one channel
  int64_t count = 1000;            // images in the data set
  double pneumonia_fraction = 0.5; // round(count * fraction) images are PNEUMONIA
  double val_fraction = 0.15, test_fraction = 0.15;  // per class, rounded; the rest is train
  uint64_t seed = 1;
  bool masks = true;               // write lesion masks for PNEUMONIA images
  int threads = 0;                 // worker threads; 0: two per hardware thread (writes wait on fsync)
  int bit_depth = 8;               // of the image PNGs (8 or 16); masks are always 8-bit
  bool overwrite = false;          // replace a data set already in out_dir

  // Throws ValueError naming the field, its value and the allowed range.
  void validate() const;
};

struct SynthImage {
  Image image;               // 1 x size x size
  Image mask;                // 1 x size x size: 1 inside consolidations, all 0 for NORMAL
  bool pneumonia = false;
  std::vector<float> lesion_contrast;  // peak added density of each consolidation (PNEUMONIA: 1 to 3)
};

// Renders image `index` of the stream `seed`. size in [kSynthMinSize, kSynthMaxSize],
// index >= 0 (ValueError otherwise).
SynthImage synth_xray(int size, uint64_t seed, int64_t index, bool pneumonia);

enum class Split : uint8_t { train = 0, val = 1, test = 2 };
const char* split_name(Split s);  // "train", "val", "test"
inline const char* synth_class_name(bool pneumonia) { return pneumonia ? "PNEUMONIA" : "NORMAL"; }

struct SynthAssignment {
  bool pneumonia = false;
  Split split = Split::train;
};
// Class and split of every image of the data set described by opts (count, fractions,
// seed): a seeded Fisher-Yates shuffle of the indices, whose first round(count *
// pneumonia_fraction) entries are PNEUMONIA; within each class, in shuffled order,
// round(n_class * val_fraction) go to val, round(n_class * test_fraction) to test, the
// rest to train. Exact counts, deterministic from (seed, count, fractions).
std::vector<SynthAssignment> synth_assignments(const SynthOptions& opts);

// Paths relative to the data set's root: "train/NORMAL/train_000012.png" and
// "masks/train/train_000012.png".
std::string synth_image_path(const SynthAssignment& a, int64_t index);
std::string synth_mask_path(const SynthAssignment& a, int64_t index);

struct SynthSummary {
  std::string out_dir;
  std::array<std::array<int64_t, 2>, 3> counts{};  // [split][0 NORMAL, 1 PNEUMONIA]
  int64_t total = 0;
  int64_t masks = 0;    // mask files written
  double seconds = 0;   // wall time of the whole write

  int64_t count(Split s, bool pneumonia) const { return counts[static_cast<int>(s)][pneumonia ? 1 : 0]; }
  int64_t split_total(Split s) const { return counts[static_cast<int>(s)][0] + counts[static_cast<int>(s)][1]; }
  int64_t class_total(bool pneumonia) const;
};

// Writes a data set:
//   out_dir/{train,val,test}/{NORMAL,PNEUMONIA}/<split>_<index, 6 digits>.png
//   out_dir/masks/{train,val,test}/<same name>.png   (8-bit 0/255, PNEUMONIA only, when opts.masks)
//   out_dir/manifest.csv   path,label,split,mask  (paths relative to out_dir, one row per image by index)
//   out_dir/synth.json     the options, the engine and generator versions, the counts
// Every file is written atomically; manifest.csv and synth.json last, so a data set with
// a manifest is complete. An out_dir that already holds a manifest.csv is refused
// (ValueError) unless opts.overwrite, in which case the files the old manifest lists are
// removed first. Directories are created as needed. progress(done, total) is called on
// the calling thread about ten times a second and once at the end.
SynthSummary write_synthetic_dataset(const std::string& out_dir, const SynthOptions& opts,
                                     const std::function<void(int64_t done, int64_t total)>& progress = {});

}  // namespace cxr::data
