// Fused (flash-style) attention with block-sparse layouts: parameters, the masking
// rules both devices share, and the CPU entry points.
//
// Queries and keys are cut into tiles of `block` rows. A tile pair is visited only when
// the layout (compressed rows of a block mask) lists it; inside a visited pair the
// element rules (causal, window) are applied on sequence positions. `perm`, when set,
// is the order the layout is written in (the Sparse Transformer's strided pattern is
// block sparse only on the transposed arrangement of the sequence): tile row i holds
// sequence position perm[i], for queries and keys alike.
#pragma once

#include <cstdint>

#include "csrc/common/dtype.h"
#include "csrc/common/hd.h"

namespace pygen {

struct AttentionShape {
  int64_t batch, heads_q, heads_kv, len_q, len_k, head_dim;
  float scale;     // applied to q.k
  bool causal;     // key position <= query position (top-left aligned, as SDPA)
  int64_t window;  // -1: none; else |query position - key position| <= window
  int64_t block;   // tile size in rows, the layout's block size
  // Block-sparse layout, or null for every tile pair: for layout head h (0 when one
  // layout is shared by all heads, else the query head) and query tile i, the key tiles
  // col_idx[row_ptr[h * q_tiles + i] .. row_ptr[h * q_tiles + i + 1]), ascending.
  const int32_t* row_ptr;
  const int32_t* col_idx;
  int64_t layout_heads;
  const int64_t* perm;  // [len_q == len_k] or null (identity)
  int64_t layout_nnz;   // col_idx's length
};

// Strides (in elements) of a [batch, heads, len, head_dim] tensor whose last dim is
// contiguous.
struct AttentionStrides {
  int64_t batch, head, row;
};

struct AttentionForwardParams {
  AttentionShape s;
  DType dtype;  // of q, k, v, out
  const void *q, *k, *v;
  AttentionStrides q_st, k_st, v_st;
  void* out;  // [batch, heads_q, len_q, head_dim], contiguous
  // [batch, heads_q, len_q], float64 for float64 inputs, else float32: log-sum-exp of
  // the scaled scores, -inf for a row that sees no key
  void* lse;
};

struct AttentionBackwardParams {
  AttentionShape s;
  DType dtype;  // of q, k, v, out, grad_out and the gradients
  const void *q, *k, *v, *out, *grad_out;
  AttentionStrides q_st, k_st, v_st, out_st, grad_out_st;
  const void* lse;                 // as the forward wrote it
  const void* grad_lse;            // of lse's dtype and shape, or null (lse not used downstream)
  void *grad_q, *grad_k, *grad_v;  // contiguous, shaped as q, k, v
};

PYGEN_HD int64_t attention_tiles(int64_t len, int64_t block) { return (len + block - 1) / block; }

// Sequence position of tile-order row i of a sequence of `len` (perm is checked on the
// host for CPU tensors; on CUDA it is clamped, like the layout's indices).
PYGEN_HD int64_t attention_position(const int64_t* perm, int64_t len, int64_t i) {
  if (!perm) return i;
  const int64_t p = perm[i];
  return p < 0 ? 0 : p >= len ? len - 1 : p;
}

// Whether a query at position pq may see a key at position pk under the element rules.
PYGEN_HD bool attention_visible(const AttentionShape& s, int64_t pq, int64_t pk) {
  const int64_t d = pq - pk;
  return (!s.causal || d >= 0) && (s.window < 0 || (d <= s.window && -d <= s.window));
}

// How a tile pair is treated, from the range of positions of its queries and keys.
enum class TileMask { kHidden, kFull, kPartial };
PYGEN_HD TileMask attention_tile_mask(const AttentionShape& s, int64_t q_min, int64_t q_max, int64_t k_min,
                                      int64_t k_max) {
  if (s.causal && k_min > q_max) return TileMask::kHidden;
  if (s.window >= 0 && (q_min - k_max > s.window || k_min - q_max > s.window)) return TileMask::kHidden;
  const bool causal_ok = !s.causal || k_max <= q_min;
  const bool window_ok = s.window < 0 || (q_max - k_min <= s.window && k_max - q_min <= s.window);
  return causal_ok && window_ok ? TileMask::kFull : TileMask::kPartial;
}

// The tiles one row of a compressed layout lists: key tiles of a query tile, or (on the
// transposed layout the CUDA backward uses) query tiles of a key tile; every one of
// `tiles` when idx is null. Offsets and indices are clamped into range: the CUDA
// bindings do not read the layout on the host, so an unchecked layout can give a wrong
// answer but never an access out of bounds.
struct AttentionTileList {
  const int32_t* idx;
  int64_t begin, end, tiles;

  PYGEN_HD int64_t size() const { return end - begin; }
  PYGEN_HD int64_t tile(int64_t n) const {
    if (!idx) return n;
    const int64_t t = idx[begin + n];
    return t < 0 ? 0 : t >= tiles ? tiles - 1 : t;
  }
  // Element f of the row's tiles laid end to end in blocks of `block` rows, in tile
  // order (may be >= the sequence length in the last, ragged tile).
  PYGEN_HD int64_t element(int64_t f, int64_t block) const { return tile(f / block) * block + f % block; }
};

PYGEN_HD AttentionTileList attention_tile_list(const int32_t* ptr, const int32_t* idx, int64_t nnz,
                                               int64_t row, int64_t tiles) {
  if (!ptr) return {nullptr, 0, tiles, tiles};
  const auto clamp = [nnz](int64_t x) { return x < 0 ? int64_t(0) : x > nnz ? nnz : x; };
  const int64_t begin = clamp(ptr[row]), end = clamp(ptr[row + 1]);
  return {idx, begin, end < begin ? begin : end, tiles};
}

// Which layout head a query head reads: the one shared layout, or its own.
PYGEN_HD int64_t attention_layout_head(const AttentionShape& s, int64_t head) {
  return s.layout_heads == 1 ? 0 : head;
}

// The key tiles query tile i of query head `head` visits.
PYGEN_HD AttentionTileList attention_key_tiles(const AttentionShape& s, int64_t head, int64_t i) {
  const int64_t k_tiles = attention_tiles(s.len_k, s.block);
  const int64_t row = attention_layout_head(s, head) * attention_tiles(s.len_q, s.block) + i;
  return attention_tile_list(s.row_ptr, s.col_idx, s.layout_nnz, row, k_tiles);
}

void attention_forward_cpu(const AttentionForwardParams& p);
void attention_backward_cpu(const AttentionBackwardParams& p);

}  // namespace pygen
