// Tiled SIMT schedules: float32 x (float32 FMAs on W dequantized to float32, as exact as
// the CPU kernels) and int8 x on ternary W (dp4a on 4 signed codes a word, exact int32
// sums). A 64 x 64 output tile per block of 256 threads, 4 x 4 outputs a thread, 64
// elements of K per step; shared tiles are K-major so a thread's 4 rows (4 columns) are
// one 16-byte load. The next step's global loads are issued before the current step's
// products, as in gemm_mma.cu.
#include <type_traits>

#include "cuda/quant/kernels.h"

namespace pygen {
namespace quant_cuda {

namespace {

constexpr int kThreads = 256;

// Float32 tiles hold one element of K per entry, int8 tiles four (one 32-bit word).
template <class E>
constexpr int kPerEntry = std::is_same_v<E, float> ? 1 : 4;

template <class E>
struct Stage {
  std::conditional_t<std::is_same_v<E, float>, float4, int32_t> x[4];  // 4 elements of K of a row
  uint4 raw;
  ItemScale sc;
  bool w_valid;
};

// Entries of the x tile: 64 rows x 16 quads of K, 4 quads a thread; rows run fastest
// across threads, so the transposed shared stores are conflict-free.
template <class E, class Params>
__device__ __forceinline__ void load_stage(const Params& p, int64_t m0, int64_t n0, int64_t kt, Stage<E>* s) {
  const QuantWeight& w = p.w;
#pragma unroll
  for (int it = 0; it < 4; ++it) {
    const int idx = threadIdx.x + it * kThreads, row = idx % kTileM, quad = idx / kTileM;
    const int64_t m = m0 + row, k = kt * kTileK + quad * 4;
    const bool ok = m < p.M && k < w.K;  // K is a multiple of 32: a quad is wholly in or out
    if constexpr (std::is_same_v<E, float>) {
      const float* x = static_cast<const float*>(p.x);
      s->x[it] = ok ? __ldg(reinterpret_cast<const float4*>(x + m * w.K + k)) : make_float4(0, 0, 0, 0);
    } else {
      s->x[it] = ok ? __ldg(reinterpret_cast<const int32_t*>(p.x + m * w.K + k)) : 0;
    }
  }
  // W: 64 rows x 2 items, threads 0..127, rows fastest.
  const int64_t n = n0 + threadIdx.x % kTileN, i = kt * (kTileK / kItem) + threadIdx.x / kTileN;
  s->w_valid = threadIdx.x < 2 * kTileN && n < w.N && i * kItem < w.K;
  if (s->w_valid) {
    s->raw = load_item(w, n, i);
    if constexpr (std::is_same_v<E, float>) s->sc = item_scale(w, n, i);
  }
}

template <class E, QuantFormat F>
__device__ __forceinline__ void store_stage(const Stage<E>& s, int64_t kt, const float* e2m1_table,
                                            E (*xs)[kTileM], E (*ws)[kTileN]) {
  constexpr int kPer = kPerEntry<E>;
#pragma unroll
  for (int it = 0; it < 4; ++it) {
    const int idx = threadIdx.x + it * kThreads, row = idx % kTileM, quad = idx / kTileM;
    if constexpr (std::is_same_v<E, float>) {
      xs[quad * 4 + 0][row] = s.x[it].x;
      xs[quad * 4 + 1][row] = s.x[it].y;
      xs[quad * 4 + 2][row] = s.x[it].z;
      xs[quad * 4 + 3][row] = s.x[it].w;
    } else {
      xs[quad][row] = s.x[it];
    }
  }
  if (threadIdx.x >= 2 * kTileN) return;
  const int col = threadIdx.x % kTileN, sub = threadIdx.x / kTileN;
  E* dst = &ws[sub * (kItem / kPer)][col];  // entry j of the item at dst[j * kTileN]
  if constexpr (std::is_same_v<E, float>) {
    float v[kItem];
    if (s.w_valid) item_values<F>(s.raw, kt * (kTileK / kItem) + sub, s.sc.zoff, e2m1_table, v);
#pragma unroll
    for (int e = 0; e < kItem; ++e) dst[e * kTileN] = s.w_valid ? v[e] * s.sc.scale : 0.0f;
  } else {
    uint32_t c[8];
    if (s.w_valid) ternary_item_words(s.raw, kt * (kTileK / kItem) + sub, c);
#pragma unroll
    for (int j = 0; j < 8; ++j) dst[j * kTileN] = s.w_valid ? int32_t(c[j]) : 0;
  }
}

// E = float: QuantMatmulParams with float32 x; E = int32_t: QuantMatmulInt8Params.
template <class E, QuantFormat F, class Params>
__global__ void __launch_bounds__(kThreads) gemm_simt_kernel(Params p, int64_t kt_per, E* partials) {
  constexpr int kPer = kPerEntry<E>;
  __shared__ __align__(16) E xs[kTileK / kPer][kTileM];
  __shared__ __align__(16) E ws[kTileK / kPer][kTileN];
  __shared__ float e2m1_table[16];
  fill_e2m1_table(e2m1_table);  // published by the loop's first __syncthreads
  const int64_t m0 = int64_t(blockIdx.x) * kTileM, n0 = int64_t(blockIdx.y) * kTileN;
  int64_t kt0, kt1;
  split_range(p.w.K, kt_per, &kt0, &kt1);
  const int ty = threadIdx.x / 16, tx = threadIdx.x % 16;
  E acc[4][4] = {};
  Stage<E> stage;
  if (kt0 < kt1) load_stage<E>(p, m0, n0, kt0, &stage);
  for (int64_t kt = kt0; kt < kt1; ++kt) {
    __syncthreads();
    store_stage<E, F>(stage, kt, e2m1_table, xs, ws);
    __syncthreads();
    if (kt + 1 < kt1) load_stage<E>(p, m0, n0, kt + 1, &stage);
#pragma unroll 8
    for (int kk = 0; kk < kTileK / kPer; ++kk) {
      E a[4], b[4];
      *reinterpret_cast<uint4*>(a) = *reinterpret_cast<const uint4*>(&xs[kk][ty * 4]);
      *reinterpret_cast<uint4*>(b) = *reinterpret_cast<const uint4*>(&ws[kk][tx * 4]);
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          if constexpr (std::is_same_v<E, float>)
            acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
          else
            acc[i][j] = __dp4a(a[i], b[j], acc[i][j]);
        }
    }
  }
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t m = m0 + ty * 4 + i, n = n0 + tx * 4 + j;
      if (m >= p.M || n >= p.w.N) continue;
      if (partials) {
        partials[(int64_t(blockIdx.z) * p.M + m) * p.w.N + n] = acc[i][j];
      } else if constexpr (std::is_same_v<E, float>) {
        const float* bias = static_cast<const float*>(p.bias);
        static_cast<float*>(p.out)[m * p.w.N + n] = bias ? acc[i][j] + bias[n] : acc[i][j];
      } else {
        p.out[m * p.w.N + n] = int8_output(acc[i][j], p.x_scale[m], weight_scale(p.w, n, 0), p.bias, n);
      }
    }
}

dim3 grid_of(const SplitPlan& plan) {
  return dim3(unsigned(plan.tiles_m), unsigned(plan.tiles_n), unsigned(plan.splits));
}

}  // namespace

void launch_gemm_simt_f32(const QuantMatmulParams& p, const SplitPlan& plan, float* partials,
                          cudaStream_t stream) {
  visit_format(p.w.format, [&](auto f) {
    constexpr QuantFormat F = decltype(f)::value;
    gemm_simt_kernel<float, F><<<grid_of(plan), kThreads, 0, stream>>>(p, plan.kt_per, partials);
  });
}

void launch_gemm_simt_int8(const QuantMatmulInt8Params& p, const SplitPlan& plan, int32_t* partials,
                           cudaStream_t stream) {
  gemm_simt_kernel<int32_t, QuantFormat::kTernary>
      <<<grid_of(plan), kThreads, 0, stream>>>(p, plan.kt_per, partials);
}

}  // namespace quant_cuda
}  // namespace pygen
