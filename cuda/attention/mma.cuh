// Warp-level 16x8x16 matrix products on the fragments of PTX's
// mma.sync.aligned.m16n8k16.row.col.f32.{f16,bf16}.{f16,bf16}.f32, and the same product on
// float32 fragments of the same shape done with FMAs (no TF32), so one kernel body serves
// every dtype.
//
// Fragment layout (PTX ISA, "Matrix Fragments for mma.m16n8k16 with floating point
// type"); lane = 4 * g + t, g = lane / 4 in [0, 8), t = lane % 4:
//   A (16 x 16, row major), 4 registers of 2 elements each, lower index in the low half:
//     a[0] = A[g][2t, 2t+1]     a[1] = A[g+8][2t, 2t+1]
//     a[2] = A[g][2t+8, 2t+9]   a[3] = A[g+8][2t+8, 2t+9]
//   B (16 x 8, "col": B[k][n]), 2 registers:
//     b[0] = B[2t, 2t+1][g]     b[1] = B[2t+8, 2t+9][g]
//   C, D (16 x 8, float32), 4 registers:
//     c[0], c[1] = C[g][2t, 2t+1]      c[2], c[3] = C[g+8][2t, 2t+1]
// Two accumulators of adjacent 8-column tiles n, n+1 hold, element for element, the A
// fragment of their 16 columns (FlashAttention-2's register reuse of P): see a_from_c.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "csrc/common/dtype.h"

namespace pygen::attention_mma {

// Two consecutive-k elements of an operand: packed 16-bit pair, or two floats.
template <class T>
struct Pair {
  using type = uint32_t;
};
template <>
struct Pair<float> {
  using type = float2;
};
template <class T>
using PairOf = typename Pair<T>::type;

// Elements p[0], p[1] (adjacent in shared memory, pair-aligned).
template <class T>
__device__ __forceinline__ PairOf<T> load_pair(const T* p) {
  return *reinterpret_cast<const PairOf<T>*>(p);
}

// Elements *lo, *hi from two places (two rows of a row-major tile).
template <class T>
__device__ __forceinline__ PairOf<T> load_pair(const T* lo, const T* hi) {
  if constexpr (std::is_same_v<T, float>)
    return make_float2(*lo, *hi);
  else
    return uint32_t(lo->bits) | (uint32_t(hi->bits) << 16);
}

// (x, y) rounded to nearest even into an operand pair.
template <class T>
__device__ __forceinline__ PairOf<T> pack(float x, float y) {
  if constexpr (std::is_same_v<T, float>) {
    return make_float2(x, y);
  } else if constexpr (std::is_same_v<T, Half>) {
    const __half2 h = __floats2half2_rn(x, y);  // .x (x) in the low half
    return *reinterpret_cast<const uint32_t*>(&h);
  } else {
    const __nv_bfloat162 h = __floats2bfloat162_rn(x, y);
    return *reinterpret_cast<const uint32_t*>(&h);
  }
}

// c += a b for one 16x8x16 product; all 32 lanes of the warp must call it together.
template <class T>
__device__ __forceinline__ void mma(float c[4], const PairOf<T> a[4], const PairOf<T> b[2]) {
  if constexpr (std::is_same_v<T, Half>) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  } else if constexpr (std::is_same_v<T, BFloat16>) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  } else {
    // float32: lane (g, t) needs rows g and g+8 of A, held by the lanes 4g + s of its
    // group, and columns 2t and 2t+1 of B, held by lanes 4(2t) + s and 4(2t+1) + s;
    // source lane s holds k = 2s, 2s+1, 2s+8, 2s+9 of each.
    // Not unrolled: a quarter of the code for ptxas, and float32 is not the fast path.
    const int lane = threadIdx.x % 32, t = lane % 4;
#pragma unroll 1
    for (int s = 0; s < 4; ++s) {
      const int src_a = (lane & ~3) | s, src_b0 = 8 * t + s, src_b1 = 8 * t + 4 + s;
      float ar[2][4], bc[2][4];  // ar[row g / g+8][k], bc[col 2t / 2t+1][k]
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        ar[r][0] = __shfl_sync(0xffffffffu, a[r].x, src_a);
        ar[r][1] = __shfl_sync(0xffffffffu, a[r].y, src_a);
        ar[r][2] = __shfl_sync(0xffffffffu, a[r + 2].x, src_a);
        ar[r][3] = __shfl_sync(0xffffffffu, a[r + 2].y, src_a);
      }
#pragma unroll
      for (int n = 0; n < 2; ++n) {
        const int src = n ? src_b1 : src_b0;
        bc[n][0] = __shfl_sync(0xffffffffu, b[0].x, src);
        bc[n][1] = __shfl_sync(0xffffffffu, b[0].y, src);
        bc[n][2] = __shfl_sync(0xffffffffu, b[1].x, src);
        bc[n][3] = __shfl_sync(0xffffffffu, b[1].y, src);
      }
#pragma unroll
      for (int r = 0; r < 2; ++r)
#pragma unroll
        for (int n = 0; n < 2; ++n)
#pragma unroll
          for (int k = 0; k < 4; ++k) c[2 * r + n] = fmaf(ar[r][k], bc[n][k], c[2 * r + n]);
    }
  }
}

// A fragment of rows [r0, r0+16), columns [k0, k0+16) of a row-major shared tile.
template <class T>
__device__ __forceinline__ void load_a(PairOf<T> a[4], const T* tile, int stride, int r0, int k0) {
  const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const T* p = tile + (r0 + g) * stride + k0 + 2 * t;
  a[0] = load_pair(p);
  a[1] = load_pair(p + 8 * stride);
  a[2] = load_pair(p + 8);
  a[3] = load_pair(p + 8 * stride + 8);
}

// B fragment with B[k][n] = M[n0 + n][k0 + k] (M row major, rows are B's columns: K in
// Q K^T).
template <class T>
__device__ __forceinline__ void load_b_rows_n(PairOf<T> b[2], const T* tile, int stride, int n0, int k0) {
  const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const T* p = tile + (n0 + g) * stride + k0 + 2 * t;
  b[0] = load_pair(p);
  b[1] = load_pair(p + 8);
}

// B fragment with B[k][n] = M[k0 + k][n0 + n] (M row major, rows are B's rows: V in P V).
template <class T>
__device__ __forceinline__ void load_b_rows_k(PairOf<T> b[2], const T* tile, int stride, int k0, int n0) {
  const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const T* p = tile + (k0 + 2 * t) * stride + n0 + g;
  b[0] = load_pair(p, p + stride);
  b[1] = load_pair(p + 8 * stride, p + 9 * stride);
}

// A fragment of columns [16 kk, 16 kk + 16) from float accumulators c[n][4] of 8-column
// tiles: c[2kk] holds columns 2t, 2t+1 and c[2kk+1] columns 2t+8, 2t+9 of rows g, g+8.
template <class T>
__device__ __forceinline__ void a_from_c(PairOf<T> a[4], const float (*c)[4], int kk) {
  a[0] = pack<T>(c[2 * kk][0], c[2 * kk][1]);
  a[1] = pack<T>(c[2 * kk][2], c[2 * kk][3]);
  a[2] = pack<T>(c[2 * kk + 1][0], c[2 * kk + 1][1]);
  a[3] = pack<T>(c[2 * kk + 1][2], c[2 * kk + 1][3]);
}

}  // namespace pygen::attention_mma
