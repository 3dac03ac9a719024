// Loader: worker threads, the ring of pinned batch buffers, in-order delivery, bad-file
// handling and the host-to-device hand-off (see data/loader.h).
#include "data/loader.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <numeric>
#include <utility>

#include "runtime/error.h"

namespace cxr::data {

namespace {

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

enum class SampleStatus : uint8_t { ok, bad_file, failed };

// The message of a decode error, without the file name the decoders start it with (the
// warning names the file already).
std::string skip_reason(const std::exception_ptr& error, const std::string& path) {
  std::string reason;
  try {
    std::rethrow_exception(error);
  } catch (const std::exception& e) {
    reason = e.what();
  }
  const std::string prefix = path + ": ";
  if (reason.compare(0, prefix.size(), prefix) == 0) reason.erase(0, prefix.size());
  return reason;
}

}  // namespace

// One batch buffer of the ring and the state of the batch it holds.
//   free      -> filling    a worker takes the batch's first sample
//   filling   -> consuming  next() takes the completed batch (on CUDA: once its upload
//                           is queued)
//   consuming -> free       CPU: once the batch is copied out
//   consuming -> copying    CUDA: the batch's rows are queued for copying out of staging
//   copying   -> free       the upload has finished reading the pinned buffer
//
// CUDA: each slot also owns a device staging buffer. The worker that finishes a batch's
// last sample queues its upload (pinned buffer -> staging) on the copy stream at once,
// ordered only after the event that marks the end of the previous batch's reads from
// that staging buffer, so the upload overlaps the compute already queued instead of
// waiting for it. next() makes the compute stream wait for the upload and copies the
// delivered rows into a fresh tensor there (device to device, closing the gaps of
// skipped rows), then records the staging buffer's release event.
struct Loader::Slot {
  enum class State : uint8_t { free, filling, consuming, copying };
  cuda::PinnedBuffer buffer;  // batch_size * C * H * W floats, sample k at k * C*H*W
  State state = State::free;
  int64_t batch = -1;
  int64_t remaining = 0;  // samples of the batch not yet finished
  std::vector<SampleStatus> status;
  std::vector<std::exception_ptr> error;  // of a sample that failed
  uint64_t ticket = 0;    // copying: the upload still reading the pinned buffer
  // CUDA only.
  Tensor staging;          // batch_size * C * H * W floats on the device
  bool uploaded = false;   // the upload of this batch is queued (or failed)
  uint64_t upload = 0;     // its ticket
  uint64_t released = 0;   // event after the last reads of staging, consumed by the next upload
  std::exception_ptr upload_error;
  float* sample(int64_t k, int64_t floats) const { return static_cast<float*>(buffer.data()) + k * floats; }
};

Loader::Loader(const Dataset& dataset, LoaderOptions options) : dataset_(dataset), options_(std::move(options)) {
  CXR_CHECK(options_.batch_size >= 1, "Loader: batch_size must be >= 1, got ", options_.batch_size);
  CXR_CHECK(options_.prefetch >= 0, "Loader: prefetch must be >= 0, got ", options_.prefetch);
  CXR_CHECK(options_.workers >= 0, "Loader: workers must be >= 0 (0 = one per hardware thread), got ",
            options_.workers);
  options_.pipeline.validate();
  if (options_.device.is_cuda())
    CXR_CHECK(options_.device.index < cuda::device_count(), "Loader: device ", options_.device.str(),
              " is not available (", cuda::device_count(), " CUDA devices",
              cuda::built_with_cuda() ? "" : "; built without the CUDA backend", ")");
  for (const Sample& s : dataset_.samples)
    CXR_CHECK(s.label >= 0, "Loader: sample '", s.path, "' has a negative label ", s.label);

  const Pipeline& p = options_.pipeline;
  sample_floats_ = static_cast<int64_t>(p.channels) * p.height * p.width;
  const auto slot_bytes = static_cast<size_t>(options_.batch_size * sample_floats_) * sizeof(float);
  const auto B = static_cast<size_t>(options_.batch_size);
  for (int i = 0; i <= options_.prefetch; ++i) {
    auto s = std::make_unique<Slot>();
    s->buffer = cuda::PinnedBuffer(slot_bytes);
    if (options_.device.is_cuda())
      s->staging = Tensor::empty({options_.batch_size * sample_floats_}, DType::f32, options_.device);
    s->status.resize(B);
    s->error.resize(B);
    slots_.push_back(std::move(s));
  }
  int n = options_.workers;
  if (n == 0) n = std::max(1u, std::thread::hardware_concurrency());
  threads_.reserve(static_cast<size_t>(n));
  try {
    for (int i = 0; i < n; ++i) threads_.emplace_back([this] { worker_loop(); });
  } catch (...) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    work_cv_.notify_all();
    for (auto& t : threads_) t.join();
    throw;
  }
}

Loader::~Loader() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  work_cv_.notify_all();
  for (auto& t : threads_) t.join();
  // The device may still be reading a buffer; it must not be freed under the copy.
  if (!options_.device.is_cuda()) return;
  for (auto& s : slots_) {
    try {
      if (s->state == Slot::State::copying) cuda::wait_copy(s->ticket, options_.device.index);
      if (s->upload) cuda::wait_copy(s->upload, options_.device.index);
      if (s->released) cuda::wait_copy(s->released, options_.device.index);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "cxr: Loader: waiting for a device copy failed: %s\n", e.what());
    }
  }
}

int64_t Loader::batch_end(int64_t b) const { return std::min(total_, (b + 1) * options_.batch_size); }

int64_t Loader::batches_per_epoch() const {
  const int64_t n = dataset_.size(), B = options_.batch_size;
  return options_.drop_last ? n / B : (n + B - 1) / B;
}

void Loader::worker_loop() {
  // Each worker decodes into one Image, reused from sample to sample (no page faults for
  // a fresh multi-megabyte buffer per image); one much larger than usual is let go.
  constexpr size_t kKeepFloats = size_t{32} << 20;  // 128 MiB
  Image decoded;
  std::unique_lock<std::mutex> lock(mutex_);
  const auto S = static_cast<int64_t>(slots_.size());
  auto takeable = [&] {
    if (next_pos_ >= total_) return false;
    const int64_t b = next_pos_ / options_.batch_size;
    const Slot& s = *slots_[static_cast<size_t>(b % S)];
    return s.state == Slot::State::free || (s.state == Slot::State::filling && s.batch == b);
  };
  for (;;) {
    work_cv_.wait(lock, [&] { return stop_ || takeable(); });
    if (stop_) return;
    const int64_t pos = next_pos_++;
    const int64_t b = pos / options_.batch_size;
    Slot& s = *slots_[static_cast<size_t>(b % S)];
    if (s.state == Slot::State::free) {
      s.state = Slot::State::filling;
      s.batch = b;
      s.remaining = batch_end(b) - batch_begin(b);
      s.uploaded = false;
      s.upload = 0;
      s.upload_error = nullptr;
    }
    ++busy_;
    lock.unlock();
    process(pos, s, decoded);
    if (decoded.data.capacity() > kKeepFloats) decoded = Image();
    lock.lock();
    const bool complete = --s.remaining == 0;
    if (complete && options_.device.is_cuda()) {
      // Still counted busy, so drain() waits for the upload to be queued.
      lock.unlock();
      upload(s);
      lock.lock();
      s.uploaded = true;
    }
    --busy_;
    if (complete || busy_ == 0) done_cv_.notify_all();
  }
}

// Queues a completed batch's upload into the slot's staging buffer. Runs without the
// lock: until `uploaded` is set nobody else touches the slot.
void Loader::upload(Slot& s) noexcept {
  try {
    const auto rows = static_cast<size_t>(batch_end(s.batch) - batch_begin(s.batch));
    const uint64_t after = s.released;
    s.released = 0;  // consumed by the upload's wait
    s.upload = cuda::upload_async(s.staging.raw_data(), s.buffer.data(), rows * static_cast<size_t>(sample_floats_) * sizeof(float),
                                  options_.device.index, after);
  } catch (...) {
    s.upload = 0;
    s.upload_error = std::current_exception();
  }
}

// Decodes and transforms one sample into its row of the slot. Runs without the lock: the
// row is this worker's alone until the batch completes. order_ and epoch_ only change in
// start_epoch, which first waits for every worker to be idle. Nothing escapes: errors are
// kept for next(), which turns them into warnings or rethrows them.
void Loader::process(int64_t pos, Slot& slot, Image& img) noexcept {
  const int64_t k = pos - batch_begin(slot.batch);
  const int64_t index = order_[static_cast<size_t>(pos)];
  const Pipeline& p = options_.pipeline;
  try {
    DecodeOptions dopt;
    dopt.channels = p.channels;
    if (options_.jpeg_dct_scaling) {
      dopt.min_width = p.width;
      dopt.min_height = p.height;
    }
    dopt.limits = options_.limits;
    decode_image_into(dataset_.samples[static_cast<size_t>(index)].path, dopt, img);
    run_pipeline(img, p, options_.train, SampleRng{options_.seed, epoch_, index}, slot.sample(k, sample_floats_));
    slot.status[k] = SampleStatus::ok;
  } catch (const FileError&) {
    slot.status[k] = SampleStatus::bad_file;
    slot.error[k] = std::current_exception();
  } catch (...) {
    slot.status[k] = SampleStatus::failed;
    slot.error[k] = std::current_exception();
  }
}

// Frees the slots whose device copies have finished; waits for `must_free`'s copy.
void Loader::reclaim_copies(std::unique_lock<std::mutex>& lock, Slot* must_free) {
  const int dev = options_.device.index;
  bool freed = false;
  for (auto& s : slots_) {
    if (s->state != Slot::State::copying) continue;
    if (s.get() == must_free) {
      lock.unlock();
      cuda::wait_copy(s->ticket, dev);
      lock.lock();
    } else if (!cuda::copy_done(s->ticket, dev)) {
      continue;
    }
    s->state = Slot::State::free;
    freed = true;
  }
  if (freed) work_cv_.notify_all();
}

// Stops handing out the current epoch's samples and waits until no worker is busy and no
// copy reads a buffer; afterwards every slot is free.
void Loader::drain(std::unique_lock<std::mutex>& lock) {
  next_pos_ = total_;
  done_cv_.wait(lock, [&] { return busy_ == 0; });
  for (auto& s : slots_) {
    if (s->state == Slot::State::copying) cuda::wait_copy(s->ticket, options_.device.index);
    if (s->upload) cuda::wait_copy(s->upload, options_.device.index);  // completed, never consumed
    s->upload = 0;
    s->uploaded = false;
    s->upload_error = nullptr;
    s->state = Slot::State::free;
    s->batch = -1;
  }
}

void Loader::start_epoch(int64_t epoch, int64_t first_batch) {
  std::unique_lock<std::mutex> lock(mutex_);
  drain(lock);
  const int64_t n = dataset_.size(), B = options_.batch_size;
  if (options_.shuffle) {
    order_ = seeded_permutation(n, options_.seed, static_cast<uint64_t>(epoch));
  } else {
    order_.resize(static_cast<size_t>(n));
    std::iota(order_.begin(), order_.end(), int64_t(0));
  }
  epoch_ = epoch;
  num_batches_ = batches_per_epoch();
  total_ = options_.drop_last ? num_batches_ * B : n;
  CXR_CHECK(first_batch >= 0 && first_batch <= num_batches_, "Loader::start_epoch: first_batch ", first_batch,
            " is outside [0, ", num_batches_, "]");
  next_batch_ = first_batch;
  next_pos_ = std::min(total_, first_batch * B);
  stats_ = EpochStats{};
  epoch_start_ = now_seconds();
  epoch_done_ = false;
  started_ = true;
  lock.unlock();
  work_cv_.notify_all();
}

void Loader::release(Slot& s) {
  if (s.upload != 0) {  // the upload may still be reading the pinned buffer
    s.state = Slot::State::copying;
    s.ticket = s.upload;
    s.upload = 0;
  } else {
    s.state = Slot::State::free;
    work_cv_.notify_all();
  }
}

// Called with the lock held and the slot in `consuming`: splits the batch into delivered
// rows and skipped files (warned about and counted), or rethrows a worker's error and,
// with `strict`, a bad file's FileError.
Loader::Rows Loader::sort_out(Slot& s, int64_t b) {
  if (s.upload_error) std::rethrow_exception(std::exchange(s.upload_error, nullptr));
  const int64_t count = batch_end(b) - batch_begin(b);
  for (int64_t k = 0; k < count; ++k) {
    const SampleStatus st = s.status[static_cast<size_t>(k)];
    if (st == SampleStatus::failed || (st == SampleStatus::bad_file && options_.strict))
      std::rethrow_exception(s.error[static_cast<size_t>(k)]);
  }
  Rows r;
  for (int64_t k = 0; k < count; ++k) {
    const int64_t index = order_[static_cast<size_t>(batch_begin(b) + k)];
    const Sample& sample = dataset_.samples[static_cast<size_t>(index)];
    if (s.status[static_cast<size_t>(k)] == SampleStatus::ok) {
      r.rows.push_back(k);
      r.indices.push_back(index);
      r.labels.push_back(sample.label);
      continue;
    }
    std::string reason = skip_reason(s.error[static_cast<size_t>(k)], sample.path);
    s.error[static_cast<size_t>(k)] = nullptr;
    std::fprintf(stderr, "cxr: skipping %s: %s\n", sample.path.c_str(), reason.c_str());
    stats_.skipped_files.emplace_back(sample.path, std::move(reason));
    ++stats_.skipped;
  }
  return r;
}

// Called without the lock: the batch's tensors from the slot's rows. On the CPU a copy;
// on CUDA device-to-device copies out of the slot's staging buffer, queued on the
// compute stream behind the upload, and the staging buffer's release event.
Batch Loader::assemble(Slot& s, const Rows& r) const {
  const auto n = static_cast<int64_t>(r.rows.size());
  const Pipeline& p = options_.pipeline;
  const Shape shape{n, p.channels, p.height, p.width};
  const size_t row_bytes = static_cast<size_t>(sample_floats_) * sizeof(float);
  Batch batch;
  if (options_.device.is_cpu()) {
    batch.images = Tensor::empty(shape);
    auto* dst = batch.images.data<float>();
    for (int64_t j = 0; j < n;) {  // runs of consecutive rows in one copy
      int64_t e = j + 1;
      while (e < n && r.rows[e] == r.rows[e - 1] + 1) ++e;
      std::memcpy(dst + j * sample_floats_, s.sample(r.rows[j], sample_floats_), static_cast<size_t>(e - j) * row_bytes);
      j = e;
    }
    batch.labels = Tensor::from_vector(r.labels, {n});
  } else {
    const int dev = options_.device.index;
    batch.labels = Tensor::from_vector(r.labels, {n}).to(options_.device);
    batch.images = Tensor::empty(shape, DType::f32, options_.device);
    cuda::compute_wait(s.upload, dev);
    auto* dst = static_cast<char*>(batch.images.raw_data());
    const auto* src = static_cast<const char*>(s.staging.raw_data());
    for (int64_t j = 0; j < n;) {  // runs of consecutive rows, closing the gaps of skipped ones
      int64_t e = j + 1;
      while (e < n && r.rows[e] == r.rows[e - 1] + 1) ++e;
      cuda::copy_bytes(dst + j * row_bytes, options_.device, src + r.rows[j] * row_bytes, options_.device,
                       static_cast<size_t>(e - j) * row_bytes);
      j = e;
    }
    s.released = cuda::record_event(dev);
    batch.upload = s.upload;
  }
  batch.indices = r.indices;
  return batch;
}

bool Loader::next(Batch& out) {
  std::unique_lock<std::mutex> lock(mutex_);
  CXR_CHECK(started_, "Loader::next: call start_epoch(epoch) before next()");
  const auto S = static_cast<int64_t>(slots_.size());
  for (;;) {
    if (next_batch_ >= num_batches_) {
      if (!epoch_done_) {
        stats_.seconds = now_seconds() - epoch_start_;
        epoch_done_ = true;
      }
      return false;
    }
    const int64_t b = next_batch_;
    Slot& s = *slots_[static_cast<size_t>(b % S)];
    // A slot still being copied from (batch b - S) holds batch b up: wait for that copy.
    if (options_.device.is_cuda()) reclaim_copies(lock, &s);
    const bool cuda = options_.device.is_cuda();
    done_cv_.wait(lock, [&] {
      return s.state == Slot::State::filling && s.batch == b && s.remaining == 0 && (!cuda || s.uploaded);
    });
    s.state = Slot::State::consuming;
    ++next_batch_;
    Rows r;
    Batch batch;
    try {
      r = sort_out(s, b);
      if (!r.rows.empty()) {
        lock.unlock();  // the slot is ours until released
        batch = assemble(s, r);
        lock.lock();
      }
    } catch (...) {
      if (!lock.owns_lock()) lock.lock();
      release(s);
      throw;
    }
    if (r.rows.empty()) {  // every sample failed: on to the next batch
      release(s);
      continue;
    }
    release(s);
    stats_.samples += static_cast<int64_t>(r.rows.size());
    batch.epoch = epoch_;
    batch.number = b;
    out = std::move(batch);
    return true;
  }
}

Loader::EpochStats Loader::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  EpochStats s = stats_;
  if (started_ && !epoch_done_) s.seconds = now_seconds() - epoch_start_;
  return s;
}

}  // namespace cxr::data
