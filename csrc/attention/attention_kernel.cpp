// CPU kernels of attention, compiled once per ISA (PYGEN_CPU_NS). Keys and values of
// each (batch, kv head) are first packed to compute-type tiles (K transposed, so every tile
// product reads B row-major); then the forward runs one query tile per task with an
// online softmax, and the backward one (batch, kv head) per task, recomputing the
// probabilities from the saved log-sum-exp, so memory stays O(len) per head.
#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "csrc/attention/attention.h"
#include "csrc/common/math.h"
#include "csrc/common/parallel_for.h"
#include "csrc/common/tile_gemm_cpu.h"

namespace pygen::PYGEN_CPU_NS {

namespace {

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

// Scores of keys the element rules hide, and of the padding past len_k, become -inf.
template <class A>
void mask_scores(const AttentionShape& s, const Positions& pq, const Positions& pk, int64_t q0, int64_t rows,
                 int64_t k0, int64_t cols, A* S) {
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t q_pos = pq.at(q0 + r);
    A* row = S + r * s.block;
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
template <class A>
struct PackedKV {
  int64_t head_dim, block, tiles;
  std::vector<A> kt, v;

  int64_t head_size() const { return tiles * block * head_dim; }
  const A* kt_tile(int64_t bh, int64_t t) const {
    return kt.data() + bh * head_size() + t * block * head_dim;
  }
  const A* v_tile(int64_t bh, int64_t t) const { return v.data() + bh * head_size() + t * block * head_dim; }
};

template <class T, class A>
void pack_head(const AttentionShape& s, const Positions& pk, const T* src, int64_t row_stride, bool transpose,
               A* dst) {
  const int64_t D = s.head_dim, bs = s.block;
  std::vector<A> row(D);
  std::fill(dst, dst + attention_tiles(s.len_k, bs) * bs * D, A(0));
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
  out.kt.resize(heads * out.head_size());
  out.v.resize(heads * out.head_size());
  parallel_for(0, heads, 1, [&](int64_t begin, int64_t end) {
    for (int64_t bh = begin; bh < end; ++bh) {
      const int64_t b = bh / s.heads_kv, h = bh % s.heads_kv;
      pack_head(s, pk, k + b * ks.batch + h * ks.head, ks.row, true, out.kt.data() + bh * out.head_size());
      pack_head(s, pk, v + b * vs.batch + h * vs.head, vs.row, v_transposed,
                out.v.data() + bh * out.head_size());
    }
  });
}

// What forward and backward share: positions of the tiles, K^T and V packed once, and
// the scores of one tile pair.
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

  // S = (scale q) k^T for query tile i (`rows` rows of qs) and key tile j of kv head
  // bkv, with hidden scores at -inf; false, and S untouched, if the pair is all hidden.
  bool scores(const AttentionShape& s, int64_t bkv, int64_t i, int64_t j, int64_t rows, const A* qs,
              A* S) const {
    const int64_t bs = s.block, cols = std::min(bs, s.len_k - j * bs);
    const TileMask tm = attention_tile_mask(s, pq.lo[i], pq.hi[i], pk.lo[j], pk.hi[j]);
    if (tm == TileMask::kHidden) return false;
    tile_gemm(rows, bs, s.head_dim, StridedF<A>{qs, s.head_dim, 1}, kv.kt_tile(bkv, j), bs, S, bs, false);
    if (tm == TileMask::kPartial || cols < bs) mask_scores(s, pq, pk, i * bs, rows, j * bs, cols, S);
    return true;
  }
};

template <class T>
void forward(const AttentionForwardParams& p) {
  using A = AccOf<T>;
  constexpr A kInf = A(INFINITY);
  const AttentionShape& s = p.s;
  const int64_t D = s.head_dim, bs = s.block;
  const Tiles<A> t(s, static_cast<const T*>(p.k), p.k_st, static_cast<const T*>(p.v), p.v_st, false);
  const T* q = static_cast<const T*>(p.q);
  T* out = static_cast<T*>(p.out);

  parallel_for(0, s.batch * s.heads_q * t.q_tiles, 1, [&](int64_t begin, int64_t end) {
    std::vector<A> qs(bs * D), S(bs * bs), O(bs * D), m(bs), l(bs);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t i = task % t.q_tiles, bh = task / t.q_tiles, b = bh / s.heads_q, h = bh % s.heads_q;
      const int64_t bkv = b * s.heads_kv + h / t.group;
      const int64_t q0 = i * bs, rows = std::min(bs, s.len_q - q0);
      for (int64_t r = 0; r < rows; ++r)
        load_row(q + b * p.q_st.batch + h * p.q_st.head + t.pq.at(q0 + r) * p.q_st.row, D, A(s.scale),
                 &qs[r * D]);
      std::fill(O.begin(), O.end(), A(0));
      std::fill(m.begin(), m.end(), -kInf);
      std::fill(l.begin(), l.end(), A(0));
      const AttentionTileList tl = attention_key_tiles(s, h, i);
      for (int64_t n = 0; n < tl.size(); ++n) {
        const int64_t j = tl.tile(n), k0 = j * bs, cols = std::min(bs, s.len_k - k0);
        if (!t.scores(s, bkv, i, j, rows, qs.data(), S.data())) continue;
        for (int64_t r = 0; r < rows; ++r) {
          A* row = &S[r * bs];
          const A m_new = std::max(m[r], row_max(row, bs));
          if (m_new == -kInf) {  // nothing visible yet: contributes nothing
            std::fill(row, row + bs, A(0));
            continue;
          }
          const A alpha = exp_nonpos(m[r] - m_new);
          l[r] = l[r] * alpha + exp_row(row, bs, m_new);
          m[r] = m_new;
          if (alpha != A(1))
            for (int64_t d = 0; d < D; ++d) O[r * D + d] *= alpha;
        }
        tile_gemm(rows, D, cols, StridedF<A>{S.data(), bs, 1}, t.kv.v_tile(bkv, j), D, O.data(), D, true);
      }
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t row = bh * s.len_q + t.pq.at(q0 + r);
        store_row(&O[r * D], D, l[r] > 0 ? A(1) / l[r] : A(0), out + row * D);
        static_cast<A*>(p.lse)[row] = l[r] > 0 ? m[r] + std::log(l[r]) : -kInf;
      }
    }
  });
}

template <class T>
void backward(const AttentionBackwardParams& p) {
  using A = AccOf<T>;
  constexpr A kInf = A(INFINITY);
  const AttentionShape& s = p.s;
  const int64_t D = s.head_dim, bs = s.block;
  const Tiles<A> t(s, static_cast<const T*>(p.k), p.k_st, static_cast<const T*>(p.v), p.v_st, true);
  const T* q = static_cast<const T*>(p.q);
  const T* k = static_cast<const T*>(p.k);
  const T* out = static_cast<const T*>(p.out);
  const T* dout = static_cast<const T*>(p.grad_out);
  T* dq_out = static_cast<T*>(p.grad_q);
  T* dk_out = static_cast<T*>(p.grad_k);
  T* dv_out = static_cast<T*>(p.grad_v);

  // One task per (batch, kv head): it owns the key gradients of its head, so tiles
  // accumulate into them without races.
  parallel_for(0, s.batch * s.heads_kv, 1, [&](int64_t begin, int64_t end) {
    const int64_t padded = t.k_tiles * bs;
    std::vector<A> kp(padded * D), dk(padded * D), dv(padded * D);
    std::vector<A> qs(bs * D), dos(bs * D), orow(D), P(bs * bs), dS(bs * bs), dq(bs * D), delta(bs), lse(bs);
    for (int64_t bkv = begin; bkv < end; ++bkv) {
      const int64_t b = bkv / s.heads_kv, hkv = bkv % s.heads_kv;
      pack_head(s, t.pk, k + b * p.k_st.batch + hkv * p.k_st.head, p.k_st.row, false, kp.data());
      std::fill(dk.begin(), dk.end(), A(0));
      std::fill(dv.begin(), dv.end(), A(0));
      for (int64_t h = hkv * t.group; h < (hkv + 1) * t.group; ++h) {
        const int64_t bh = b * s.heads_q + h;
        for (int64_t i = 0; i < t.q_tiles; ++i) {
          const int64_t q0 = i * bs, rows = std::min(bs, s.len_q - q0);
          for (int64_t r = 0; r < rows; ++r) {
            const int64_t pos = t.pq.at(q0 + r);
            load_row(q + b * p.q_st.batch + h * p.q_st.head + pos * p.q_st.row, D, A(s.scale), &qs[r * D]);
            load_row(dout + b * p.grad_out_st.batch + h * p.grad_out_st.head + pos * p.grad_out_st.row, D,
                     A(1), &dos[r * D]);
            load_row(out + b * p.out_st.batch + h * p.out_st.head + pos * p.out_st.row, D, A(1), orow.data());
            // d(loss)/d(score) = P (dP - delta), delta = rowsum(dO * O) - d(loss)/d(lse)
            A dot = 0;
            for (int64_t d = 0; d < D; ++d) dot += dos[r * D + d] * orow[d];
            delta[r] = p.grad_lse ? dot - static_cast<const A*>(p.grad_lse)[bh * s.len_q + pos] : dot;
            const A x = static_cast<const A*>(p.lse)[bh * s.len_q + pos];
            lse[r] = x == -kInf ? kInf : x;  // a row that saw no key has probabilities 0
          }
          std::fill(dq.begin(), dq.end(), A(0));
          const AttentionTileList tl = attention_key_tiles(s, h, i);
          for (int64_t n = 0; n < tl.size(); ++n) {
            const int64_t j = tl.tile(n), k0 = j * bs, cols = std::min(bs, s.len_k - k0);
            if (!t.scores(s, bkv, i, j, rows, qs.data(), P.data())) continue;
            for (int64_t r = 0; r < rows; ++r)
              for (int64_t c = 0; c < bs; ++c) P[r * bs + c] = exp_nonpos(P[r * bs + c] - lse[r]);
            // dV += P^T dO;  dP = dO V^T;  dS = P (dP - delta);  dQ += dS K;  dK += dS^T (scale Q)
            tile_gemm(cols, D, rows, StridedF<A>{P.data(), 1, bs}, dos.data(), D, &dv[k0 * D], D, true);
            tile_gemm(rows, bs, D, StridedF<A>{dos.data(), D, 1}, t.kv.v_tile(bkv, j), bs, dS.data(), bs,
                      false);
            for (int64_t r = 0; r < rows; ++r)
              for (int64_t c = 0; c < bs; ++c) dS[r * bs + c] = P[r * bs + c] * (dS[r * bs + c] - delta[r]);
            tile_gemm(rows, D, cols, StridedF<A>{dS.data(), bs, 1}, &kp[k0 * D], D, dq.data(), D, true);
            tile_gemm(cols, D, rows, StridedF<A>{dS.data(), 1, bs}, qs.data(), D, &dk[k0 * D], D, true);
          }
          for (int64_t r = 0; r < rows; ++r)
            store_row(&dq[r * D], D, A(s.scale), dq_out + (bh * s.len_q + t.pq.at(q0 + r)) * D);
        }
      }
      for (int64_t j = 0; j < s.len_k; ++j) {
        const int64_t row = bkv * s.len_k + t.pk.at(j);
        store_row(&dk[j * D], D, A(1), dk_out + row * D);
        store_row(&dv[j * D], D, A(1), dv_out + row * D);
      }
    }
  });
}

}  // namespace

void attention_forward(const AttentionForwardParams& p) {
  visit_dtype(p.dtype, [&](auto t) { forward<decltype(t)>(p); });
}

void attention_backward(const AttentionBackwardParams& p) {
  visit_dtype(p.dtype, [&](auto t) { backward<decltype(t)>(p); });
}

}  // namespace pygen::PYGEN_CPU_NS
