// Device pieces of the sample_categorical kernels (categorical.cu): a row's scan, its
// cuts, its chunk sums and the inversion, for a row held by one thread block or spread
// over several. Every reduction has a shape that does not depend on that spread, and
// the chunk sums and the inversion follow the CPU kernel's order of additions
// (csrc/sampling/categorical_kernel.cpp), so the token is the CPU's, bit for bit, except
// where the CUDA top-k / top-p cuts are taken in another order (see sample_row_block).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "csrc/sampling/categorical.h"
#include "cuda/sampling/reduce.cuh"
#include "cuda/sampling/status.cuh"

namespace pygen {
namespace categorical_cuda {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr unsigned kFullMask = 0xffffffffu;
// Chunk sums staged in shared memory at a time by the inversion; also holds one chunk's
// weights.
constexpr int kSumTile = 1024;
static_assert(kSumTile >= kCategoricalChunk, "a chunk's weights must fit the tile");
// float_order_key of +inf and of -inf: keys above the first or below the second are NaN.
constexpr uint32_t kKeyPlusInf = 0xff800000u, kKeyMinusInf = 0x007fffffu;

// The scan of a part of a row: the largest and the smallest order key, and the first
// index holding the largest. -0 is keyed as +0, so equal keys mean equal floats and
// `first` is the first category equal to the maximum, as the CPU's greedy scan finds it
// (the sign of a zero maximum changes nothing downstream). The identity is no_scan().
struct RowScan {
  int64_t first;
  uint32_t key_max, key_min;
};
__device__ __forceinline__ RowScan no_scan() { return {INT64_MAX, 0u, ~0u}; }

__device__ __forceinline__ uint32_t scan_key(float x) {
  const uint32_t k = float_order_key(x);
  return k == 0x7fffffffu ? 0x80000000u : k;
}

// Commutative and associative: any order of merges gives the same scan.
__device__ __forceinline__ RowScan merge(const RowScan& a, const RowScan& b) {
  const bool take_b = b.key_max > a.key_max || (b.key_max == a.key_max && b.first < a.first);
  return {take_b ? b.first : a.first, take_b ? b.key_max : a.key_max,
          a.key_min < b.key_min ? a.key_min : b.key_min};
}

// Everything a block keeps in shared memory (one struct, so kernels declare it once).
struct RowShared {
  RowScan warp_scan[kWarps];
  double warp_sum[kWarps];
  unsigned long long count[256];  // top-k's radix histogram
  double mass[256];               // top-p's
  uint32_t prefix;
  unsigned long long needed_count;
  double needed_mass;
  double tile[kSumTile];
  int64_t chunk;
  int found;
  int last;
};

// The merge of every thread's scan; all threads of the block call it and get it.
// `warp_scan`: kWarps slots of shared memory.
__device__ inline RowScan block_merge(RowScan s, RowScan* warp_scan) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const RowScan other{__shfl_xor_sync(kFullMask, s.first, o), __shfl_xor_sync(kFullMask, s.key_max, o),
                        __shfl_xor_sync(kFullMask, s.key_min, o)};
    s = merge(s, other);
  }
  if (threadIdx.x % 32 == 0) warp_scan[threadIdx.x / 32] = s;
  __syncthreads();
  s = warp_scan[0];
  for (int w = 1; w < kWarps; ++w) s = merge(s, warp_scan[w]);
  __syncthreads();  // warp_scan may be reused
  return s;
}

// This thread's scan of its categories of [begin, end): four loads in flight, indices
// rising along the thread, so the strict > keeps its first maximum.
template <class T>
__device__ RowScan thread_scan(const T* __restrict__ row, int64_t begin, int64_t end) {
  RowScan s = no_scan();
  const auto take = [&](int64_t i, float x) {
    const uint32_t k = scan_key(x);
    if (k > s.key_max) {
      s.key_max = k;
      s.first = i;
    }
    s.key_min = k < s.key_min ? k : s.key_min;
  };
  int64_t i = begin + threadIdx.x;
  for (; i + 3 * kThreads < end; i += 4 * kThreads) {
    const float x0 = to_float(row[i]), x1 = to_float(row[i + kThreads]);
    const float x2 = to_float(row[i + 2 * kThreads]), x3 = to_float(row[i + 3 * kThreads]);
    take(i, x0);
    take(i + kThreads, x1);
    take(i + 2 * kThreads, x2);
    take(i + 3 * kThreads, x3);
  }
  for (; i < end; i += kThreads) take(i, to_float(row[i]));
  return s;
}

// A row's sampling parameters after its scan; w_min (top-p) is 0 until its cut.
struct RowCut {
  float inv_t, y_max, y_min, w_min;
};

template <class T>
__device__ __forceinline__ double weight_at(const T* __restrict__ row, int64_t i, const RowCut& c) {
  return categorical_weight(mul_rn(to_float(row[i]), c.inv_t), c.y_max, c.y_min, c.w_min);
}

// Thread 0 records row r's status, and with `device_assert` fails on a bad one.
__device__ inline void set_status(const CategoricalParams& p, int64_t r, int32_t status, bool device_assert) {
  if (threadIdx.x != 0) return;
  p.status[r] = status;
  if (device_assert && status != kCategoricalOk)
    fail_row("sample_categorical", categorical_status_message(status), r, -1);
}

// The row's decisions from its whole scan, the same in every block holding a part of it
// (all threads call it, with the same scan). False when the row is done: a bad row, or a
// greedy one; then the `writer` block recorded its status (and its token). True with the
// cut to sample from otherwise.
__device__ inline bool row_cut(const CategoricalParams& p, int64_t r, const RowScan& scan, bool writer,
                               bool device_assert, RowCut* cut) {
  const bool bad = scan.key_max >= kKeyPlusInf || scan.key_min < kKeyMinusInf;
  const float x_max = float_from_order_key(scan.key_max);
  if (bad || x_max == -INFINITY) {
    if (writer) set_status(p, r, bad ? kCategoricalBadLogit : kCategoricalNoSupport, device_assert);
    return false;
  }
  const float temperature = categorical_temperature(x_max, p.temperature[r]);
  if (temperature == 0) {  // greedy: the first maximum, with probability 1
    if (writer && threadIdx.x == 0) {
      p.token[r] = scan.first;
      p.logprob[r] = 0.0f;
      p.status[r] = kCategoricalOk;
    }
    return false;
  }
  cut->inv_t = 1.0f / temperature;
  cut->y_max = mul_rn(x_max, cut->inv_t);
  cut->y_min = categorical_min_p_cut(cut->y_max, p.min_p[r]);
  cut->w_min = 0.0f;
  return true;
}

// The float64 sum of the weights of [begin, end), by one whole warp (a warp-uniform
// range), added as the CPU's chunk_sum adds them: 16 lane sums over groups of 16
// categories (lane L takes categories 16 j + L in order: this warp's lanes L and L + 16
// of each group of 32), the lane sums in lane order, then the last partial group in order.
// Adding the +0 weights of missing categories leaves a sum of non-negative weights
// unchanged, so the shuffles need no branches. Every lane returns the sum.
template <class T>
__device__ double warp_chunk_sum(const T* __restrict__ row, int64_t begin, int64_t end, const RowCut& c) {
  const int lane = threadIdx.x % 32;
  const int64_t grouped = (end - begin) / 16 * 16;
  double lane_sum = 0;
#pragma unroll 8
  for (int64_t j = 0; j < grouped; j += 32) {
    const double w = j + lane < grouped ? weight_at(row, begin + j + lane, c) : 0.0;
    const double upper = __shfl_down_sync(kFullMask, w, 16);
    lane_sum = lane_sum + w + upper;
  }
  double s = 0;
  for (int l = 0; l < 16; ++l) s += __shfl_sync(kFullMask, lane_sum, l);
  const int tail = int(end - begin - grouped);  // < 16, warp-uniform
  const double w_tail = lane < tail ? weight_at(row, begin + grouped + lane, c) : 0.0;
  for (int l = 0; l < tail; ++l) s += __shfl_sync(kFullMask, w_tail, l);
  return s;
}

// Chunks [c0, c1) of a row: each warp sums whole chunks into sums[c].
template <class T>
__device__ void block_chunk_sums(const T* __restrict__ row, int64_t vocab, int64_t c0, int64_t c1,
                                 const RowCut& cut, double* sums) {
  for (int64_t c = c0 + threadIdx.x / 32; c < c1; c += kWarps) {
    const int64_t begin = c * kCategoricalChunk;
    const int64_t end = begin + kCategoricalChunk < vocab ? begin + kCategoricalChunk : vocab;
    const double s = warp_chunk_sum(row, begin, end, cut);
    if (threadIdx.x % 32 == 0) sums[c] = s;
  }
}

// Copies sums[0, n) (n <= kSumTile) into sh.tile, by the whole block; between barriers,
// so the previous tile has been read. Loads bypass L1: other blocks may have written
// the sums in this kernel.
__device__ inline void stage_tile(const double* sums, int n, RowShared& sh) {
  __syncthreads();
  for (int i = threadIdx.x; i < n; i += kThreads) sh.tile[i] = __ldcg(sums + i);
  __syncthreads();
}

// The inversion of categorical_invert (csrc/sampling/categorical.h), with the same
// additions in the same order, given every chunk's sum: the total in chunk order, the
// chunk where the running sum passes u * total, then the category in it. The block
// stages the sums and the chunk's weights in shared memory; thread 0 adds them, eight
// loads ahead, and records the row's token, log-probability and status.
template <class T>
__device__ void block_invert(const CategoricalParams& p, int64_t r, const T* __restrict__ row,
                             const double* sums, const RowCut& cut, RowShared& sh) {
  const int64_t n = categorical_chunks(p.vocab);
  const bool lead = threadIdx.x == 0;
  double total = 0;
  for (int64_t base = 0; base < n; base += kSumTile) {
    const int m = int(n - base < kSumTile ? n - base : kSumTile);
    stage_tile(sums + base, m, sh);
    if (lead) {
#pragma unroll 8
      for (int i = 0; i < m; ++i) total += sh.tile[i];
    }
  }
  const double target = lead ? categorical_uniform(uint64_t(p.seed[r]), p.offset, uint64_t(r)) * total : 0.0;

  // The chunk: `c` and `acc` advance as categorical_invert's first loop does, until
  // its condition fails (at the last chunk at the latest: found is set in the last tile).
  double acc = 0;
  int64_t c = 0;
  if (lead) sh.found = 0;
  for (int64_t base = 0; base < n; base += kSumTile) {
    const int m = int(n - base < kSumTile ? n - base : kSumTile);
    stage_tile(sums + base, m, sh);
    if (lead) {
      bool found = false;
      for (int i0 = 0; i0 < m && !found; i0 += 8) {
        double v[8];
#pragma unroll
        for (int j = 0; j < 8; ++j) v[j] = i0 + j < m ? sh.tile[i0 + j] : 0.0;
#pragma unroll
        for (int j = 0; j < 8; ++j) {
          if (found || i0 + j >= m) continue;
          if (c + 1 < n && (v[j] == 0 || acc + v[j] <= target)) {
            acc += v[j];
            ++c;
          } else {
            found = true;
          }
        }
      }
      sh.found = found;
    }
    __syncthreads();
    if (sh.found) break;
  }
  if (lead) {
    while (__ldcg(sums + c) == 0) acc -= __ldcg(sums + --c);
    sh.chunk = c;
  }
  __syncthreads();
  c = sh.chunk;

  // The category: the chunk's weights, then categorical_invert's second loop.
  const int64_t begin = c * kCategoricalChunk;
  const int len = int(p.vocab - begin < kCategoricalChunk ? p.vocab - begin : kCategoricalChunk);
  for (int i = threadIdx.x; i < len; i += kThreads) sh.tile[i] = weight_at(row, begin + i, cut);
  __syncthreads();
  if (!lead) return;
  int64_t token = -1;
  bool found = false;
  for (int i0 = 0; i0 < len && !found; i0 += 8) {
    double w[8];
#pragma unroll
    for (int j = 0; j < 8; ++j) w[j] = i0 + j < len ? sh.tile[i0 + j] : 0.0;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      if (found || w[j] == 0) continue;  // the padding past len weighs 0
      token = begin + i0 + j;
      if (acc + w[j] > target)
        found = true;
      else
        acc += w[j];
    }
  }
  const float y_token = mul_rn(to_float(row[token]), cut.inv_t);
  p.token[r] = token;
  p.logprob[r] = categorical_logprob(y_token, cut.y_max, total);
  p.status[r] = kCategoricalOk;
}

// A block-wide radix selection (4 passes of 8 bits) of the threshold key: `key(i)`
// gives category i's key and whether it is a candidate, `amount(i)` what it counts
// (1, or its mass); `needed` is what must lie at or above the threshold. All threads
// call it; they get the same key back.
template <class H, class Key, class Amount>
__device__ uint32_t block_radix_select(int64_t V, H needed, Key key, Amount amount, H* hist,
                                       uint32_t* s_prefix, H* s_needed) {
  uint32_t prefix = 0, mask = 0;
  if (threadIdx.x == 0) *s_needed = needed;
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int b = threadIdx.x; b < 256; b += kThreads) hist[b] = 0;
    __syncthreads();
    for (int64_t i = threadIdx.x; i < V; i += kThreads) {
      bool candidate;
      const uint32_t k = key(i, &candidate);
      if (candidate && (k & mask) == prefix) atomicAdd(&hist[(k >> shift) & 255u], amount(i));
    }
    __syncthreads();
    if (threadIdx.x == 0) *s_prefix = prefix | (radix_select_digit(hist, s_needed) << shift);
    __syncthreads();
    prefix = *s_prefix;
    mask |= 255u << shift;
    __syncthreads();
  }
  return prefix;
}

// A row sampled by one block from its cut on: top-k and top-p (which need the whole
// row), every chunk's sum into `sums`, the inversion. Top-k and top-p select their
// thresholds in another order than the CPU (top-p's masses are added atomically), so
// with them a draw within ~1e-16 of a category boundary may differ between the devices.
template <class T>
__device__ void sample_row_block(const CategoricalParams& p, int64_t r, const T* __restrict__ row, RowCut cut,
                                 double* sums, RowShared& sh) {
  const int64_t V = p.vocab;
  if (p.top_k[r] < V) {
    const uint32_t k = block_radix_select<unsigned long long>(
        V, (unsigned long long)p.top_k[r],
        [&](int64_t i, bool* candidate) {
          *candidate = true;
          return float_order_key(mul_rn(to_float(row[i]), cut.inv_t));
        },
        [](int64_t) { return 1ull; }, sh.count, &sh.prefix, &sh.needed_count);
    cut.y_min = fmaxf(cut.y_min, float_from_order_key(k));
  }
  if (p.top_p[r] < 1) {
    double kept = 0;
    for (int64_t i = threadIdx.x; i < V; i += kThreads) kept += weight_at(row, i, cut);
    kept = warp_sum(kept);
    if (threadIdx.x % 32 == 0) sh.warp_sum[threadIdx.x / 32] = kept;
    __syncthreads();
    kept = 0;
    for (int w = 0; w < kWarps; ++w) kept += sh.warp_sum[w];
    const uint32_t bits = block_radix_select<double>(
        V, double(p.top_p[r]) * kept,
        [&](int64_t i, bool* candidate) {
          const uint32_t b = float_bits(float(weight_at(row, i, cut)));
          *candidate = b != 0;
          return b;
        },
        [&](int64_t i) { return weight_at(row, i, cut); }, sh.mass, &sh.prefix, &sh.needed_mass);
    cut.w_min = bits_float(bits);
  }
  block_chunk_sums(row, V, 0, categorical_chunks(V), cut, sums);
  block_invert(p, r, row, sums, cut, sh);
}

}  // namespace categorical_cuda
}  // namespace pygen
