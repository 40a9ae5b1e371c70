// From Philox blocks to uniform and normal variates, shared by the CPU and CUDA
// kernels. Each transform consumes one 128-bit block and yields kPerBlock values.
#pragma once

#include <cmath>
#include <cstdint>

#include "csrc/common/dtype.h"
#include "csrc/common/hd.h"
#include "csrc/common/math.h"
#include "csrc/common/philox.h"

namespace pygen {

// A uniform on the p-bit grid, strictly inside (0, 1): bin k of 2^p is represented by
// its midpoint (k + 1/2) 2^-p rounded toward zero to the target format. Below 1/2 the
// midpoint is exact; above it, the format's spacing is 2^-p and the bin's left edge is
// the nearest value below. Range [2^-(p+1), 1 - 2^-p], p random bits, never 0 or 1.
template <int P>
PYGEN_HD float uniform_grid_f32(uint32_t bits) {
  static_assert(P >= 2 && P <= 24, "fp32 holds at most 24 significant bits");
  const uint32_t k = bits >> (32 - P);
  const uint32_t twice = 2 * k + (k < (1u << (P - 1)) ? 1u : 0u);
  return float(int32_t(twice)) * (1.0f / float(1u << (P + 1)));
}

// The same grid with p = 53. With k = top 2^52 + m: below 1/2 (top = 0) the value is
// (2m + 1) 2^-54, above it 1/2 + m 2^-53. m 2^-52 comes exactly from the bits of
// 1 + m 2^-52 (AVX2 has no vector 64-bit integer -> double conversion).
PYGEN_HD double uniform_grid_f64(uint32_t hi, uint32_t lo) {
  const uint64_t k = ((uint64_t(hi) << 32) | lo) >> 11;  // 53 bits
  const double frac = bits_double(0x3ff0000000000000ull | (k & 0x000fffffffffffffull)) - 1.0;
  return 0.5 * frac + ((k >> 52) ? 0.5 : 0x1p-54);
}

// Box-Muller radius sqrt(-2 log u) with u = (k + 1/2) 2^-31 for the top 31 bits k of
// a word: 31 bits of resolution in the tail (|z| up to 6.66), and u <= 1 so the log is
// finite. (A signed conversion, because AVX2 has no vector unsigned one.)
PYGEN_HD float box_muller_radius_f32(uint32_t w) {
  const float u = mul_rn(add_rn(float(int32_t(w >> 1)), 0.5f), 0x1p-31f);
  return sqrt_rn(mul_rn(-2.0f, log_f32(u)));
}

// fp16 and bf16 draw on their own p-bit grids, which they hold exactly, so the
// rounding is exact and no value can reach 1.
template <class T>
struct Uniform {
  static constexpr int kPerBlock = 4;
  PYGEN_HD static void apply(const Philox4x32& b, T* out) {
    out[0] = T::round(uniform_grid_f32<T::kBits>(b.v[0]));
    out[1] = T::round(uniform_grid_f32<T::kBits>(b.v[1]));
    out[2] = T::round(uniform_grid_f32<T::kBits>(b.v[2]));
    out[3] = T::round(uniform_grid_f32<T::kBits>(b.v[3]));
  }
};

template <>
struct Uniform<float> {
  static constexpr int kPerBlock = 4;
  PYGEN_HD static void apply(const Philox4x32& b, float* out) {
    out[0] = uniform_grid_f32<24>(b.v[0]);
    out[1] = uniform_grid_f32<24>(b.v[1]);
    out[2] = uniform_grid_f32<24>(b.v[2]);
    out[3] = uniform_grid_f32<24>(b.v[3]);
  }
};

template <>
struct Uniform<double> {
  static constexpr int kPerBlock = 2;
  PYGEN_HD static void apply(const Philox4x32& b, double* out) {
    out[0] = uniform_grid_f64(b.v[0], b.v[1]);
    out[1] = uniform_grid_f64(b.v[2], b.v[3]);
  }
};

// A pair of standard normals by Box-Muller from two words (radius, angle).
PYGEN_HD void normal2_f32(uint32_t radius_word, uint32_t angle_word, float* z) {
  const float r = box_muller_radius_f32(radius_word);
  float c, s;
  sincos_2pi_u24(angle_word >> 8, &c, &s);
  z[0] = mul_rn(r, c);
  z[1] = mul_rn(r, s);
}

// Straight-line code (no inner loops) so the CPU lane loops vectorize.
PYGEN_HD void normal4_f32(const Philox4x32& b, float* z) {
  normal2_f32(b.v[0], b.v[1], z);
  normal2_f32(b.v[2], b.v[3], z + 2);
}

// fp16 and bf16 normals: the float32 ones, rounded to nearest even.
template <class T>
struct Normal {
  static constexpr int kPerBlock = 4;
  PYGEN_HD static void apply(const Philox4x32& b, T* out) {
    float z[4];
    normal4_f32(b, z);
    out[0] = T::round(z[0]);
    out[1] = T::round(z[1]);
    out[2] = T::round(z[2]);
    out[3] = T::round(z[3]);
  }
};

template <>
struct Normal<float> {
  static constexpr int kPerBlock = 4;
  PYGEN_HD static void apply(const Philox4x32& b, float* out) { normal4_f32(b, out); }
};

// fp64 normals: one pair per block, the radius from the 53-bit uniform grid (|z| up
// to 8.65) and the angle from 53 bits, reduced exactly to the nearest quarter turn.
// Every rounding is fixed, as for fp32, so CPU and CUDA agree bit for bit.
template <>
struct Normal<double> {
  static constexpr int kPerBlock = 2;
  PYGEN_HD static void apply(const Philox4x32& b, double* out) {
    const double r = sqrt_rn(mul_rn(-2.0, log_f64(uniform_grid_f64(b.v[0], b.v[1]))));
    const uint64_t k = ((uint64_t(b.v[2]) << 32) | b.v[3]) >> 11;  // 53 bits
    const uint64_t q = (k + (uint64_t(1) << 50)) >> 51;
    // d = 2k + 1 - q 2^52 in [-2^51, 2^51], as a double via the 1.5 * 2^52 bias
    // (exact, and vectorizable where a 64-bit integer conversion is not).
    const uint64_t d = 2 * k + 1 - (q << 52);
    const double f = mul_rn(add_rn(bits_double(0x4338000000000000ull + d), -0x1.8p52), 0x1p-54);
    double c, s;
    sincos_2pi_f64(f, &c, &s);
    rotate_quarter_turns(uint32_t(q), c, s, &c, &s);
    out[0] = mul_rn(r, c);
    out[1] = mul_rn(r, s);
  }
};

}  // namespace pygen
