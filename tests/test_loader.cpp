// Loader: batch shapes, labels and contents against the dataset, epoch order (every
// sample once, seeded shuffles), drop_last, bit-identical batches for any worker count,
// bad files (skipped and listed, or thrown with strict), prefetch bound, clean shutdown
// mid-epoch, option errors. Images are PNGs written with data::write_png and JPEGs
// encoded here with libjpeg.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "data/dataset.h"
#include "data/image.h"
#include "data/loader.h"
#include "expect_error.h"
#include "image_test_util.h"
#include "temp_dir.h"

namespace cxr::data {
namespace {

namespace fs = std::filesystem;

using cxr_test::TempDir;

void write_jpeg(const fs::path& p, const Image& img, int quality = 95) {
  testimg::JpegSpec spec;
  spec.width = img.width;
  spec.height = img.height;
  spec.components = img.channels;
  spec.quality = quality;
  const std::vector<uint8_t> bytes = testimg::libjpeg_write(spec, to_u8_interleaved(img));
  std::ofstream(p, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()),
                                           static_cast<std::streamsize>(bytes.size()));
}

// Sample i is a constant image of value (10 + 7 i) / 255, so a batch row tells which
// file it came from; `textured` adds a pattern so that augmentation changes pixels.
Image sample_image(int i, int channels, int h, int w, bool textured) {
  Image img(channels, h, w);
  for (int c = 0; c < channels; ++c)
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x)
        img.at(c, y, x) = textured ? static_cast<float>((x * 7 + y * 13 + c * 31 + i * 5) % 256) / 255.0f
                                   : static_cast<float>(10 + 7 * i) / 255.0f;
  return img;
}

// n PNGs spread over `classes` class folders (file i in class i % classes).
Dataset make_folder(const fs::path& root, int n, int classes, bool textured = false, int channels = 1) {
  for (int i = 0; i < n; ++i) {
    char name[32];
    std::snprintf(name, sizeof(name), "img%03d.png", i);
    const fs::path dir = root / ("class" + std::to_string(i % classes));
    fs::create_directories(dir);
    write_png((dir / name).string(), sample_image(i, channels, 12 + i % 5, 10 + i % 7, textured));
  }
  return Dataset::image_folder(root.string());
}

// Which sample (by its file number) a constant-image row shows, from its first value.
int row_identity(const Batch& b, int64_t row, const Pipeline& p) {
  const float* x = b.images.data<float>() + row * p.channels * p.height * p.width;
  const float v = x[0] * p.stddev[0] + p.mean[0];  // undo the normalisation
  return static_cast<int>(std::lround((v * 255.0f - 10.0f) / 7.0f));
}

int file_number(const std::string& path) { return std::stoi(fs::path(path).stem().string().substr(3)); }

LoaderOptions small_options() {
  LoaderOptions o;
  o.batch_size = 5;
  o.workers = 2;
  o.shuffle = false;
  o.pipeline.height = 8;
  o.pipeline.width = 6;
  return o;
}

std::vector<Batch> run_epoch(Loader& loader, int64_t epoch) {
  loader.start_epoch(epoch);
  std::vector<Batch> out;
  Batch b;
  while (loader.next(b)) out.push_back(b);
  return out;
}

TEST(Loader, BatchesMatchTheDataset) {
  TempDir d;
  const Dataset ds = make_folder(d.path(), 23, 3);
  LoaderOptions o = small_options();
  Loader loader(ds, o);
  EXPECT_EQ(loader.batches_per_epoch(), 5);
  EXPECT_EQ(loader.num_workers(), 2);
  const std::vector<Batch> batches = run_epoch(loader, 0);
  ASSERT_EQ(batches.size(), 5u);
  int64_t expected_index = 0;
  for (size_t bi = 0; bi < batches.size(); ++bi) {
    const Batch& b = batches[bi];
    const int64_t n = bi < 4 ? 5 : 3;
    EXPECT_EQ(b.images.shape(), (Shape{n, 1, 8, 6}));
    EXPECT_EQ(b.images.dtype(), DType::f32);
    EXPECT_TRUE(b.images.device().is_cpu());
    EXPECT_EQ(b.labels.shape(), (Shape{n}));
    EXPECT_EQ(b.labels.dtype(), DType::i64);
    EXPECT_EQ(b.epoch, 0);
    EXPECT_EQ(b.number, static_cast<int64_t>(bi));
    ASSERT_EQ(b.indices.size(), static_cast<size_t>(n));
    for (int64_t r = 0; r < n; ++r) {
      const int64_t idx = b.indices[r];
      EXPECT_EQ(idx, expected_index++);  // no shuffle: dataset order
      EXPECT_EQ(b.labels.data<int64_t>()[r], ds.samples[idx].label);
      EXPECT_EQ(row_identity(b, r, o.pipeline), file_number(ds.samples[idx].path));
      // The whole row is the normalised constant.
      const float* x = b.images.data<float>() + r * 48;
      for (int k = 0; k < 48; ++k) EXPECT_NEAR(x[k], x[0], 1e-5f);
    }
  }
  const Loader::EpochStats st = loader.stats();
  EXPECT_EQ(st.samples, 23);
  EXPECT_EQ(st.skipped, 0);
  EXPECT_GT(st.seconds, 0.0);
  // The epoch is over: next() keeps returning false and the time stays put.
  Batch b;
  EXPECT_FALSE(loader.next(b));
  EXPECT_EQ(loader.stats().seconds, st.seconds);
}

TEST(Loader, ShuffleIsSeededPerEpochAndCoversEverySampleOnce) {
  TempDir d;
  const Dataset ds = make_folder(d.path(), 30, 2);
  LoaderOptions o = small_options();
  o.shuffle = true;
  o.batch_size = 4;
  o.seed = 7;
  auto order_of = [&](uint64_t seed, int64_t epoch, int workers) {
    LoaderOptions oo = o;
    oo.seed = seed;
    oo.workers = workers;
    Loader loader(ds, oo);
    std::vector<int64_t> order;
    for (const Batch& b : run_epoch(loader, epoch)) {
      EXPECT_EQ(b.epoch, epoch);
      for (int64_t r = 0; r < static_cast<int64_t>(b.indices.size()); ++r) {
        EXPECT_EQ(row_identity(b, r, oo.pipeline), file_number(ds.samples[b.indices[r]].path));
        EXPECT_EQ(b.labels.data<int64_t>()[r], ds.samples[b.indices[r]].label);
      }
      order.insert(order.end(), b.indices.begin(), b.indices.end());
    }
    return order;
  };
  const std::vector<int64_t> e0 = order_of(7, 0, 2);
  EXPECT_EQ(e0, seeded_permutation(30, 7, 0));
  EXPECT_EQ(std::set<int64_t>(e0.begin(), e0.end()).size(), 30u);
  EXPECT_EQ(order_of(7, 0, 3), e0);          // deterministic
  const std::vector<int64_t> e1 = order_of(7, 1, 2);
  EXPECT_NE(e1, e0);                         // another epoch, another order
  EXPECT_EQ(std::set<int64_t>(e1.begin(), e1.end()).size(), 30u);
  EXPECT_NE(order_of(8, 0, 2), e0);          // another seed, another order

  // Several epochs on one loader match fresh loaders.
  Loader loader(ds, o);
  for (int64_t epoch : {0, 1, 2}) {
    std::vector<int64_t> order;
    for (const Batch& b : run_epoch(loader, epoch)) order.insert(order.end(), b.indices.begin(), b.indices.end());
    EXPECT_EQ(order, seeded_permutation(30, 7, static_cast<uint64_t>(epoch)));
  }
}

// A resumed run starts an epoch part-way: the later batches are the same as in a full epoch.
TEST(Loader, StartEpochAtABatch) {
  TempDir d;
  const Dataset ds = make_folder(d.path(), 23, 2);
  LoaderOptions o = small_options();
  o.shuffle = true;
  o.seed = 3;
  o.pipeline.augment.rotation = 10;  // augmentation depends on (seed, epoch, index) only
  for (bool drop_last : {false, true}) {
    o.drop_last = drop_last;
    Loader full(ds, o);
    const std::vector<Batch> all = run_epoch(full, 2);
    ASSERT_EQ(static_cast<int64_t>(all.size()), full.batches_per_epoch());
    for (int64_t first : {int64_t(0), int64_t(1), int64_t(3), full.batches_per_epoch()}) {
      Loader part(ds, o);
      part.start_epoch(2, first);
      std::vector<Batch> got;
      Batch b;
      while (part.next(b)) got.push_back(b);
      ASSERT_EQ(static_cast<int64_t>(got.size()), full.batches_per_epoch() - first) << "first " << first;
      for (size_t i = 0; i < got.size(); ++i) {
        const Batch& want = all[static_cast<size_t>(first) + i];
        EXPECT_EQ(got[i].number, want.number);
        EXPECT_EQ(got[i].indices, want.indices);
        EXPECT_EQ(got[i].images.to_vector(), want.images.to_vector());
      }
    }
    Loader bad(ds, o);
    EXPECT_THROW(bad.start_epoch(0, bad.batches_per_epoch() + 1), cxr::ValueError);
    EXPECT_THROW(bad.start_epoch(0, -1), cxr::ValueError);
  }
}

TEST(Loader, DropLast) {
  TempDir d;
  const Dataset ds = make_folder(d.path(), 23, 2);
  LoaderOptions o = small_options();
  o.drop_last = true;
  o.shuffle = true;
  Loader loader(ds, o);
  EXPECT_EQ(loader.batches_per_epoch(), 4);
  const std::vector<Batch> batches = run_epoch(loader, 3);
  ASSERT_EQ(batches.size(), 4u);
  std::set<int64_t> seen;
  for (const Batch& b : batches) {
    EXPECT_EQ(b.images.size(0), 5);
    seen.insert(b.indices.begin(), b.indices.end());
  }
  EXPECT_EQ(seen.size(), 20u);
  const std::vector<int64_t> perm = seeded_permutation(23, o.seed, 3);
  EXPECT_EQ(seen, std::set<int64_t>(perm.begin(), perm.begin() + 20));
  EXPECT_EQ(loader.stats().samples, 20);

  // Fewer samples than one batch: no batch at all with drop_last, one without.
  const Dataset tiny = ds.subset({0, 1, 2});
  Loader l2(tiny, o);
  EXPECT_EQ(l2.batches_per_epoch(), 0);
  EXPECT_TRUE(run_epoch(l2, 0).empty());
  o.drop_last = false;
  Loader l3(tiny, o);
  EXPECT_EQ(run_epoch(l3, 0).size(), 1u);
}

TEST(Loader, BitIdenticalForAnyWorkerCountWithAugmentation) {
  TempDir d;
  const Dataset ds = make_folder(d.path(), 26, 3, /*textured=*/true, /*channels=*/3);
  LoaderOptions o = small_options();
  o.shuffle = true;
  o.seed = 99;
  o.batch_size = 4;
  o.pipeline.channels = 3;
  o.pipeline.mean = {0.4f, 0.5f, 0.6f};
  o.pipeline.stddev = {0.2f, 0.25f, 0.3f};
  o.pipeline.height = 9;
  o.pipeline.width = 7;
  o.pipeline.augment.hflip = true;
  o.pipeline.augment.rotation = 15;
  o.pipeline.augment.zoom = 0.1;
  o.pipeline.augment.brightness = 0.2;
  o.pipeline.augment.noise_std = 0.05;
  auto collect = [&](int workers, int prefetch) {
    LoaderOptions oo = o;
    oo.workers = workers;
    oo.prefetch = prefetch;
    Loader loader(ds, oo);
    std::vector<Batch> all;
    for (int64_t epoch : {0, 1}) {
      std::vector<Batch> bs = run_epoch(loader, epoch);
      all.insert(all.end(), bs.begin(), bs.end());
    }
    return all;
  };
  const std::vector<Batch> ref = collect(1, 2);
  ASSERT_EQ(ref.size(), 14u);
  for (auto [workers, prefetch] : {std::pair{4, 2}, std::pair{3, 0}, std::pair{2, 5}}) {
    const std::vector<Batch> other = collect(workers, prefetch);
    ASSERT_EQ(other.size(), ref.size());
    for (size_t i = 0; i < ref.size(); ++i) {
      ASSERT_EQ(other[i].images.shape(), ref[i].images.shape());
      EXPECT_EQ(other[i].indices, ref[i].indices);
      EXPECT_EQ(std::memcmp(other[i].images.data<float>(), ref[i].images.data<float>(), ref[i].images.nbytes()), 0)
          << "batch " << i << " differs with " << workers << " workers, prefetch " << prefetch;
      EXPECT_EQ(std::memcmp(other[i].labels.data<int64_t>(), ref[i].labels.data<int64_t>(), ref[i].labels.nbytes()), 0);
    }
  }
  // Augmentation is on: epoch 0 and epoch 1 see a sample differently; train = false not.
  auto row_of = [&](const std::vector<Batch>& bs, size_t first, size_t last, int64_t index) -> std::vector<float> {
    for (size_t i = first; i < last; ++i)
      for (size_t r = 0; r < bs[i].indices.size(); ++r)
        if (bs[i].indices[r] == index) {
          const int64_t f = 3 * 9 * 7;
          const float* p = bs[i].images.data<float>() + r * f;
          return std::vector<float>(p, p + f);
        }
    return {};
  };
  EXPECT_NE(row_of(ref, 0, 7, 5), row_of(ref, 7, 14, 5));
  o.train = false;
  const std::vector<Batch> plain = collect(2, 2);
  EXPECT_EQ(row_of(plain, 0, 7, 5), row_of(plain, 7, 14, 5));
}

TEST(Loader, JpegAndPngTogether) {
  TempDir d;
  // Gray and RGB JPEGs (one large enough for DCT scaling to the 8x8 output) and PNGs.
  fs::create_directories(d.path() / "a");
  fs::create_directories(d.path() / "b");
  write_jpeg(d.path() / "a" / "gray.jpg", sample_image(3, 1, 64, 64, false));
  write_jpeg(d.path() / "a" / "rgb.JPEG", sample_image(4, 3, 20, 30, false));
  write_png((d.path() / "b" / "p.png").string(), sample_image(5, 3, 10, 10, false));
  const Dataset ds = Dataset::image_folder(d.str());
  for (int channels : {1, 3}) {
    LoaderOptions o = small_options();
    o.pipeline.channels = channels;
    o.pipeline.mean = {0.5f};
    o.pipeline.stddev = {0.25f};
    o.pipeline.height = o.pipeline.width = 8;
    Loader loader(ds, o);
    const std::vector<Batch> bs = run_epoch(loader, 0);
    ASSERT_EQ(bs.size(), 1u);
    ASSERT_EQ(bs[0].images.shape(), (Shape{3, channels, 8, 8}));
    EXPECT_EQ(loader.stats().skipped, 0);
    // Constant images stay constant; JPEG may move a flat gray by a level or so.
    const int expect[3] = {3, 4, 5};
    for (int r = 0; r < 3; ++r) {
      const float* x = bs[0].images.data<float>() + r * channels * 64;
      const float v = x[0] * 0.25f + 0.5f;
      EXPECT_NEAR(v * 255.0f, 10.0f + 7.0f * expect[r], 2.0f) << "row " << r << " channels " << channels;
    }
  }
}

TEST(Loader, BadFilesAreSkippedAndListed) {
  TempDir d;
  const Dataset good = make_folder(d.path(), 12, 2);
  // Corrupt: garbage named .png, a truncated PNG, an empty .jpg, a missing file.
  Dataset ds = good;
  const fs::path garbage = d.path() / "class0" / "garbage.png";
  std::ofstream(garbage) << "this is not an image";
  const fs::path truncated = d.path() / "class1" / "truncated.png";
  {
    std::ifstream in(ds.samples[1].path, std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::ofstream(truncated, std::ios::binary) << bytes.substr(0, bytes.size() / 2);
  }
  const fs::path empty = d.path() / "class0" / "empty.jpg";
  std::ofstream(empty).flush();
  const fs::path missing = d.path() / "class1" / "missing.png";
  // Positions (batch size 4, no shuffle): 0-3 | 4 garbage, 5, 6 truncated, 7 | 8 empty,
  // 9 missing, 10, 11 | 12-15 good.
  std::vector<Sample> s;
  for (int i = 0; i < 4; ++i) s.push_back(good.samples[i]);
  s.push_back({garbage.string(), 0});
  s.push_back(good.samples[4]);
  s.push_back({truncated.string(), 1});
  s.push_back(good.samples[5]);
  s.push_back({empty.string(), 0});
  s.push_back({missing.string(), 1});
  for (int i = 6; i < 12; ++i) s.push_back(good.samples[i]);
  ds.samples = s;
  LoaderOptions o = small_options();
  o.batch_size = 4;
  o.workers = 3;
  Loader loader(ds, o);
  testing::internal::CaptureStderr();
  const std::vector<Batch> bs = run_epoch(loader, 0);
  const std::string err = testing::internal::GetCapturedStderr();
  ASSERT_EQ(bs.size(), 4u);
  EXPECT_EQ(bs[0].images.size(0), 4);
  EXPECT_EQ(bs[1].images.size(0), 2);
  EXPECT_EQ(bs[1].indices, (std::vector<int64_t>{5, 7}));
  EXPECT_EQ(bs[1].labels.size(0), 2);
  EXPECT_EQ(bs[2].indices, (std::vector<int64_t>{10, 11}));
  EXPECT_EQ(bs[2].number, 2);
  for (const Batch& b : bs)
    for (size_t r = 0; r < b.indices.size(); ++r) {
      EXPECT_EQ(row_identity(b, static_cast<int64_t>(r), o.pipeline), file_number(ds.samples[b.indices[r]].path));
      EXPECT_EQ(b.labels.data<int64_t>()[r], ds.samples[b.indices[r]].label);
    }
  const Loader::EpochStats st = loader.stats();
  EXPECT_EQ(st.samples, 12);
  EXPECT_EQ(st.skipped, 4);
  ASSERT_EQ(st.skipped_files.size(), 4u);
  EXPECT_EQ(st.skipped_files[0].first, garbage.string());
  EXPECT_EQ(st.skipped_files[1].first, truncated.string());
  EXPECT_EQ(st.skipped_files[2].first, empty.string());
  EXPECT_EQ(st.skipped_files[3].first, missing.string());
  for (const auto& [path, reason] : st.skipped_files) {
    EXPECT_FALSE(reason.empty()) << path;
    EXPECT_NE(err.find("cxr: skipping " + path + ": " + reason), std::string::npos) << err;
  }

  // A batch whose every sample fails is skipped; the batch numbers show the gap.
  Dataset all_bad = ds.subset({0, 1, 4, 6, 2, 3});  // batch size 2: ok ok | bad bad | ok ok
  o.batch_size = 2;
  Loader l2(all_bad, o);
  testing::internal::CaptureStderr();
  const std::vector<Batch> bs2 = run_epoch(l2, 0);
  testing::internal::GetCapturedStderr();
  ASSERT_EQ(bs2.size(), 2u);
  EXPECT_EQ(bs2[0].number, 0);
  EXPECT_EQ(bs2[1].number, 2);
  EXPECT_EQ(bs2[1].indices, (std::vector<int64_t>{4, 5}));
  EXPECT_EQ(l2.stats().skipped, 2);

  // strict: next() throws the FileError naming the file when it reaches its batch.
  o.batch_size = 4;
  o.strict = true;
  Loader l3(ds, o);
  l3.start_epoch(0);
  Batch b;
  ASSERT_TRUE(l3.next(b));
  EXPECT_EQ(b.images.size(0), 4);
  try {
    l3.next(b);
    ADD_FAILURE() << "strict loader did not throw";
  } catch (const FileError& e) {
    EXPECT_NE(std::string(e.what()).find(garbage.string()), std::string::npos) << e.what();
  }
}

TEST(Loader, WorkerErrorsAreRethrownByNext) {
  // Invalid decode limits make every decode throw a ValueError (not a bad file) on the
  // workers: next() rethrows it, batch after batch, and the process goes on.
  TempDir d;
  const Dataset ds = make_folder(d.path(), 6, 2);
  LoaderOptions o = small_options();
  o.batch_size = 2;
  o.workers = 3;
  o.limits.max_pixels = 0;
  Loader loader(ds, o);
  loader.start_epoch(0);
  Batch b;
  for (int i = 0; i < 3; ++i) expect_error([&] { loader.next(b); }, {"DecodeLimits", "max_pixels=0"});
  EXPECT_FALSE(loader.next(b));
  EXPECT_EQ(loader.stats().samples, 0);
  EXPECT_EQ(loader.stats().skipped, 0);
  loader.start_epoch(1);  // and it can be restarted and destroyed mid-epoch
  expect_error([&] { loader.next(b); }, {"DecodeLimits"});
}

// Runs fn on another thread; fails the test (and ends the process, so a deadlock cannot
// hang the suite) when it takes longer than `seconds`.
void within_seconds(double seconds, const std::function<void()>& fn, const char* what) {
  auto fut = std::async(std::launch::async, fn);
  if (fut.wait_for(std::chrono::duration<double>(seconds)) != std::future_status::ready) {
    ADD_FAILURE() << what << " did not finish within " << seconds << " s";
    std::fprintf(stderr, "%s hung; ending the test process\n", what);
    std::_Exit(1);
  }
  fut.get();
}

TEST(Loader, DestroyedMidEpochWithoutHanging) {
  TempDir d;
  const Dataset ds = make_folder(d.path(), 60, 2, true);
  within_seconds(20, [&] {
    for (int workers : {1, 4}) {
      LoaderOptions o = small_options();
      o.batch_size = 2;
      o.workers = workers;
      o.prefetch = 3;
      o.shuffle = true;
      {  // after one batch of many
        Loader loader(ds, o);
        loader.start_epoch(0);
        Batch b;
        ASSERT_TRUE(loader.next(b));
      }
      {  // started but never consumed
        Loader loader(ds, o);
        loader.start_epoch(0);
      }
      { Loader loader(ds, o); }  // never started
      {  // restarted mid-epoch, then a full epoch
        Loader loader(ds, o);
        loader.start_epoch(0);
        Batch b;
        ASSERT_TRUE(loader.next(b));
        ASSERT_TRUE(loader.next(b));
        std::set<int64_t> seen;
        for (const Batch& bb : run_epoch(loader, 1)) seen.insert(bb.indices.begin(), bb.indices.end());
        EXPECT_EQ(seen.size(), 60u);
        EXPECT_EQ(loader.stats().samples, 60);
        loader.start_epoch(2);
        ASSERT_TRUE(loader.next(b));
        EXPECT_EQ(b.epoch, 2);
      }
    }
  }, "destroying a loader mid-epoch");
}

TEST(Loader, PrefetchBoundsTheBatchesDecodedAhead) {
  // Decode ahead, then delete every file: exactly the (prefetch + 1) batches the ring
  // holds were decoded before the deletion; the rest are reported missing.
  for (int prefetch : {0, 2}) {
    TempDir d;
    const Dataset ds = make_folder(d.path(), 40, 2);
    LoaderOptions o = small_options();
    o.batch_size = 3;
    o.workers = 2;
    o.prefetch = prefetch;
    Loader loader(ds, o);
    loader.start_epoch(0);
    std::this_thread::sleep_for(std::chrono::milliseconds(1500));
    for (const Sample& s : ds.samples) fs::remove(s.path);
    testing::internal::CaptureStderr();
    std::vector<int64_t> delivered;
    Batch b;
    while (loader.next(b)) delivered.insert(delivered.end(), b.indices.begin(), b.indices.end());
    testing::internal::GetCapturedStderr();
    EXPECT_EQ(static_cast<int64_t>(delivered.size()), (prefetch + 1) * 3) << "prefetch " << prefetch;
    for (size_t i = 0; i < delivered.size(); ++i) EXPECT_EQ(delivered[i], static_cast<int64_t>(i));
    EXPECT_EQ(loader.stats().skipped, 40 - (prefetch + 1) * 3);
  }
}

TEST(Loader, WorkerCountOption) {
  TempDir d;
  const Dataset ds = make_folder(d.path(), 4, 2);
  LoaderOptions o = small_options();
  o.workers = 3;
  EXPECT_EQ(Loader(ds, o).num_workers(), 3);
  o.workers = 0;
  const int hw = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  EXPECT_EQ(Loader(ds, o).num_workers(), hw);
}

TEST(Loader, EmptyDatasetAndOptionErrors) {
  Dataset empty;
  empty.class_names = {"a"};
  LoaderOptions o = small_options();
  Loader loader(empty, o);
  EXPECT_EQ(loader.batches_per_epoch(), 0);
  EXPECT_TRUE(run_epoch(loader, 0).empty());

  expect_error([&] {
    Loader l(empty, o);
    Batch b;
    l.next(b);
  }, {"start_epoch"});
  auto bad = [&](const std::function<void(LoaderOptions&)>& change, std::initializer_list<const char*> parts) {
    LoaderOptions oo = small_options();
    change(oo);
    expect_error([&] { Loader l(empty, oo); }, parts);
  };
  bad([](LoaderOptions& x) { x.batch_size = 0; }, {"batch_size", "0"});
  bad([](LoaderOptions& x) { x.prefetch = -1; }, {"prefetch", "-1"});
  bad([](LoaderOptions& x) { x.workers = -2; }, {"workers", "-2"});
  bad([](LoaderOptions& x) { x.pipeline.channels = 2; }, {"channels"});
  bad([](LoaderOptions& x) { x.pipeline.augment.rotation = -5; }, {"rotation"});
  if (!cuda::available()) bad([](LoaderOptions& x) { x.device = Device::cuda(); }, {"cuda", "not available"});
}

}  // namespace
}  // namespace cxr::data
