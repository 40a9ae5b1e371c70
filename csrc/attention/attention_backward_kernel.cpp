// CPU backward of attention, compiled once per ISA (PYGEN_CPU_NS). Probabilities are
// recomputed from the saved log-sum-exp tile pair by tile pair, so memory stays O(len)
// per head.
//
// A query tile's gradient needs every key tile it lists, a key tile's every query tile
// that lists it. One pass over the query tiles makes both when a task owns a whole
// (batch, query head): it accumulates the key gradients its head contributes without
// races (with grouped-query attention into a buffer of its own, the heads of a group
// summed afterwards in head order; O(len) per query head). That leaves threads idle
// when there are fewer (batch, query head) pairs than threads. Then two passes run
// instead, as on CUDA: dQ with one task per query tile, and dK/dV with one task per key
// tile, walking the transposed layout. That recomputes the scores and dP of each pair
// (7 tile products per pair instead of 5), but every gradient is the sum of the same
// products in the same order either way, so the two schedules give the same bits.
#include "csrc/attention/attention_tiles_cpu.h"

namespace pygen::PYGEN_CPU_NS {

namespace {

using namespace attention_cpu;

template <class T>
struct Backward {
  using A = AccOf<T>;
  const AttentionBackwardParams& p;
  const AttentionShape& s;
  const Tiles<A> t;
  std::unique_ptr<A[]> k_rows;  // K of every (batch, kv head), row-major tiles, for dQ = dS K

  explicit Backward(const AttentionBackwardParams& p_)
      : p(p_), s(p_.s), t(s, static_cast<const T*>(p.k), p.k_st, static_cast<const T*>(p.v), p.v_st, true) {
    const int64_t size = t.kv.head_size();
    k_rows.reset(new A[s.batch * s.heads_kv * size]);
    parallel_for(0, s.batch * s.heads_kv, 1, [&](int64_t begin, int64_t end) {
      for (int64_t bkv = begin; bkv < end; ++bkv)
        pack_head(
            s, t.pk,
            static_cast<const T*>(p.k) + bkv / s.heads_kv * p.k_st.batch + bkv % s.heads_kv * p.k_st.head,
            p.k_st.row, false, &k_rows[bkv * size]);
    });
  }

  // One query tile's rows in the compute type: scale q, dO, delta and the log-sum-exp.
  struct QueryTile {
    std::vector<A> qs, dos, orow, delta, lse, P, dS;
    int64_t rows;
    explicit QueryTile(const AttentionShape& s)
        : qs(s.block * s.head_dim),
          dos(s.block * s.head_dim),
          orow(s.head_dim),
          delta(s.block),
          lse(s.block),
          P(s.block * s.block),
          dS(s.block * s.block),
          rows(0) {}
  };

  void load(int64_t b, int64_t h, int64_t i, QueryTile& qt) const {
    constexpr A kInf = A(INFINITY);
    const int64_t D = s.head_dim, q0 = i * s.block, bh = b * s.heads_q + h;
    qt.rows = std::min(s.block, s.len_q - q0);
    for (int64_t r = 0; r < qt.rows; ++r) {
      const int64_t pos = t.pq.at(q0 + r);
      load_row(static_cast<const T*>(p.q) + b * p.q_st.batch + h * p.q_st.head + pos * p.q_st.row, D,
               A(s.scale), &qt.qs[r * D]);
      load_row(static_cast<const T*>(p.grad_out) + b * p.grad_out_st.batch + h * p.grad_out_st.head +
                   pos * p.grad_out_st.row,
               D, A(1), &qt.dos[r * D]);
      load_row(static_cast<const T*>(p.out) + b * p.out_st.batch + h * p.out_st.head + pos * p.out_st.row, D,
               A(1), qt.orow.data());
      // d(loss)/d(score) = P (dP - delta), delta = rowsum(dO * O) - d(loss)/d(lse)
      A dot = 0;
      for (int64_t d = 0; d < D; ++d) dot += qt.dos[r * D + d] * qt.orow[d];
      qt.delta[r] = p.grad_lse ? dot - static_cast<const A*>(p.grad_lse)[bh * s.len_q + pos] : dot;
      const A x = static_cast<const A*>(p.lse)[bh * s.len_q + pos];
      qt.lse[r] = x == -kInf ? kInf : x;  // a row that saw no key has probabilities 0
    }
  }

  // P and dS = P (dO V^T - delta) of query tile i against key tile j; false if all hidden.
  bool pair(int64_t bkv, int64_t i, int64_t j, QueryTile& qt) const {
    const int64_t bs = s.block, rows = qt.rows;
    if (!t.scores(s, bkv, i, j, rows, qt.qs.data(), qt.P.data())) return false;
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < bs; ++c) qt.P[r * bs + c] = exp_nonpos(qt.P[r * bs + c] - qt.lse[r]);
    tile_gemm(rows, bs, s.head_dim, StridedF<A>{qt.dos.data(), s.head_dim, 1}, t.kv.v_tile(bkv, j), bs,
              qt.dS.data(), bs, false);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < bs; ++c)
        qt.dS[r * bs + c] = qt.P[r * bs + c] * (qt.dS[r * bs + c] - qt.delta[r]);
    return true;
  }

  // dK[j] += dS^T (scale Q), dV[j] += P^T dO, rows of key tile j at dk / dv.
  void accumulate_kv(int64_t j, const QueryTile& qt, A* dk, A* dv) const {
    const int64_t bs = s.block, D = s.head_dim, cols = std::min(bs, s.len_k - j * bs);
    tile_gemm(cols, D, qt.rows, StridedF<A>{qt.P.data(), 1, bs}, qt.dos.data(), D, dv, D, true);
    tile_gemm(cols, D, qt.rows, StridedF<A>{qt.dS.data(), 1, bs}, qt.qs.data(), D, dk, D, true);
  }

  // dQ += dS K[j] for the query tile's rows.
  void accumulate_q(int64_t bkv, int64_t j, const QueryTile& qt, A* dq) const {
    const int64_t bs = s.block, D = s.head_dim, cols = std::min(bs, s.len_k - j * bs);
    tile_gemm(qt.rows, D, cols, StridedF<A>{qt.dS.data(), bs, 1},
              &k_rows[bkv * t.kv.head_size() + j * bs * D], D, dq, D, true);
  }

  void store_q(int64_t bh, int64_t i, const QueryTile& qt, const A* dq) const {
    for (int64_t r = 0; r < qt.rows; ++r)
      store_row(&dq[r * s.head_dim], s.head_dim, A(s.scale),
                static_cast<T*>(p.grad_q) + (bh * s.len_q + t.pq.at(i * s.block + r)) * s.head_dim);
  }

  void store_kv(int64_t bkv, int64_t j0, int64_t j1, const A* dk, const A* dv) const {
    const int64_t D = s.head_dim;
    for (int64_t j = j0; j < std::min(j1, s.len_k); ++j) {
      const int64_t row = bkv * s.len_k + t.pk.at(j);
      store_row(&dk[(j - j0) * D], D, A(1), static_cast<T*>(p.grad_k) + row * D);
      store_row(&dv[(j - j0) * D], D, A(1), static_cast<T*>(p.grad_v) + row * D);
    }
  }

  // One task per (batch, query head). With grouped-query attention the query heads of a
  // kv head each accumulate their own dK/dV, summed afterwards in head order.
  void one_pass() const {
    const int64_t D = s.head_dim, bs = s.block, size = t.k_tiles * bs * D;
    const bool grouped = t.group > 1;
    std::unique_ptr<A[]> parts(grouped ? new A[s.batch * s.heads_q * 2 * size] : nullptr);
    parallel_for(0, s.batch * s.heads_q, 1, [&](int64_t begin, int64_t end) {
      std::vector<A> own(grouped ? 0 : 2 * size), dq(bs * D);
      QueryTile qt(s);
      for (int64_t bh = begin; bh < end; ++bh) {
        const int64_t b = bh / s.heads_q, h = bh % s.heads_q, bkv = b * s.heads_kv + h / t.group;
        A* dk = grouped ? &parts[bh * 2 * size] : own.data();
        A* dv = dk + size;
        std::fill(dk, dk + 2 * size, A(0));
        for (int64_t i = 0; i < t.q_tiles; ++i) {
          load(b, h, i, qt);
          std::fill(dq.begin(), dq.end(), A(0));
          const AttentionTileList tl = attention_key_tiles(s, h, i);
          for (int64_t n = 0; n < tl.size(); ++n) {
            const int64_t j = tl.tile(n);
            if (!pair(bkv, i, j, qt)) continue;
            accumulate_kv(j, qt, &dk[j * bs * D], &dv[j * bs * D]);
            accumulate_q(bkv, j, qt, dq.data());
          }
          store_q(bh, i, qt, dq.data());
        }
        if (!grouped) store_kv(bkv, 0, s.len_k, dk, dv);
      }
    });
    if (!grouped) return;
    parallel_for(0, s.batch * s.heads_kv * t.k_tiles, 1, [&](int64_t begin, int64_t end) {
      std::vector<A> dk(bs * D), dv(bs * D);
      for (int64_t task = begin; task < end; ++task) {
        const int64_t j = task % t.k_tiles, bkv = task / t.k_tiles, b = bkv / s.heads_kv,
                      hkv = bkv % s.heads_kv;
        std::fill(dk.begin(), dk.end(), A(0));
        std::fill(dv.begin(), dv.end(), A(0));
        for (int64_t h = hkv * t.group; h < (hkv + 1) * t.group; ++h) {
          const A* part = &parts[(b * s.heads_q + h) * 2 * size + j * bs * D];
          add_head(part, part + size, dk.data(), dv.data());
        }
        store_kv(bkv, j * bs, (j + 1) * bs, dk.data(), dv.data());
      }
    });
  }

  // dK/dV of one key tile += one query head's share, the grouped one pass's reduction step.
  void add_head(const A* hk, const A* hv, A* dk, A* dv) const {
    for (int64_t e = 0; e < s.block * s.head_dim; ++e) {
      dk[e] += hk[e];
      dv[e] += hv[e];
    }
  }

  void two_passes() const {
    const int64_t D = s.head_dim, bs = s.block;
    parallel_for(0, s.batch * s.heads_q * t.q_tiles, 1, [&](int64_t begin, int64_t end) {
      std::vector<A> dq(bs * D);
      QueryTile qt(s);
      for (int64_t task = begin; task < end; ++task) {
        const int64_t i = zigzag(task % t.q_tiles, t.q_tiles), bh = task / t.q_tiles;
        const int64_t b = bh / s.heads_q, h = bh % s.heads_q;
        const int64_t bkv = b * s.heads_kv + h / t.group;
        load(b, h, i, qt);
        std::fill(dq.begin(), dq.end(), A(0));
        const AttentionTileList tl = attention_key_tiles(s, h, i);
        for (int64_t n = 0; n < tl.size(); ++n)
          if (pair(bkv, i, tl.tile(n), qt)) accumulate_q(bkv, tl.tile(n), qt, dq.data());
        store_q(bh, i, qt, dq.data());
      }
    });

    // The transposed layout: for layout head lh and key tile j, the query tiles listing
    // j in ascending order (the one pass's order of accumulation into key tile j).
    std::vector<int32_t> t_ptr, t_idx;
    if (s.row_ptr) {
      t_ptr.assign(s.layout_heads * t.k_tiles + 1, 0);
      t_idx.resize(s.layout_nnz);
      for (int64_t lh = 0; lh < s.layout_heads; ++lh)
        for (int64_t i = 0; i < t.q_tiles; ++i) {
          const AttentionTileList tl =
              attention_tile_list(s.row_ptr, s.col_idx, s.layout_nnz, lh * t.q_tiles + i, t.k_tiles);
          for (int64_t n = 0; n < tl.size(); ++n) ++t_ptr[lh * t.k_tiles + tl.tile(n) + 1];
        }
      for (size_t r = 1; r < t_ptr.size(); ++r) t_ptr[r] += t_ptr[r - 1];
      std::vector<int32_t> fill(t_ptr.begin(), t_ptr.end() - 1);
      for (int64_t lh = 0; lh < s.layout_heads; ++lh)
        for (int64_t i = 0; i < t.q_tiles; ++i) {
          const AttentionTileList tl =
              attention_tile_list(s.row_ptr, s.col_idx, s.layout_nnz, lh * t.q_tiles + i, t.k_tiles);
          for (int64_t n = 0; n < tl.size(); ++n) t_idx[fill[lh * t.k_tiles + tl.tile(n)]++] = int32_t(i);
        }
    }

    parallel_for(0, s.batch * s.heads_kv * t.k_tiles, 1, [&](int64_t begin, int64_t end) {
      std::vector<A> dk(bs * D), dv(bs * D), hk(bs * D), hv(bs * D);
      QueryTile qt(s);
      for (int64_t task = begin; task < end; ++task) {
        const int64_t j = zigzag(task % t.k_tiles, t.k_tiles), bkv = task / t.k_tiles;
        const int64_t b = bkv / s.heads_kv, hkv = bkv % s.heads_kv;
        std::fill(dk.begin(), dk.end(), A(0));
        std::fill(dv.begin(), dv.end(), A(0));
        for (int64_t h = hkv * t.group; h < (hkv + 1) * t.group; ++h) {
          // As the one pass: each query head's share from zero, then added in head order.
          A* sk = t.group > 1 ? hk.data() : dk.data();
          A* sv = t.group > 1 ? hv.data() : dv.data();
          std::fill(sk, sk + bs * D, A(0));
          std::fill(sv, sv + bs * D, A(0));
          const int64_t row = attention_layout_head(s, h) * t.k_tiles + j;
          const AttentionTileList tl = attention_tile_list(s.row_ptr ? t_ptr.data() : nullptr, t_idx.data(),
                                                           int64_t(t_idx.size()), row, t.q_tiles);
          for (int64_t n = 0; n < tl.size(); ++n) {
            const int64_t i = tl.tile(n);
            if (t.mask(s, i, j) == TileMask::kHidden) continue;
            load(b, h, i, qt);
            if (pair(bkv, i, j, qt)) accumulate_kv(j, qt, sk, sv);
          }
          if (t.group > 1) add_head(sk, sv, dk.data(), dv.data());
        }
        store_kv(bkv, j * bs, (j + 1) * bs, dk.data(), dv.data());
      }
    });
  }
};

}  // namespace

void attention_backward(const AttentionBackwardParams& p) {
  visit_dtype(p.dtype, [&](auto tag) {
    const Backward<decltype(tag)> bwd(p);
    // The one pass's time goes with the rounds of (batch, query head) tasks per thread,
    // the two passes' with about 1.7 times the work (measured: the products and the
    // elementwise softmax gradient are redone) spread over all threads.
    const int64_t heads = p.s.batch * p.s.heads_q, threads = parallel_threads();
    const int64_t rounds = (heads + threads - 1) / threads;
    if (17 * heads < 10 * rounds * threads)
      bwd.two_passes();
    else
      bwd.one_pass();
  });
}

}  // namespace pygen::PYGEN_CPU_NS
