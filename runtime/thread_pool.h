// A fixed pool of worker threads for CPU kernels.
//
// parallel_chunks(n, grain, fn) splits [0, n) into at most num_threads() contiguous
// chunks of at least `grain` items and calls fn(chunk, begin, end) for each, the
// calling thread taking a share. The split depends only on (n, grain, num_threads), so
// a kernel that reduces per chunk and combines the chunks in order is deterministic for
// a given thread count. parallel_for uses finer chunks for load balance. Calls made from inside a worker (nested parallelism) or
// while another thread is using the pool run inline on the caller.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace cxr {

class ThreadPool {
 public:
  // num_threads <= 0 means one per hardware thread.
  explicit ThreadPool(int num_threads = 0);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int num_threads() const { return num_threads_; }
  // Restarts the workers with a new count (<= 0: hardware threads). Not to be called
  // while a parallel_for is running on this pool.
  void set_num_threads(int n);

  // Number of chunks parallel_for would use for (n, grain).
  int64_t num_chunks(int64_t n, int64_t grain) const;
  // fn(chunk_index, begin, end) for each chunk; blocks until all are done. The first
  // exception thrown by any chunk is rethrown on the caller.
  void parallel_chunks(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t, int64_t)>& fn);
  // fn(begin, end) over [0, n) in up to kBalance chunks per thread, handed out on demand,
  // so a thread slowed by another process does not hold the others up. For work whose
  // result does not depend on the split (disjoint outputs); reductions use
  // parallel_chunks, whose chunk count is fixed by the thread count.
  static constexpr int64_t kBalance = 4;
  void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);
  // Number of chunks parallel_for uses for (n, grain).
  int64_t num_for_chunks(int64_t n, int64_t grain) const;

 private:
  void run(int64_t n, int64_t chunks, const std::function<void(int64_t, int64_t, int64_t)>& fn);
  void start(int n);
  void stop();
  void worker_loop();
  struct Job;
  void run_chunks(Job& job);

  int num_threads_ = 1;
  std::vector<std::thread> workers_;
  std::mutex run_mutex_;  // one parallel region at a time
  std::mutex mutex_;
  std::condition_variable cv_work_, cv_done_;
  std::atomic<uint64_t> generation_{0};  // written under mutex_, read by spinning workers
  bool stopping_ = false;
  std::shared_ptr<Job> job_;  // the current parallel region, shared with the workers
};

// The process-wide pool used by CPU kernels when no other is given.
ThreadPool& default_thread_pool();
// Sets the default pool's thread count (<= 0: all hardware threads).
void set_num_threads(int n);
int get_num_threads();

}  // namespace cxr
