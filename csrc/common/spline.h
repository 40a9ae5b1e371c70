// Rational-quadratic splines (Durkan et al., 2019, "Neural Spline Flows"), shared by the
// CPU and CUDA kernels of rq_spline. One element's spline is K bins on [-B, B] built from
// unnormalized parameters exactly as the paper's reference code (nflows'
// unconstrained_rational_quadratic_spline, tails="linear") builds them:
//   knot_j   = -B + 2B * cumsum(m + (1 - m K) softmax(widths))_j,  knot_0 = -B, knot_K = B
//   (heights likewise), d_j = m + softplus(derivatives_{j-1}) at the K - 1 interior knots,
//   and d_0 = d_K = m + softplus(log(e^(1 - m) - 1)) = 1, so the spline meets the
//   identity tails with slope 1 (m = 1e-3 everywhere). Outside [-B, B]: y = x, log|dy/dx| = 0.
// The per-element functions at the end (rq_locate and after) walk the knots from the
// parameters themselves, so nothing of size K needs storing: the CUDA kernels' schedule.
// The CPU kernels run the same steps across SIMD lanes (csrc/flows/rq_spline_kernel.cpp)
// on the bin math here.
#pragma once

#include <math.h>

#include "csrc/common/coupling_math.h"
#include "csrc/common/dtype.h"
#include "csrc/common/hd.h"
#include "csrc/common/math.h"

namespace pygen {

constexpr double kRqMinBinWidth = 1e-3;
constexpr double kRqMinBinHeight = 1e-3;
constexpr double kRqMinDerivative = 1e-3;
// min bin width * K must not exceed 1.
constexpr int kRqMaxBins = 1000;
// log(e^(1 - m) - 1) as nflows computes it in float64: softplus of it plus m is 1.
constexpr double kRqBoundaryPreactivation = 0.5397424172369522;

// Bits of the non-finite parameter tensors (rq_row_bad).
enum RqBad : int { kRqBadWidths = 1, kRqBadHeights = 2, kRqBadDerivatives = 4 };

PYGEN_HD float rq_exp(float v) { return expf(v); }
PYGEN_HD double rq_exp(double v) { return exp(v); }
PYGEN_HD float rq_log1p(float v) { return log1pf(v); }
PYGEN_HD double rq_log1p(double v) { return log1p(v); }
PYGEN_HD float rq_sqrt(float v) { return sqrtf(v); }
PYGEN_HD double rq_sqrt(double v) { return sqrt(v); }
// Softmax weights relative to the row maximum: the polynomial exp is branch-free, so the
// CPU loops over a row vectorize.
PYGEN_HD float rq_exp_nonpos(float v) { return exp_nonpos_f32(v); }
PYGEN_HD double rq_exp_nonpos(double v) { return exp(v); }

// The host's log, softplus and its derivative are branch-free and call no libm function
// in float32 (the polynomials of math.h), so the CPU kernel's lane loops vectorize; the
// device keeps libm's. log covers every input as libm does: subnormals are scaled into
// the normal range, and 0, negatives, +inf and NaN give -inf, NaN, +inf and NaN.
PYGEN_HD float rq_log(float v) {
#if defined(__CUDA_ARCH__)
  return logf(v);
#else
  const bool sub = v < 1.17549435e-38f;  // FLT_MIN
  const float r =
      log_f32(sel(sub, v * 16777216.0f, v)) - sel(sub, 16.635532333438687f, 0.0f);  // 2^24, 24 ln 2
  // Selects, not &&: a short-circuit is control flow, which keeps the lane loops scalar.
  return sel(v == INFINITY, v, sel(v > 0.0f, r, sel(v == 0.0f, -INFINITY, NAN)));
#endif
}
PYGEN_HD double rq_log(double v) {
#if defined(__CUDA_ARCH__)
  return log(v);
#else
  const bool sub = v < 2.2250738585072014e-308;  // DBL_MIN
  const double r =
      log_f64(sel(sub, v * 18014398509481984.0, v)) - sel(sub, 37.42994775023705, 0.0);  // 2^54, 54 ln 2
  const double inf = INFINITY, nan = NAN;
  return sel(v == inf, v, sel(v > 0.0, r, sel(v == 0.0, -inf, nan)));
#endif
}

// torch.nn.functional.softplus (threshold 20) and its derivative. The host's float32
// form is max(v, 0) + log1p(e^-|v|), within an ulp of log1p(e^v).
PYGEN_HD float rq_softplus(float v) {
#if defined(__CUDA_ARCH__)
  return v > 20.0f ? v : rq_log1p(rq_exp(v));
#else
  return sel(v > 20.0f, v, max_c(v, 0.0f) + log1p_unit(exp_c(-abs_c(v))));
#endif
}
PYGEN_HD double rq_softplus(double v) { return v > 20.0 ? v : rq_log1p(rq_exp(v)); }
PYGEN_HD float rq_softplus_grad(float v) {
#if defined(__CUDA_ARCH__)
  if (v > 20.0f) return 1.0f;
  const float z = rq_exp(v);
  return z / (z + 1.0f);
#else
  const float z = exp_c(-abs_c(v));  // sigmoid(|v|) = 1 / (1 + z), sigmoid(-|v|) = z / (1 + z)
  return sel(v > 20.0f, 1.0f, sel(v >= 0.0f, 1.0f, z) / (1.0f + z));
#endif
}
PYGEN_HD double rq_softplus_grad(double v) {
  if (v > 20.0) return 1.0;
  const double z = rq_exp(v);
  return z / (z + 1.0);
}

// The larger of a row's running maximum m and value v, NaN once v is: a NaN parameter
// then makes the whole softmax NaN (the element's output with it), where a plain max
// would drop it and the softmax's exp would read it as a zero-width bin.
template <class C>
PYGEN_HD C rq_max_nan(C m, C v) {
  return sel((v > m) | (v != v), v, m);
}

template <class C>
PYGEN_HD C rq_boundary_derivative() {
  return C(kRqMinDerivative) + rq_softplus(C(kRqBoundaryPreactivation));
}

// One element's parameters, value j at ptr[j * step]: a row of a matrix (step 1) or a
// column of a conv output whose parameter dim is not last.
template <class T>
struct RqRow {
  T* ptr;
  int64_t step;
  PYGEN_HD T& operator[](int j) const { return ptr[j * step]; }
};

template <class T>
PYGEN_HD bool rq_all_finite(RqRow<const T> u, int n) {
  using C = AccOf<T>;
  C z = 0;
  for (int j = 0; j < n; ++j) z += to_acc(u[j]) * C(0);  // NaN once any value is not finite
  return z == C(0);
}

template <class T>
PYGEN_HD int rq_row_bad(RqRow<const T> uw, RqRow<const T> uh, RqRow<const T> ud, int K) {
  return (rq_all_finite(uw, K) ? 0 : kRqBadWidths) | (rq_all_finite(uh, K) ? 0 : kRqBadHeights) |
         (rq_all_finite(ud, K - 1) ? 0 : kRqBadDerivatives);
}

// The knots around one bin, and the softmax mass below it (for the backward).
template <class C>
struct RqKnots {
  int k;               // the bin
  C lo, hi;            // knot_k, knot_{k+1}, rounded to C
  C lo_rest, hi_rest;  // what the rounding dropped (rq_knot_rest)
  C p_below;           // sum of softmax_i, i < k
  C p_upto;            // sum of softmax_i, i <= k (1 for the last bin)
};

// The interior knots of a partition, knot_j = -B + 2B sum_{i <= j} (m + (1 - m K) p_i)
// with p the softmax e^{u_i - max} / S, are computed as -B + step (j + 1) + rate E_j
// with E_j the running sum of the exponentials, all in float64, and rounded once. In
// nflows' order (a float32 softmax, float32 sizes, their cumsum rounded to float32, then
// scaled by 2B and shifted by -B in float32) a knot carries four roundings and the
// softmax's normalization error, which a narrow or steep bin, or one whose derivative is
// near the 1e-3 floor, multiplies into y and the log-det (tests/flows/test_rq_spline.py's
// test_low_precision_error has the numbers). Rounded once, a knot is within half an ulp
// plus what the exponentials' float32 rounding moves it.
PYGEN_HD double rq_knot_step(double bound, double min_size) { return 2.0 * bound * min_size; }
PYGEN_HD double rq_knot_rate(double bound, double min_size, int K, double sum) {
  return 2.0 * bound * (1.0 - min_size * K) / sum;
}
PYGEN_HD double rq_knot(double bound, double step, double rate, int j, double cum) {
  return -bound + step * double(j + 1) + rate * cum;
}
// What rounding the knot to C drops, in C: their float64 sum is the knot as computed
// (exactly, for float32: 24 + 24 bits); zero for float64. The search and the forward
// read the rounded knot, the inverse's root both (rq_bin_root).
template <class C>
PYGEN_HD C rq_knot_rest(double knot64) {
  return C(knot64 - double(C(knot64)));
}

// One row's partition of [-B, B]: the softmax of its K unnormalized sizes, walked knot
// by knot (the knots as rq_knot computes them).
template <class T>
struct RqPartition {
  using C = AccOf<T>;
  RqRow<const T> u;
  int K;
  C bound, max, sum, scale;
  // knot_j = -B + step (j + 1) + rate sum_{i <= j} e^{u_i - max}, in float64 (rq_knot).
  double step, rate;

  PYGEN_HD RqPartition(RqRow<const T> u_, int K_, C bound_, double min_size_) : u(u_), K(K_), bound(bound_) {
    max = to_acc(u[0]);
    for (int j = 1; j < K; ++j) max = rq_max_nan(max, to_acc(u[j]));
    sum = 0;
    double sum64 = 0;
    for (int j = 0; j < K; ++j) {
      const C e = rq_exp_nonpos(to_acc(u[j]) - max);
      sum += e;
      sum64 += double(e);
    }
    scale = C(1.0 - min_size_ * K);
    step = rq_knot_step(double(bound), min_size_);
    rate = rq_knot_rate(double(bound), min_size_, K, sum64);
  }

  PYGEN_HD C prob(int j) const { return rq_exp_nonpos(to_acc(u[j]) - max) / sum; }

  // With search: the bin holding v (knot_k <= v < knot_{k+1}, the last bin closed, as
  // nflows' searchsorted; NaN v lands in the last bin); else bin k.
  PYGEN_HD RqKnots<C> walk(bool search, C v, int k) const {
    RqKnots<C> r{K - 1, -bound, bound, C(0), C(0), C(0), C(1)};
    double cum = 0;
    for (int j = 0; j < K - 1; ++j) {
      const C e = rq_exp_nonpos(to_acc(u[j]) - max);
      const C p = e / sum;
      cum += double(e);
      const double knot64 = rq_knot(double(bound), step, rate, j, cum);
      const C knot = C(knot64);
      if (search ? v < knot : j == k) {
        r.k = j;
        r.hi = knot;
        r.hi_rest = rq_knot_rest<C>(knot64);
        r.p_upto = r.p_below + p;
        return r;
      }
      r.p_below += p;
      r.lo = knot;
      r.lo_rest = rq_knot_rest<C>(knot64);
    }
    return r;
  }

  // Adds the gradient of the loss through knot_k (g_lo) and knot_{k+1} (g_hi) into the
  // unnormalized sizes: knot_j = -B + 2B sum_{i<j} (m + s p_i) for interior j, so
  // dL/dp_i = 2B s (g_lo [i < k] + g_hi [i <= k]), then the softmax backward.
  template <class G>
  PYGEN_HD void backward(const RqKnots<C>& r, C g_lo, C g_hi, RqRow<G> grad) const {
    const C a = r.k >= 1 ? g_lo : C(0);
    const C b = r.k + 1 <= K - 1 ? g_hi : C(0);
    const C f = (bound + bound) * scale;
    const C mean = f * (a * r.p_below + b * r.p_upto);
    for (int j = 0; j < K; ++j) {
      const C gp = f * ((j < r.k ? a : C(0)) + (j <= r.k ? b : C(0)));
      grad[j] = from_acc<G>(prob(j) * (gp - mean));
    }
  }
};

// One bin of the spline: its corner knots (rounded to C) and the derivatives there.
template <class C>
struct RqBin {
  C x0, x1, y0, y1, d0, d1;
};

// What rounding dropped from the bin's height knots (rq_knot_rest): y0 + rest.y0 in
// float64 is the knot as computed. Only the inverse reads it; its width knots enter x
// without amplification, so their rounding to C costs nothing measurable.
template <class C>
struct RqBinRest {
  C y0, y1;
};

// The gradient of the loss with respect to the element's input and its bin's corners.
template <class C>
struct RqBinGrad {
  C in, x0, x1, y0, y1, d0, d1;
};

// Forward: y and log|dy/dx| at x in the bin (the paper's eqs. 4-5, nflows' arithmetic).
template <class C>
PYGEN_HD void rq_bin_forward(const RqBin<C>& b, C x, C* y, C* lad) {
  const C w = b.x1 - b.x0, h = b.y1 - b.y0, s = h / w;
  const C theta = (x - b.x0) / w;
  const C t = theta * (C(1) - theta);
  const C num = h * (s * theta * theta + b.d0 * t);
  const C den = s + (b.d0 + b.d1 - C(2) * s) * t;
  *y = b.y0 + num / den;
  const C u = C(1) - theta;
  const C dnum = s * s * (b.d1 * theta * theta + C(2) * s * t + b.d0 * u * u);
  *lad = rq_log(dnum) - C(2) * rq_log(den);
}

// The position theta in [0, 1] of the bin whose spline value is y: the root of the
// quadratic, in the cancellation-free form 2c / (-b - sqrt(b^2 - 4ac)), in float64 from
// the height knots as computed (b's plus rest) whatever C. Where the spline is flat (slopes
// down to ~1e-6: a low bin between steep corners) the root is ill-conditioned: x moves by
// an error in y - y0 over the slope, and in float32 the roundings of a, b and c (sums
// of terms ~h d0 that cancel to ~h s there), of the root formula on them, of y - y0 and
// of the knots themselves all act as such errors, the quadratic's the most. They broke
// the 2x rule against PyTorch's float32 in 10 of 600 comparisons (up to 5.4x); in
// float64 none does there (tests/flows/test_rq_spline.py, test_float32_error_wide_draws).
// What remains, 5 of 2000 over 1000 more draws (up to 4.2x, as often as the forward),
// is the softmax's float32 exponentials moving the knots: only float64 ones remove it.
template <class C>
PYGEN_HD double rq_bin_root(const RqBin<C>& b, const RqBinRest<C>& rest, C y) {
  const double y0 = double(b.y0) + double(rest.y0);
  const double w = double(b.x1) - double(b.x0), h = (double(b.y1) + double(rest.y1)) - y0;
  const double s = h / w, d0 = b.d0, d1 = b.d1;
  const double dy = double(y) - y0;
  const double curv = d0 + d1 - 2.0 * s;
  const double qa = dy * curv + h * (s - d0);
  const double qb = h * d0 - dy * curv;
  const double qc = -s * dy;
  const double disc = qb * qb - 4.0 * qa * qc;
  // Never negative in exact arithmetic (nflows asserts it); rounding may make it so.
  return (2.0 * qc) / (-qb - rq_sqrt(disc > 0.0 ? disc : 0.0));
}

// Inverse: x (from the float64 root, rounded once) and log|dx/dy| at y in the bin.
template <class C>
PYGEN_HD void rq_bin_inverse(const RqBin<C>& b, const RqBinRest<C>& rest, C y, C* x, C* lad) {
  const double theta64 = rq_bin_root(b, rest, y);
  *x = C(theta64 * (double(b.x1) - double(b.x0)) + double(b.x0));
  const C w = b.x1 - b.x0, h = b.y1 - b.y0, s = h / w;
  const C theta = C(theta64);
  const C t = theta * (C(1) - theta);
  const C den = s + (b.d0 + b.d1 - C(2) * s) * t;
  const C u = C(1) - theta;
  const C dnum = s * s * (b.d1 * theta * theta + C(2) * s * t + b.d0 * u * u);
  *lad = -(rq_log(dnum) - C(2) * rq_log(den));
}

// Backward of rq_bin_forward (inverse false: `in` is x) or rq_bin_inverse (`in` is y)
// for the loss gy * out + gl * lad. With theta the position in the bin, s = h / w,
// t = theta (1 - theta), D the denominator and M the derivative's bracket,
// out - y0 = f(theta, h, s, d0, d1) = h (s theta^2 + d0 t) / D and
// lad = 2 log s + log M - 2 log D; the inverse differentiates theta implicitly
// through f(theta) = y - y0.
template <class C>
PYGEN_HD RqBinGrad<C> rq_bin_backward(const RqBin<C>& b, const RqBinRest<C>& rest, C in, bool inverse, C gy,
                                      C gl) {
  const C w = b.x1 - b.x0, h = b.y1 - b.y0, s = h / w;
  const C theta = inverse ? C(rq_bin_root(b, rest, in)) : (in - b.x0) / w;
  const C u = C(1) - theta;
  const C t = theta * u;
  const C curv = b.d0 + b.d1 - C(2) * s;
  const C den = s + curv * t;
  const C num = s * theta * theta + b.d0 * t;
  const C m = b.d1 * theta * theta + C(2) * s * t + b.d0 * u * u;
  const C den2 = den * den;
  const C one_2t = C(1) - C(2) * t, one_2theta = C(1) - C(2) * theta;
  // Partials of f ...
  const C f_theta = h * s * m / den2;
  const C f_h = num / den;
  const C f_s = h * (theta * theta * den - num * one_2t) / den2;
  const C f_d0 = h * t * (den - num) / den2;
  const C f_d1 = -h * num * t / den2;
  // ... and of log|dy/dx|.
  const C m_theta = C(2) * (b.d1 * theta + s * one_2theta - b.d0 * u);
  const C l_theta = m_theta / m - C(2) * curv * one_2theta / den;
  const C l_s = C(2) / s + C(2) * t / m - C(2) * one_2t / den;
  const C l_d0 = u * u / m - C(2) * t / den;
  const C l_d1 = theta * theta / m - C(2) * t / den;

  RqBinGrad<C> g;
  C g_w, g_h;
  if (!inverse) {
    const C g_theta = gy * f_theta + gl * l_theta;
    const C g_s = gy * f_s + gl * l_s;
    g.d0 = gy * f_d0 + gl * l_d0;
    g.d1 = gy * f_d1 + gl * l_d1;
    g.in = g_theta / w;
    g_w = -(g_theta * theta + g_s * s) / w;
    g_h = gy * f_h + g_s / w;
    g.x0 = -g_theta / w - g_w;
    g.y0 = gy - g_h;
  } else {
    // out = x0 + w theta, lad = -l(theta); f(theta) = in - y0 fixes theta.
    const C lambda = (gy * w - gl * l_theta) / f_theta;
    const C g_s = -lambda * f_s - gl * l_s;
    g.d0 = -lambda * f_d0 - gl * l_d0;
    g.d1 = -lambda * f_d1 - gl * l_d1;
    g.in = lambda;
    g_w = gy * theta - g_s * s / w;
    g_h = -lambda * f_h + g_s / w;
    g.x0 = gy - g_w;
    g.y0 = -lambda - g_h;
  }
  g.x1 = g_w;
  g.y1 = g_h;
  return g;
}

// Where an element falls: its bin's knots in both partitions and its bin.
template <class T>
struct RqElement {
  using C = AccOf<T>;
  RqPartition<T> pw, ph;
  RqKnots<C> kw, ky;
  RqBin<C> bin;
  RqBinRest<C> rest;
};

// Locates `in` (x, or y with inverse) inside [-B, B] in the spline of one element's
// parameters: widths, heights [K], derivatives [K - 1].
template <class T>
PYGEN_HD RqElement<T> rq_locate(RqRow<const T> uw, RqRow<const T> uh, RqRow<const T> ud, int K,
                                AccOf<T> bound, bool inverse, AccOf<T> in) {
  using C = AccOf<T>;
  const RqPartition<T> pw(uw, K, bound, kRqMinBinWidth);
  const RqPartition<T> ph(uh, K, bound, kRqMinBinHeight);
  const RqPartition<T>& searched = inverse ? ph : pw;
  const RqPartition<T>& other = inverse ? pw : ph;
  const RqKnots<C> found = searched.walk(true, in, 0);
  const RqKnots<C> paired = other.walk(false, in, found.k);
  const int k = found.k;
  const C dbound = rq_boundary_derivative<C>();
  const C d0 = k == 0 ? dbound : C(kRqMinDerivative) + rq_softplus(to_acc(ud[k - 1]));
  const C d1 = k == K - 1 ? dbound : C(kRqMinDerivative) + rq_softplus(to_acc(ud[k]));
  const RqKnots<C>& kw = inverse ? paired : found;
  const RqKnots<C>& ky = inverse ? found : paired;
  return {pw, ph, kw, ky, {kw.lo, kw.hi, ky.lo, ky.hi, d0, d1}, {ky.lo_rest, ky.hi_rest}};
}

// One element's output and log|d out / d in|, forward or inverse; the identity outside
// [-B, B] (NaN inputs included).
template <class T>
PYGEN_HD void rq_spline_element(RqRow<const T> uw, RqRow<const T> uh, RqRow<const T> ud, int K,
                                AccOf<T> bound, bool inverse, AccOf<T> in, AccOf<T>* out, AccOf<T>* lad) {
  using C = AccOf<T>;
  if (!(in >= -bound && in <= bound)) {
    *out = in;
    *lad = C(0);
    return;
  }
  const RqElement<T> e = rq_locate(uw, uh, ud, K, bound, inverse, in);
  if (inverse)
    rq_bin_inverse(e.bin, e.rest, in, out, lad);
  else
    rq_bin_forward(e.bin, in, out, lad);
}

// The backward of one element for the loss gy * out + gl * lad: writes the gradients of
// its parameter rows (zeros outside [-B, B]) and returns the input's.
template <class T>
PYGEN_HD AccOf<T> rq_spline_element_backward(RqRow<const T> uw, RqRow<const T> uh, RqRow<const T> ud, int K,
                                             AccOf<T> bound, bool inverse, AccOf<T> in, AccOf<T> gy,
                                             AccOf<T> gl, RqRow<T> gw, RqRow<T> gh, RqRow<T> gd) {
  using C = AccOf<T>;
  for (int j = 0; j < K - 1; ++j) gd[j] = from_acc<T>(C(0));
  if (!(in >= -bound && in <= bound)) {
    for (int j = 0; j < K; ++j) gw[j] = gh[j] = from_acc<T>(C(0));
    return gy;
  }
  const RqElement<T> e = rq_locate(uw, uh, ud, K, bound, inverse, in);
  const RqBinGrad<C> g = rq_bin_backward(e.bin, e.rest, in, inverse, gy, gl);
  e.pw.backward(e.kw, g.x0, g.x1, gw);
  e.ph.backward(e.ky, g.y0, g.y1, gh);
  const int k = e.ky.k;
  if (k >= 1) gd[k - 1] = from_acc<T>(g.d0 * rq_softplus_grad(to_acc(ud[k - 1])));
  if (k + 1 <= K - 1) gd[k] = from_acc<T>(g.d1 * rq_softplus_grad(to_acc(ud[k])));
  return g.in;
}

}  // namespace pygen
