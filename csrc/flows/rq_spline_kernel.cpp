// CPU kernels of rq_spline, its coupling-layer form and their backwards. Compiled once
// per ISA (PYGEN_CPU_NS).
// Elements go in tiles of 16 lanes whose parameter rows are transposed to
// [parameter][lane], so each step of the spline (softmax, knot sums, the bin search by
// counting the knots at or below the input, the bin's formula from csrc/common/spline.h,
// the backward) is a loop over the lanes of branch-free math that the compiler
// vectorizes (one register of 16 floats on AVX-512, two of 8 on AVX2) for any K. The
// last, partial tile repeats its last element in the spare lanes, so every element goes
// through the same arithmetic wherever it falls, on every ISA (float32 calls no libm
// function, and nothing is contracted into an fma).
#include <algorithm>
#include <cstdint>
#include <utility>
#include <vector>

#include "csrc/common/parallel_for.h"
#include "csrc/flows/rq_spline.h"

namespace pygen::PYGEN_CPU_NS {

namespace {

constexpr int L = 16;  // lanes of a tile

// Tiles per task: a few thousand parameter values.
int64_t grain(int bins) { return std::max<int64_t>(1, 512 / (int64_t(L) * bins)); }

// Calls f(l, row) for the lanes l < n of elements i0 .. i0 + n - 1 with the offset of
// their parameters in layout `lay` (one division per tile, not per lane).
template <class F>
void for_lane_rows(const RqLayout& lay, int64_t i0, int n, const F& f) {
  int64_t q = i0 / lay.inner, r = i0 % lay.inner;
  for (int l = 0; l < n; ++l) {
    f(l, q * lay.outer_stride + r * lay.elem_stride);
    if (++r == lay.inner) r = 0, ++q;
  }
}

// Whether the L lanes from element i0 are adjacent in memory (a conv output read in
// place): then each parameter is one vector load or store.
inline bool adjacent_lanes(const RqLayout& lay, int64_t i0, int n) {
  return n == L && lay.elem_stride == 1 && i0 % lay.inner + L <= lay.inner;
}

// The values of `rows` parameters of elements i0 .. i0 + n - 1 into [rows][L]; the spare
// lanes repeat the last element.
template <class T, class C>
void load_lanes(const T* base, const RqLayout& lay, int rows, int64_t i0, int n, C* __restrict dst) {
  const int64_t ps = lay.param_stride;
  if (adjacent_lanes(lay, i0, n)) {
    const T* src = base + lay.row(i0);
    for (int j = 0; j < rows; ++j)
      for (int l = 0; l < L; ++l) dst[j * L + l] = to_acc(src[j * ps + l]);
    return;
  }
  for_lane_rows(lay, i0, n, [&](int l, int64_t row) {
    for (int j = 0; j < rows; ++j) dst[j * L + l] = to_acc(base[row + j * ps]);
  });
  for (int l = n; l < L; ++l)
    for (int j = 0; j < rows; ++j) dst[j * L + l] = dst[j * L + n - 1];
}

// The first n lanes of a [rows][L] block to their elements' parameters.
template <class T, class C>
void store_lanes(const C* __restrict src, int rows, int64_t i0, int n, T* base, const RqLayout& lay) {
  const int64_t ps = lay.param_stride;
  if (adjacent_lanes(lay, i0, n)) {
    T* dst = base + lay.row(i0);
    for (int j = 0; j < rows; ++j)
      for (int l = 0; l < L; ++l) dst[j * ps + l] = from_acc<T>(src[j * L + l]);
    return;
  }
  for_lane_rows(lay, i0, n, [&](int l, int64_t row) {
    for (int j = 0; j < rows; ++j) base[row + j * ps] = from_acc<T>(src[j * L + l]);
  });
}

// One partition of [-B, B] (the widths' or the heights') for the lanes of a tile.
template <class C>
struct Side {
  C* p;     // [K][L]: the unnormalized sizes as loaded, then their softmax
  C* knot;  // [K - 1][L]: the interior knots, rounded to C
  C* rest;  // [K - 1][L]: what the rounding dropped (rq_knot_rest); the inverse's heights' only
  // The bin's knots and their rests, and the softmax mass below it and up to it (for
  // the backward).
  C lo[L], hi[L], lo_rest[L], hi_rest[L], p_below[L], p_upto[L];
};

// A tile's parameters and per-lane state, and the steps of the spline on them.
template <class T>
class Tile {
 public:
  using C = AccOf<T>;

  explicit Tile(const RqSplineInputs& in)
      : in_(in), K(in.bins), bound(C(in.tail_bound)), buf_(size_t(L) * (6 * in.bins - 4)) {
    C* b = buf_.data();
    w.p = b, h.p = b + K * L, d = b + 2 * K * L;
    w.knot = d + (K - 1) * L, h.knot = w.knot + (K - 1) * L;
    h.rest = h.knot + (K - 1) * L;
    w.rest = nullptr;
    dbound = rq_boundary_derivative<C>();
  }

  // Loads elements i0 .. i0 + n - 1 (n <= L; the spare lanes repeat the last one), their
  // inputs at x[0 .. n - 1], and locates them: the bin of each in-range lane and its
  // corners. Returns the RqBad bits of their parameter rows.
  template <bool Inverse>
  int locate(const T* x, int64_t i0, int n) {
    for (int l = 0; l < L; ++l) in[l] = to_acc(x[std::min(l, n - 1)]);
    load_lanes(static_cast<const T*>(in_.widths), in_.widths_layout, K, i0, n, w.p);
    load_lanes(static_cast<const T*>(in_.heights), in_.heights_layout, K, i0, n, h.p);
    load_lanes(static_cast<const T*>(in_.derivatives), in_.derivatives_layout, K - 1, i0, n, d);
    const int bad = (all_finite(w.p, K) ? 0 : kRqBadWidths) | (all_finite(h.p, K) ? 0 : kRqBadHeights) |
                    (all_finite(d, K - 1) ? 0 : kRqBadDerivatives);
    for (int l = 0; l < L; ++l) {
      inside[l] = int32_t(in[l] >= -bound) & int32_t(in[l] <= bound);  // 0 for NaN
      v[l] = sel(inside[l], in[l], C(0));
    }
    partition<false>(w, kRqMinBinWidth);
    partition<Inverse>(h, kRqMinBinHeight);
    search(Inverse ? h : w);
    corners<false>(w);
    corners<Inverse>(h);
    // The derivatives at the bin's corners: 1 at -B and B, else from the interior knots.
    const C m = C(kRqMinDerivative);
    for (int l = 0; l < L; ++l) raw0[l] = raw1[l] = 0;
    for (int j = 0; j < K - 1; ++j)
      for (int l = 0; l < L; ++l) {
        raw0[l] = sel(j == k[l] - 1, d[j * L + l], raw0[l]);
        raw1[l] = sel(j == k[l], d[j * L + l], raw1[l]);
      }
    for (int l = 0; l < L; ++l) {
      d0[l] = sel(k[l] == 0, dbound, m + rq_softplus(raw0[l]));
      d1[l] = sel(k[l] == K - 1, dbound, m + rq_softplus(raw1[l]));
    }
    return bad;
  }

  // y and log|dy/dx| of the lanes (the identity outside [-B, B]).
  template <bool Inverse>
  void forward(C* y, C* lad) const {
    for (int l = 0; l < L; ++l) {
      C out, ld;
      if (Inverse)
        rq_bin_inverse(bin(l), rest(l), v[l], &out, &ld);
      else
        rq_bin_forward(bin(l), v[l], &out, &ld);
      y[l] = sel(inside[l], out, in[l]);
      lad[l] = sel(inside[l], ld, C(0));
    }
  }

  // The backward for the loss gy * y + gl * lad: grad_x into gx, the parameter
  // gradients in place of the softmax (widths, heights) and the derivatives.
  template <bool Inverse>
  void backward(const C* gy, const C* gl, C* gx) {
    C gw0[L], gw1[L], gh0[L], gh1[L], gd0[L], gd1[L];
    for (int l = 0; l < L; ++l) {
      const RqBinGrad<C> g =
          rq_bin_backward(bin(l), Inverse ? rest(l) : RqBinRest<C>{}, v[l], Inverse, gy[l], gl[l]);
      gx[l] = sel(inside[l], g.in, gy[l]);
      gw0[l] = g.x0, gw1[l] = g.x1, gh0[l] = g.y0, gh1[l] = g.y1;
      gd0[l] = g.d0 * rq_softplus_grad(raw0[l]);
      gd1[l] = g.d1 * rq_softplus_grad(raw1[l]);
    }
    partition_backward(w, kRqMinBinWidth, gw0, gw1);
    partition_backward(h, kRqMinBinHeight, gh0, gh1);
    for (int j = 0; j < K - 1; ++j)
      for (int l = 0; l < L; ++l) {
        const C g = sel(j == k[l] - 1, gd0[l], sel(j == k[l], gd1[l], C(0)));
        d[j * L + l] = sel(inside[l], g, C(0));
      }
  }

  const C* grad_widths() const { return w.p; }
  const C* grad_heights() const { return h.p; }
  const C* grad_derivatives() const { return d; }

 private:
  // Lane l's bin, assembled from the lane arrays: an array of RqBin structs would keep
  // the compiler from vectorizing the loops over lanes.
  RqBin<C> bin(int l) const { return {w.lo[l], w.hi[l], h.lo[l], h.hi[l], d0[l], d1[l]}; }
  RqBinRest<C> rest(int l) const { return {h.lo_rest[l], h.hi_rest[l]}; }

  // Whether the [rows][L] values are all finite (a NaN or an infinity makes the sum NaN).
  bool all_finite(const C* a, int rows) const {
    C z[L] = {};
    for (int j = 0; j < rows; ++j)
      for (int l = 0; l < L; ++l) z[l] += a[j * L + l] * C(0);
    C all = 0;
    for (int l = 0; l < L; ++l) all += z[l];
    return all == C(0);
  }

  // The softmax of the sizes and the interior knots, as RqPartition computes them (the
  // knots from float64 sums of the exponentials, rounded once: rq_knot), with their
  // rests for the inverse.
  template <bool Rest>
  void partition(Side<C>& s, double min_size) const {
    C mx[L], sum[L];
    double sum64[L], cum[L], rate[L];
    for (int l = 0; l < L; ++l) mx[l] = s.p[l], sum[l] = 0, sum64[l] = 0, cum[l] = 0;
    for (int j = 1; j < K; ++j)
      for (int l = 0; l < L; ++l) mx[l] = rq_max_nan(mx[l], s.p[j * L + l]);
    for (int j = 0; j < K; ++j)
      for (int l = 0; l < L; ++l) s.p[j * L + l] = rq_exp_nonpos(s.p[j * L + l] - mx[l]);
    for (int j = 0; j < K; ++j)
      for (int l = 0; l < L; ++l) sum[l] += s.p[j * L + l], sum64[l] += double(s.p[j * L + l]);
    const double b = double(bound), step = rq_knot_step(b, min_size);
    for (int l = 0; l < L; ++l) rate[l] = rq_knot_rate(b, min_size, K, sum64[l]);
    for (int j = 0; j < K - 1; ++j)
      for (int l = 0; l < L; ++l) {
        cum[l] += double(s.p[j * L + l]);
        const double knot = rq_knot(b, step, rate[l], j, cum[l]);
        s.knot[j * L + l] = C(knot);
        if (Rest) s.rest[j * L + l] = rq_knot_rest<C>(knot);
      }
    for (int j = 0; j < K; ++j)
      for (int l = 0; l < L; ++l) s.p[j * L + l] /= sum[l];
  }

  // The bin of each lane: the number of interior knots at or below it. The knots
  // increase, so this is the first knot above it, as RqPartition::walk finds it.
  void search(const Side<C>& s) {
    for (int l = 0; l < L; ++l) k[l] = 0;
    for (int j = 0; j < K - 1; ++j)
      for (int l = 0; l < L; ++l) k[l] += int32_t(v[l] >= s.knot[j * L + l]);
  }

  // The knots around each lane's bin (and their rests for the inverse) and the softmax
  // mass below it, selected.
  template <bool Rest>
  void corners(Side<C>& s) const {
    C pk[L];
    for (int l = 0; l < L; ++l) s.lo[l] = -bound, s.hi[l] = bound, s.p_below[l] = 0, pk[l] = 0;
    for (int j = 0; j < K - 1; ++j)
      for (int l = 0; l < L; ++l) {
        const C knot = s.knot[j * L + l];
        s.lo[l] = sel(j < k[l], knot, s.lo[l]);
        s.hi[l] = sel(j == k[l], knot, s.hi[l]);
      }
    if (Rest) {
      for (int l = 0; l < L; ++l) s.lo_rest[l] = s.hi_rest[l] = 0;
      for (int j = 0; j < K - 1; ++j)
        for (int l = 0; l < L; ++l) {
          const C rest = s.rest[j * L + l];
          s.lo_rest[l] = sel(j < k[l], rest, s.lo_rest[l]);
          s.hi_rest[l] = sel(j == k[l], rest, s.hi_rest[l]);
        }
    }
    for (int j = 0; j < K; ++j)
      for (int l = 0; l < L; ++l) {
        const C p = s.p[j * L + l];
        s.p_below[l] += sel(j < k[l], p, C(0));
        pk[l] = sel(j == k[l], p, pk[l]);
      }
    for (int l = 0; l < L; ++l) s.p_upto[l] = sel(k[l] == K - 1, C(1), s.p_below[l] + pk[l]);
  }

  // RqPartition::backward for the lanes, in place of the softmax: the gradients through
  // the bin's lower knot (g_lo) and upper knot (g_hi) into the unnormalized sizes.
  void partition_backward(Side<C>& s, double min_size, const C* g_lo, const C* g_hi) const {
    const C f = (bound + bound) * C(1.0 - min_size * K);
    C a[L], b[L], mean[L];
    for (int l = 0; l < L; ++l) {
      a[l] = sel(k[l] >= 1, g_lo[l], C(0));
      b[l] = sel(k[l] + 1 <= K - 1, g_hi[l], C(0));
      mean[l] = f * (a[l] * s.p_below[l] + b[l] * s.p_upto[l]);
    }
    for (int j = 0; j < K; ++j)
      for (int l = 0; l < L; ++l) {
        const C gp = f * (sel(j < k[l], a[l], C(0)) + sel(j <= k[l], b[l], C(0)));
        s.p[j * L + l] = sel(inside[l], s.p[j * L + l] * (gp - mean[l]), C(0));
      }
  }

  const RqSplineInputs& in_;
  const int K;
  const C bound;
  std::vector<C> buf_;
  Side<C> w, h;
  C* d;  // [K - 1][L]: the unnormalized derivatives, then their gradients
  C dbound;
  C in[L], v[L], raw0[L], raw1[L];  // v: in, or 0 outside [-B, B]
  C d0[L], d1[L];                   // the derivatives at the bin's corners
  int32_t inside[L];                // 0 or 1: a bool array would make the compiler size the vectors for bytes
  int32_t k[L];
};

template <class T, bool Inverse>
void forward(const RqSplineParams& p) {
  using C = AccOf<T>;
  const int64_t tiles = (p.in.n + L - 1) / L;
  parallel_for(0, tiles, grain(p.in.bins), [&](int64_t t0, int64_t t1) {
    Tile<T> tile(p.in);
    int bad = 0;
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t i0 = t * L;
      const int n = int(std::min<int64_t>(L, p.in.n - i0));
      bad |= tile.template locate<Inverse>(static_cast<const T*>(p.in.x) + i0, i0, n);
      C y[L], lad[L];
      tile.template forward<Inverse>(y, lad);
      for (int l = 0; l < n; ++l) {
        static_cast<T*>(p.y)[i0 + l] = from_acc<T>(y[l]);
        static_cast<T*>(p.logabsdet)[i0 + l] = from_acc<T>(lad[l]);
      }
    }
    if (bad && p.bad) __atomic_fetch_or(p.bad, bad, __ATOMIC_RELAXED);
  });
}

template <class T, bool Inverse>
void backward(const RqSplineBackwardParams& p) {
  using C = AccOf<T>;
  const int K = p.in.bins;
  const T* grad_y = static_cast<const T*>(p.grad_y);
  const T* grad_lad = static_cast<const T*>(p.grad_logabsdet);
  const int64_t tiles = (p.in.n + L - 1) / L;
  parallel_for(0, tiles, grain(K), [&](int64_t t0, int64_t t1) {
    Tile<T> tile(p.in);
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t i0 = t * L;
      const int n = int(std::min<int64_t>(L, p.in.n - i0));
      tile.template locate<Inverse>(static_cast<const T*>(p.in.x) + i0, i0, n);
      C gy[L], gl[L], gx[L];
      for (int l = 0; l < L; ++l) {
        const int64_t i = i0 + std::min(l, n - 1);
        gy[l] = grad_y ? to_acc(grad_y[i]) : C(0);
        gl[l] = grad_lad ? to_acc(grad_lad[i]) : C(0);
      }
      tile.template backward<Inverse>(gy, gl, gx);
      for (int l = 0; l < n; ++l) static_cast<T*>(p.grad_x)[i0 + l] = from_acc<T>(gx[l]);
      store_lanes(tile.grad_widths(), K, i0, n, static_cast<T*>(p.grad_widths), p.grad_widths_layout);
      store_lanes(tile.grad_heights(), K, i0, n, static_cast<T*>(p.grad_heights), p.grad_heights_layout);
      store_lanes(tile.grad_derivatives(), K - 1, i0, n, static_cast<T*>(p.grad_derivatives),
                  p.grad_derivatives_layout);
    }
  });
}

// The layer's tasks: task t = b * chunks + c transforms chunk c of sample b's active
// elements and copies the same share of its passive elements, so every task carries
// spline work (a thread given only copies would idle). Calls
// active(t, b, begin, end) and passive(b, begin, end) with per-sample element ranges.
template <class A, class P>
void for_each_coupling_task(const RqCouplingGeometry& g, const A& active, const P& passive) {
  const int64_t chunks = rq_chunks(g.numel());
  const int64_t share = (g.passive_numel() + chunks - 1) / chunks;
  parallel_for(0, g.batch * chunks, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t b = t / chunks, c = t % chunks;
      const int64_t begin = c * kRqChunk;
      active(t, b, begin, std::min(begin + kRqChunk, g.numel()));
      const int64_t j0 = std::min(c * share, g.passive_numel());
      passive(b, j0, std::min(j0 + share, g.passive_numel()));
    }
  });
}

// The passive elements [j0, j1) of sample b: src (x, or grad_y) copied to dst, or zeros
// for a null src. At most two runs, before and after the active channels.
template <class T>
void copy_passive(const RqCouplingGeometry& g, int64_t b, int64_t j0, int64_t j1, const T* src, T* dst) {
  const int64_t split = std::clamp(g.active_begin * g.inner, j0, j1);
  for (auto [r0, r1] : {std::pair{j0, split}, std::pair{split, j1}}) {
    if (r0 == r1) continue;
    const int64_t o = g.passive_offset(b, r0);
    if (src)
      std::copy(src + o, src + o + (r1 - r0), dst + o);
    else
      std::fill(dst + o, dst + o + (r1 - r0), from_acc<T>(AccOf<T>(0)));
  }
}

template <class T, bool Inverse>
void coupling_forward(const RqCouplingParams& p) {
  using C = AccOf<T>;
  const RqCouplingGeometry& g = p.g;
  const T* x = static_cast<const T*>(p.in.x);
  T* y = static_cast<T*>(p.y);
  C* logdet = static_cast<C*>(p.logdet);
  C* partial = static_cast<C*>(p.partial);
  const int64_t chunks = rq_chunks(g.numel());
  for_each_coupling_task(
      g,
      [&](int64_t t, int64_t b, int64_t begin, int64_t end) {
        Tile<T> tile(p.in);
        C acc[L] = {};
        int chunk_bad = 0;
        for (int64_t i = begin; i < end; i += L) {
          const int n = int(std::min<int64_t>(L, end - i));
          const int64_t o = g.active_offset(b, i);
          chunk_bad |= tile.template locate<Inverse>(x + o, b * g.numel() + i, n);
          C out[L], lad[L];
          tile.template forward<Inverse>(out, lad);
          for (int l = 0; l < n; ++l) y[o + l] = from_acc<T>(out[l]), acc[l] += lad[l];
        }
        C sum = 0;
        for (int l = 0; l < L; ++l) sum += acc[l];
        (chunks == 1 ? logdet[b] : partial[t]) = sum;
        if (chunk_bad && p.bad) __atomic_fetch_or(p.bad, chunk_bad, __ATOMIC_RELAXED);
      },
      [&](int64_t b, int64_t j0, int64_t j1) { copy_passive(g, b, j0, j1, x, y); });
  if (chunks > 1)
    for (int64_t b = 0; b < g.batch; ++b) {
      C sum = 0;
      for (int64_t c = 0; c < chunks; ++c) sum += partial[b * chunks + c];
      logdet[b] = sum;
    }
}

template <class T, bool Inverse>
void coupling_backward(const RqCouplingBackwardParams& p) {
  using C = AccOf<T>;
  const RqCouplingGeometry& g = p.g;
  const int K = p.in.bins;
  const T* x = static_cast<const T*>(p.in.x);
  const T* grad_y = static_cast<const T*>(p.grad_y);
  const C* grad_logdet = static_cast<const C*>(p.grad_logdet);
  T* grad_x = static_cast<T*>(p.grad_x);
  for_each_coupling_task(
      g,
      [&](int64_t, int64_t b, int64_t begin, int64_t end) {
        Tile<T> tile(p.in);
        C gy[L], gl[L], gx[L];
        for (int l = 0; l < L; ++l) gy[l] = 0, gl[l] = grad_logdet ? grad_logdet[b] : C(0);
        for (int64_t i = begin; i < end; i += L) {
          const int n = int(std::min<int64_t>(L, end - i));
          const int64_t o = g.active_offset(b, i), e = b * g.numel() + i;
          tile.template locate<Inverse>(x + o, e, n);
          if (grad_y)
            for (int l = 0; l < L; ++l) gy[l] = to_acc(grad_y[o + std::min(l, n - 1)]);
          tile.template backward<Inverse>(gy, gl, gx);
          for (int l = 0; l < n; ++l) grad_x[o + l] = from_acc<T>(gx[l]);
          store_lanes(tile.grad_widths(), K, e, n, static_cast<T*>(p.grad_widths), p.in.widths_layout);
          store_lanes(tile.grad_heights(), K, e, n, static_cast<T*>(p.grad_heights), p.in.heights_layout);
          store_lanes(tile.grad_derivatives(), K - 1, e, n, static_cast<T*>(p.grad_derivatives),
                      p.in.derivatives_layout);
        }
      },
      [&](int64_t b, int64_t j0, int64_t j1) { copy_passive(g, b, j0, j1, grad_y, grad_x); });
}

}  // namespace

void rq_spline(const RqSplineParams& p) {
  visit_dtype(p.in.dtype, [&](auto tag) {
    using T = decltype(tag);
    p.in.inverse ? forward<T, true>(p) : forward<T, false>(p);
  });
}

void rq_spline_backward(const RqSplineBackwardParams& p) {
  visit_dtype(p.in.dtype, [&](auto tag) {
    using T = decltype(tag);
    p.in.inverse ? backward<T, true>(p) : backward<T, false>(p);
  });
}

void rq_spline_coupling(const RqCouplingParams& p) {
  visit_dtype(p.in.dtype, [&](auto tag) {
    using T = decltype(tag);
    p.in.inverse ? coupling_forward<T, true>(p) : coupling_forward<T, false>(p);
  });
}

void rq_spline_coupling_backward(const RqCouplingBackwardParams& p) {
  visit_dtype(p.in.dtype, [&](auto tag) {
    using T = decltype(tag);
    p.in.inverse ? coupling_backward<T, true>(p) : coupling_backward<T, false>(p);
  });
}

}  // namespace pygen::PYGEN_CPU_NS
