// What the quant kernels share: reading a packed weight 32 elements ("an item") at a
// time, the split-K plan and its reduction. The per-element numerics are those of
// csrc/quant/formats.h and quant.h (weight_scale, weight_zero, e2m1_value).
//
// Item i of a row covers elements 32 i .. 32 i + 31 and comes from one 16-byte load:
//   nibbles (int4, mxfp4): bytes 16 i .. 16 i + 15, element e in the low nibble of byte
//     e and element 16 + e in the high one;
//   crumbs (ternary): the 64-element block i / 2, half h = i % 2: element e at bits
//     4h .. 4h + 1 of byte e, element 16 + e at bits 4h + 2 .. 4h + 3.
// Groups are 32, 64 or 128 elements (ternary: K), so an item lies in one group.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "csrc/quant/quant.h"

namespace pygen {
namespace quant_cuda {

constexpr int kItem = 32;  // elements per item
// float(c - z) for a 4-bit code c, exactly, in two full-rate instructions: 2^23 + c
// has c in its low mantissa bits, and subtracting 2^23 + z leaves c - z. (An int to
// float conversion runs at a quarter rate, and the GEMV must decode 29 codes a clock.)
constexpr float kMagic = 8388608.0f;
constexpr uint32_t kMagicBits = 0x4B000000u;

__device__ __forceinline__ int64_t item_byte(QuantFormat f, int64_t i) {
  return f == QuantFormat::kTernary ? (i >> 1) * 16 : i * 16;
}

__device__ __forceinline__ uint4 load_item(const QuantWeight& w, int64_t n, int64_t i) {
  const uint8_t* row = w.packed + n * weight_row_bytes(w);
  return __ldg(reinterpret_cast<const uint4*>(row + item_byte(w.format, i)));
}

// Scale and the offset kMagic + zero that value() subtracts, for item i of row n.
struct ItemScale {
  float scale, zoff;
};
__device__ __forceinline__ ItemScale item_scale(const QuantWeight& w, int64_t n, int64_t i) {
  const int64_t g = i * kItem / w.group;
  return {weight_scale(w, n, g), kMagic + float(weight_zero(w, n, g))};
}

// The code value (before the scale) of a code: int4 c - z and ternary c - 1 by the
// magic number, mxfp4 from a 16-entry table of e2m1_value.
template <QuantFormat F>
__device__ __forceinline__ float code_to_value(uint32_t c, float zoff, const float* e2m1_table) {
  if constexpr (F == QuantFormat::kMxfp4)
    return e2m1_table[c];
  else
    return __uint_as_float(kMagicBits | c) - zoff;
}

// The 32 code values of an item, in element order.
template <QuantFormat F>
__device__ __forceinline__ void item_values(uint4 raw, int64_t i, float zoff, const float* e2m1_table,
                                            float v[kItem]) {
  constexpr bool kCrumbs = F == QuantFormat::kTernary;
  constexpr uint32_t kMask = kCrumbs ? 0x03030303u : 0x0f0f0f0fu;
  const int s0 = kCrumbs ? int(i & 1) * 4 : 0, s1 = s0 + (kCrumbs ? 2 : 4);
  const uint32_t words[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const uint32_t lo = (words[j] >> s0) & kMask, hi = (words[j] >> s1) & kMask;
#pragma unroll
    for (int b = 0; b < 4; ++b) {
      v[4 * j + b] = code_to_value<F>((lo >> (8 * b)) & 0xffu, zoff, e2m1_table);
      v[16 + 4 * j + b] = code_to_value<F>((hi >> (8 * b)) & 0xffu, zoff, e2m1_table);
    }
  }
}

// A ternary item as 8 words of 4 signed bytes c - 1 (in {-1, 0, 1}), for dp4a: word j
// holds elements 4 j .. 4 j + 3 (j < 4) or 16 + 4 (j - 4) .. (j >= 4), matching 32-bit
// words of an int8 row of x.
__device__ __forceinline__ uint32_t crumbs_minus_one(uint32_t c) {
  // Per byte, c <= 2: 0x7f + c never carries into the next byte, and flipping bit 7
  // leaves c - 1 in two's complement (0x7f -> 0xff, 0x80 -> 0x00, 0x81 -> 0x01).
  return (c + 0x7f7f7f7fu) ^ 0x80808080u;
}
__device__ __forceinline__ void ternary_item_words(uint4 raw, int64_t i, uint32_t out[8]) {
  const int s0 = int(i & 1) * 4;
  const uint32_t words[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    out[j] = crumbs_minus_one((words[j] >> s0) & 0x03030303u);
    out[4 + j] = crumbs_minus_one((words[j] >> (s0 + 2)) & 0x03030303u);
  }
}

// Every thread of a block calls this once before any kernel reads the table (the
// caller's next __syncthreads publishes it).
__device__ __forceinline__ void fill_e2m1_table(float* table) {
  if (threadIdx.x < 16) table[threadIdx.x] = e2m1_value(threadIdx.x);
}

// W1.58A8 output from an exact int32 sum, rounded as the CPU kernel and
// pygen/quant/reference.py round it: float(acc) * x_scale * w_scale (+ bias), in order.
__device__ __forceinline__ float int8_output(int32_t acc, float x_scale, float w_scale, const float* bias,
                                             int64_t n) {
  const float y = mul_rn(mul_rn(float(acc), x_scale), w_scale);  // float(acc) is exact: |acc| < 2^24
  return bias ? add_rn(y, bias[n]) : y;
}

// Calls fn(std::integral_constant<QuantFormat, f>{}): kernels are compiled per format.
template <class Fn>
void visit_format(QuantFormat f, Fn&& fn) {
  switch (f) {
    case QuantFormat::kInt4:
      fn(std::integral_constant<QuantFormat, QuantFormat::kInt4>{});
      break;
    case QuantFormat::kMxfp4:
      fn(std::integral_constant<QuantFormat, QuantFormat::kMxfp4>{});
      break;
    case QuantFormat::kTernary:
      fn(std::integral_constant<QuantFormat, QuantFormat::kTernary>{});
      break;
  }
}

// Calls fn(T{}) for x's dtype (float, Half or BFloat16; float64 is not a matmul dtype).
template <class Fn>
void visit_x_dtype(DType dtype, Fn&& fn) {
  if (dtype == DType::kFloat16)
    fn(Half{});
  else if (dtype == DType::kBFloat16)
    fn(BFloat16{});
  else
    fn(float{});
}

// The type float32 x is rounded to before the products (p.compute): Half or BFloat16,
// or float for none (16-bit x, or float32 computed in float32). Calls fn(T{}, R{}) with
// T x's dtype, R that type.
template <class Fn>
void visit_x_rounding(DType dtype, DType compute, Fn&& fn) {
  visit_x_dtype(dtype, [&](auto t) {
    if constexpr (std::is_same_v<decltype(t), float>) {
      if (compute == DType::kBFloat16) return fn(t, BFloat16{});
      if (compute == DType::kFloat16) return fn(t, Half{});
    }
    fn(t, float{});
  });
}

// v rounded to R and back (R = float: v).
template <class R>
__device__ __forceinline__ float round_to(float v) {
  if constexpr (std::is_same_v<R, float>)
    return v;
  else
    return to_float(R::round(v));
}

// Tiled schedules: 64 x 64 output tiles, 64 elements of K per step.
constexpr int kTileM = 64, kTileN = 64, kTileK = 64;

// How K is split across blocks: `splits` slices of `kt_per` K steps each (the last
// may be shorter, none is empty).
struct SplitPlan {
  int64_t tiles_m, tiles_n, kt_per, splits;
};

// Splits K when there are fewer output tiles than ~3 blocks an SM (4 fit), into enough
// slices for that: a block waits for each K step's loads in turn (one step is
// prefetched), so a long K loop in few blocks is latency bound, far below the memory
// bandwidth. Capped where the float32 partials (splits * M * N * 4 bytes, written and
// read back) reach twice the packed weight (N * K / 2 bytes).
inline SplitPlan plan_splits(int64_t M, int64_t N, int64_t K) {  // M, N > 0
  int device = 0, sms = 132;
  if (cudaGetDevice(&device) == cudaSuccess)
    cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  const int64_t tiles_m = (M + kTileM - 1) / kTileM, tiles_n = (N + kTileN - 1) / kTileN;
  const int64_t ktiles = (K + kTileK - 1) / kTileK, tiles = tiles_m * tiles_n;
  int64_t splits = 1;
  if (tiles < 3 * sms) splits = std::min((3 * sms + tiles - 1) / tiles, K / (4 * M));
  splits = std::max<int64_t>(1, std::min(splits, ktiles));
  const int64_t kt_per = std::max<int64_t>(1, (ktiles + splits - 1) / splits);
  return {tiles_m, tiles_n, kt_per, std::max<int64_t>(1, (ktiles + kt_per - 1) / kt_per)};
}

// The K steps [kt0, kt1) of this block's slice.
__device__ __forceinline__ void split_range(int64_t K, int64_t kt_per, int64_t* kt0, int64_t* kt1) {
  const int64_t ktiles = (K + kTileK - 1) / kTileK;
  *kt0 = int64_t(blockIdx.z) * kt_per;
  *kt1 = std::min(ktiles, *kt0 + kt_per);
}

}  // namespace quant_cuda
}  // namespace pygen
