// Threaded batch loader: decodes and transforms a Dataset's images on worker threads into
// a ring of pinned host buffers, and hands out NCHW batches in order, on the CPU or copied
// asynchronously to a CUDA device.
//
// Epoch order: with `shuffle`, a permutation of the dataset that is a pure function of
// (seed, epoch) (data::seeded_permutation); otherwise dataset order. Batch b holds
// order[b*B, (b+1)*B) (the last one shorter unless drop_last). Every sample is decoded
// (JPEGs with DCT scaling down to no less than the pipeline's size) and run through
// run_pipeline with SampleRng{seed, epoch, dataset index}, so a batch's contents are
// bit-identical whatever the number of workers and however they are scheduled.
//
// Work: the workers take single samples, in batch order, from a shared queue, so the
// next batch completes first. The ring has prefetch + 1 buffers of one full batch each; a
// buffer is refilled only after its batch has been consumed (on CUDA: after its copy to
// the device has finished), so at most prefetch + 1 batches are decoded or held at once.
//
// CUDA: every ring slot also owns a device staging buffer of one batch. A batch is
// uploaded (pinned buffer -> staging, on the device's copy stream) as soon as its last
// sample is decoded, without waiting for the compute stream, so the copy overlaps the
// training step in flight; next() queues the copy from staging into the batch's own
// tensor on the compute stream, behind the upload. Device memory: prefetch + 1 batches.
//
// Bad files: a sample whose file cannot be decoded (cxr::FileError) is left out of its
// batch with a warning on stderr ("cxr: skipping <path>: <reason>") and listed in stats();
// the batch then has fewer samples (images, labels and indices stay consistent). A batch
// whose samples all failed is skipped. With `strict`, next() throws that FileError instead
// (the batch holding it is dropped). Any other exception on a worker (out of memory, a bug)
// is caught there and rethrown by next() when it reaches that batch.
//
// Threading: one consumer thread calls start_epoch / next / stats; the workers are
// internal. Destroying the Loader at any point (even mid-epoch) stops and joins them.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "data/dataset.h"
#include "data/image.h"
#include "data/transforms.h"
#include "runtime/cuda.h"
#include "runtime/tensor.h"

namespace cxr::data {

struct LoaderOptions {
  int64_t batch_size = 32;
  int workers = 0;      // decoding threads; 0 = one per hardware thread
  int prefetch = 2;     // batches decoded ahead of the one being consumed (>= 0)
  bool shuffle = true;
  bool drop_last = false;
  uint64_t seed = 0;    // epoch order and augmentation
  bool strict = false;  // a bad file makes next() throw instead of being skipped
  bool train = true;    // apply pipeline.augment
  Pipeline pipeline;    // channels, output size, normalisation, augmentation
  Device device = Device::cpu();  // where next() puts the batches
  DecodeLimits limits;  // checked by the decoder: invalid limits make next() throw its ValueError
  // Let JPEGs decode at 1/2, 1/4 or 1/8 scale while staying at least the pipeline's size
  // (much faster for large files; the pipeline resizes anyway). Off: full-resolution decode.
  bool jpeg_dct_scaling = true;
};

struct Batch {
  Tensor images;                 // (N, C, H, W) f32 on options.device
  Tensor labels;                 // (N) i64 on options.device
  std::vector<int64_t> indices;  // dataset index of each row
  int64_t epoch = 0;
  int64_t number = 0;            // batch index within the epoch (0 .. batches_per_epoch()-1)
  uint64_t upload = 0;           // CUDA: ticket of the host-to-device upload (cuda::copy_done); 0 on the CPU
};

class Loader {
 public:
  // Copies the dataset. Throws ValueError for bad options (batch_size < 1, prefetch < 0,
  // workers < 0, an invalid pipeline, a CUDA device in a build or machine without one).
  Loader(const Dataset& dataset, LoaderOptions options);
  ~Loader();
  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;

  // Starts (or restarts) an epoch: work still queued for the previous one is dropped.
  // first_batch > 0 starts part-way through (a resumed run): the epoch's order is the same,
  // and batches before first_batch are neither decoded nor delivered. ValueError unless
  // 0 <= first_batch <= batches_per_epoch().
  void start_epoch(int64_t epoch, int64_t first_batch = 0);
  // The next batch of the current epoch, in order; false once the epoch is exhausted.
  // Throws ValueError when no epoch was started.
  bool next(Batch& out);
  int64_t batches_per_epoch() const;
  int num_workers() const { return static_cast<int>(threads_.size()); }

  struct EpochStats {
    int64_t samples = 0;  // samples delivered so far this epoch
    int64_t skipped = 0;  // samples left out (bad files)
    std::vector<std::pair<std::string, std::string>> skipped_files;  // (path, reason), in epoch order
    double seconds = 0;   // since start_epoch; frozen when next() returns false
  };
  EpochStats stats() const;

 private:
  struct Slot;
  struct Rows {  // the delivered samples of a batch
    std::vector<int64_t> rows, indices, labels;  // slot row, dataset index, label
  };
  void worker_loop();
  void release(Slot& s);
  void upload(Slot& s) noexcept;
  Rows sort_out(Slot& s, int64_t b);
  Batch assemble(Slot& s, const Rows& r) const;
  void process(int64_t pos, Slot& slot, Image& decoded) noexcept;
  void reclaim_copies(std::unique_lock<std::mutex>& lock, Slot* must_free);
  void drain(std::unique_lock<std::mutex>& lock);
  int64_t batch_begin(int64_t b) const { return b * options_.batch_size; }
  int64_t batch_end(int64_t b) const;

  Dataset dataset_;
  LoaderOptions options_;
  int64_t sample_floats_ = 0;  // C * H * W

  mutable std::mutex mutex_;
  std::condition_variable work_cv_;   // workers: a sample may be taken / stop
  std::condition_variable done_cv_;   // consumer: a sample finished
  std::vector<std::unique_ptr<Slot>> slots_;
  std::vector<std::thread> threads_;
  bool stop_ = false;
  int busy_ = 0;  // workers processing a sample

  bool started_ = false;
  int64_t epoch_ = 0;
  std::vector<int64_t> order_;    // dataset indices in epoch order
  int64_t total_ = 0;             // samples in the epoch's batches
  int64_t num_batches_ = 0;
  int64_t next_pos_ = 0;          // next sample position to hand to a worker
  int64_t next_batch_ = 0;        // next batch for next()
  EpochStats stats_;
  double epoch_start_ = 0;        // steady-clock seconds
  bool epoch_done_ = false;
};

}  // namespace cxr::data
