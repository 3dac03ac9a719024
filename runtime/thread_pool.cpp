#include "runtime/thread_pool.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>

namespace cxr {

namespace {
thread_local bool t_in_parallel_region = false;

int hardware_threads() {
  const unsigned h = std::thread::hardware_concurrency();
  return h ? static_cast<int>(h) : 1;
}
}  // namespace

// One parallel region. Workers hold it by shared_ptr, so a worker that wakes late
// finds the counter exhausted and never touches a newer job's state.
struct ThreadPool::Job {
  const std::function<void(int64_t, int64_t, int64_t)>* fn = nullptr;
  int64_t n = 0, chunks = 0;
  std::atomic<int64_t> next{0};
  std::atomic<int64_t> done{0};
  std::exception_ptr error;  // guarded by the pool mutex
};

namespace {
// Parallel regions come back to back (a forward pass is ~100 of them), and waking a
// sleeping thread through the kernel costs tens of microseconds, so a thread that runs
// out of work first polls for a while, then sleeps: 50 us, or CXR_POOL_SPIN_US from the
// environment (0: sleep at once, for machines shared with other busy processes).
std::chrono::microseconds spin_time() {
  static const std::chrono::microseconds t = [] {
    const char* e = std::getenv("CXR_POOL_SPIN_US");
    if (e == nullptr || *e == '\0') return std::chrono::microseconds(50);
    char* end = nullptr;
    const long v = std::strtol(e, &end, 10);
    return std::chrono::microseconds(end != e && *end == '\0' && v >= 0 ? std::min(v, 100000L) : 50L);
  }();
  return t;
}

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// Polls `ready` for up to kSpin; true once it holds.
template <typename F>
bool spin_until(F&& ready) {
  const auto spin = spin_time();
  if (spin.count() == 0) return ready();
  const auto until = std::chrono::steady_clock::now() + spin;
  for (int i = 0;; ++i) {
    if (ready()) return true;
    cpu_relax();
    if ((i & 63) == 63 && std::chrono::steady_clock::now() >= until) return ready();
  }
}
}  // namespace

ThreadPool::ThreadPool(int num_threads) { start(num_threads <= 0 ? hardware_threads() : num_threads); }

ThreadPool::~ThreadPool() { stop(); }

void ThreadPool::set_num_threads(int n) {
  std::lock_guard<std::mutex> run_lock(run_mutex_);
  stop();
  start(n <= 0 ? hardware_threads() : n);
}

void ThreadPool::start(int n) {
  num_threads_ = n;
  stopping_ = false;
  for (int i = 1; i < n; ++i) workers_.emplace_back([this] { worker_loop(); });
}

void ThreadPool::stop() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  cv_work_.notify_all();
  for (auto& w : workers_) w.join();
  workers_.clear();
}

namespace {
// At most max_chunks chunks of at least grain items (one chunk when n < grain).
int64_t chunk_count(int64_t n, int64_t grain, int64_t max_chunks) {
  if (n <= 0) return 0;
  return std::max<int64_t>(1, std::min<int64_t>(max_chunks, n / std::max<int64_t>(grain, 1)));
}
}  // namespace

int64_t ThreadPool::num_chunks(int64_t n, int64_t grain) const { return chunk_count(n, grain, num_threads_); }

void ThreadPool::run_chunks(Job& job) {
  // Chunk c covers [c*n/C, (c+1)*n/C): balanced, and fixed by (n, C).
  for (;;) {
    const int64_t c = job.next.fetch_add(1);
    if (c >= job.chunks) return;
    std::exception_ptr err;
    try {
      (*job.fn)(c, c * job.n / job.chunks, (c + 1) * job.n / job.chunks);
    } catch (...) {
      err = std::current_exception();
    }
    if (err) {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!job.error) job.error = err;
    }
    if (job.done.fetch_add(1, std::memory_order_acq_rel) + 1 == job.chunks) {
      // Under the mutex, so a caller between its check and its wait cannot miss this.
      std::lock_guard<std::mutex> lock(mutex_);
      cv_done_.notify_all();
    }
  }
}

void ThreadPool::worker_loop() {
  t_in_parallel_region = true;
  uint64_t seen = 0;
  for (;;) {
    std::shared_ptr<Job> job;
    spin_until([&] { return generation_.load(std::memory_order_acquire) != seen; });
    {
      std::unique_lock<std::mutex> lock(mutex_);
      cv_work_.wait(lock, [&] { return stopping_ || generation_.load() != seen; });
      if (stopping_) return;
      seen = generation_.load();
      job = job_;
    }
    if (job) run_chunks(*job);
  }
}

int64_t ThreadPool::num_for_chunks(int64_t n, int64_t grain) const {
  return chunk_count(n, grain, num_threads_ > 1 ? num_threads_ * kBalance : 1);
}

void ThreadPool::parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
  run(n, num_for_chunks(n, grain), [&](int64_t, int64_t b, int64_t e) { fn(b, e); });
}

void ThreadPool::parallel_chunks(int64_t n, int64_t grain,
                                 const std::function<void(int64_t, int64_t, int64_t)>& fn) {
  run(n, num_chunks(n, grain), fn);
}

void ThreadPool::run(int64_t n, int64_t chunks, const std::function<void(int64_t, int64_t, int64_t)>& fn) {
  if (chunks == 0) return;
  std::unique_lock<std::mutex> run_lock(run_mutex_, std::defer_lock);
  if (chunks == 1 || t_in_parallel_region || !run_lock.try_lock()) {
    // Inline, with the same chunk boundaries, so results do not depend on whether the
    // pool was free.
    for (int64_t c = 0; c < chunks; ++c) fn(c, c * n / chunks, (c + 1) * n / chunks);
    return;
  }
  auto job = std::make_shared<Job>();
  job->fn = &fn;
  job->n = n;
  job->chunks = chunks;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    job_ = job;
    ++generation_;
  }
  cv_work_.notify_all();
  t_in_parallel_region = true;
  run_chunks(*job);
  t_in_parallel_region = false;
  std::exception_ptr err;
  spin_until([&] { return job->done.load(std::memory_order_acquire) == job->chunks; });
  {
    std::unique_lock<std::mutex> lock(mutex_);
    cv_done_.wait(lock, [&] { return job->done.load() == job->chunks; });
    job_.reset();
    err = job->error;
  }
  if (err) std::rethrow_exception(err);
}

ThreadPool& default_thread_pool() {
  static ThreadPool pool(0);
  return pool;
}

void set_num_threads(int n) { default_thread_pool().set_num_threads(n); }
int get_num_threads() { return default_thread_pool().num_threads(); }

}  // namespace cxr
