// Convolution on the CPU: im2col + GEMM per (image block, group), with a direct loop
// for depthwise convolutions (one input channel per group), where a GEMM of depth
// R*S would waste most of its time on packing.
#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#include "kernels/conv.h"
#include "kernels/cpu/scratch.h"
#include "kernels/gemm.h"

namespace cxr::cpu {

namespace {

// Rows of the im2col matrix (Cg*R*S rows, one column per output pixel) for channels
// [c0, c0+Cg) of one image, restricted to output pixels [pix0, pix0+npix):
// col[row*ldcol + j] = x[c, p*sh - ph + r*dh, q*sw - pw + t*dw] for pixel pix0+j = p*Q+q.
template <typename T>
void im2col(const Conv2dShape& s, const T* x, int64_t c0, int64_t Cg, int64_t pix0, int64_t npix, T* col,
            int64_t ldcol) {
  const int64_t Q = s.Q();
  if (s.stride_w == 1 && pix0 % Q == 0 && npix % Q == 0) {
    // Whole output rows, stride 1 along w: the valid column range of a kernel tap and
    // the valid output rows of a kernel row are fixed, so each segment is a zero
    // prefix, one copy and a zero suffix with no per-segment arithmetic.
    const int64_t p0 = pix0 / Q, p1 = p0 + npix / Q;
    for (int64_t c = 0; c < Cg; ++c) {
      const T* xc = x + (c0 + c) * s.H * s.W;
      for (int64_t r = 0; r < s.R; ++r) {
        const int64_t dh = r * s.dil_h - s.pad_h;
        for (int64_t t = 0; t < s.S; ++t) {
          T* row = col + ((c * s.R + r) * s.S + t) * ldcol;
          const int64_t off = t * s.dil_w - s.pad_w;
          const int64_t qa = std::clamp<int64_t>(-off, 0, Q), qb = std::clamp<int64_t>(s.W - off, qa, Q);
          for (int64_t p = p0; p < p1; ++p) {
            T* __restrict out = row + (p - p0) * Q;
            const int64_t ih = p * s.stride_h + dh;
            if (ih < 0 || ih >= s.H) {
              std::fill(out, out + Q, T(0));
              continue;
            }
            const T* __restrict src = xc + ih * s.W + off;
            for (int64_t q = 0; q < qa; ++q) out[q] = T(0);
            for (int64_t q = qa; q < qb; ++q) out[q] = src[q];
            for (int64_t q = qb; q < Q; ++q) out[q] = T(0);
          }
        }
      }
    }
    return;
  }
  // General case: pixel ranges that start or end inside an output row, or strided w.
  for (int64_t c = 0; c < Cg; ++c) {
    const T* xc = x + (c0 + c) * s.H * s.W;
    for (int64_t r = 0; r < s.R; ++r)
      for (int64_t t = 0; t < s.S; ++t) {
        T* __restrict row = col + ((c * s.R + r) * s.S + t) * ldcol;
        const int64_t off = t * s.dil_w - s.pad_w;
        int64_t p = pix0 / Q, q0 = pix0 % Q;
        for (int64_t j = 0; j < npix; ++p, q0 = 0) {
          const int64_t n = std::min(Q - q0, npix - j);  // pixels left in this output row
          T* __restrict out = row + j - q0;               // indexed by q
          const int64_t ih = p * s.stride_h - s.pad_h + r * s.dil_h;
          if (ih < 0 || ih >= s.H) {
            for (int64_t q = q0; q < q0 + n; ++q) out[q] = T(0);
          } else {
            const T* __restrict xrow = xc + ih * s.W;
            if (s.stride_w == 1) {
              // valid q: 0 <= q + off < W, within [q0, q0+n)
              const int64_t qa = std::clamp<int64_t>(-off, q0, q0 + n), qb = std::clamp<int64_t>(s.W - off, qa, q0 + n);
              for (int64_t q = q0; q < qa; ++q) out[q] = T(0);
              if (qb - qa >= 16) std::memcpy(out + qa, xrow + qa + off, sizeof(T) * (qb - qa));
              else for (int64_t q = qa; q < qb; ++q) out[q] = xrow[q + off];
              for (int64_t q = qb; q < q0 + n; ++q) out[q] = T(0);
            } else {
              // valid q: 0 <= q*stride + off < W, i.e. q in [ceil(-off/stride), ceil((W-off)/stride))
              const int64_t sw = s.stride_w;
              const int64_t lo = off >= 0 ? 0 : (-off + sw - 1) / sw;
              const int64_t hi = s.W - off <= 0 ? 0 : (s.W - off + sw - 1) / sw;
              const int64_t qa = std::clamp<int64_t>(lo, q0, q0 + n), qb = std::clamp<int64_t>(hi, qa, q0 + n);
              for (int64_t q = q0; q < qa; ++q) out[q] = T(0);
              const T* __restrict src = xrow + off;
              for (int64_t q = qa; q < qb; ++q) out[q] = src[q * sw];
              for (int64_t q = qb; q < q0 + n; ++q) out[q] = T(0);
            }
          }
          j += n;
        }
      }
  }
}

// dx[c0:c0+Cg] += col2im(col) for output pixels [pix0, pix0+npix) (inverse scatter of im2col).
template <typename T>
void col2im_add(const Conv2dShape& s, const T* col, int64_t ldcol, int64_t c0, int64_t Cg, int64_t pix0,
                int64_t npix, T* dx) {
  const int64_t Q = s.Q();
  for (int64_t c = 0; c < Cg; ++c) {
    T* dxc = dx + (c0 + c) * s.H * s.W;
    for (int64_t r = 0; r < s.R; ++r)
      for (int64_t t = 0; t < s.S; ++t) {
        const T* row = col + ((c * s.R + r) * s.S + t) * ldcol;
        const int64_t off = t * s.dil_w - s.pad_w;
        int64_t p = pix0 / Q, q0 = pix0 % Q;
        for (int64_t j = 0; j < npix; ++p, q0 = 0) {
          const int64_t n = std::min(Q - q0, npix - j);
          const int64_t ih = p * s.stride_h - s.pad_h + r * s.dil_h;
          if (ih >= 0 && ih < s.H) {
            T* dxrow = dxc + ih * s.W;
            const T* in = row + j - q0;
            if (s.stride_w == 1) {
              // valid q: 0 <= q + off < W; a branch-free loop the compiler vectorises
              const int64_t qa = std::clamp<int64_t>(-off, q0, q0 + n), qb = std::clamp<int64_t>(s.W - off, q0, q0 + n);
              T* d = dxrow + off;
              for (int64_t q = qa; q < qb; ++q) d[q] += in[q];
            } else {
              for (int64_t q = q0; q < q0 + n; ++q) {
                const int64_t iw = q * s.stride_w + off;
                if (iw >= 0 && iw < s.W) dxrow[iw] += in[q];
              }
            }
          }
          j += n;
        }
      }
  }
}

// The GEMM columns (image, output pixel) are cut into tiles so that a tile's im2col
// block stays in cache between being written and being packed by the GEMM, and so that
// small feature maps (late ResNet stages) still give the GEMM a wide N. A tile is
// either a pixel range of one image (large maps) or several whole images (small maps).
struct Tile {
  int64_t n0, nimg, pix0, npix;  // images [n0, n0+nimg), pixels [pix0, pix0+npix) of each
  int64_t cols() const { return nimg * npix; }
};

// `threads` > 1 (forward only) rounds a small number of per-image tiles up to a multiple
// of the thread count, so that a batch of one image keeps every thread busy; the
// forward's results do not depend on the tiling.
std::vector<Tile> make_tiles(const Conv2dShape& s, int64_t CRS, int64_t threads = 1) {
  const int64_t PQ = s.P() * s.Q();
  // ~1 MiB of float im2col rows per tile, at least 256 columns for GEMM efficiency.
  int64_t target = std::max<int64_t>(256, (262144 / std::max<int64_t>(CRS, 1)) / 16 * 16);
  std::vector<Tile> tiles;
  if (PQ >= target) {
    int64_t per = (PQ + target - 1) / target;  // tiles per image, balanced
    while (threads > 1 && (s.N * per) % threads != 0 && s.N * per < 8 * threads && per < PQ / 16) ++per;
    for (int64_t n = 0; n < s.N; ++n)
      for (int64_t i = 0; i < per; ++i) {
        const int64_t a = i * PQ / per, b = (i + 1) * PQ / per;
        tiles.push_back({n, 1, a, b - a});
      }
  } else {
    const int64_t g = std::max<int64_t>(1, target / PQ);
    for (int64_t n = 0; n < s.N; n += g) tiles.push_back({n, std::min(g, s.N - n), 0, PQ});
  }
  return tiles;
}

// A GEMM operand: first element and leading dimension.
template <typename T>
struct Operand {
  const T* p;
  int64_t ld;
};

// The tile's im2col block for group g (Cg*R*S x cols); for a 1x1 conv over one image
// that is x itself.
template <typename T>
Operand<T> tile_im2col(const Conv2dShape& s, const T* x, const Tile& tl, int64_t g, bool pointwise,
                       std::vector<T>& col) {
  const int64_t Cg = s.C / s.groups, HW = s.H * s.W, cols = tl.cols();
  if (pointwise && tl.nimg == 1) return {x + (tl.n0 * s.C + g * Cg) * HW + tl.pix0, HW};
  col.resize(static_cast<size_t>(Cg * s.R * s.S * cols));
  for (int64_t i = 0; i < tl.nimg; ++i)
    im2col(s, x + (tl.n0 + i) * s.C * HW, g * Cg, Cg, tl.pix0, tl.npix, col.data() + i * tl.npix, cols);
  return {col.data(), cols};
}

// dy rows of group g over the tile's columns (K/groups x cols): in place for one image,
// gathered into buf for several.
template <typename T>
Operand<T> tile_dy(const Conv2dShape& s, const T* dy, const Tile& tl, int64_t g, std::vector<T>& buf) {
  const int64_t Kg = s.K / s.groups, PQ = s.P() * s.Q(), cols = tl.cols();
  if (tl.nimg == 1) return {dy + (tl.n0 * s.K + g * Kg) * PQ + tl.pix0, PQ};
  buf.resize(static_cast<size_t>(Kg * cols));
  for (int64_t k = 0; k < Kg; ++k)
    for (int64_t i = 0; i < tl.nimg; ++i)
      std::memcpy(buf.data() + k * cols + i * tl.npix, dy + ((tl.n0 + i) * s.K + g * Kg + k) * PQ,
                  sizeof(T) * tl.npix);
  return {buf.data(), cols};
}

bool is_pointwise(const Conv2dShape& s) {
  return s.R == 1 && s.S == 1 && s.stride_h == 1 && s.stride_w == 1 && s.pad_h == 0 && s.pad_w == 0;
}

bool is_depthwise(const Conv2dShape& s) { return s.groups == s.C && s.groups > 1; }

// ---- depthwise: channel c of x feeds outputs k = c*M .. c*M+M-1 (M = K/C).
template <typename T>
void dw_forward_plane(const Conv2dShape& s, const T* xc, const T* wk, T bias, T* yk) {
  const int64_t P = s.P(), Q = s.Q();
  for (int64_t p = 0; p < P; ++p) {
    T* yrow = yk + p * Q;
    std::fill(yrow, yrow + Q, bias);
    for (int64_t r = 0; r < s.R; ++r) {
      const int64_t ih = p * s.stride_h - s.pad_h + r * s.dil_h;
      if (ih < 0 || ih >= s.H) continue;
      const T* xrow = xc + ih * s.W;
      for (int64_t t = 0; t < s.S; ++t) {
        const T wv = wk[r * s.S + t];
        const int64_t off = t * s.dil_w - s.pad_w;
        // q range with 0 <= q*stride + off < W
        int64_t q0 = 0;
        if (off < 0) q0 = (-off + s.stride_w - 1) / s.stride_w;
        int64_t q1 = Q;
        if (s.W - off <= 0) q1 = 0;
        else q1 = std::min<int64_t>(Q, (s.W - off - 1) / s.stride_w + 1);
        if (s.stride_w == 1)
          for (int64_t q = q0; q < q1; ++q) yrow[q] += wv * xrow[q + off];
        else
          for (int64_t q = q0; q < q1; ++q) yrow[q] += wv * xrow[q * s.stride_w + off];
      }
    }
  }
}

}  // namespace

bool conv2d_uses_packed_weights(const Conv2dShape& s) {
  return sgemm_avx2_available() && !is_depthwise(s) && s.K / s.groups >= 8;
}

bool conv2d_pack_weights(const Conv2dShape& s, const float* w, PackedConvWeights& out) {
  out = PackedConvWeights{};
  if (!conv2d_uses_packed_weights(s)) return false;
  const int64_t G = s.groups, Kg = s.K / G, CRS = s.C / G * s.R * s.S;
  out.K = s.K;
  out.Cg = s.C / G;
  out.R = s.R;
  out.S = s.S;
  out.groups = G;
  out.per_group = sgemm_packed_a_floats(Kg, CRS);
  out.data.resize(out.per_group * G);
  for (int64_t g = 0; g < G; ++g) sgemm_pack_a(Trans::no, Kg, CRS, w + g * Kg * CRS, CRS, out.data.data() + g * out.per_group);
  return true;
}

namespace {

// Writes the R*S packed-B rows of input channel c (within group g) for a tile: im2col
// of that channel into `rows` (R*S x cols), then scattered into the GEMM's panels; a
// 1x1 stride-1 convolution over one image packs straight from x.
void pack_channel(const Conv2dShape& s, const float* x, const Tile& tl, int64_t g, int64_t c, bool pointwise,
                  float* pb) {
  const int64_t Cg = s.C / s.groups, RS = s.R * s.S, HW = s.H * s.W, CRS = Cg * RS, cols = tl.cols();
  const int64_t ch = g * Cg + c;
  if (pointwise && tl.nimg == 1) {
    sgemm_pack_b_row(CRS, cols, c, x + (tl.n0 * s.C + ch) * HW + tl.pix0, pb);
    return;
  }
  float* rows = thread_scratch(kScratchConvRows, static_cast<size_t>(RS * cols));
  for (int64_t i = 0; i < tl.nimg; ++i)
    im2col(s, x + (tl.n0 + i) * s.C * HW, ch, 1, tl.pix0, tl.npix, rows + i * tl.npix, cols);
  for (int64_t r = 0; r < RS; ++r) sgemm_pack_b_row(CRS, cols, c * RS + r, rows + r * cols, pb);
}

// Where the GEMM writes a tile's output for group g: straight into y (ld P*Q) for one
// image, else into `out` (ld cols), scattered by conv_epilogue.
template <typename T>
struct Output {
  T* p;
  int64_t ld;
};
template <typename T>
Output<T> tile_output(const Conv2dShape& s, const Tile& tl, int64_t g, T* y, T* out) {
  const int64_t PQ = s.P() * s.Q();
  if (tl.nimg == 1) return {y + (tl.n0 * s.K + g * (s.K / s.groups)) * PQ + tl.pix0, PQ};
  return {out, tl.cols()};
}

// Bias and, for a tile of several images, the scatter of out (Kg x cols) into y, for
// output channels [k0, k1) of group g.
template <typename T>
void conv_epilogue(const Conv2dShape& s, const Tile& tl, int64_t g, const T* out, const T* b, int64_t k0, int64_t k1,
                   T* y) {
  const int64_t Kg = s.K / s.groups, PQ = s.P() * s.Q(), cols = tl.cols();
  for (int64_t i = 0; i < tl.nimg; ++i)
    for (int64_t k = k0; k < k1; ++k) {
      T* yrow = y + ((tl.n0 + i) * s.K + g * Kg + k) * PQ + tl.pix0;
      const T bv = b ? b[g * Kg + k] : T(0);
      if (tl.nimg > 1) {
        const T* orow = out + k * cols + i * tl.npix;
        for (int64_t j = 0; j < tl.npix; ++j) yrow[j] = orow[j] + bv;
      } else if (b) {
        for (int64_t j = 0; j < tl.npix; ++j) yrow[j] += bv;
      }
    }
}

// Float forward on the packed GEMM: B (the im2col block) is written straight into the
// GEMM's packed layout, and the weights come packed. Tiles are spread over threads; with
// fewer tiles than threads (small maps, one image) each tile's B is packed by all
// threads together (channels split) and then shared while they split the output rows.
void conv_forward_packed(ThreadPool& pool, const Conv2dShape& s, const float* x, const PackedConvWeights& pw,
                         const float* b, float* y) {
  const int64_t G = s.groups, Cg = s.C / G, Kg = s.K / G, CRS = Cg * s.R * s.S;
  const std::vector<Tile> tiles = make_tiles(s, CRS, pool.num_threads());
  const bool pw1 = is_pointwise(s);

  if (static_cast<int64_t>(tiles.size()) < pool.num_threads()) {
    int64_t max_cols = 0;
    for (const Tile& tl : tiles) max_cols = std::max(max_cols, tl.cols());
    float* pb = thread_scratch(kScratchConvPackedB, sgemm_packed_b_floats(CRS, max_cols));
    std::vector<float> out_buf;
    const int64_t mr = sgemm_panel_rows(), panels = (Kg + mr - 1) / mr;
    for (const Tile& tl : tiles) {
      const int64_t cols = tl.cols();
      if (tl.nimg > 1) out_buf.resize(static_cast<size_t>(Kg * cols));
      for (int64_t g = 0; g < G; ++g) {
        pool.parallel_for(Cg, 1, [&](int64_t c0, int64_t c1) {
          for (int64_t c = c0; c < c1; ++c) pack_channel(s, x, tl, g, c, pw1, pb);
        });
        const Output<float> o = tile_output(s, tl, g, y, out_buf.data());
        float* dst = o.p;
        const int64_t ldc = o.ld;
        const float* pa = pw.data.data() + g * pw.per_group;
        pool.parallel_for(panels, 1, [&](int64_t p0, int64_t p1) {
          const int64_t m0 = p0 * mr, m1 = std::min(Kg, p1 * mr);
          sgemm_avx2_packed_ab(Kg, cols, CRS, pa, pb, m0, m1, dst, ldc);
          conv_epilogue(s, tl, g, dst, b, m0, m1, y);
        });
      }
    }
    return;
  }
  pool.parallel_for(static_cast<int64_t>(tiles.size()), 1, [&](int64_t t0, int64_t t1) {
    for (int64_t ti = t0; ti < t1; ++ti) {
      const Tile& tl = tiles[ti];
      const int64_t cols = tl.cols();
      float* pb = thread_scratch(kScratchConvPackedB, sgemm_packed_b_floats(CRS, cols));
      float* out = tl.nimg > 1 ? thread_scratch(kScratchConvOut, static_cast<size_t>(Kg * cols)) : nullptr;
      for (int64_t g = 0; g < G; ++g) {
        for (int64_t c = 0; c < Cg; ++c) pack_channel(s, x, tl, g, c, pw1, pb);
        const Output<float> o = tile_output(s, tl, g, y, out);
        float* dst = o.p;
        const int64_t ldc = o.ld;
        sgemm_avx2_packed_ab(Kg, cols, CRS, pw.data.data() + g * pw.per_group, pb, 0, Kg, dst, ldc);
        conv_epilogue(s, tl, g, dst, b, 0, Kg, y);
      }
    }
  });
}

}  // namespace

template <typename T>
void conv2d_forward(ThreadPool& pool, const Conv2dShape& s, const T* x, const T* w, const T* b, T* y,
                    const PackedConvWeights* packed) {
  const int64_t P = s.P(), Q = s.Q(), G = s.groups, Kg = s.K / G;
  const int64_t CRS = s.C / G * s.R * s.S, PQ = P * Q;
  if constexpr (std::is_same_v<T, float>) {
    if (conv2d_uses_packed_weights(s)) {
      if (packed && packed->matches(s) && !packed->data.empty()) {
        conv_forward_packed(pool, s, x, *packed, b, y);
      } else {
        PackedConvWeights local;
        conv2d_pack_weights(s, w, local);
        conv_forward_packed(pool, s, x, local, b, y);
      }
      return;
    }
  }
  if (is_depthwise(s)) {
    const int64_t M = s.K / s.C;
    pool.parallel_for(s.N * s.K, 4, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        const int64_t n = i / s.K, k = i % s.K, c = k / M;
        dw_forward_plane(s, x + (n * s.C + c) * s.H * s.W, w + k * s.R * s.S, b ? b[k] : T(0), y + i * PQ);
      }
    });
    return;
  }
  // The portable path (double, CPUs without AVX2, few output channels): im2col + gemm.
  const std::vector<Tile> tiles = make_tiles(s, CRS);
  const bool pw = is_pointwise(s);
  // With fewer tiles than threads, parallelise inside each GEMM instead.
  const bool threaded_gemm = static_cast<int64_t>(tiles.size()) < pool.num_threads();
  pool.parallel_for(static_cast<int64_t>(tiles.size()), 1, [&](int64_t t0, int64_t t1) {
    std::vector<T> col, out;
    for (int64_t ti = t0; ti < t1; ++ti) {
      const Tile& tl = tiles[ti];
      const int64_t cols = tl.cols();
      for (int64_t g = 0; g < G; ++g) {
        const Operand<T> bsrc = tile_im2col(s, x, tl, g, pw, col);
        if (tl.nimg > 1) out.resize(Kg * cols);
        const Output<T> o = tile_output(s, tl, g, y, out.data());
        T* dst = o.p;
        const int64_t ldc = o.ld;
        if (threaded_gemm)
          gemm_parallel(pool, Trans::no, Trans::no, Kg, cols, CRS, T(1), w + g * Kg * CRS, CRS, bsrc.p, bsrc.ld, T(0),
                        dst, ldc);
        else
          gemm(Trans::no, Trans::no, Kg, cols, CRS, T(1), w + g * Kg * CRS, CRS, bsrc.p, bsrc.ld, T(0), dst, ldc);
        conv_epilogue(s, tl, g, static_cast<const T*>(dst), b, int64_t(0), Kg, y);
      }
    }
  });
}

template <typename T>
void conv2d_backward_data(ThreadPool& pool, const Conv2dShape& s, const T* dy, const T* w, T* dx) {
  const int64_t P = s.P(), Q = s.Q(), G = s.groups, Cg = s.C / G, Kg = s.K / G;
  const int64_t CRS = Cg * s.R * s.S, PQ = P * Q, HW = s.H * s.W;
  if (is_depthwise(s)) {
    const int64_t M = s.K / s.C;
    pool.parallel_for(s.N * s.C, 4, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        const int64_t n = i / s.C, c = i % s.C;
        T* dxc = dx + i * HW;
        std::fill(dxc, dxc + HW, T(0));
        for (int64_t m = 0; m < M; ++m) {
          const int64_t k = c * M + m;
          const T* dyk = dy + (n * s.K + k) * PQ;
          const T* wk = w + k * s.R * s.S;
          for (int64_t p = 0; p < P; ++p)
            for (int64_t r = 0; r < s.R; ++r) {
              const int64_t ih = p * s.stride_h - s.pad_h + r * s.dil_h;
              if (ih < 0 || ih >= s.H) continue;
              for (int64_t t = 0; t < s.S; ++t) {
                const T wv = wk[r * s.S + t];
                const int64_t off = t * s.dil_w - s.pad_w;
                for (int64_t q = 0; q < Q; ++q) {
                  const int64_t iw = q * s.stride_w + off;
                  if (iw >= 0 && iw < s.W) dxc[ih * s.W + iw] += wv * dyk[p * Q + q];
                }
              }
            }
        }
      }
    });
    return;
  }
  if (s.stride_h == 1 && s.stride_w == 1 && s.pad_h <= s.dil_h * (s.R - 1) && s.pad_w <= s.dil_w * (s.S - 1)) {
    // With stride 1, dx is a forward convolution of dy with the flipped, transposed
    // kernel and padding dil*(R-1) - pad: im2col on dy and a GEMM with depth K*R*S
    // replace the shallow (depth K/groups) GEMM and the col2im scatter.
    std::vector<T> wt(static_cast<size_t>(s.C) * Kg * s.R * s.S);  // (C, Kg, R, S)
    for (int64_t g = 0; g < G; ++g)
      for (int64_t k = 0; k < Kg; ++k)
        for (int64_t c = 0; c < Cg; ++c)
          for (int64_t r = 0; r < s.R; ++r)
            for (int64_t t = 0; t < s.S; ++t)
              wt[(((g * Cg + c) * Kg + k) * s.R + (s.R - 1 - r)) * s.S + (s.S - 1 - t)] =
                  w[(((g * Kg + k) * Cg + c) * s.R + r) * s.S + t];
    Conv2dShape t = s;
    t.C = s.K;
    t.H = P;
    t.W = Q;
    t.K = s.C;
    t.pad_h = s.dil_h * (s.R - 1) - s.pad_h;
    t.pad_w = s.dil_w * (s.S - 1) - s.pad_w;
    conv2d_forward(pool, t, dy, wt.data(), static_cast<const T*>(nullptr), dx);
    return;
  }
  const std::vector<Tile> tiles = make_tiles(s, CRS);
  // Tiles of one image scatter into overlapping rows of dx, so work is split by image
  // groups: a unit is all tiles of one image, or one multi-image tile.
  std::vector<std::pair<int64_t, int64_t>> units;  // [first tile, last tile)
  for (int64_t i = 0; i < static_cast<int64_t>(tiles.size());) {
    int64_t j = i + 1;
    while (j < static_cast<int64_t>(tiles.size()) && tiles[j].n0 == tiles[i].n0) ++j;
    units.emplace_back(i, j);
    i = j;
  }
  const bool threaded_gemm = static_cast<int64_t>(units.size()) < pool.num_threads();
  pool.parallel_for(static_cast<int64_t>(units.size()), 1, [&](int64_t u0, int64_t u1) {
    std::vector<T> col, dyt;
    for (int64_t u = u0; u < u1; ++u) {
      const Tile& first = tiles[units[u].first];
      std::fill(dx + first.n0 * s.C * HW, dx + (first.n0 + first.nimg) * s.C * HW, T(0));
      for (int64_t ti = units[u].first; ti < units[u].second; ++ti) {
        const Tile& tl = tiles[ti];
        const int64_t cols = tl.cols();
        col.resize(CRS * cols);
        for (int64_t g = 0; g < G; ++g) {
          const Operand<T> d = tile_dy(s, dy, tl, g, dyt);
          const T* dyg = d.p;
          const int64_t ldb = d.ld;
          // col (CRS x cols) = W_g^T (CRS x Kg) * dy_g (Kg x cols)
          if (threaded_gemm)
            gemm_parallel(pool, Trans::yes, Trans::no, CRS, cols, Kg, T(1), w + g * Kg * CRS, CRS, dyg, ldb, T(0),
                          col.data(), cols);
          else
            gemm(Trans::yes, Trans::no, CRS, cols, Kg, T(1), w + g * Kg * CRS, CRS, dyg, ldb, T(0), col.data(), cols);
          for (int64_t i = 0; i < tl.nimg; ++i)
            col2im_add(s, col.data() + i * tl.npix, cols, g * Cg, Cg, tl.pix0, tl.npix, dx + (tl.n0 + i) * s.C * HW);
        }
      }
    }
  });
}

template <typename T>
void conv2d_backward_weight(ThreadPool& pool, const Conv2dShape& s, const T* x, const T* dy, T* dw, T* db) {
  const int64_t P = s.P(), Q = s.Q(), G = s.groups, Cg = s.C / G, Kg = s.K / G;
  const int64_t CRS = Cg * s.R * s.S, PQ = P * Q, HW = s.H * s.W;
  const int64_t wsize = s.K * CRS;
  if (db) {
    // Per channel, images summed in order: deterministic whatever the thread count.
    pool.parallel_for(s.K, 1, [&](int64_t k0, int64_t k1) {
      for (int64_t k = k0; k < k1; ++k) {
        T acc = 0;
        for (int64_t n = 0; n < s.N; ++n) {
          const T* row = dy + (n * s.K + k) * PQ;
          for (int64_t i = 0; i < PQ; ++i) acc += row[i];
        }
        db[k] = acc;
      }
    });
  }
  if (is_depthwise(s)) {
    const int64_t M = s.K / s.C, RS = s.R * s.S;
    pool.parallel_for(s.K, 1, [&](int64_t k0, int64_t k1) {
      for (int64_t k = k0; k < k1; ++k) {
        const int64_t c = k / M;
        T* dwk = dw + k * RS;
        std::fill(dwk, dwk + RS, T(0));
        for (int64_t n = 0; n < s.N; ++n) {
          const T* xc = x + (n * s.C + c) * HW;
          const T* dyk = dy + (n * s.K + k) * PQ;
          for (int64_t r = 0; r < s.R; ++r)
            for (int64_t t = 0; t < s.S; ++t) {
              T acc = 0;
              const int64_t off = t * s.dil_w - s.pad_w;
              for (int64_t p = 0; p < P; ++p) {
                const int64_t ih = p * s.stride_h - s.pad_h + r * s.dil_h;
                if (ih < 0 || ih >= s.H) continue;
                const T* xrow = xc + ih * s.W;
                const T* dyrow = dyk + p * Q;
                for (int64_t q = 0; q < Q; ++q) {
                  const int64_t iw = q * s.stride_w + off;
                  if (iw >= 0 && iw < s.W) acc += dyrow[q] * xrow[iw];
                }
              }
              dwk[r * s.S + t] += acc;
            }
        }
      }
    });
    return;
  }
  const std::vector<Tile> tiles = make_tiles(s, CRS);
  const bool pw = is_pointwise(s);
  // Each chunk of tiles accumulates into its own dw (stored transposed, group by group:
  // (CRS, Kg)); chunks are summed in order, so the result depends only on the thread
  // count, not on scheduling.
  const int64_t ntiles = static_cast<int64_t>(tiles.size());
  const int64_t chunks = pool.num_chunks(ntiles, 1);
  std::vector<std::vector<T>> partial(chunks);
  pool.parallel_chunks(ntiles, 1, [&](int64_t ci, int64_t t0, int64_t t1) {
    std::vector<T>& acc = partial[ci];
    acc.assign(wsize, T(0));
    std::vector<T> col, dyt;
    for (int64_t ti = t0; ti < t1; ++ti) {
      const Tile& tl = tiles[ti];
      const int64_t cols = tl.cols();
      for (int64_t g = 0; g < G; ++g) {
        const Operand<T> c = tile_im2col(s, x, tl, g, pw, col);
        const Operand<T> d = tile_dy(s, dy, tl, g, dyt);
        // dw_g^T (CRS x Kg) += col (CRS x cols) * dy_g^T (cols x Kg): the transposing
        // GEMM packing then falls on dy, the small operand, rather than on col.
        gemm(Trans::no, Trans::yes, CRS, Kg, cols, T(1), c.p, c.ld, d.p, d.ld, T(1), acc.data() + g * CRS * Kg, Kg);
      }
    }
  });
  // Chunks summed in order, transposed back to (K, C/groups, R, S).
  for (int64_t g = 0; g < G; ++g)
    for (int64_t k = 0; k < Kg; ++k)
      for (int64_t r = 0; r < CRS; ++r) {
        T v = 0;
        for (int64_t c = 0; c < chunks; ++c) v += partial[c][(g * CRS + r) * Kg + k];
        dw[(g * Kg + k) * CRS + r] = v;
      }
}

#define CXR_INSTANTIATE(T)                                                                          \
  template void conv2d_forward<T>(ThreadPool&, const Conv2dShape&, const T*, const T*, const T*, T*,       \
                                  const PackedConvWeights*);                                          \
  template void conv2d_backward_data<T>(ThreadPool&, const Conv2dShape&, const T*, const T*, T*);    \
  template void conv2d_backward_weight<T>(ThreadPool&, const Conv2dShape&, const T*, const T*, T*, T*);
CXR_INSTANTIATE(float)
CXR_INSTANTIATE(double)
#undef CXR_INSTANTIATE

}  // namespace cxr::cpu
