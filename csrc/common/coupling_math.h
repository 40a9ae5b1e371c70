// Numerics of the normalizing-flow coupling transforms, shared by the CPU kernels and
// the CUDA kernels: the affine coupling's scale functions and the logistic-mixture CDF
// (Flow++) with its log-space evaluation, its derivatives and its safeguarded Newton
// inversion. fp32 functions are branch-free (selects, no libm calls) so the CPU lane
// loops that call them vectorize; fp64 ones call the device's libm.
#pragma once

#include <cmath>
#include <cstdint>

#include "csrc/common/hd.h"
#include "csrc/common/math.h"

namespace pygen {

// ---- elementary functions in the compute type ---------------------------------------

// Selects and |a| for float through bit masks on the host: GCC threads chains of
// float selects into branches, which block the lane loops' vectorization.
PYGEN_HD float sel(bool c, float a, float b) {
#if defined(__CUDA_ARCH__)
  return c ? a : b;
#else
  const uint32_t m = 0u - uint32_t(c);
  return bits_float((float_bits(a) & m) | (float_bits(b) & ~m));
#endif
}
PYGEN_HD double sel(bool c, double a, double b) { return c ? a : b; }
PYGEN_HD float abs_c(float a) { return bits_float(float_bits(a) & 0x7fffffffu); }
PYGEN_HD double abs_c(double a) { return a < 0.0 ? -a : a; }
template <class C>
PYGEN_HD C min_c(C a, C b) {
  return sel(b < a, b, a);
}
template <class C>
PYGEN_HD C max_c(C a, C b) {
  return sel(b > a, b, a);
}
// Finite (not NaN, not +-inf), without a libm call.
template <class C>
PYGEN_HD bool finite_c(C a) {
  return a - a == C(0);
}

// e^x over the whole float range (Cephes expf: x = n ln2 + r, degree-7 polynomial, ~1
// ulp). 2^n is applied in two halves so n = 128 and subnormal results come out right;
// x > 88.72 gives inf, x < -103.97 gives 0, NaN stays NaN.
PYGEN_HD float exp_c(float x) {
  // Round to nearest through the 1.5 * 2^23 shifter: no libm call, vectorizes.
  const float n = add_rn(add_rn(mul_rn(x, 1.44269504088896341f), 12582912.0f), -12582912.0f);
  const float e = exp_reduced_f32(n, x);
  // Out of range, n is clamped as an integer (clamping x itself lets GCC thread the
  // comparisons into branches, which blocks vectorization); those lanes are masked below.
  const int32_t n_raw = int32_t(n);
  const int32_t ni = n_raw < -150 ? -150 : (n_raw > 128 ? 128 : n_raw);
  const int32_t n1 = ni / 2, n2 = ni - n1;  // each in [-75, 64]: normal powers of two
  const float s1 = bits_float(uint32_t(n1 + 127) << 23), s2 = bits_float(uint32_t(n2 + 127) << 23);
  const uint32_t v = float_bits(mul_rn(mul_rn(e, s1), s2));
  // Masks rather than selects, for the same reason.
  const uint32_t keep = 0u - uint32_t(x >= -103.97f);  // false for NaN too
  const uint32_t over = 0u - uint32_t(x > 88.7228394f);
  const uint32_t nan = 0u - uint32_t(x != x);
  return bits_float((v & keep & ~over) | (0x7f800000u & over) | (float_bits(x) & nan));
}
PYGEN_HD double exp_c(double x) {
#if defined(__CUDA_ARCH__)
  return ::exp(x);
#else
  return std::exp(x);
#endif
}

// log(1 + e) for e in [0, 1]: log u for u = 1 + e rounded, corrected by the rounding
// error (u - 1 - e) / u to first order (as fdlibm's log1p); exactly e where u rounds to 1.
// No select: GCC sinks a selected branch's division back under control flow.
PYGEN_HD float log1p_unit(float e) {
  const float u = add_rn(1.0f, e);
  return add_rn(log_f32(u), -(add_rn(add_rn(u, -1.0f), -e) / u));
}
PYGEN_HD double log1p_unit(double e) {
#if defined(__CUDA_ARCH__)
  return ::log1p(e);
#else
  return std::log1p(e);
#endif
}

// log x for positive normal x (no libm call for float).
PYGEN_HD float log_c(float x) { return log_f32(x); }
PYGEN_HD double log_c(double x) { return log_f64(x); }

// tanh (Cephes tanhf: an odd polynomial below 0.625, 1 - 2 / (e^{2|x|} + 1) above).
PYGEN_HD float tanh_c(float x) {
  const float a = abs_c(x);
  const float z = mul_rn(x, x);
  float p = -5.70498872745e-3f;
  p = fma_rn(p, z, 2.06390887954e-2f);
  p = fma_rn(p, z, -5.37397155531e-2f);
  p = fma_rn(p, z, 1.33314422036e-1f);
  p = fma_rn(p, z, -3.33332819422e-1f);
  const float small = fma_rn(mul_rn(p, z), x, x);
  const float t = exp_c(-2.0f * a);
  const float big = bits_float(float_bits((1.0f - t) / (1.0f + t)) | (float_bits(x) & 0x80000000u));
  return sel(a < 0.625f, small, big);
}
PYGEN_HD double tanh_c(double x) {
#if defined(__CUDA_ARCH__)
  return ::tanh(x);
#else
  return std::tanh(x);
#endif
}

// Online log-sum-exp: (m, s) holds sum_i e^{t_i} = s e^m with s >= 1 after the first
// push (s = 0, m = -inf before it). One exponential per term; -inf terms add nothing.
template <class C>
PYGEN_HD void lse_push(C& m, C& s, C t) {
  const C d = t - m;
  const bool up = d > C(0);
  const C e = exp_c(-abs_c(d));
  s = sel(up, s * e + C(1), sel(d == d, s + e, s));
  m = sel(up, t, m);
}
template <class C>
PYGEN_HD C lse_value(C m, C s) {
  return m + log_c(s);  // s >= 1, or s = 0 with m = -inf
}

// ---- affine coupling -----------------------------------------------------------------

enum class ScaleFn : int { kExp = 0, kExpClamped = 1, kSigmoid = 2 };

// The scale of y = x * scale + shift from the raw network output: its log, d log / d
// raw, and the factor the map multiplies by (scale, or 1 / scale for the inverse).
template <class C>
struct CouplingScale {
  C log_scale;
  C dlog;
  C factor;
};

template <ScaleFn F, bool Inverse, class C>
PYGEN_HD CouplingScale<C> coupling_scale(C raw, C clamp, C inv_clamp) {
  CouplingScale<C> s;
  if constexpr (F == ScaleFn::kSigmoid) {
    // Glow: scale = sigmoid(raw + 2), log scale = -softplus(-(raw + 2)).
    const C a = raw + C(2);
    const C e = exp_c(-abs_c(a));  // in (0, 1]
    const C one_pe = C(1) + e;
    s.log_scale = min_c(a, C(0)) - log1p_unit(e);
    const bool pos = a >= C(0);
    s.dlog = sel(pos, e, C(1)) / one_pe;  // sigmoid(-a)
    if constexpr (Inverse)
      s.factor = sel(pos, one_pe, C(1) + C(1) / e);  // 1 + e^{-a}
    else
      s.factor = sel(pos, C(1), e) / one_pe;
  } else {
    if constexpr (F == ScaleFn::kExpClamped) {
      const C t = tanh_c(raw * inv_clamp);  // soft clamp to (-clamp, clamp)
      s.log_scale = clamp * t;
      s.dlog = C(1) - t * t;
    } else {
      s.log_scale = raw;
      s.dlog = C(1);
    }
    s.factor = exp_c(Inverse ? -s.log_scale : s.log_scale);
  }
  return s;
}

// Gradients of one element of the affine map (g: of y, g_l: of the sample's log-det):
//   forward   gx = g s,   gshift = g,       graw = (g x s + g_l) dlog
//   inverse   gx = g / s, gshift = -g / s,  graw = -(g out + g_l) dlog,  out = (x - shift) / s
template <class C>
struct AffineGrads {
  C x, shift, raw;
};

template <bool Inverse, class C>
PYGEN_HD AffineGrads<C> affine_coupling_grads(C g, C g_l, C x, C shift, const CouplingScale<C>& s) {
  if (Inverse) return {g * s.factor, -g * s.factor, -(g * ((x - shift) * s.factor) + g_l) * s.dlog};
  return {g * s.factor, g, (g * x * s.factor + g_l) * s.dlog};
}

// ---- logistic-mixture CDF --------------------------------------------------------------
//
// F(x) = sum_k w_k sigmoid(z_k), w = softmax(logits), z_k = (x - mean_k) e^{-log_scale_k}.
// Everything is carried in log space through three online log-sum-exps over k:
//   log F      = lse_k(log w_k + log sigmoid(z_k))
//   log(1 - F) = lse_k(log w_k + log sigmoid(-z_k))
//   log f      = lse_k(log w_k + log sigmoid(z_k) + log sigmoid(-z_k) - log_scale_k)
// so neither F nor 1 - F is ever rounded to 0 or 1 before its log is taken.

// One component at x: z, e^{-|z|}, log sigmoid(z) and log sigmoid(-z).
template <class C>
struct LogisticTerm {
  C z, e, log_sig, log_sig_neg;
};

template <class C>
PYGEN_HD LogisticTerm<C> logistic_term(C x, C mean, C inv_scale) {
  LogisticTerm<C> t;
  t.z = (x - mean) * inv_scale;
  t.e = exp_c(-abs_c(t.z));
  const C l1p = log1p_unit(t.e);
  t.log_sig = min_c(t.z, C(0)) - l1p;
  t.log_sig_neg = min_c(-t.z, C(0)) - l1p;
  return t;
}

// tanh(z / 2) from e = e^{-|z|}: sign(z) (1 - e) / (1 + e).
template <class C>
PYGEN_HD C tanh_half(C z, C e) {
  const C t = (C(1) - e) / (C(1) + e);
  return sel(z < C(0), -t, t);
}

// The three running log-sum-exps at one x.
template <class C>
struct MixAccum {
  C mF = C(-INFINITY), sF = C(0);  // F
  C mG = C(-INFINITY), sG = C(0);  // G = 1 - F
  C mf = C(-INFINITY), sf = C(0);  // f, the density

  PYGEN_HD void push(C log_w, C log_scale, const LogisticTerm<C>& t) {
    const C a = log_w + t.log_sig;
    lse_push(mF, sF, a);
    lse_push(mG, sG, log_w + t.log_sig_neg);
    lse_push(mf, sf, a + t.log_sig_neg - log_scale);
  }
};

// The fast path of the same three sums, in linear space: w_k sigmoid(+-z_k) from one
// exponential and one division per component, against the log-space path's four
// exponentials and a log. F and 1 - F are still separate sums of positive terms (no
// cancellation, nothing rounds to 1 that is then subtracted); only underflow can spoil
// them, so their logs are used when all three sums are at least kMixLinearMin, and
// the log-space path is taken otherwise (far tails).
template <class C>
constexpr C kMixLinearMin = sizeof(C) == 8 ? C(1e-280) : C(1e-30);

template <class C>
PYGEN_HD void mix_linear_push(C& F, C& G, C& f, C x, C mean, C inv_scale, C w) {
  const C z = (x - mean) * inv_scale;
  const C e = exp_c(-abs_c(z));
  const C hi = C(1) / (C(1) + e);  // sigmoid(|z|)
  const C lo = e * hi;             // sigmoid(-|z|)
  const bool pos = z >= C(0);
  F += w * sel(pos, hi, lo);
  G += w * sel(pos, lo, hi);
  f += w * (hi * lo) * inv_scale;
}

template <class C>
PYGEN_HD bool mix_linear_ok(C F, C G, C f) {
  return (F >= kMixLinearMin<C>)&(G >= kMixLinearMin<C>)&(f >= kMixLinearMin<C>);
}

// log F, log(1 - F), log f, and the forward map's y = logit F and its log-derivative.
template <class C>
struct MixEval {
  C log_F, log_G, log_f;
  PYGEN_HD C y() const { return log_F - log_G; }
  PYGEN_HD C logdet() const { return log_f - log_F - log_G; }
};

template <class C>
PYGEN_HD MixEval<C> mix_eval(const MixAccum<C>& a) {
  return {lse_value(a.mF, a.sF), lse_value(a.mG, a.sG), lse_value(a.mf, a.sf)};
}

// Gradient of one component's parameters, given the upstream gradients of y and of
// the log-derivative (dy, dl), with the normalized responsibilities
//   p = w sigmoid(z) / F,  q = w sigmoid(-z) / (1 - F),  r = w sigmoid(z) sigmoid(-z) e^{-s} / f
// (d = e^{logdet} = dy/dx, D = f / F - f / (1 - F)):
//   dy/dx = d,   dy/dmean = -r d,   dy/dlog_scale = -(x - mean) r d,   dy/dlogit = p - q
//   dl/dmean = r (T + D),   dl/dlog_scale = r (z tanh(z/2) - 1 + (x - mean) D),
//   dl/dlogit = r - p - q + w,   dl/dx = -sum_k r_k T_k - D,   T = tanh(z/2) e^{-s}
template <class C>
struct MixComponentGrad {
  C logit, mean, log_scale, dl_dx_part;  // dl_dx_part: -r T, summed over k for dl/dx
};

template <class C>
PYGEN_HD MixComponentGrad<C> mix_component_grad(C x, C mean, C inv_scale, C log_w, C log_scale,
                                                const MixEval<C>& ev, C d, C D, C dy, C dl) {
  const LogisticTerm<C> t = logistic_term(x, mean, inv_scale);
  const C a = log_w + t.log_sig;
  const C p = exp_c(a - ev.log_F);
  const C q = exp_c(log_w + t.log_sig_neg - ev.log_G);
  const C r = exp_c(a + t.log_sig_neg - log_scale - ev.log_f);
  const C w = exp_c(log_w);
  const C th = tanh_half(t.z, t.e);
  const C T = th * inv_scale;
  const C dxm = x - mean;
  MixComponentGrad<C> g;
  g.logit = dy * (p - q) + dl * (r - p - q + w);
  g.mean = -dy * r * d + dl * r * (T + D);
  g.log_scale = -dy * dxm * r * d + dl * r * (t.z * th - C(1) + dxm * D);
  g.dl_dx_part = -r * T;
  return g;
}

// ---- inverse: safeguarded Newton-bisection on g(x) = logit F(x) - y --------------------
//
// The root lies in [min_k(mean_k + y e^{s_k}), max_k(mean_k + y e^{s_k})]: there every
// z_k >= y (resp. <= y) at the right (left) end, and logit F lies between min_k z_k and
// max_k z_k because F is a convex combination of the sigmoid(z_k). Each step evaluates
// g and g' = e^{logdet}, shrinks the bracket by g's sign, and takes the Newton step
// (pushed tol_x / 2 past its estimate, so that the next evaluation lands beyond the root
// and closes the bracket) when it stays inside the bracket and is under half the
// previous step; otherwise it bisects. It stops when the bracket is at most 2 tol_x
// wide, tol_x = tol * max(1, |x|), or no float lies strictly inside it; the answer is
// the bracket's midpoint.
template <class C>
struct NewtonState {
  C lo, hi, x, step;
  bool done;

  PYGEN_HD C mid() const { return lo + C(0.5) * (hi - lo); }

  // One update from g (= logit F(x) - y) and its derivative dg at the current x;
  // branch-free (bitwise & and |, selects), so the CPU's lane loop vectorizes.
  PYGEN_HD void update(C g, C dg, C tol) {
    const C nlo = sel(g <= C(0), x, lo);  // g == 0: both ends move to x
    const C nhi = sel(g >= C(0), x, hi);
    const C m = nlo + C(0.5) * (nhi - nlo);
    const C tol_x = tol * max_c(C(1), abs_c(x));
    const bool stop = (nhi - nlo <= C(2) * tol_x) | (m <= nlo) | (m >= nhi);
    const C newton = x - g / dg + sel(g > C(0), C(-0.5), C(0.5)) * tol_x;
    const bool take = (newton > nlo) & (newton < nhi) & (abs_c(newton - x) <= C(0.5) * abs_c(step));
    const C next = sel(stop, m, sel(take, newton, m));
    lo = sel(done, lo, nlo);
    hi = sel(done, hi, nhi);
    step = sel(done | stop, step, next - x);
    x = sel(done, x, next);
    done = done | stop;
  }
};

}  // namespace pygen
