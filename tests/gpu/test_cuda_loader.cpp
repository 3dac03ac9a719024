// data::Loader delivering batches to a CUDA device: the same batches as on the CPU (bad
// files skipped, several epochs, a restart mid-epoch, any worker count and prefetch
// depth), and uploads that overlap compute already queued on the device.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "cuda_test_util.h"
#include "data/dataset.h"
#include "data/image.h"
#include "data/loader.h"
#include "nn/functional.h"
#include "temp_dir.h"

namespace cxr::gputest {
namespace {

namespace fs = std::filesystem;
using data::Batch;
using data::Dataset;
using data::Loader;
using data::LoaderOptions;

// n textured PNGs of size h x w in two class folders, and `bad` files with a PNG name
// and garbage inside.
Dataset make_folder(const fs::path& root, int n, int h, int w, int bad) {
  for (int i = 0; i < n; ++i) {
    const fs::path dir = root / (i % 2 ? "PNEUMONIA" : "NORMAL");
    fs::create_directories(dir);
    data::Image img(1, h + i % 3, w + i % 5);
    for (int y = 0; y < img.height; ++y)
      for (int x = 0; x < img.width; ++x)
        img.at(0, y, x) = static_cast<float>((x * 7 + y * 13 + i * 29) % 256) / 255.0f;
    data::write_png((dir / ("img" + std::to_string(i) + ".png")).string(), img);
  }
  for (int i = 0; i < bad; ++i)
    std::ofstream(root / "NORMAL" / ("broken" + std::to_string(i) + ".png"), std::ios::binary) << "not a png";
  return Dataset::image_folder(root.string());
}

LoaderOptions options(Device device, int workers, int prefetch) {
  LoaderOptions o;
  o.batch_size = 6;
  o.workers = workers;
  o.prefetch = prefetch;
  o.shuffle = true;
  o.seed = 11;
  o.pipeline.height = 20;
  o.pipeline.width = 18;
  o.pipeline.augment.hflip = true;
  o.pipeline.augment.rotation = 10;
  o.device = device;
  return o;
}

struct HostBatch {
  std::vector<double> images;
  std::vector<double> labels;
  std::vector<int64_t> indices;
  int64_t number = 0;
};

std::vector<HostBatch> epoch(Loader& loader, int64_t e, int64_t first = 0) {
  loader.start_epoch(e, first);
  std::vector<HostBatch> out;
  Batch b;
  while (loader.next(b)) {
    EXPECT_EQ(b.images.device(), b.labels.device());
    out.push_back({b.images.to(Device::cpu()).to_vector(), b.labels.to(Device::cpu()).to_vector(), b.indices, b.number});
  }
  return out;
}

void expect_same(const std::vector<HostBatch>& got, const std::vector<HostBatch>& want, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].number, want[i].number) << what << " batch " << i;
    EXPECT_EQ(got[i].indices, want[i].indices) << what << " batch " << i;
    EXPECT_EQ(got[i].labels, want[i].labels) << what << " batch " << i;
    EXPECT_EQ(got[i].images, want[i].images) << what << " batch " << i;  // bit-identical
  }
}

TEST(CudaLoader, BatchesEqualTheCpuLoaders) {
  CXR_REQUIRE_GPU();
  cxr_test::TempDir dir;
  const Dataset ds = make_folder(dir.path(), 40, 24, 22, 3);
  Loader cpu(ds, options(Device::cpu(), 2, 2));
  const std::vector<HostBatch> want0 = epoch(cpu, 0);
  ASSERT_EQ(cpu.stats().skipped, 3);
  const std::vector<HostBatch> want1 = epoch(cpu, 1), want1_late = epoch(cpu, 1, 3);
  for (int workers : {1, 3})
    for (int prefetch : {0, 2}) {
      const std::string what = "workers " + std::to_string(workers) + " prefetch " + std::to_string(prefetch);
      Loader dev(ds, options(test_device(), workers, prefetch));
      expect_same(epoch(dev, 0), want0, what + " epoch 0");
      EXPECT_EQ(dev.stats().skipped, 3) << what;
      expect_same(epoch(dev, 1), want1, what + " epoch 1");
      // Restarting part-way leaves nothing of the previous epoch behind.
      dev.start_epoch(0);
      Batch b;
      ASSERT_TRUE(dev.next(b));
      expect_same(epoch(dev, 1, 3), want1_late, what + " epoch 1 from batch 3");
    }
}

TEST(CudaLoader, UploadOverlapsComputeAlreadyQueued) {
  CXR_REQUIRE_REAL_GPU();
  cxr_test::TempDir dir;
  const Dataset ds = make_folder(dir.path(), 24, 64, 64, 0);
  LoaderOptions o = options(Device::cuda(0), 2, 1);
  o.pipeline.augment = {};
  Loader loader(ds, o);
  // About a second of matrix products queued on the compute stream before the workers
  // even start on the first batch.
  Generator g(3);
  const Tensor a = rand_normal({4096, 4096}, g, 0.0, 1.0, DType::f32).to(Device::cuda(0));
  Tensor c;
  for (int i = 0; i < 400; ++i) c = nn::matmul(a, a);
  const uint64_t busy = cuda::record_event(0);
  loader.start_epoch(0);
  Batch b;
  ASSERT_TRUE(loader.next(b));  // returns once the upload is queued, not when it is done
  ASSERT_NE(b.upload, 0u);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (!cuda::copy_done(b.upload, 0) && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  ASSERT_TRUE(cuda::copy_done(b.upload, 0)) << "the upload did not finish";
  // The upload has finished while the compute queued before it is still running.
  EXPECT_FALSE(cuda::copy_done(busy, 0)) << "the upload waited for the compute stream";
  cuda::wait_copy(busy, 0);
  // And the batch, copied out of staging behind that compute, holds the right pixels.
  LoaderOptions oc = options(Device::cpu(), 1, 0);
  oc.pipeline.augment = {};
  Loader ref(ds, oc);
  ref.start_epoch(0);
  Batch rb;
  ASSERT_TRUE(ref.next(rb));
  EXPECT_EQ(b.images.to(Device::cpu()).to_vector(), rb.images.to_vector());
}

}  // namespace
}  // namespace cxr::gputest
