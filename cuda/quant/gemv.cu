// GEMV schedule (M <= kGemvMaxRows): a warp per kRows output rows. Lane l reads items
// l, l + 32, ... of each row, one 16-byte load each (a warp reads 512 contiguous bytes
// of a row at a time), dots each item with x in float32 and scales the item's sum once
// (codes are small integers or E2M1 values, exact in float32); a warp shuffle adds the
// lanes. Memory bound: the packed weight is read once, x comes from L1/L2. float32 x
// with a 16-bit compute dtype is rounded to it as it is loaded (R), so the sums are
// those of 16-bit x.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstring>

#include "cuda/quant/kernels.h"
#include "cuda/quant/matmul.h"

namespace pygen {
namespace quant_cuda {

namespace {

constexpr int kWarps = 4, kRows = 2, kThreads = kWarps * 32;

// Elements 0..7 of x (16 bytes; 32 for float32, 16-byte aligned) as float.
__device__ __forceinline__ void load8(const float* x, float f[8]) {
  const float4 a = __ldg(reinterpret_cast<const float4*>(x)),
               b = __ldg(reinterpret_cast<const float4*>(x) + 1);
  f[0] = a.x, f[1] = a.y, f[2] = a.z, f[3] = a.w, f[4] = b.x, f[5] = b.y, f[6] = b.z, f[7] = b.w;
}
__device__ __forceinline__ void load8(const Half* x, float f[8]) {
  const uint4 u = __ldg(reinterpret_cast<const uint4*>(x));
  const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    __half2 h;
    std::memcpy(&h, &w[j], sizeof h);
    const float2 p = __half22float2(h);
    f[2 * j] = p.x, f[2 * j + 1] = p.y;
  }
}
__device__ __forceinline__ void load8(const BFloat16* x, float f[8]) {
  const uint4 u = __ldg(reinterpret_cast<const uint4*>(x));
  const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
  for (int j = 0; j < 4; ++j)
    f[2 * j] = __uint_as_float(w[j] << 16), f[2 * j + 1] = __uint_as_float(w[j] & 0xffff0000u);
}

template <class V>
__device__ __forceinline__ V warp_sum(V v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Item i of rows n0 .. n0 + kRows - 1 (a row past N re-reads the last; never written).
__device__ __forceinline__ void load_rows(const QuantWeight& w, int64_t n0, int64_t i, uint4 raw[kRows],
                                          ItemScale sc[kRows]) {
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    const int64_t n = min(n0 + r, w.N - 1);
    raw[r] = load_item(w, n, i);
    sc[r] = item_scale(w, n, i);
  }
}

template <class T, class R, QuantFormat F, int M>
__global__ void __launch_bounds__(kThreads) gemv_kernel(QuantMatmulParams p) {
  __shared__ float e2m1_table[16];
  fill_e2m1_table(e2m1_table);
  __syncthreads();
  const QuantWeight& w = p.w;
  const int lane = threadIdx.x & 31;
  const int64_t n0 = (int64_t(blockIdx.x) * kWarps + threadIdx.x / 32) * kRows;
  if (n0 >= w.N) return;
  const T* x = static_cast<const T*>(p.x);
  const int64_t items = w.K / kItem;
  float acc[kRows][M] = {};
  // The next item's loads are issued before this one's products (register double
  // buffering): a lane then has two 16-byte loads a row in flight, not one.
  uint4 raw[kRows];
  ItemScale sc[kRows];
  if (lane < items) load_rows(w, n0, lane, raw, sc);
  for (int64_t i = lane; i < items; i += 32) {
    float v[kRows][kItem];
#pragma unroll
    for (int r = 0; r < kRows; ++r) item_values<F>(raw[r], i, sc[r].zoff, e2m1_table, v[r]);
    float scale[kRows];
#pragma unroll
    for (int r = 0; r < kRows; ++r) scale[r] = sc[r].scale;
    if (i + 32 < items) load_rows(w, n0, i + 32, raw, sc);
#pragma unroll
    for (int m = 0; m < M; ++m) {
      const T* xm = x + m * w.K + i * kItem;
      float part[kRows] = {};
#pragma unroll
      for (int c = 0; c < kItem / 8; ++c) {
        float xf[8];
        load8(xm + 8 * c, xf);
#pragma unroll
        for (int e = 0; e < 8; ++e) xf[e] = round_to<R>(xf[e]);
#pragma unroll
        for (int r = 0; r < kRows; ++r)
#pragma unroll
          for (int e = 0; e < 8; ++e) part[r] = fmaf(xf[e], v[r][8 * c + e], part[r]);
      }
#pragma unroll
      for (int r = 0; r < kRows; ++r) acc[r][m] = fmaf(part[r], scale[r], acc[r][m]);
    }
  }
  const T* bias = static_cast<const T*>(p.bias);
  T* out = static_cast<T*>(p.out);
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
#pragma unroll
    for (int m = 0; m < M; ++m) {
      const float s = warp_sum(acc[r][m]);
      const int64_t n = n0 + r;
      if (lane == 0 && n < w.N) out[m * w.N + n] = from_acc<T>(bias ? s + to_acc(bias[n]) : s);
    }
  }
}

template <int M>
__global__ void __launch_bounds__(kThreads) gemv_int8_kernel(QuantMatmulInt8Params p) {
  const QuantWeight& w = p.w;
  const int lane = threadIdx.x & 31;
  const int64_t n0 = (int64_t(blockIdx.x) * kWarps + threadIdx.x / 32) * kRows;
  if (n0 >= w.N) return;
  const int64_t items = w.K / kItem;
  int32_t acc[kRows][M] = {};
  uint4 raw[kRows];
#pragma unroll
  for (int r = 0; r < kRows; ++r)
    if (lane < items) raw[r] = load_item(w, min(n0 + r, w.N - 1), lane);
  for (int64_t i = lane; i < items; i += 32) {
    uint32_t c[kRows][8];
#pragma unroll
    for (int r = 0; r < kRows; ++r) ternary_item_words(raw[r], i, c[r]);
#pragma unroll
    for (int r = 0; r < kRows; ++r)
      if (i + 32 < items) raw[r] = load_item(w, min(n0 + r, w.N - 1), i + 32);
#pragma unroll
    for (int m = 0; m < M; ++m) {
      const uint4* xm = reinterpret_cast<const uint4*>(p.x + m * w.K + i * kItem);
      const uint4 a = __ldg(xm), b = __ldg(xm + 1);
      const uint32_t xw[8] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
#pragma unroll
      for (int r = 0; r < kRows; ++r)
#pragma unroll
        for (int j = 0; j < 8; ++j) acc[r][m] = __dp4a(int(xw[j]), int(c[r][j]), acc[r][m]);
    }
  }
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
#pragma unroll
    for (int m = 0; m < M; ++m) {
      const int32_t s = warp_sum(acc[r][m]);
      const int64_t n = n0 + r;
      if (lane == 0 && n < w.N)
        p.out[m * w.N + n] = int8_output(s, p.x_scale[m], weight_scale(w, n, 0), p.bias, n);
    }
  }
}

unsigned gemv_blocks(int64_t N) { return unsigned((N + kWarps * kRows - 1) / (kWarps * kRows)); }

}  // namespace

void launch_gemv(const QuantMatmulParams& p, cudaStream_t stream) {
  const dim3 grid(gemv_blocks(p.w.N));
  visit_x_rounding(p.dtype, p.compute, [&](auto t, auto r) {
    visit_format(p.w.format, [&](auto f) {
      using T = decltype(t);
      using R = decltype(r);
      constexpr QuantFormat F = decltype(f)::value;
      switch (p.M) {
        case 1:
          gemv_kernel<T, R, F, 1><<<grid, kThreads, 0, stream>>>(p);
          break;
        case 2:
          gemv_kernel<T, R, F, 2><<<grid, kThreads, 0, stream>>>(p);
          break;
        case 3:
          gemv_kernel<T, R, F, 3><<<grid, kThreads, 0, stream>>>(p);
          break;
        default:
          gemv_kernel<T, R, F, 4><<<grid, kThreads, 0, stream>>>(p);
      }
    });
  });
}

void launch_gemv_int8(const QuantMatmulInt8Params& p, cudaStream_t stream) {
  const dim3 grid(gemv_blocks(p.w.N));
  switch (p.M) {
    case 1:
      gemv_int8_kernel<1><<<grid, kThreads, 0, stream>>>(p);
      break;
    case 2:
      gemv_int8_kernel<2><<<grid, kThreads, 0, stream>>>(p);
      break;
    case 3:
      gemv_int8_kernel<3><<<grid, kThreads, 0, stream>>>(p);
      break;
    default:
      gemv_int8_kernel<4><<<grid, kThreads, 0, stream>>>(p);
  }
}

static_assert(kGemvMaxRows == 4, "launch_gemv instantiates M = 1..4");

}  // namespace quant_cuda
}  // namespace pygen
