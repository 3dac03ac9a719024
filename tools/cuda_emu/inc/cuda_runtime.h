// Host emulation of the small CUDA subset used by the hand-written kernels.
#pragma once
#include <ucontext.h>
#include <cmath>
#include <math.h>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#define __launch_bounds__(...)
#define __grid_constant__
#define __restrict__ __restrict
struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
typedef void* cudaStream_t;
typedef int cudaError_t;
constexpr int cudaSuccess = 0;
enum cudaMemcpyKind { cudaMemcpyDeviceToDevice, cudaMemcpyDeviceToHost, cudaMemcpyHostToDevice };
inline cudaError_t cudaMemsetAsync(void* p, int v, size_t n, cudaStream_t) { memset(p, v, n); return 0; }
inline cudaError_t cudaMemcpyAsync(void* d, const void* s, size_t n, cudaMemcpyKind, cudaStream_t) { memcpy(d, s, n); return 0; }
inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return 0; }
namespace emu {
// Fibers: one ucontext per CUDA thread of a block, scheduled cooperatively; barriers
// (__syncthreads, __syncwarp, shuffles) yield to the scheduler.
enum St { READY, WAIT_BLOCK, WAIT_WARP, DONE };
struct Fiber { ucontext_t ctx; St st; };
inline dim3 tIdx, bIdx, gDim, bDim;
inline ucontext_t sched;
inline std::vector<Fiber> fibers;
inline std::vector<char*> stacks;
inline int cur = -1;
inline uint64_t warp_slots[32][32];
inline int pending = 0;
inline long launches = 0;
inline void (*body)(void*) = nullptr;
inline void* body_arg = nullptr;
constexpr size_t kStack = 256 * 1024;
inline void trampoline() {
  body(body_arg);
  fibers[cur].st = DONE;
  swapcontext(&fibers[cur].ctx, &sched);
}
inline void yield_as(St s) {
  fibers[cur].st = s;
  swapcontext(&fibers[cur].ctx, &sched);
}
inline void run_block(unsigned nt) {
  fibers.resize(nt);
  while (stacks.size() < nt) stacks.push_back(static_cast<char*>(malloc(kStack)));
  for (unsigned t = 0; t < nt; ++t) {
    getcontext(&fibers[t].ctx);
    fibers[t].ctx.uc_stack.ss_sp = stacks[t];
    fibers[t].ctx.uc_stack.ss_size = kStack;
    fibers[t].ctx.uc_link = nullptr;
    makecontext(&fibers[t].ctx, trampoline, 0);
    fibers[t].st = READY;
  }
  for (;;) {
    bool ran = false;
    for (unsigned t = 0; t < nt; ++t)
      if (fibers[t].st == READY) {
        cur = t;
        tIdx = dim3(t, 0, 0);
        swapcontext(&sched, &fibers[t].ctx);
        ran = true;
      }
    unsigned done = 0, wb = 0;
    for (unsigned t = 0; t < nt; ++t) { done += fibers[t].st == DONE; wb += fibers[t].st == WAIT_BLOCK; }
    if (done == nt) return;
    bool released = false;
    if (wb == nt) { for (auto& f : fibers) f.st = READY; released = true; }
    else if (wb > 0 && wb + done == nt) { fprintf(stderr, "EMU: __syncthreads reached by %u of %u threads (%u exited)\n", wb, nt, done); abort(); }
    for (unsigned w = 0; w < nt / 32; ++w) {
      unsigned ww = 0, wd = 0;
      for (unsigned l = 0; l < 32; ++l) { ww += fibers[w * 32 + l].st == WAIT_WARP; wd += fibers[w * 32 + l].st == DONE; }
      if (ww == 32) { for (unsigned l = 0; l < 32; ++l) fibers[w * 32 + l].st = READY; released = true; }
      else if (ww > 0 && ww + wd == 32) { fprintf(stderr, "EMU: warp sync with exited lanes\n"); abort(); }
    }
    if (!released && !ran) { fprintf(stderr, "EMU: deadlock (mixed block/warp barriers)\n"); abort(); }
    if (!released) {
      bool any_ready = false;
      for (auto& f : fibers) any_ready |= f.st == READY;
      if (!any_ready) { fprintf(stderr, "EMU: deadlock: waiting %u on block barrier, %u done of %u\n", wb, done, nt); abort(); }
    }
  }
}
}  // namespace emu
#define threadIdx (::emu::tIdx)
#define blockIdx (::emu::bIdx)
#define gridDim (::emu::gDim)
#define blockDim (::emu::bDim)
inline void __syncthreads() { emu::yield_as(emu::WAIT_BLOCK); }
inline void __syncwarp(unsigned = 0xffffffffu) { emu::yield_as(emu::WAIT_WARP); }
template <class T>
T __shfl_xor_sync(unsigned mask, T v, int off) {
  if (mask != 0xffffffffu) { fprintf(stderr, "partial mask\n"); abort(); }
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  static_assert(sizeof(T) <= 8);
  memcpy(&emu::warp_slots[w][lane], &v, sizeof(T));
  __syncwarp();
  T r;
  memcpy(&r, &emu::warp_slots[w][lane ^ off], sizeof(T));
  __syncwarp();
  return r;
}
inline float __fmul_rn(float a, float b) { volatile float r = a * b; return r; }

template <class K, class... A>
void emu_launch(dim3 g, dim3 b, K k, A... args) {
  if (g.x == 0 || g.y == 0 || g.z == 0) { fprintf(stderr, "EMU: empty grid\n"); abort(); }
  if (g.y > 65535 || g.z > 65535 || g.x > 2147483647u) { fprintf(stderr, "EMU: grid too big\n"); abort(); }
  const unsigned nt = b.x * b.y * b.z;
  if (nt == 0 || nt > 1024 || b.x % 32) { fprintf(stderr, "EMU: bad block %u\n", nt); abort(); }
  emu::gDim = g; emu::bDim = b;
  emu::pending++; emu::launches++;
  auto call = [&] { k(args...); };
  emu::body = [](void* p) { (*static_cast<decltype(call)*>(p))(); };
  emu::body_arg = &call;
  for (unsigned bz = 0; bz < g.z; ++bz)
    for (unsigned by = 0; by < g.y; ++by)
      for (unsigned bx = 0; bx < g.x; ++bx) {
        emu::bIdx = dim3(bx, by, bz);
        emu::run_block(nt);
      }
}
