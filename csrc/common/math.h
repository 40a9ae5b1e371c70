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

// cos and sin of 2*pi*(k + 1/2) / 2^24 for a 24-bit integer k. The angle is reduced
// exactly in integers to the nearest quarter turn, so the polynomials only see
// |angle| <= pi/4, where their Taylor tails are below 1e-9.
PYGEN_HD void sincos_2pi_u24(uint32_t k, float* c_out, float* s_out) {
  const uint32_t q = ((k + (1u << 21)) >> 22) & 3u;  // nearest quarter turn
  const int32_t d = int32_t(2 * k + 1) - int32_t(((k + (1u << 21)) >> 22) << 23);
  const float f = float(d) * 0x1p-25f;  // turns, |f| <= 1/8, exact
  const float f2 = mul_rn(f, f);
  // sin(2 pi f) = f * S(f^2), cos(2 pi f) = C(f^2): Taylor coefficients of (2 pi)^n / n!.
  float s = -15.094642576822984f;           // S11
  s = fma_rn(s, f2, 42.058693944897634f);   // S9
  s = fma_rn(s, f2, -76.70585975306136f);   // S7
  s = fma_rn(s, f2, 81.60524927607504f);    // S5
  s = fma_rn(s, f2, -41.341702240399755f);  // S3
  s = fma_rn(s, f2, 6.283185307179586f);    // S1
  s = mul_rn(s, f);
  float c = -26.426256783374388f;           // C10
  c = fma_rn(c, f2, 60.24464137187664f);    // C8
  c = fma_rn(c, f2, -85.45681720669371f);   // C6
  c = fma_rn(c, f2, 64.93939402266828f);    // C4
  c = fma_rn(c, f2, -19.739208802178716f);  // C2
  c = fma_rn(c, f2, 1.0f);
  // Rotate by q quarter turns with selects (no table lookups, so loops vectorize).
  const float cq = (q & 1u) ? s : c;
  const float sq = (q & 1u) ? c : s;
  *c_out = ((q + 1u) & 2u) ? -cq : cq;
  *s_out = (q & 2u) ? -sq : sq;
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
