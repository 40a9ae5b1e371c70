// What the CPU forward and backward of attention share: row loads and stores in the
// compute type, tile positions for the mask rules, the scores of a tile pair, the
// softmax row helpers, and K^T / V of every (batch, kv head) packed once into compute-type
// tiles (K transposed, so every tile product reads B row-major). Include it only from
// kernel sources compiled per ISA (PYGEN_CPU_NS).
#pragma once

#include <algorithm>
#include <cmath>
#include <memory>
#include <type_traits>
#include <vector>

#include "csrc/attention/attention.h"
#include "csrc/common/math.h"
#include "csrc/common/parallel_for.h"
#include "csrc/common/tile_gemm_cpu.h"

namespace pygen::PYGEN_CPU_NS::attention_cpu {

constexpr int kLanes = 16;  // tile sizes are multiples of 16, so rows split into lanes evenly

template <class A>
inline __attribute__((always_inline)) A exp_nonpos(A x) {
  if constexpr (std::is_same_v<A, double>)
    return std::exp(x);
  else
    return exp_nonpos_f32(x);
}

template <class T, class A>
void load_row(const T* src, int64_t n, A scale, A* dst) {
  for (int64_t d = 0; d < n; ++d) {
    if constexpr (std::is_same_v<T, double>)
      dst[d] = src[d] * scale;
    else
      dst[d] = A(to_float(src[d])) * scale;
  }
}
template <class A, class T>
void store_row(const A* src, int64_t n, A scale, T* dst) {
  for (int64_t d = 0; d < n; ++d) {
    if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>)
      dst[d] = T(src[d] * scale);
    else
      dst[d] = T::round(float(src[d] * scale));
  }
}

// dst[0:n] = src[0:n], n a multiple of kLanes: inline vector moves, where a library
// call per short row (K^T tile rows of 32 floats) would cost more than the copy.
template <class A>
inline void copy_lanes(const A* src, int64_t n, A* dst) {
  if constexpr (std::is_same_v<A, float>) {
    for (int64_t i = 0; i < n; i += kVecF) vec_store(dst + i, vec_load(src + i));
  } else {
    std::copy(src, src + n, dst);
  }
}

// The tile a task handles: task n of `count` takes 0, count-1, 1, count-2, ... . Under a
// causal mask a tile's work grows (query tiles) or shrinks (key tiles) with its index, and
// parallel_for hands each thread a contiguous run of tasks: this order gives every run
// about the same work.
inline int64_t zigzag(int64_t n, int64_t count) { return n % 2 ? count - 1 - n / 2 : n / 2; }

// Sequence positions of tile rows and the range each tile covers, for the mask rules.
struct Positions {
  const int64_t* perm;
  int64_t len, block;
  std::vector<int64_t> lo, hi;
  Positions(const int64_t* perm_, int64_t len_, int64_t block_) : perm(perm_), len(len_), block(block_) {
    const int64_t tiles = attention_tiles(len, block);
    lo.assign(tiles, 0);
    hi.assign(tiles, 0);
    for (int64_t t = 0; t < tiles; ++t) {
      lo[t] = hi[t] = at(t * block);
      for (int64_t i = t * block; i < std::min(len, (t + 1) * block); ++i) {
        lo[t] = std::min(lo[t], at(i));
        hi[t] = std::max(hi[t], at(i));
      }
    }
  }
  int64_t at(int64_t i) const { return attention_position(perm, len, i); }
};

// Scores (row stride ld) of keys the element rules hide, and of the padding past
// len_k, become -inf, for `rows` queries from tile row q0 and one key tile from k0.
template <class A>
void mask_scores(const AttentionShape& s, const Positions& pq, const Positions& pk, int64_t q0, int64_t rows,
                 int64_t k0, int64_t cols, A* S, int64_t ld) {
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t q_pos = pq.at(q0 + r);
    A* row = S + r * ld;
    for (int64_t c = 0; c < s.block; ++c)
      if (c >= cols || !attention_visible(s, q_pos, pk.at(k0 + c))) row[c] = -A(INFINITY);
  }
}

template <class A>
A row_max(const A* x, int64_t n) {
  A lane[kLanes];
  std::fill(lane, lane + kLanes, -A(INFINITY));
  for (int64_t c = 0; c < n; c += kLanes)
    for (int l = 0; l < kLanes; ++l) lane[l] = std::max(lane[l], x[c + l]);
  return *std::max_element(lane, lane + kLanes);
}

// x <- exp(x - m) in place; returns the sum.
template <class A>
A exp_row(A* x, int64_t n, A m) {
  A lane[kLanes] = {};
  for (int64_t c = 0; c < n; c += kLanes)
    for (int l = 0; l < kLanes; ++l) {
      const A e = exp_nonpos(x[c + l] - m);
      x[c + l] = e;
      lane[l] += e;
    }
  A sum = 0;
  for (A v : lane) sum += v;
  return sum;
}

// K^T and V (or V^T) of every (batch, kv head) in the compute type, padded with zeros to
// whole tiles and stored tile by tile: tile t of a transposed operand is [head_dim][block].
// The buffers are left uninitialized by the allocation (packing writes every element),
// so a call pays one pass over them, not two.
template <class A>
struct PackedKV {
  int64_t head_dim, block, tiles;
  std::unique_ptr<A[]> kt, v;

  int64_t head_size() const { return tiles * block * head_dim; }
  const A* kt_tile(int64_t bh, int64_t t) const { return kt.get() + bh * head_size() + t * block * head_dim; }
  const A* v_tile(int64_t bh, int64_t t) const { return v.get() + bh * head_size() + t * block * head_dim; }
};

template <class T, class A>
void pack_head(const AttentionShape& s, const Positions& pk, const T* src, int64_t row_stride, bool transpose,
               A* dst) {
  const int64_t D = s.head_dim, bs = s.block;
  std::vector<A> row(D);
  const int64_t tiles = attention_tiles(s.len_k, bs);
  if (tiles > 0) std::fill(dst + (tiles - 1) * bs * D, dst + tiles * bs * D, A(0));  // the padding
  for (int64_t j = 0; j < s.len_k; ++j) {
    load_row(src + pk.at(j) * row_stride, D, A(1), row.data());
    A* tile = dst + (j / bs) * bs * D;
    const int64_t c = j % bs;
    if (transpose)
      for (int64_t d = 0; d < D; ++d) tile[d * bs + c] = row[d];
    else
      std::copy(row.begin(), row.end(), tile + c * D);
  }
}

template <class T, class A>
void pack_kv(const AttentionShape& s, const Positions& pk, const T* k, AttentionStrides ks, const T* v,
             AttentionStrides vs, bool v_transposed, PackedKV<A>& out) {
  out.head_dim = s.head_dim;
  out.block = s.block;
  out.tiles = attention_tiles(s.len_k, s.block);
  const int64_t heads = s.batch * s.heads_kv;
  out.kt.reset(new A[heads * out.head_size()]);
  out.v.reset(new A[heads * out.head_size()]);
  parallel_for(0, heads, 1, [&](int64_t begin, int64_t end) {
    for (int64_t bh = begin; bh < end; ++bh) {
      const int64_t b = bh / s.heads_kv, h = bh % s.heads_kv;
      pack_head(s, pk, k + b * ks.batch + h * ks.head, ks.row, true, out.kt.get() + bh * out.head_size());
      pack_head(s, pk, v + b * vs.batch + h * vs.head, vs.row, v_transposed,
                out.v.get() + bh * out.head_size());
    }
  });
}

// Positions of the tiles, K^T and V packed once, and the scores of one tile pair.
template <class A>
struct Tiles {
  Positions pq, pk;
  PackedKV<A> kv;
  int64_t q_tiles, k_tiles, group;

  template <class T>
  Tiles(const AttentionShape& s, const T* k, AttentionStrides ks, const T* v, AttentionStrides vs,
        bool v_transposed)
      : pq(s.perm, s.len_q, s.block),
        pk(s.perm, s.len_k, s.block),
        q_tiles(attention_tiles(s.len_q, s.block)),
        k_tiles(attention_tiles(s.len_k, s.block)),
        group(s.heads_q / s.heads_kv) {
    pack_kv(s, pk, k, ks, v, vs, v_transposed, kv);
  }

  TileMask mask(const AttentionShape& s, int64_t i, int64_t j) const {
    return attention_tile_mask(s, pq.lo[i], pq.hi[i], pk.lo[j], pk.hi[j]);
  }

  // S = (scale q) k^T for query tile i (`rows` rows of qs) and key tile j of kv head
  // bkv, with hidden scores at -inf; false, and S untouched, if the pair is all hidden.
  bool scores(const AttentionShape& s, int64_t bkv, int64_t i, int64_t j, int64_t rows, const A* qs,
              A* S) const {
    const int64_t bs = s.block, cols = std::min(bs, s.len_k - j * bs);
    const TileMask tm = mask(s, i, j);
    if (tm == TileMask::kHidden) return false;
    tile_gemm(rows, bs, s.head_dim, StridedF<A>{qs, s.head_dim, 1}, kv.kt_tile(bkv, j), bs, S, bs, false);
    if (tm == TileMask::kPartial || cols < bs) mask_scores(s, pq, pk, i * bs, rows, j * bs, cols, S, bs);
    return true;
  }
};

}  // namespace pygen::PYGEN_CPU_NS::attention_cpu
