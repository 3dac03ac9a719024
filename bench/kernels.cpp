// Google Benchmark micro-benchmarks of the CPU kernels: SGEMM (ours and Eigen's on the
// same shapes) and conv2d forward / backward-data / backward-weight on ResNet-18 layer
// shapes. Each reports FLOP/s ("FLOPS" counter) so conv rates can be read next to GEMM.
//
//   bench_kernels [--benchmark_filter=conv] [--threads N (env CXR_NUM_THREADS)]
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <vector>

#include "kernels/conv.h"
#include "kernels/gemm.h"
#include "runtime/rng.h"
#include "runtime/thread_pool.h"

using namespace cxr;

namespace {

std::vector<float> random_vec(int64_t n, uint64_t seed) {
  Generator g(seed);
  Tensor t = rand_normal({n}, g);
  return std::vector<float>(t.data<float>(), t.data<float>() + n);
}

void set_flops(benchmark::State& st, double flops_per_iter) {
  st.counters["FLOPS"] = benchmark::Counter(flops_per_iter, benchmark::Counter::kIsIterationInvariantRate);
}

// args: M, N, K, which (0 = ours, 1 = Eigen)
void BM_sgemm(benchmark::State& st) {
  const int64_t M = st.range(0), N = st.range(1), K = st.range(2);
  auto a = random_vec(M * K, 1), b = random_vec(K * N, 2);
  std::vector<float> c(M * N);
  for (auto _ : st) {
    if (st.range(3) == 0)
      cpu::gemm<float>(cpu::Trans::no, cpu::Trans::no, M, N, K, 1.f, a.data(), K, b.data(), N, 0.f, c.data(), N);
    else
      cpu::gemm_eigen<float>(cpu::Trans::no, cpu::Trans::no, M, N, K, 1.f, a.data(), K, b.data(), N, 0.f, c.data(), N);
    benchmark::DoNotOptimize(c.data());
  }
  set_flops(st, 2.0 * M * N * K);
  st.SetLabel(st.range(3) == 0 ? "cxr" : "eigen");
}
BENCHMARK(BM_sgemm)
    ->ArgsProduct({{64}, {4096}, {576}, {0, 1}})
    ->ArgsProduct({{256}, {256}, {2304}, {0, 1}})
    ->ArgsProduct({{512}, {512}, {512}, {0, 1}})
    ->Unit(benchmark::kMillisecond);

// args: N, C, H, K, stride, phase (0 fwd, 1 bwd data, 2 bwd weight); 3x3 kernel, pad 1.
void BM_conv3x3(benchmark::State& st) {
  cpu::Conv2dShape s;
  s.N = st.range(0); s.C = st.range(1); s.H = s.W = st.range(2); s.K = st.range(3);
  s.R = s.S = 3; s.pad_h = s.pad_w = 1; s.stride_h = s.stride_w = st.range(4);
  const int64_t P = s.P(), Q = s.Q();
  auto x = random_vec(s.N * s.C * s.H * s.W, 1), w = random_vec(s.K * s.C * 9, 2), dy = random_vec(s.N * s.K * P * Q, 3);
  std::vector<float> y(s.N * s.K * P * Q), dx(x.size()), dw(w.size());
  ThreadPool& pool = default_thread_pool();
  for (auto _ : st) {
    switch (st.range(5)) {
      case 0: cpu::conv2d_forward<float>(pool, s, x.data(), w.data(), nullptr, y.data()); break;
      case 1: cpu::conv2d_backward_data<float>(pool, s, dy.data(), w.data(), dx.data()); break;
      default: cpu::conv2d_backward_weight<float>(pool, s, x.data(), dy.data(), dw.data(), nullptr); break;
    }
    benchmark::ClobberMemory();
  }
  set_flops(st, 2.0 * s.N * s.K * P * Q * s.C * 9);
  const char* phase[] = {"forward", "backward_data", "backward_weight"};
  st.SetLabel(phase[st.range(5)]);
}
// ResNet-18 (small stem) at 64x64, batch 32: layer1, layer2, layer3, layer4 shapes.
BENCHMARK(BM_conv3x3)
    ->ArgsProduct({{32}, {64}, {64}, {64}, {1}, {0, 1, 2}})
    ->ArgsProduct({{32}, {128}, {32}, {128}, {1}, {0, 1, 2}})
    ->ArgsProduct({{32}, {256}, {16}, {256}, {1}, {0, 1, 2}})
    ->ArgsProduct({{32}, {512}, {8}, {512}, {1}, {0, 1, 2}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace

int main(int argc, char** argv) {
  if (const char* t = std::getenv("CXR_NUM_THREADS")) set_num_threads(std::atoi(t));
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
