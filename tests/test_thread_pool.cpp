// ThreadPool: coverage of every index, chunk boundaries, exceptions, nesting, resizing,
// concurrent callers.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <set>
#include <stdexcept>
#include <thread>
#include <tuple>
#include <vector>

#include "runtime/thread_pool.h"

namespace cxr {
namespace {

// Each index in [0, n) must be visited exactly once, inside [begin, end) ranges that are
// non-empty and disjoint.
void expect_covers_once(ThreadPool& pool, int64_t n, int64_t grain) {
  std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
  for (auto& h : hits) h = 0;
  std::atomic<int64_t> calls{0};
  std::atomic<bool> empty_range{false};
  pool.parallel_for(n, grain, [&](int64_t b, int64_t e) {
    ++calls;
    if (b >= e || b < 0 || e > n) empty_range = true;
    for (int64_t i = b; i < e; ++i) hits[i]++;
  });
  EXPECT_FALSE(empty_range) << "n=" << n << " grain=" << grain;
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[i].load(), 1) << "index " << i << " n=" << n << " grain=" << grain;
  EXPECT_EQ(calls.load(), pool.num_for_chunks(n, grain));
  EXPECT_LE(calls.load(), pool.num_threads() * ThreadPool::kBalance);
}

TEST(ThreadPool, CoversEveryIndexOnce) {
  for (int threads : {1, 2, 3, 4, 8}) {
    ThreadPool pool(threads);
    EXPECT_EQ(pool.num_threads(), threads);
    for (int64_t n : {0, 1, 7, 33, 1000})
      for (int64_t grain : {1, 4, 100}) expect_covers_once(pool, n, grain);
  }
}

TEST(ThreadPool, ZeroOrNegativeSizeCallsNothing) {
  ThreadPool pool(4);
  int calls = 0;
  pool.parallel_for(0, 1, [&](int64_t, int64_t) { ++calls; });
  pool.parallel_for(-5, 1, [&](int64_t, int64_t) { ++calls; });
  EXPECT_EQ(calls, 0);
  EXPECT_EQ(pool.num_chunks(0, 1), 0);
  EXPECT_EQ(pool.num_chunks(-3, 1), 0);
}

TEST(ThreadPool, NumChunksRespectsGrainAndThreads) {
  ThreadPool pool(4);
  EXPECT_EQ(pool.num_chunks(1, 1), 1);
  EXPECT_EQ(pool.num_chunks(3, 1), 3);
  EXPECT_EQ(pool.num_chunks(1000, 1), 4);
  EXPECT_EQ(pool.num_chunks(1000, 300), 3);
  EXPECT_EQ(pool.num_chunks(1000, 5000), 1);  // at least one chunk
  EXPECT_EQ(pool.num_chunks(10, 0), 4);       // grain < 1 treated as 1
}

using Chunks = std::set<std::tuple<int64_t, int64_t, int64_t>>;

Chunks record_chunks(ThreadPool& pool, int64_t n, int64_t grain) {
  Chunks seen;
  std::mutex m;
  pool.parallel_chunks(n, grain, [&](int64_t c, int64_t b, int64_t e) {
    std::lock_guard<std::mutex> lock(m);
    seen.emplace(c, b, e);
  });
  return seen;
}

TEST(ThreadPool, ChunkingIsDeterministic) {
  ThreadPool pool(3);
  for (int64_t n : {1, 7, 33, 1000}) {
    const Chunks first = record_chunks(pool, n, 1);
    for (int rep = 0; rep < 20; ++rep) ASSERT_EQ(record_chunks(pool, n, 1), first) << "n=" << n;
    // The documented split: chunk c covers [c*n/C, (c+1)*n/C).
    const int64_t C = pool.num_chunks(n, 1);
    ASSERT_EQ(static_cast<int64_t>(first.size()), C);
    int64_t c = 0;
    for (const auto& [ci, b, e] : first) {
      EXPECT_EQ(ci, c);
      EXPECT_EQ(b, c * n / C);
      EXPECT_EQ(e, (c + 1) * n / C);
      ++c;
    }
    // The same boundaries when the region runs inline (nested inside another region).
    Chunks nested;
    pool.parallel_for(2, 1, [&](int64_t b, int64_t) {
      if (b == 0) nested = record_chunks(pool, n, 1);
    });
    EXPECT_EQ(nested, first) << "n=" << n;
  }
}

TEST(ThreadPool, ChunkedReductionIsReproducible) {
  // Per-chunk partial sums combined in chunk order give bit-identical results.
  ThreadPool pool(4);
  const int64_t n = 100003;
  std::vector<float> x(n);
  for (int64_t i = 0; i < n; ++i) x[i] = 1.0f / static_cast<float>(i + 1);
  auto reduce = [&] {
    std::vector<float> part(static_cast<size_t>(pool.num_chunks(n, 1)));
    pool.parallel_chunks(n, 1, [&](int64_t c, int64_t b, int64_t e) {
      float s = 0;
      for (int64_t i = b; i < e; ++i) s += x[i];
      part[c] = s;
    });
    float total = 0;
    for (float p : part) total += p;
    return total;
  };
  const float first = reduce();
  for (int i = 0; i < 20; ++i) ASSERT_EQ(reduce(), first);
}

TEST(ThreadPool, UsesSeveralThreads) {
  ThreadPool pool(4);
  std::set<std::thread::id> ids;
  std::mutex m;
  // Chunks wait until all four are running at once, which needs four threads.
  std::atomic<int> arrived{0};
  pool.parallel_for(4, 1, [&](int64_t, int64_t) {
    ++arrived;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (arrived.load() < 4 && std::chrono::steady_clock::now() < deadline) std::this_thread::yield();
    std::lock_guard<std::mutex> lock(m);
    ids.insert(std::this_thread::get_id());
  });
  EXPECT_EQ(arrived.load(), 4);
  EXPECT_EQ(ids.size(), 4u);
  EXPECT_TRUE(ids.count(std::this_thread::get_id())) << "the caller takes a share";
}

TEST(ThreadPool, ExceptionsPropagateAndPoolStaysUsable) {
  ThreadPool pool(4);
  for (int rep = 0; rep < 10; ++rep) {
    EXPECT_THROW(pool.parallel_for(1000, 1,
                                   [&](int64_t b, int64_t) {
                                     if (b >= 500) throw std::runtime_error("chunk failed");
                                   }),
                 std::runtime_error);
  }
  // Every chunk throwing: exactly one exception reaches the caller.
  try {
    pool.parallel_for(100, 1, [](int64_t b, int64_t) { throw std::out_of_range(std::to_string(b)); });
    ADD_FAILURE() << "no exception";
  } catch (const std::out_of_range&) {
  }
  // A single-chunk region (inline) propagates too.
  EXPECT_THROW(pool.parallel_for(1, 1, [](int64_t, int64_t) { throw std::logic_error("x"); }), std::logic_error);
  expect_covers_once(pool, 1000, 1);
}

TEST(ThreadPool, NestedCallsRunInlineWithoutDeadlock) {
  ThreadPool pool(4);
  const int64_t outer = 8, inner = 50;
  std::vector<std::atomic<int>> hits(outer * inner);
  for (auto& h : hits) h = 0;
  pool.parallel_for(outer, 1, [&](int64_t b, int64_t e) {
    for (int64_t o = b; o < e; ++o) {
      const std::thread::id me = std::this_thread::get_id();
      pool.parallel_for(inner, 1, [&](int64_t ib, int64_t ie) {
        EXPECT_EQ(std::this_thread::get_id(), me) << "nested region left its thread";
        for (int64_t i = ib; i < ie; ++i) hits[o * inner + i]++;
      });
    }
  });
  for (auto& h : hits) ASSERT_EQ(h.load(), 1);
}

TEST(ThreadPool, NestedAcrossPools) {
  // A worker of one pool calling into another pool also runs inline (no oversubscription,
  // no deadlock).
  ThreadPool a(3), b(3);
  std::atomic<int64_t> total{0};
  a.parallel_for(6, 1, [&](int64_t s, int64_t e) {
    for (int64_t i = s; i < e; ++i)
      b.parallel_for(10, 1, [&](int64_t s2, int64_t e2) { total += e2 - s2; });
  });
  EXPECT_EQ(total.load(), 60);
}

TEST(ThreadPool, SetNumThreads) {
  ThreadPool pool(2);
  EXPECT_EQ(pool.num_threads(), 2);
  pool.set_num_threads(5);
  EXPECT_EQ(pool.num_threads(), 5);
  expect_covers_once(pool, 1000, 1);
  EXPECT_EQ(pool.num_chunks(1000, 1), 5);
  pool.set_num_threads(1);
  EXPECT_EQ(pool.num_threads(), 1);
  expect_covers_once(pool, 33, 1);
  pool.set_num_threads(0);  // hardware threads
  EXPECT_GE(pool.num_threads(), 1);
  EXPECT_EQ(pool.num_threads(), static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
  expect_covers_once(pool, 7, 1);
  for (int i = 0; i < 10; ++i) {  // repeated restarts
    pool.set_num_threads(1 + i % 4);
    expect_covers_once(pool, 33, 1);
  }
}

TEST(ThreadPool, DefaultPool) {
  const int before = get_num_threads();
  EXPECT_GE(before, 1);
  set_num_threads(3);
  EXPECT_EQ(get_num_threads(), 3);
  EXPECT_EQ(default_thread_pool().num_threads(), 3);
  expect_covers_once(default_thread_pool(), 1000, 1);
  set_num_threads(before);
  EXPECT_EQ(get_num_threads(), before);
}

TEST(ThreadPool, ConcurrentCallersFromSeveralThreads) {
  ThreadPool pool(4);
  const int callers = 6, reps = 200;
  const int64_t n = 333;
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < callers; ++t)
    threads.emplace_back([&, t] {
      for (int r = 0; r < reps; ++r) {
        std::vector<int> hits(n, 0);  // each index written by one chunk: no race
        pool.parallel_for(n, 1 + (t + r) % 7, [&](int64_t b, int64_t e) {
          for (int64_t i = b; i < e; ++i) hits[i]++;
        });
        for (int64_t i = 0; i < n; ++i)
          if (hits[i] != 1) {
            ++failures;
            break;
          }
        int64_t sum = 0;
        std::mutex m;
        pool.parallel_chunks(n, 1, [&](int64_t, int64_t b, int64_t e) {
          int64_t s = 0;
          for (int64_t i = b; i < e; ++i) s += i;
          std::lock_guard<std::mutex> lock(m);
          sum += s;
        });
        if (sum != n * (n - 1) / 2) ++failures;
      }
    });
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
}

TEST(ThreadPool, ConcurrentCallersWithExceptions) {
  ThreadPool pool(3);
  std::atomic<int> caught{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&] {
      for (int r = 0; r < 100; ++r) {
        try {
          pool.parallel_for(64, 1, [](int64_t b, int64_t) {
            if (b == 0) throw std::runtime_error("first chunk");
          });
        } catch (const std::runtime_error&) {
          ++caught;
        }
      }
    });
  for (auto& th : threads) th.join();
  EXPECT_EQ(caught.load(), 400);
  expect_covers_once(pool, 1000, 1);
}

TEST(ThreadPool, ManyShortRegions) {
  // Stresses the hand-off between regions (late-waking workers, generation counter).
  ThreadPool pool(4);
  int64_t total = 0;
  for (int r = 0; r < 5000; ++r) {
    std::atomic<int64_t> s{0};
    pool.parallel_for(16, 1, [&](int64_t b, int64_t e) { s += e - b; });
    total += s.load();
  }
  EXPECT_EQ(total, 5000 * 16);
}

TEST(ThreadPool, DestroyAndRecreate) {
  for (int i = 0; i < 20; ++i) {
    ThreadPool pool(1 + i % 5);
    expect_covers_once(pool, 7, 1);
  }
}

}  // namespace
}  // namespace cxr
