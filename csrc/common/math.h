// fp32 math that gives bit-identical results on the host and on CUDA devices.
//
// Every rounding step is spelled out: fused steps through fma, the others through
// mul/add helpers that nvcc may not contract (host files build with
// -ffp-contract=off for the same reason). libm and CUDA's intrinsics differ in the
// last bit; these functions do not, which is what makes a seeded sample the same on
// every device.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "csrc/common/hd.h"

namespace pygen {

PYGEN_HD float fma_rn(float a, float b, float c) {
#if defined(__CUDA_ARCH__)
  return __fmaf_rn(a, b, c);
#else
  return std::fma(a, b, c);
#endif
}

PYGEN_HD float mul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}

PYGEN_HD float add_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}

PYGEN_HD float sqrt_rn(float a) {
#if defined(__CUDA_ARCH__)
  return __fsqrt_rn(a);
#else
  return std::sqrt(a);
#endif
}

PYGEN_HD double fma_rn(double a, double b, double c) {
#if defined(__CUDA_ARCH__)
  return __fma_rn(a, b, c);
#else
  return std::fma(a, b, c);
#endif
}

PYGEN_HD double mul_rn(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dmul_rn(a, b);
#else
  return a * b;
#endif
}

PYGEN_HD double add_rn(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dadd_rn(a, b);
#else
  return a + b;
#endif
}

PYGEN_HD double div_rn(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __ddiv_rn(a, b);
#else
  return a / b;
#endif
}

PYGEN_HD double sqrt_rn(double a) {
#if defined(__CUDA_ARCH__)
  return __dsqrt_rn(a);
#else
  return std::sqrt(a);
#endif
}

PYGEN_HD uint64_t double_bits(double x) {
#if defined(__CUDA_ARCH__)
  return static_cast<uint64_t>(__double_as_longlong(x));
#else
  uint64_t u;
  std::memcpy(&u, &x, sizeof u);
  return u;
#endif
}

PYGEN_HD uint32_t float_bits(float x) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(x);
#else
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  return u;
#endif
}

PYGEN_HD float bits_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float x;
  std::memcpy(&x, &u, sizeof x);
  return x;
#endif
}

PYGEN_HD double bits_double(uint64_t u) {
#if defined(__CUDA_ARCH__)
  return __longlong_as_double(static_cast<long long>(u));
#else
  double x;
  std::memcpy(&x, &u, sizeof x);
  return x;
#endif
}

// Natural log for positive normal floats (Cephes logf: reduce to m in
// [sqrt(1/2), sqrt(2)), then a degree-9 polynomial in m - 1). Max error ~1 ulp.
PYGEN_HD float log_f32(float x) {
  const uint32_t bits = float_bits(x);
  // m > sqrt(2) (mantissa above that of 0x3fb504f3): halve m and bump e. Integer
  // arithmetic instead of selects, so the AVX2 build vectorizes it too.
  const uint32_t big = (bits & 0x007fffffu) > 0x003504f3u ? 1u : 0u;
  const int e = int((bits >> 23) & 0xffu) - 127 + int(big);
  const float m = bits_float(((bits & 0x007fffffu) | 0x3f800000u) - (big << 23));
  const float f = add_rn(m, -1.0f);  // exact (Sterbenz)
  const float z = mul_rn(f, f);
  float p = 7.0376836292e-2f;
  p = fma_rn(p, f, -1.1514610310e-1f);
  p = fma_rn(p, f, 1.1676998740e-1f);
  p = fma_rn(p, f, -1.2420140846e-1f);
  p = fma_rn(p, f, 1.4249322787e-1f);
  p = fma_rn(p, f, -1.6668057665e-1f);
  p = fma_rn(p, f, 2.0000714765e-1f);
  p = fma_rn(p, f, -2.4999993993e-1f);
  p = fma_rn(p, f, 3.3333331174e-1f);
  const float fe = float(e);
  float y = mul_rn(mul_rn(f, z), p);
  y = fma_rn(fe, -2.12194440e-4f, y);
  y = fma_rn(-0.5f, z, y);
  return fma_rn(fe, 0.693359375f, add_rn(f, y));
}

// (cos, sin) of an angle plus q quarter turns, from its (c, s). Selects, not table
// lookups, so the CPU loops vectorize.
template <class T>
PYGEN_HD void rotate_quarter_turns(uint32_t q, T c, T s, T* c_out, T* s_out) {
  const T cq = (q & 1u) ? s : c;
  const T sq = (q & 1u) ? c : s;
  *c_out = ((q + 1u) & 2u) ? -cq : cq;
  *s_out = (q & 2u) ? -sq : sq;
}

// e^(x - n ln2) for an integer-valued n with |x - n ln2| <= ln2/2 (Cephes expf: ln2 split
// in two for the reduction, then a degree-7 polynomial; relative error ~1 ulp).
PYGEN_HD float exp_reduced_f32(float n, float x) {
  float r = fma_rn(n, -0.693359375f, x);
  r = fma_rn(n, 2.12194440e-4f, r);
  float p = 1.9875691500e-4f;
  p = fma_rn(p, r, 1.3981999507e-3f);
  p = fma_rn(p, r, 8.3334519073e-3f);
  p = fma_rn(p, r, 4.1665795894e-2f);
  p = fma_rn(p, r, 1.6666665459e-1f);
  p = fma_rn(p, r, 5.0000001201e-1f);
  const float e = add_rn(fma_rn(mul_rn(r, r), p, r), 1.0f);
  return e;
}

// e^x for x <= 0 (Cephes expf: x = n ln2 + r with |r| <= ln2/2, then a degree-7
// polynomial; relative error ~1 ulp). Below -87.3 the result is 0 rather than a
// subnormal: callers use it for softmax weights relative to the maximum.
PYGEN_HD float exp_nonpos_f32(float x) {
  const float xc = x < -87.3f ? -87.3f : x;
  const float n = float(int32_t(fma_rn(xc, 1.44269504088896341f, -0.5f)));  // floor(x/ln2 + 1/2)
  const float e = exp_reduced_f32(n, xc);
  const float scale = bits_float(uint32_t(int32_t(n) + 127) << 23);  // 2^n, n in [-126, 0]
  const uint32_t keep = 0u - uint32_t(x >= -87.3f);                  // a mask, not a branch: loops vectorize
  return bits_float(float_bits(mul_rn(e, scale)) & keep);
}

// float16 / bfloat16 bit patterns to float, exactly, branch-free (vectorizable).
PYGEN_HD float bf16_bits_to_f32(uint16_t h) { return bits_float(uint32_t(h) << 16); }

PYGEN_HD float f16_bits_to_f32(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  const uint32_t em = h & 0x7fffu;
  // Normal and subnormal: shift exponent+mantissa into place and rescale by 2^112,
  // which also normalizes subnormals exactly; inf/NaN keep an all-ones exponent.
  const float scaled = mul_rn(bits_float(em << 13), 0x1p112f);
  const uint32_t special = em >= 0x7c00u ? 0x7f800000u | (em & 0x3ffu) << 13 : float_bits(scaled);
  return bits_float(sign | special);
}

// cos and sin of 2*pi*(k + 1/2) / 2^24 for a 24-bit integer k. The angle is reduced
// exactly in integers to the nearest quarter turn, so the polynomials only see
// |angle| <= pi/4, where their Taylor tails are below 1e-9.
PYGEN_HD void sincos_2pi_u24(uint32_t k, float* c_out, float* s_out) {
  const uint32_t q = ((k + (1u << 21)) >> 22) & 3u;  // nearest quarter turn
  const int32_t d = int32_t(2 * k + 1) - int32_t(((k + (1u << 21)) >> 22) << 23);
  const float f = float(d) * 0x1p-25f;  // turns, |f| <= 1/8, exact
  const float f2 = mul_rn(f, f);
  // sin(2 pi f) = f * S(f^2), cos(2 pi f) = C(f^2): Taylor coefficients of (2 pi)^n / n!.
  float s = -15.09464257682299f;  // -(2 pi)^11 / 11!
  s = fma_rn(s, f2, 42.058693944897655f);
  s = fma_rn(s, f2, -76.70585975306139f);
  s = fma_rn(s, f2, 81.60524927607506f);
  s = fma_rn(s, f2, -41.34170224039976f);
  s = fma_rn(s, f2, 6.283185307179586f);
  s = mul_rn(s, f);
  float c = -26.4262567833744f;  // -(2 pi)^10 / 10!
  c = fma_rn(c, f2, 60.24464137187666f);
  c = fma_rn(c, f2, -85.45681720669373f);
  c = fma_rn(c, f2, 64.9393940226683f);
  c = fma_rn(c, f2, -19.739208802178716f);
  c = fma_rn(c, f2, 1.0f);
  rotate_quarter_turns(q, c, s, c_out, s_out);
}

// Natural log for positive normal doubles (fdlibm's e_log.c: m in [sqrt(1/2), sqrt(2)),
// s = (m - 1) / (m + 1), a minimax polynomial in s^2). Error below 1 ulp.
PYGEN_HD double log_f64(double x) {
  const uint64_t bits = double_bits(x);
  const uint64_t mant = bits & 0x000fffffffffffffull;
  const uint64_t big = mant > 0x0006a09e667f3bccull ? 1u : 0u;  // m > sqrt(2)
  const double k = double(int32_t(bits >> 52) - 1023 + int32_t(big));
  const double f = add_rn(bits_double((mant | 0x3ff0000000000000ull) - (big << 52)), -1.0);  // exact
  const double hfsq = mul_rn(mul_rn(0.5, f), f);
  const double s = div_rn(f, add_rn(2.0, f));
  const double z = mul_rn(s, s);
  const double w = mul_rn(z, z);
  double t1 = fma_rn(w, 1.531383769920937332e-01, 2.222219843214978396e-01);
  t1 = fma_rn(w, t1, 3.999999999940941908e-01);
  t1 = mul_rn(w, t1);
  double t2 = fma_rn(w, 1.479819860511658591e-01, 1.818357216161805012e-01);
  t2 = fma_rn(w, t2, 2.857142874366239149e-01);
  t2 = fma_rn(w, t2, 6.666666666666735130e-01);
  t2 = mul_rn(z, t2);
  const double r = add_rn(t2, t1);
  const double lo = fma_rn(k, 1.90821492927058770002e-10, mul_rn(s, add_rn(hfsq, r)));
  return fma_rn(k, 6.93147180369123816490e-01, -add_rn(add_rn(hfsq, -lo), -f));
}

// cos and sin of 2*pi*f for |f| <= 1/8 (turns, exact): Taylor series of (2 pi)^n / n!
// through n = 18, whose tail is below 1e-19 there.
PYGEN_HD void sincos_2pi_f64(double f, double* c_out, double* s_out) {
  const double f2 = mul_rn(f, f);
  double s = 0.10422916220813984;  // (2 pi)^17 / 17!
  s = fma_rn(s, f2, -0.7181223017785006);
  s = fma_rn(s, f2, 3.819952584848282);
  s = fma_rn(s, f2, -15.09464257682299);
  s = fma_rn(s, f2, 42.058693944897655);
  s = fma_rn(s, f2, -76.70585975306139);
  s = fma_rn(s, f2, 81.60524927607506);
  s = fma_rn(s, f2, -41.34170224039976);
  s = fma_rn(s, f2, 6.283185307179586);
  double c = -0.03638284114254567;  // -(2 pi)^18 / 18!
  c = fma_rn(c, f2, 0.28200596845579123);
  c = fma_rn(c, f2, -1.714390711088672);
  c = fma_rn(c, f2, 7.903536371318469);
  c = fma_rn(c, f2, -26.4262567833744);
  c = fma_rn(c, f2, 60.24464137187666);
  c = fma_rn(c, f2, -85.45681720669373);
  c = fma_rn(c, f2, 64.9393940226683);
  c = fma_rn(c, f2, -19.739208802178716);
  c = fma_rn(c, f2, 1.0);
  *s_out = mul_rn(s, f);
  *c_out = c;
}

// Round-to-nearest-even float -> bfloat16 / float16 bit patterns, identical everywhere.
PYGEN_HD uint16_t f32_to_bf16_bits(float x) {
  const uint32_t u = float_bits(x);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40u);  // NaN
  return uint16_t((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

// Branch-free, so the CPU loops vectorize: normal results by integer rounding,
// subnormal ones by letting a float addition round (adding 0.5f puts 2^-24, the f16
// subnormal unit, at the last place; Giesen's float_to_half_fast3_rtne).
PYGEN_HD uint16_t f32_to_f16_bits(float x) {
  const uint32_t u = float_bits(x);
  const uint32_t sign = (u >> 16) & 0x8000u;
  const uint32_t a = u & 0x7fffffffu;
  const uint32_t r = a - 0x38000000u;  // rebias exponent 127 -> 15
  const uint32_t normal = (r + 0xfffu + ((r >> 13) & 1u)) >> 13;
  const uint32_t subnormal = float_bits(add_rn(bits_float(a), 0.5f)) - 0x3f000000u;
  // a < 2^31, so signed compares (AVX2 has no unsigned ones) and masks, not branches.
  const int32_t sa = int32_t(a);
  const uint32_t is_sub = 0u - uint32_t(sa < 0x38800000);
  const uint32_t is_inf = 0u - uint32_t(sa >= 0x477ff000);  // rounds to infinity
  const uint32_t is_nan = 0u - uint32_t(sa > 0x7f800000);
  uint32_t h = (subnormal & is_sub) | (normal & ~is_sub);
  h = (0x7c00u & is_inf) | (h & ~is_inf);
  h = (0x7e00u & is_nan) | (h & ~is_nan);
  return uint16_t(sign | h);
}

}  // namespace pygen
