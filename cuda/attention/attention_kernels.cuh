// Flash attention kernels (FlashAttention-2 schedule) on block-sparse layouts; included by
// one .cu per (head dim, dtype) under instances/, which instantiates the launchers.
//
// Tiling. A thread block owns a tile of rows (queries in the forward and the dQ pass,
// keys in the dK/dV pass): 16 rows per warp, up to Config::kRows, fewer when the
// layout's block is smaller (a block's rows share one layout row, so the owned tile must
// not straddle two). It walks the other side's tiles that the layout lists, laid end to
// end in kBn-row steps (a step gathers several small layout blocks, or is part of a
// large one), copying each step's rows to shared memory, zero-filled past the sequence.
// Each warp multiplies its 16 rows with the step's kBn rows on tensor cores
// (mma.m16n8k16, cuda/attention/mma.cuh) into float32 accumulators and keeps its
// running softmax and outputs in registers; scores never reach memory.
//
//   forward   O = softmax(scale Q K^T) V with the online softmax; writes O and lse.
//   backward  pre-pass: delta = rowsum(dO * O) - dlse, one warp per query row.
//             dQ pass (query tiles, walks the layout's rows):
//               P = exp(scale Q K^T - lse), dS = P (dO V^T - delta), dQ = scale dS K
//             dK/dV pass (key tiles, walks the transposed layout, every query head of
//             the kv head's group):
//               dV = P^T dO, dK = scale dS^T Q
//             Two passes rather than dQ by float32 atomics from the dK/dV pass: no
//             scratch of Lq x D floats, no shared-memory round trip of dS, and the
//             result is deterministic; the price is recomputing Q K^T and dO V^T once more
//             (7 tile products instead of 5).
// The gradient passes split D in chunks of kChunk columns across blocks to bound the
// registers that hold dQ (or dK and dV), recomputing the scores per chunk (D = 256, and
// D = 128 in float32).
// float32 runs the same code: its "mma" is the same 16x8x16 product on FMAs with the
// operands exchanged by warp shuffles (mma.cuh), so it is exact float32, never TF32.
// Element rules: a step whose rows all pass (attention_tile_mask) skips the mask, one
// all hidden is skipped; with a permuted layout every step is masked per element.
#pragma once

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "cuda/attention/attention.h"
#include "cuda/attention/mma.cuh"

namespace pygen::attention_cuda {

using namespace attention_mma;

template <int D, class T>
struct Config {
  static_assert(D % 32 == 0 && D <= 256, "head dims are padded to 32, 64, 128 or 256");
  static constexpr int kD = D;
  static constexpr bool kF32 = std::is_same_v<T, float>;
  // float32 doubles the shared tiles: halve the owned rows at D = 256 to stay in 164 KiB.
  static constexpr int kWarps = kF32 && D == 256 ? 2 : 4;
  static constexpr int kRows = 16 * kWarps;
  static constexpr int kBn = D <= 64 ? 64 : 32;
  // Gradient columns per block: float32 fragments take twice the registers.
  static constexpr int kChunk = D < (kF32 ? 64 : 128) ? D : (kF32 ? 64 : 128);
  static constexpr int kChunks = D / kChunk;
  // Row stride in shared memory: 8 elements past D puts the 8 rows a fragment load
  // touches on distinct banks.
  static constexpr int kStride = D + 8;
  static constexpr int kTileBytes = kStride * int(sizeof(T));
};

// Per-launch values the host works out once.
struct Launch {
  int64_t own_tiles;  // owned row tiles per (batch, head)
  int own_rows;       // rows per owned tile: kRows, or the layout's block if smaller
  float scale_log2;   // scale * log2(e): softmax in base 2
  bool vec;           // every row 16-byte aligned: copy rows by 16 bytes
};

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

// Copies rows pos[r] (r < n; -1: a zero row) of a [len, head_dim] matrix with rows
// `row_stride` apart to a shared tile, zero-padding columns [head_dim, D).
template <class C, class T>
__device__ __forceinline__ void load_rows(T* dst, int n, const T* src, int64_t row_stride, const int64_t* pos,
                                          int head_dim, bool vec) {
  constexpr int kVec = 16 / int(sizeof(T));  // divides 16, so never straddles head_dim
  constexpr int kChunksPerRow = C::kD / kVec;
  for (int i = threadIdx.x; i < n * kChunksPerRow; i += blockDim.x) {
    const int r = i / kChunksPerRow, c = (i % kChunksPerRow) * kVec;
    T* d = dst + r * C::kStride + c;
    const int64_t p = pos[r];
    if (p >= 0 && c < head_dim) {
      const T* s = src + p * row_stride + c;
      if (vec) {
        *reinterpret_cast<uint4*>(d) = *reinterpret_cast<const uint4*>(s);
      } else {
#pragma unroll
        for (int e = 0; e < kVec; ++e) d[e] = s[e];
      }
    } else {
      *reinterpret_cast<uint4*>(d) = make_uint4(0, 0, 0, 0);
    }
  }
}

// Position of element f of a tile list over a sequence of `len`, or -1 past its end.
__device__ __forceinline__ int64_t list_position(const AttentionShape& s, const AttentionTileList& list,
                                                 int64_t flat, int64_t f, int64_t len) {
  if (f >= flat) return -1;
  const int64_t i = list.element(f, s.block);
  return i >= 0 && i < len ? attention_position(s.perm, len, i) : -1;
}

// How the step [f0, f0 + n) of a list over a sequence of `len` meets the owned rows
// [lo, hi] (tile order): kHidden also when the step lies past the sequence. Elements are
// ascending in tile order, so the first bounds the step below and min(last, len - 1)
// above; bounds that are loose only make the answer more cautious.
__device__ __forceinline__ TileMask step_mask(const AttentionShape& s, const AttentionTileList& list,
                                              int64_t flat, int64_t f0, int n, int64_t len, int64_t lo,
                                              int64_t hi, bool own_is_query) {
  const int64_t first = list.element(f0, s.block);
  if (first >= len) return TileMask::kHidden;
  if (s.perm) return TileMask::kPartial;  // positions are not monotone in tile order
  const int64_t last = std::min(list.element(std::min<int64_t>(f0 + n, flat) - 1, s.block), len - 1);
  return own_is_query ? attention_tile_mask(s, lo, hi, first, last)
                      : attention_tile_mask(s, first, last, lo, hi);
}

// Sets the shared positions of the owned rows [r0, r0 + rows) (-1 past `rows`).
__device__ __forceinline__ void own_positions(const AttentionShape& s, int64_t* pos, int64_t r0, int rows,
                                              int n, int64_t len) {
  for (int r = threadIdx.x; r < n; r += blockDim.x)
    pos[r] = r < rows ? attention_position(s.perm, len, r0 + r) : -1;
}

// S = A B^T for one warp's 16 rows of `a` and the kBn rows of `b` (both shared, D wide).
template <class C, class T>
__device__ __forceinline__ void tile_scores(float (*sc)[4], const T* a, int a_row0, const T* b) {
  constexpr int kN = C::kBn / 8;
#pragma unroll
  for (int n = 0; n < kN; ++n) sc[n][0] = sc[n][1] = sc[n][2] = sc[n][3] = 0.f;
#pragma unroll
  for (int k = 0; k < C::kD / 16; ++k) {
    PairOf<T> af[4];
    load_a(af, a, C::kStride, a_row0, 16 * k);
#pragma unroll
    for (int n = 0; n < kN; ++n) {
      PairOf<T> bf[2];
      load_b_rows_n(bf, b, C::kStride, 8 * n, 16 * k);
      mma<T>(sc[n], af, bf);
    }
  }
}

// acc[:, c0 .. c0 + kCols) += P M[:, c0 ..) for the warp's P (float accumulators over kBn
// columns) and the kBn shared rows of M.
template <class C, class T, int kCols>
__device__ __forceinline__ void tile_accumulate(float (*acc)[4], const float (*p)[4], const T* m, int c0) {
#pragma unroll
  for (int kk = 0; kk < C::kBn / 16; ++kk) {
    PairOf<T> af[4];
    a_from_c<T>(af, p, kk);
#pragma unroll
    for (int n = 0; n < kCols / 8; ++n) {
      PairOf<T> bf[2];
      load_b_rows_k(bf, m, C::kStride, 16 * kk, c0 + 8 * n);
      mma<T>(acc[n], af, bf);
    }
  }
}

// Scales the scores to base 2 and hides keys: columns past the sequence (col_pos -1)
// always, the rest by the element rules when the step is partial. Row r of fragment
// element e is row_pos[row0 + g + 8 (e / 2)], column col_pos[8 n + 2 t + e % 2]; `swap`
// when rows are keys and columns queries.
template <class C>
__device__ __forceinline__ void mask_scores(float (*sc)[4], const AttentionShape& s, float scale_log2,
                                            const int64_t* row_pos, int row0, const int64_t* col_pos,
                                            bool partial, bool swap) {
  const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
#pragma unroll
  for (int n = 0; n < C::kBn / 8; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int64_t cp = col_pos[8 * n + 2 * t + (e & 1)];
      const int64_t rp = row_pos[row0 + g + 8 * (e >> 1)];
      const bool visible =
          cp >= 0 && (!partial || (swap ? attention_visible(s, cp, rp) : attention_visible(s, rp, cp)));
      sc[n][e] = visible ? sc[n][e] * scale_log2 : -INFINITY;
    }
}

template <int D, class T>
__global__ void __launch_bounds__(Config<D, T>::kRows * 2, 1)
    forward_kernel(AttentionForwardParams p, Launch L) {
  using C = Config<D, T>;
  constexpr int kN = C::kBn / 8;
  extern __shared__ __align__(16) unsigned char smem[];
  T* s_q = reinterpret_cast<T*>(smem);
  T* s_k = s_q + C::kRows * C::kStride;
  T* s_v = s_k + C::kBn * C::kStride;
  int64_t* s_kpos = reinterpret_cast<int64_t*>(s_v + C::kBn * C::kStride);
  int64_t* s_qpos = s_kpos + C::kBn;

  const AttentionShape& s = p.s;
  const int64_t tile = blockIdx.x % L.own_tiles, bh = blockIdx.x / L.own_tiles;
  const int64_t b = bh / s.heads_q, h = bh % s.heads_q, hkv = h / (s.heads_q / s.heads_kv);
  const int64_t q0 = tile * L.own_rows;
  const int rows = int(std::min<int64_t>(L.own_rows, s.len_q - q0));
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int head_dim = int(s.head_dim);
  const T* k = static_cast<const T*>(p.k) + b * p.k_st.batch + hkv * p.k_st.head;
  const T* v = static_cast<const T*>(p.v) + b * p.v_st.batch + hkv * p.v_st.head;

  own_positions(s, s_qpos, q0, rows, L.own_rows, s.len_q);
  __syncthreads();
  load_rows<C>(s_q, L.own_rows, static_cast<const T*>(p.q) + b * p.q_st.batch + h * p.q_st.head, p.q_st.row,
               s_qpos, head_dim, L.vec);

  const AttentionTileList list = attention_key_tiles(s, h, q0 / s.block);
  const int64_t flat = list.size() * s.block;
  float o[D / 8][4] = {}, m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
  for (int64_t f0 = 0; f0 < flat; f0 += C::kBn) {
    const TileMask tm = step_mask(s, list, flat, f0, C::kBn, s.len_k, q0, q0 + rows - 1, true);
    if (tm == TileMask::kHidden) continue;
    __syncthreads();  // the previous step's tiles are read
    for (int c = threadIdx.x; c < C::kBn; c += blockDim.x)
      s_kpos[c] = list_position(s, list, flat, f0 + c, s.len_k);
    __syncthreads();
    load_rows<C>(s_k, C::kBn, k, p.k_st.row, s_kpos, head_dim, L.vec);
    load_rows<C>(s_v, C::kBn, v, p.v_st.row, s_kpos, head_dim, L.vec);
    __syncthreads();
    if (16 * warp >= rows) continue;  // warp-uniform: this warp's rows are all padding

    float sc[kN][4];
    tile_scores<C>(sc, s_q, 16 * warp, s_k);
    mask_scores<C>(sc, s, L.scale_log2, s_qpos, 16 * warp, s_kpos, tm == TileMask::kPartial, false);
    // Online softmax; rows g (r = 0) and g + 8 (r = 1), whose 4 owners are lanes 4g .. 4g+3.
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      float mx = -INFINITY;
#pragma unroll
      for (int n = 0; n < kN; ++n) mx = fmaxf(mx, fmaxf(sc[n][2 * r], sc[n][2 * r + 1]));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      const float m_new = fmaxf(m[r], mx);
      const float m_use = m_new == -INFINITY ? 0.f : m_new;  // nothing visible yet: p = 0
      const float alpha = exp2f(m[r] - m_use);
      m[r] = m_new;
      float sum = 0.f;
#pragma unroll
      for (int n = 0; n < kN; ++n)
#pragma unroll
        for (int e = 2 * r; e < 2 * r + 2; ++e) {
          sc[n][e] = exp2f(sc[n][e] - m_use);
          sum += sc[n][e];
        }
      l[r] = l[r] * alpha + sum;  // this lane's partial sum; reduced over the 4 at the end
#pragma unroll
      for (int n = 0; n < D / 8; ++n) {
        o[n][2 * r] *= alpha;
        o[n][2 * r + 1] *= alpha;
      }
    }
    tile_accumulate<C, T, D>(o, sc, s_v, 0);
  }

  if (16 * warp >= rows) return;
  T* out = static_cast<T*>(p.out);
  float* lse = static_cast<float*>(p.lse);
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
    const int row = 16 * warp + g + 8 * r;
    if (row >= rows) continue;
    const int64_t at = bh * s.len_q + s_qpos[row];
    const float inv = l[r] > 0.f ? 1.f / l[r] : 0.f;
#pragma unroll
    for (int n = 0; n < D / 8; ++n) {
      const int col = 8 * n + 2 * t;
      if (col < head_dim)
        *reinterpret_cast<PairOf<T>*>(out + at * head_dim + col) =
            pack<T>(o[n][2 * r] * inv, o[n][2 * r + 1] * inv);
    }
    if (t == 0) lse[at] = l[r] > 0.f ? (m[r] + log2f(l[r])) * kLn2 : -INFINITY;
  }
}

// delta = rowsum(dO * O) - dlse for every query row, one warp each.
template <class T>
__global__ void delta_kernel(AttentionBackwardParams p, float* delta) {
  const AttentionShape& s = p.s;
  const int64_t row = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  if (row >= s.batch * s.heads_q * s.len_q) return;  // warp-uniform
  const int64_t i = row % s.len_q, bh = row / s.len_q, b = bh / s.heads_q, h = bh % s.heads_q;
  const T* o = static_cast<const T*>(p.out) + b * p.out_st.batch + h * p.out_st.head + i * p.out_st.row;
  const T* go = static_cast<const T*>(p.grad_out) + b * p.grad_out_st.batch + h * p.grad_out_st.head +
                i * p.grad_out_st.row;
  float dot = 0.f;
  for (int64_t d = threadIdx.x % 32; d < s.head_dim; d += 32) dot += to_float(o[d]) * to_float(go[d]);
#pragma unroll
  for (int w = 16; w > 0; w /= 2) dot += __shfl_xor_sync(0xffffffffu, dot, w);
  if (threadIdx.x % 32 == 0) delta[row] = p.grad_lse ? dot - static_cast<const float*>(p.grad_lse)[row] : dot;
}

// The saved lse in base 2, +inf for a row that saw no key (so its probabilities are 0).
__device__ __forceinline__ float lse_base2(float x) { return x == -INFINITY ? INFINITY : x * kLog2e; }

template <int D, class T>
__global__ void __launch_bounds__(Config<D, T>::kRows * 2, 1)
    grad_q_kernel(AttentionBackwardParams p, Launch L, const float* __restrict__ delta) {
  using C = Config<D, T>;
  constexpr int kN = C::kBn / 8;
  extern __shared__ __align__(16) unsigned char smem[];
  T* s_q = reinterpret_cast<T*>(smem);
  T* s_do = s_q + C::kRows * C::kStride;
  T* s_k = s_do + C::kRows * C::kStride;
  T* s_v = s_k + C::kBn * C::kStride;
  int64_t* s_kpos = reinterpret_cast<int64_t*>(s_v + C::kBn * C::kStride);
  int64_t* s_qpos = s_kpos + C::kBn;

  const AttentionShape& s = p.s;
  const int64_t tile = blockIdx.x % L.own_tiles, chunk = blockIdx.x / L.own_tiles % C::kChunks;
  const int64_t bh = blockIdx.x / L.own_tiles / C::kChunks;
  const int64_t b = bh / s.heads_q, h = bh % s.heads_q, hkv = h / (s.heads_q / s.heads_kv);
  const int64_t q0 = tile * L.own_rows;
  const int rows = int(std::min<int64_t>(L.own_rows, s.len_q - q0));
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int head_dim = int(s.head_dim), c0 = int(chunk) * C::kChunk;
  const T* k = static_cast<const T*>(p.k) + b * p.k_st.batch + hkv * p.k_st.head;
  const T* v = static_cast<const T*>(p.v) + b * p.v_st.batch + hkv * p.v_st.head;

  own_positions(s, s_qpos, q0, rows, L.own_rows, s.len_q);
  __syncthreads();
  load_rows<C>(s_q, L.own_rows, static_cast<const T*>(p.q) + b * p.q_st.batch + h * p.q_st.head, p.q_st.row,
               s_qpos, head_dim, L.vec);
  load_rows<C>(s_do, L.own_rows,
               static_cast<const T*>(p.grad_out) + b * p.grad_out_st.batch + h * p.grad_out_st.head,
               p.grad_out_st.row, s_qpos, head_dim, L.vec);
  float lse2[2], dl[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int row = 16 * warp + g + 8 * r;
    const int64_t at = bh * s.len_q + (row < rows ? attention_position(s.perm, s.len_q, q0 + row) : 0);
    lse2[r] = row < rows ? lse_base2(static_cast<const float*>(p.lse)[at]) : INFINITY;
    dl[r] = row < rows ? delta[at] : 0.f;
  }

  const AttentionTileList list = attention_key_tiles(s, h, q0 / s.block);
  const int64_t flat = list.size() * s.block;
  float dq[C::kChunk / 8][4] = {};
  for (int64_t f0 = 0; f0 < flat; f0 += C::kBn) {
    const TileMask tm = step_mask(s, list, flat, f0, C::kBn, s.len_k, q0, q0 + rows - 1, true);
    if (tm == TileMask::kHidden) continue;
    __syncthreads();
    for (int c = threadIdx.x; c < C::kBn; c += blockDim.x)
      s_kpos[c] = list_position(s, list, flat, f0 + c, s.len_k);
    __syncthreads();
    load_rows<C>(s_k, C::kBn, k, p.k_st.row, s_kpos, head_dim, L.vec);
    load_rows<C>(s_v, C::kBn, v, p.v_st.row, s_kpos, head_dim, L.vec);
    __syncthreads();
    if (16 * warp >= rows) continue;

    float pr[kN][4], ds[kN][4];
    tile_scores<C>(pr, s_q, 16 * warp, s_k);
    mask_scores<C>(pr, s, L.scale_log2, s_qpos, 16 * warp, s_kpos, tm == TileMask::kPartial, false);
    tile_scores<C>(ds, s_do, 16 * warp, s_v);  // dP = dO V^T
#pragma unroll
    for (int n = 0; n < kN; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        pr[n][e] = exp2f(pr[n][e] - lse2[e >> 1]);
        ds[n][e] = pr[n][e] * (ds[n][e] - dl[e >> 1]);
      }
    tile_accumulate<C, T, C::kChunk>(dq, ds, s_k, c0);
  }

  if (16 * warp >= rows) return;
  T* grad_q = static_cast<T*>(p.grad_q);
  const float scale = L.scale_log2 / kLog2e;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int row = 16 * warp + g + 8 * r;
    if (row >= rows) continue;
    const int64_t at = bh * s.len_q + s_qpos[row];
#pragma unroll
    for (int n = 0; n < C::kChunk / 8; ++n) {
      const int col = c0 + 8 * n + 2 * t;
      if (col < head_dim)
        *reinterpret_cast<PairOf<T>*>(grad_q + at * head_dim + col) =
            pack<T>(dq[n][2 * r] * scale, dq[n][2 * r + 1] * scale);
    }
  }
}

template <int D, class T>
__global__ void __launch_bounds__(Config<D, T>::kRows * 2, 1)
    grad_kv_kernel(AttentionBackwardParams p, Launch L, AttentionBackwardCudaArgs a) {
  using C = Config<D, T>;
  constexpr int kN = C::kBn / 8;
  extern __shared__ __align__(16) unsigned char smem[];
  T* s_k = reinterpret_cast<T*>(smem);
  T* s_v = s_k + C::kRows * C::kStride;
  T* s_q = s_v + C::kRows * C::kStride;
  T* s_do = s_q + C::kBn * C::kStride;
  int64_t* s_qpos = reinterpret_cast<int64_t*>(s_do + C::kBn * C::kStride);
  int64_t* s_kpos = s_qpos + C::kBn;
  float* s_lse = reinterpret_cast<float*>(s_kpos + C::kRows);
  float* s_delta = s_lse + C::kBn;

  const AttentionShape& s = p.s;
  const int64_t tile = blockIdx.x % L.own_tiles, chunk = blockIdx.x / L.own_tiles % C::kChunks;
  const int64_t bkv = blockIdx.x / L.own_tiles / C::kChunks;
  const int64_t b = bkv / s.heads_kv, hkv = bkv % s.heads_kv, group = s.heads_q / s.heads_kv;
  const int64_t k0 = tile * L.own_rows;
  const int rows = int(std::min<int64_t>(L.own_rows, s.len_k - k0));
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int head_dim = int(s.head_dim), c0 = int(chunk) * C::kChunk;
  const int64_t q_tiles = attention_tiles(s.len_q, s.block), k_tiles = attention_tiles(s.len_k, s.block);

  own_positions(s, s_kpos, k0, rows, L.own_rows, s.len_k);
  __syncthreads();
  load_rows<C>(s_k, L.own_rows, static_cast<const T*>(p.k) + b * p.k_st.batch + hkv * p.k_st.head, p.k_st.row,
               s_kpos, head_dim, L.vec);
  load_rows<C>(s_v, L.own_rows, static_cast<const T*>(p.v) + b * p.v_st.batch + hkv * p.v_st.head, p.v_st.row,
               s_kpos, head_dim, L.vec);

  float dk[C::kChunk / 8][4] = {}, dv[C::kChunk / 8][4] = {};
  for (int64_t h = hkv * group; h < (hkv + 1) * group; ++h) {
    const int64_t bh = b * s.heads_q + h;
    const AttentionTileList list = attention_tile_list(
        a.t_ptr, a.t_idx, s.layout_nnz, attention_layout_head(s, h) * k_tiles + k0 / s.block, q_tiles);
    const int64_t flat = list.size() * s.block;
    const T* q = static_cast<const T*>(p.q) + b * p.q_st.batch + h * p.q_st.head;
    const T* go = static_cast<const T*>(p.grad_out) + b * p.grad_out_st.batch + h * p.grad_out_st.head;
    for (int64_t f0 = 0; f0 < flat; f0 += C::kBn) {
      const TileMask tm = step_mask(s, list, flat, f0, C::kBn, s.len_q, k0, k0 + rows - 1, false);
      if (tm == TileMask::kHidden) continue;
      __syncthreads();
      for (int c = threadIdx.x; c < C::kBn; c += blockDim.x) {
        const int64_t pos = list_position(s, list, flat, f0 + c, s.len_q);
        s_qpos[c] = pos;
        s_lse[c] = pos >= 0 ? lse_base2(static_cast<const float*>(p.lse)[bh * s.len_q + pos]) : INFINITY;
        s_delta[c] = pos >= 0 ? a.delta[bh * s.len_q + pos] : 0.f;
      }
      __syncthreads();
      load_rows<C>(s_q, C::kBn, q, p.q_st.row, s_qpos, head_dim, L.vec);
      load_rows<C>(s_do, C::kBn, go, p.grad_out_st.row, s_qpos, head_dim, L.vec);
      __syncthreads();
      if (16 * warp >= rows) continue;

      // Transposed: rows are this warp's keys, columns the step's queries.
      float pr[kN][4], ds[kN][4];
      tile_scores<C>(pr, s_k, 16 * warp, s_q);
      mask_scores<C>(pr, s, L.scale_log2, s_kpos, 16 * warp, s_qpos, tm == TileMask::kPartial, true);
      tile_scores<C>(ds, s_v, 16 * warp, s_do);  // dP^T = V dO^T
#pragma unroll
      for (int n = 0; n < kN; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int col = 8 * n + 2 * t + (e & 1);
          pr[n][e] = exp2f(pr[n][e] - s_lse[col]);
          ds[n][e] = pr[n][e] * (ds[n][e] - s_delta[col]);
        }
      tile_accumulate<C, T, C::kChunk>(dv, pr, s_do, c0);
      tile_accumulate<C, T, C::kChunk>(dk, ds, s_q, c0);
    }
  }

  if (16 * warp >= rows) return;
  T* grad_k = static_cast<T*>(p.grad_k);
  T* grad_v = static_cast<T*>(p.grad_v);
  const float scale = L.scale_log2 / kLog2e;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int row = 16 * warp + g + 8 * r;
    if (row >= rows) continue;
    const int64_t at = bkv * s.len_k + s_kpos[row];
#pragma unroll
    for (int n = 0; n < C::kChunk / 8; ++n) {
      const int col = c0 + 8 * n + 2 * t;
      if (col >= head_dim) continue;
      *reinterpret_cast<PairOf<T>*>(grad_k + at * head_dim + col) =
          pack<T>(dk[n][2 * r] * scale, dk[n][2 * r + 1] * scale);
      *reinterpret_cast<PairOf<T>*>(grad_v + at * head_dim + col) = pack<T>(dv[n][2 * r], dv[n][2 * r + 1]);
    }
  }
}

// ---- launchers ----

template <class T>
bool aligned16(const void* ptr, const AttentionStrides& st) {
  const int64_t e = int64_t(sizeof(T));
  return reinterpret_cast<uintptr_t>(ptr) % 16 == 0 && (st.batch * e) % 16 == 0 && (st.head * e) % 16 == 0 &&
         (st.row * e) % 16 == 0;
}

template <int D, class T>
Launch make_launch(const AttentionShape& s, int64_t own_len, bool vec) {
  using C = Config<D, T>;
  Launch L;
  L.own_rows = s.row_ptr ? int(std::min<int64_t>(s.block, C::kRows)) : C::kRows;
  L.own_tiles = (own_len + L.own_rows - 1) / L.own_rows;
  L.scale_log2 = s.scale * kLog2e;
  L.vec = vec;
  return L;
}

// Opts the kernel in to `bytes` of dynamic shared memory and checks the grid fits.
template <class K>
cudaError_t prepare(K kernel, int bytes, int64_t blocks) {
  if (blocks > int64_t(0x7fffffff)) return cudaErrorInvalidConfiguration;
  int device = 0, limit = 0;
  cudaError_t e = cudaGetDevice(&device);
  if (e == cudaSuccess) e = cudaDeviceGetAttribute(&limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
  if (e != cudaSuccess) return e;
  if (bytes > limit) return cudaErrorInvalidConfiguration;
  return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
}

template <int D, class T>
cudaError_t launch_forward(const AttentionForwardParams& p, cudaStream_t stream) {
  using C = Config<D, T>;
  const AttentionShape& s = p.s;
  const bool vec = aligned16<T>(p.q, p.q_st) && aligned16<T>(p.k, p.k_st) && aligned16<T>(p.v, p.v_st);
  const Launch L = make_launch<D, T>(s, s.len_q, vec);
  const int64_t blocks = s.batch * s.heads_q * L.own_tiles;
  if (blocks == 0) return cudaSuccess;
  const int bytes = (C::kRows + 2 * C::kBn) * C::kTileBytes + (C::kBn + C::kRows) * 8;
  if (cudaError_t e = prepare(forward_kernel<D, T>, bytes, blocks); e != cudaSuccess) return e;
  forward_kernel<D, T><<<unsigned(blocks), L.own_rows * 2, bytes, stream>>>(p, L);
  return cudaGetLastError();
}

template <int D, class T>
cudaError_t launch_backward(const AttentionBackwardParams& p, const AttentionBackwardCudaArgs& a,
                            cudaStream_t stream) {
  using C = Config<D, T>;
  const AttentionShape& s = p.s;
  const int64_t q_rows = s.batch * s.heads_q * s.len_q;
  if (q_rows > 0) {
    constexpr int kThreads = 256;
    const int64_t blocks = (q_rows * 32 + kThreads - 1) / kThreads;
    if (blocks > int64_t(0x7fffffff)) return cudaErrorInvalidConfiguration;
    delta_kernel<T><<<unsigned(blocks), kThreads, 0, stream>>>(p, a.delta);
    if (cudaError_t e = cudaGetLastError(); e != cudaSuccess) return e;
  }
  const bool vec = aligned16<T>(p.q, p.q_st) && aligned16<T>(p.k, p.k_st) && aligned16<T>(p.v, p.v_st) &&
                   aligned16<T>(p.grad_out, p.grad_out_st);
  const int bytes = (2 * C::kRows + 2 * C::kBn) * C::kTileBytes + (C::kBn + C::kRows) * 8 + 2 * C::kBn * 4;

  const Launch Lq = make_launch<D, T>(s, s.len_q, vec);
  const int64_t q_blocks = s.batch * s.heads_q * C::kChunks * Lq.own_tiles;
  if (q_blocks > 0) {
    if (cudaError_t e = prepare(grad_q_kernel<D, T>, bytes, q_blocks); e != cudaSuccess) return e;
    grad_q_kernel<D, T><<<unsigned(q_blocks), Lq.own_rows * 2, bytes, stream>>>(p, Lq, a.delta);
    if (cudaError_t e = cudaGetLastError(); e != cudaSuccess) return e;
  }

  const Launch Lk = make_launch<D, T>(s, s.len_k, vec);
  const int64_t k_blocks = s.batch * s.heads_kv * C::kChunks * Lk.own_tiles;
  if (k_blocks == 0) return cudaSuccess;
  if (cudaError_t e = prepare(grad_kv_kernel<D, T>, bytes, k_blocks); e != cudaSuccess) return e;
  grad_kv_kernel<D, T><<<unsigned(k_blocks), Lk.own_rows * 2, bytes, stream>>>(p, Lk, a);
  return cudaGetLastError();
}

}  // namespace pygen::attention_cuda

// One (head dim, dtype) pair's launchers; instances/ has a .cu of each.
#define PYGEN_ATTENTION_INSTANTIATE(D, T)                                                     \
  namespace pygen::attention_cuda {                                                           \
  template cudaError_t launch_forward<D, T>(const AttentionForwardParams&, cudaStream_t);     \
  template cudaError_t launch_backward<D, T>(const AttentionBackwardParams&,                  \
                                             const AttentionBackwardCudaArgs&, cudaStream_t); \
  }
