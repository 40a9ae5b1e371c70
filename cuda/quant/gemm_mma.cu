// Tiled schedule for bfloat16 / float16 x, and float32 x with a 16-bit compute dtype: a
// 64 x 64 output tile per block of 4 warps (2 x 2, 32 x 32 each), 64 elements of K per
// step. Each step stages the x tile and the W tile, dequantized (scale * code value in
// float32, rounded once to the compute dtype C, as dequantize(W, dtype) does), in shared
// memory, and runs mma.sync m16n8k16 with float32 accumulators. float32 x (X) is
// rounded to C as it is staged, so no converted copy of x is made, and the products
// are those of x in C. The next step's global loads are issued before the current
// step's products, so they are in flight while the tensor cores work.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstring>

#include "cuda/quant/kernels.h"

namespace pygen {
namespace quant_cuda {

namespace {

constexpr int kThreads = 128;
// Shared rows padded by 8 elements (16 bytes): a fragment load's 32 lanes (rows g =
// lane / 4, words t = lane % 4) then hit banks 4 g + t, all different.
constexpr int kLd = kTileK + 8;

__device__ __forceinline__ uint32_t pack2(Half, float lo, float hi) {
  const __half2 h = __floats2half2_rn(lo, hi);  // lo in the low 16 bits: the lower index
  uint32_t u;
  std::memcpy(&u, &h, sizeof u);
  return u;
}
__device__ __forceinline__ uint32_t pack2(BFloat16, float lo, float hi) {
  const __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
  uint32_t u;
  std::memcpy(&u, &h, sizeof u);
  return u;
}

// D = A B + D, A 16 x 16 (row major), B 16 x 8 (column major), float32 accumulators.
// PTX ISA, "Matrix Fragments for mma.m16n8k16 with floating point type"; with g =
// lane / 4 and t = lane % 4, each register holding two consecutive K elements:
//   a[0] = A[g][2t..2t+1], a[1] = A[g+8][2t..], a[2] = A[g][2t+8..], a[3] = A[g+8][2t+8..]
//   b[0] = B[2t..2t+1][g], b[1] = B[2t+8..2t+9][g]
//   d[0..1] = D[g][2t..2t+1], d[2..3] = D[g+8][2t..2t+1]
__device__ __forceinline__ void mma(Half, float d[4], const uint32_t a[4], const uint32_t b[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
__device__ __forceinline__ void mma(BFloat16, float d[4], const uint32_t a[4], const uint32_t b[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// The x tile is read in chunks of 16 bytes (8 16-bit or 4 float32 elements): a row
// of the tile is kXChunks<X> of them, a thread loads kXLoads<X>.
template <class X>
constexpr int kXElems = 16 / int(sizeof(X));
template <class X>
constexpr int kXChunks = kTileK / kXElems<X>;
template <class X>
constexpr int kXLoads = kTileM * kXChunks<X> / kThreads;

// One K step's global data, held in registers until the shared tiles are free.
template <class X>
struct Stage {
  uint4 x[kXLoads<X>];  // x tile
  uint4 raw;            // W tile: 64 rows x 2 items, one item a thread
  ItemScale sc;
  bool w_valid;
};

template <class X>
__device__ __forceinline__ void load_stage(const QuantMatmulParams& p, int64_t m0, int64_t n0, int64_t kt,
                                           Stage<X>* s) {
  const QuantWeight& w = p.w;
  const X* x = static_cast<const X*>(p.x);
#pragma unroll
  for (int it = 0; it < kXLoads<X>; ++it) {
    const int idx = threadIdx.x + it * kThreads, row = idx / kXChunks<X>, chunk = idx % kXChunks<X>;
    const int64_t m = m0 + row, k = kt * kTileK + chunk * kXElems<X>;
    // K is a multiple of 32, so a chunk is wholly in or out.
    s->x[it] =
        m < p.M && k < w.K ? __ldg(reinterpret_cast<const uint4*>(x + m * w.K + k)) : make_uint4(0, 0, 0, 0);
  }
  const int64_t n = n0 + threadIdx.x / 2, i = kt * (kTileK / kItem) + threadIdx.x % 2;
  s->w_valid = n < w.N && i * kItem < w.K;
  if (s->w_valid) {
    s->raw = load_item(w, n, i);
    s->sc = item_scale(w, n, i);
  }
}

template <class X, class C, QuantFormat F>
__device__ __forceinline__ void store_stage(const Stage<X>& s, int64_t kt, const float* e2m1_table,
                                            uint16_t* xs, uint16_t* ws) {
#pragma unroll
  for (int it = 0; it < kXLoads<X>; ++it) {
    const int idx = threadIdx.x + it * kThreads, row = idx / kXChunks<X>, chunk = idx % kXChunks<X>;
    uint16_t* dst = xs + row * kLd + chunk * kXElems<X>;
    if constexpr (std::is_same_v<X, float>) {
      const uint4 f = s.x[it];
      *reinterpret_cast<uint2*>(dst) = make_uint2(pack2(C{}, __uint_as_float(f.x), __uint_as_float(f.y)),
                                                  pack2(C{}, __uint_as_float(f.z), __uint_as_float(f.w)));
    } else {
      *reinterpret_cast<uint4*>(dst) = s.x[it];
    }
  }
  const int row = threadIdx.x / 2, sub = threadIdx.x % 2;
  uint32_t pairs[kItem / 2] = {};
  if (s.w_valid) {
    float v[kItem];
    item_values<F>(s.raw, kt * (kTileK / kItem) + sub, s.sc.zoff, e2m1_table, v);
#pragma unroll
    for (int e = 0; e < kItem; e += 2) pairs[e / 2] = pack2(C{}, v[e] * s.sc.scale, v[e + 1] * s.sc.scale);
  }
  uint4* dst = reinterpret_cast<uint4*>(ws + row * kLd + sub * kItem);
#pragma unroll
  for (int q = 0; q < 4; ++q)
    dst[q] = make_uint4(pairs[4 * q], pairs[4 * q + 1], pairs[4 * q + 2], pairs[4 * q + 3]);
}

// X: x's (and out's) dtype; C: the 16-bit dtype of the products (X itself for 16-bit x).
template <class X, class C, QuantFormat F>
__global__ void __launch_bounds__(kThreads)
    gemm_mma_kernel(QuantMatmulParams p, int64_t kt_per, float* partials) {
  __shared__ __align__(16) uint16_t xs[kTileM * kLd];
  __shared__ __align__(16) uint16_t ws[kTileN * kLd];
  __shared__ float e2m1_table[16];
  fill_e2m1_table(e2m1_table);  // published by the loop's first __syncthreads
  const int64_t m0 = int64_t(blockIdx.x) * kTileM, n0 = int64_t(blockIdx.y) * kTileN;
  int64_t kt0, kt1;
  split_range(p.w.K, kt_per, &kt0, &kt1);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, g = lane / 4, t = lane % 4;
  const int wm = (warp / 2) * 32, wn = (warp % 2) * 32;
  float acc[2][4][4] = {};
  Stage<X> stage;
  if (kt0 < kt1) load_stage<X>(p, m0, n0, kt0, &stage);
  for (int64_t kt = kt0; kt < kt1; ++kt) {
    __syncthreads();  // the previous step's fragment loads are done
    store_stage<X, C, F>(stage, kt, e2m1_table, xs, ws);
    __syncthreads();
    if (kt + 1 < kt1) load_stage<X>(p, m0, n0, kt + 1, &stage);
    // Warp-uniform: a warp whose 32 rows are all past M (small M) skips its products.
#pragma unroll
    for (int ks = 0; ks < kTileK && m0 + wm < p.M; ks += 16) {
      uint32_t a[2][4], b[4][2];
#pragma unroll
      for (int mi = 0; mi < 2; ++mi) {
        const uint16_t* base = xs + (wm + mi * 16 + g) * kLd + ks + 2 * t;
        a[mi][0] = *reinterpret_cast<const uint32_t*>(base);
        a[mi][1] = *reinterpret_cast<const uint32_t*>(base + 8 * kLd);
        a[mi][2] = *reinterpret_cast<const uint32_t*>(base + 8);
        a[mi][3] = *reinterpret_cast<const uint32_t*>(base + 8 * kLd + 8);
      }
#pragma unroll
      for (int ni = 0; ni < 4; ++ni) {
        // B[k][n] = W[n][k]: W's shared rows are B's columns, K contiguous.
        const uint16_t* base = ws + (wn + ni * 8 + g) * kLd + ks + 2 * t;
        b[ni][0] = *reinterpret_cast<const uint32_t*>(base);
        b[ni][1] = *reinterpret_cast<const uint32_t*>(base + 8);
      }
#pragma unroll
      for (int mi = 0; mi < 2; ++mi)
#pragma unroll
        for (int ni = 0; ni < 4; ++ni) mma(C{}, acc[mi][ni], a[mi], b[ni]);
    }
  }
  const X* bias = static_cast<const X*>(p.bias);
  X* out = static_cast<X*>(p.out);
#pragma unroll
  for (int mi = 0; mi < 2; ++mi)
#pragma unroll
    for (int ni = 0; ni < 4; ++ni)
#pragma unroll
      for (int h = 0; h < 4; ++h) {
        const int64_t m = m0 + wm + mi * 16 + g + (h / 2) * 8, n = n0 + wn + ni * 8 + 2 * t + h % 2;
        if (m >= p.M || n >= p.w.N) continue;
        const float v = acc[mi][ni][h];
        if (partials)
          partials[(int64_t(blockIdx.z) * p.M + m) * p.w.N + n] = v;
        else
          out[m * p.w.N + n] = from_acc<X>(bias ? v + to_acc(bias[n]) : v);
      }
}

}  // namespace

void launch_gemm_mma(const QuantMatmulParams& p, const SplitPlan& plan, float* partials,
                     cudaStream_t stream) {
  const dim3 grid(unsigned(plan.tiles_m), unsigned(plan.tiles_n), unsigned(plan.splits));
  visit_format(p.w.format, [&](auto f) {
    constexpr QuantFormat F = decltype(f)::value;
    if (p.dtype == DType::kFloat16)
      gemm_mma_kernel<Half, Half, F><<<grid, kThreads, 0, stream>>>(p, plan.kt_per, partials);
    else if (p.dtype == DType::kBFloat16)
      gemm_mma_kernel<BFloat16, BFloat16, F><<<grid, kThreads, 0, stream>>>(p, plan.kt_per, partials);
    else if (p.compute == DType::kFloat16)
      gemm_mma_kernel<float, Half, F><<<grid, kThreads, 0, stream>>>(p, plan.kt_per, partials);
    else
      gemm_mma_kernel<float, BFloat16, F><<<grid, kThreads, 0, stream>>>(p, plan.kt_per, partials);
  });
}

}  // namespace quant_cuda
}  // namespace pygen
