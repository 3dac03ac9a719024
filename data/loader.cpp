// Loader: worker threads, the ring of pinned batch buffers, in-order delivery, bad-file
// handling and the host-to-device hand-off (see data/loader.h).
#include "data/loader.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <numeric>

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
//   filling   -> consuming  next() takes the completed batch
//   consuming -> free       CPU: once the batch is copied out
//   consuming -> copying    CUDA: the asynchronous copy to the device is queued
//   copying   -> free       the copy has finished (copy_done / wait_copy)
struct Loader::Slot {
  enum class State : uint8_t { free, filling, consuming, copying };
  cuda::PinnedBuffer buffer;  // batch_size * C * H * W floats, sample k at k * C*H*W
  State state = State::free;
  int64_t batch = -1;
  int64_t remaining = 0;  // samples of the batch not yet finished
  std::vector<SampleStatus> status;
  std::vector<std::exception_ptr> error;  // of a sample that failed
  uint64_t ticket = 0;
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
  for (auto& s : slots_) {
    if (s->state != Slot::State::copying) continue;
    try {
      cuda::wait_copy(s->ticket, options_.device.index);
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
    }
    ++busy_;
    lock.unlock();
    process(pos, s);
    lock.lock();
    --busy_;
    if (--s.remaining == 0 || busy_ == 0) done_cv_.notify_all();
  }
}

// Decodes and transforms one sample into its row of the slot. Runs without the lock: the
// row is this worker's alone until the batch completes. order_ and epoch_ only change in
// start_epoch, which first waits for every worker to be idle. Nothing escapes: errors are
// kept for next(), which turns them into warnings or rethrows them.
void Loader::process(int64_t pos, Slot& slot) noexcept {
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
    const Image img = decode_image(dataset_.samples[static_cast<size_t>(index)].path, dopt);
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
  s.state = Slot::State::free;
  work_cv_.notify_all();
}

// Called with the lock held and the slot in `consuming`: splits the batch into delivered
// rows and skipped files (warned about and counted), or rethrows a worker's error and,
// with `strict`, a bad file's FileError.
Loader::Rows Loader::sort_out(Slot& s, int64_t b) {
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
// on CUDA the rows are packed inside the pinned buffer and copied asynchronously, and
// *ticket receives the copy's ticket (the copy is the last step that may throw).
Batch Loader::assemble(Slot& s, const Rows& r, uint64_t* ticket) const {
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
    for (int64_t j = 0; j < n; ++j)  // close the gaps left by skipped rows
      if (r.rows[j] != j) std::memmove(s.sample(j, sample_floats_), s.sample(r.rows[j], sample_floats_), row_bytes);
    batch.labels = Tensor::from_vector(r.labels, {n}).to(options_.device);
    batch.images = Tensor::empty(shape, DType::f32, options_.device);
    *ticket = cuda::copy_to_device_async(batch.images.raw_data(), s.buffer.data(), static_cast<size_t>(n) * row_bytes,
                                         options_.device.index);
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
    done_cv_.wait(lock, [&] { return s.state == Slot::State::filling && s.batch == b && s.remaining == 0; });
    s.state = Slot::State::consuming;
    ++next_batch_;
    Rows r;
    Batch batch;
    uint64_t ticket = 0;
    try {
      r = sort_out(s, b);
      if (!r.rows.empty()) {
        lock.unlock();  // the slot is ours until released
        batch = assemble(s, r, &ticket);
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
    if (options_.device.is_cuda()) {
      s.state = Slot::State::copying;
      s.ticket = ticket;
    } else {
      release(s);
    }
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
