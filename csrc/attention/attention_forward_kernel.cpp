// CPU forward of attention, compiled once per ISA (PYGEN_CPU_NS): an online softmax
// over key chunks, one task per group of consecutive query tiles of one head.
//
// Layout tiles are small (32 rows in the fixed pattern), and a product of two such tiles
// leaves the register tiles of tile_gemm mostly idle while the per-row softmax
// bookkeeping (row max, rescaling the output row) is paid once per 32 keys. So a task
// takes several query tiles at once; the key tiles they all list (the fixed pattern's
// summary columns, every earlier tile of a causal layout) are gathered into wide chunks
// and multiplied by all the group's rows, and each query tile's own remaining key tiles
// are gathered into chunks of their own. Which tiles are grouped depends on the shape
// and layout only, so results do not depend on the thread count.
#include "csrc/attention/attention_tiles_cpu.h"

namespace pygen::PYGEN_CPU_NS {

namespace {

using namespace attention_cpu;

// Query tiles per task: about 128 rows, enough to reuse each gathered key chunk.
int64_t group_tiles(const AttentionShape& s) { return std::max<int64_t>(1, 128 / s.block); }

// Key tiles per chunk: about 256 columns (fewer for wide heads), so the gathered K^T and
// V stay in L2 while every row of the group passes.
int64_t chunk_tiles(const AttentionShape& s) {
  return std::max<int64_t>(1, std::min<int64_t>(256, 16384 / s.head_dim) / s.block);
}

// One task's buffers and the online-softmax state of its rows.
template <class A>
struct Group {
  std::vector<A> qs, O, m, l, kc, vc, S;
  std::vector<int32_t> count;  // per key tile: how many of the group's query tiles list it
  std::vector<int64_t> shared, own;

  Group(const AttentionShape& s, int64_t k_tiles) {
    const int64_t rows = group_tiles(s) * s.block, cols = chunk_tiles(s) * s.block;
    qs.resize(rows * s.head_dim);
    O.resize(rows * s.head_dim);
    m.resize(rows);
    l.resize(rows);
    kc.resize(s.head_dim * cols);
    vc.resize(cols * s.head_dim);
    S.resize(rows * cols);
    count.assign(k_tiles, 0);
  }
};

// Online-softmax update of `rows` rows of group g from query tile i0 (its row r0) with
// key tiles js[0..n) of kv head bkv: S = qs K^T over the gathered tiles, hidden scores at
// -inf, then m, l and O <- O alpha + exp(S - m) V.
template <class A>
void attend_chunk(const AttentionShape& s, const Tiles<A>& t, int64_t bkv, int64_t i0, int64_t r0,
                  int64_t rows, const int64_t* js, int64_t n, Group<A>& g) {
  constexpr A kInf = A(INFINITY);
  const int64_t D = s.head_dim, bs = s.block, width = n * bs;
  for (int64_t c = 0; c < n; ++c) {
    const A* kt = t.kv.kt_tile(bkv, js[c]);
    for (int64_t d = 0; d < D; ++d) copy_lanes(kt + d * bs, bs, &g.kc[d * width + c * bs]);
    copy_lanes(t.kv.v_tile(bkv, js[c]), bs * D, &g.vc[c * bs * D]);
  }
  A* S = g.S.data();
  A* qs = &g.qs[r0 * D];
  A* O = &g.O[r0 * D];
  tile_gemm(rows, width, D, StridedF<A>{qs, D, 1}, g.kc.data(), width, S, width, false);
  for (int64_t r = 0; r < rows; r += bs) {
    const int64_t i = i0 + r / bs, tile_rows = std::min(bs, rows - r);
    for (int64_t c = 0; c < n; ++c) {
      const int64_t j = js[c], cols = std::min(bs, s.len_k - j * bs);
      A* block = S + r * width + c * bs;
      const TileMask tm = t.mask(s, i, j);
      if (tm == TileMask::kHidden)
        for (int64_t rr = 0; rr < tile_rows; ++rr)
          std::fill(block + rr * width, block + rr * width + bs, -kInf);
      else if (tm == TileMask::kPartial || cols < bs)
        mask_scores(s, t.pq, t.pk, i * bs, tile_rows, j * bs, cols, block, width);
    }
  }
  A *m = &g.m[r0], *l = &g.l[r0];
  for (int64_t r = 0; r < rows; ++r) {
    A* row = S + r * width;
    const A m_new = std::max(m[r], row_max(row, width));
    if (m_new == -kInf) {  // nothing visible yet: contributes nothing
      std::fill(row, row + width, A(0));
      continue;
    }
    const A alpha = exp_nonpos(m[r] - m_new);
    l[r] = l[r] * alpha + exp_row(row, width, m_new);
    m[r] = m_new;
    if (alpha != A(1))
      for (int64_t d = 0; d < D; ++d) O[r * D + d] *= alpha;
  }
  // Padding keys past len_k have probability 0 and zero rows in V, so the product may
  // run over whole tiles.
  tile_gemm(rows, D, width, StridedF<A>{S, width, 1}, g.vc.data(), D, O, D, true);
}

// Runs attend_chunk over `tiles` in chunks of chunk_tiles.
template <class A>
void attend_tiles(const AttentionShape& s, const Tiles<A>& t, int64_t bkv, int64_t i0, int64_t r0,
                  int64_t rows, const std::vector<int64_t>& tiles, Group<A>& g) {
  const int64_t w = chunk_tiles(s), n = int64_t(tiles.size());
  for (int64_t c = 0; c < n; c += w) attend_chunk(s, t, bkv, i0, r0, rows, &tiles[c], std::min(w, n - c), g);
}

template <class T>
void forward(const AttentionForwardParams& p) {
  using A = AccOf<T>;
  constexpr A kInf = A(INFINITY);
  const AttentionShape& s = p.s;
  const int64_t D = s.head_dim, bs = s.block;
  const Tiles<A> t(s, static_cast<const T*>(p.k), p.k_st, static_cast<const T*>(p.v), p.v_st, false);
  const T* q = static_cast<const T*>(p.q);
  T* out = static_cast<T*>(p.out);
  const int64_t per_group = group_tiles(s), groups = (t.q_tiles + per_group - 1) / per_group;

  parallel_for(0, s.batch * s.heads_q * groups, 1, [&](int64_t begin, int64_t end) {
    Group<A> g(s, t.k_tiles);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t bh = task / groups, b = bh / s.heads_q, h = bh % s.heads_q;
      const int64_t bkv = b * s.heads_kv + h / t.group;
      const int64_t i0 = zigzag(task % groups, groups) * per_group, i1 = std::min(t.q_tiles, i0 + per_group);
      const int64_t q0 = i0 * bs, rows = std::min(i1 * bs, s.len_q) - q0;
      for (int64_t r = 0; r < rows; ++r)
        load_row(q + b * p.q_st.batch + h * p.q_st.head + t.pq.at(q0 + r) * p.q_st.row, D, A(s.scale),
                 &g.qs[r * D]);
      std::fill(g.O.begin(), g.O.begin() + rows * D, A(0));
      std::fill(g.m.begin(), g.m.begin() + rows, -kInf);
      std::fill(g.l.begin(), g.l.begin() + rows, A(0));

      // Key tiles every query tile of the group lists, unless all hidden from the group.
      for (int64_t i = i0; i < i1; ++i) {
        const AttentionTileList tl = attention_key_tiles(s, h, i);
        for (int64_t n = 0; n < tl.size(); ++n) ++g.count[tl.tile(n)];
      }
      const int64_t q_lo = *std::min_element(&t.pq.lo[i0], &t.pq.lo[0] + i1);
      const int64_t q_hi = *std::max_element(&t.pq.hi[i0], &t.pq.hi[0] + i1);
      const AttentionTileList first = attention_key_tiles(s, h, i0);
      g.shared.clear();
      for (int64_t n = 0; n < first.size(); ++n) {
        const int64_t j = first.tile(n);
        if (g.count[j] == i1 - i0 &&
            attention_tile_mask(s, q_lo, q_hi, t.pk.lo[j], t.pk.hi[j]) != TileMask::kHidden)
          g.shared.push_back(j);
      }
      attend_tiles(s, t, bkv, i0, 0, rows, g.shared, g);
      // Then each query tile's other key tiles, with its rows only.
      for (int64_t i = i0; i < i1; ++i) {
        const AttentionTileList tl = attention_key_tiles(s, h, i);
        g.own.clear();
        for (int64_t n = 0; n < tl.size(); ++n) {
          const int64_t j = tl.tile(n);
          if (g.count[j] != i1 - i0 && t.mask(s, i, j) != TileMask::kHidden) g.own.push_back(j);
        }
        attend_tiles(s, t, bkv, i, (i - i0) * bs, std::min(bs, s.len_q - i * bs), g.own, g);
      }
      for (int64_t i = i0; i < i1; ++i) {
        const AttentionTileList tl = attention_key_tiles(s, h, i);
        for (int64_t n = 0; n < tl.size(); ++n) g.count[tl.tile(n)] = 0;
      }

      for (int64_t r = 0; r < rows; ++r) {
        const int64_t row = bh * s.len_q + t.pq.at(q0 + r);
        store_row(&g.O[r * D], D, g.l[r] > 0 ? A(1) / g.l[r] : A(0), out + row * D);
        static_cast<A*>(p.lse)[row] = g.l[r] > 0 ? g.m[r] + std::log(g.l[r]) : -kInf;
      }
    }
  });
}

}  // namespace

void attention_forward(const AttentionForwardParams& p) {
  visit_dtype(p.dtype, [&](auto t) { forward<decltype(t)>(p); });
}

}  // namespace pygen::PYGEN_CPU_NS
