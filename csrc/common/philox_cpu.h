// The CPU's schedule of Philox4x32-10: a tile of consecutive blocks of one stream,
// computed lane-parallel in SIMD registers. Compilers vectorize the 32x32->64-bit
// multiplies of philox4x32_10 poorly, so the AVX2 and AVX-512 builds (cpu_isa.h) spell
// them out with intrinsics; the scalar build runs philox_block per lane. All give the
// same words as philox_block (csrc/common/philox.h).
#pragma once

#include <cstdint>

#include "csrc/common/philox.h"

#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace pygen {

#if defined(__AVX512F__)
constexpr int kPhiloxLanes = 16;
using PhiloxVec = __m512i;
inline PhiloxVec pv_set1(uint32_t x) { return _mm512_set1_epi32(int(x)); }
inline PhiloxVec pv_load(const uint32_t* p) { return _mm512_loadu_si512(p); }
inline void pv_store(uint32_t* p, PhiloxVec v) { _mm512_storeu_si512(p, v); }
inline PhiloxVec pv_xor(PhiloxVec a, PhiloxVec b) { return _mm512_xor_si512(a, b); }
// High and low words of a * m in each 32-bit lane: the multiply takes the even lanes,
// a shift brings in the odd ones, and blends interleave the halves back.
inline void pv_mulhilo(PhiloxVec a, PhiloxVec m, PhiloxVec* hi, PhiloxVec* lo) {
  const __m512i even = _mm512_mul_epu32(a, m);
  const __m512i odd = _mm512_mul_epu32(_mm512_srli_epi64(a, 32), m);
  *lo = _mm512_mask_blend_epi32(0xAAAA, even, _mm512_slli_epi64(odd, 32));
  *hi = _mm512_mask_blend_epi32(0xAAAA, _mm512_srli_epi64(even, 32), odd);
}
#elif defined(__AVX2__)
constexpr int kPhiloxLanes = 8;
using PhiloxVec = __m256i;
inline PhiloxVec pv_set1(uint32_t x) { return _mm256_set1_epi32(int(x)); }
inline PhiloxVec pv_load(const uint32_t* p) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
}
inline void pv_store(uint32_t* p, PhiloxVec v) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), v); }
inline PhiloxVec pv_xor(PhiloxVec a, PhiloxVec b) { return _mm256_xor_si256(a, b); }
inline void pv_mulhilo(PhiloxVec a, PhiloxVec m, PhiloxVec* hi, PhiloxVec* lo) {
  const __m256i even = _mm256_mul_epu32(a, m);
  const __m256i odd = _mm256_mul_epu32(_mm256_srli_epi64(a, 32), m);
  *lo = _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
  *hi = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
}
#endif

// Blocks n0 .. n0 + N - 1 of stream `seed`: w[j][l] = word j of block n0 + l.
template <int N>
inline void philox_tile(uint64_t seed, uint64_t n0, uint32_t (&w)[4][N]) {
#if defined(__AVX2__) || defined(__AVX512F__)
  static_assert(N % kPhiloxLanes == 0, "tile must be a whole number of SIMD vectors");
  using namespace philox_detail;
  for (int l = 0; l < N; ++l) {
    w[0][l] = uint32_t(n0 + uint64_t(l));
    w[1][l] = uint32_t((n0 + uint64_t(l)) >> 32);
  }
  const PhiloxVec m0 = pv_set1(kMul0), m1 = pv_set1(kMul1);
  for (int l = 0; l < N; l += kPhiloxLanes) {
    PhiloxVec c0 = pv_load(&w[0][l]), c1 = pv_load(&w[1][l]);
    PhiloxVec c2 = pv_set1(0), c3 = pv_set1(0);
    uint32_t k0 = uint32_t(seed), k1 = uint32_t(seed >> 32);
    for (int r = 0; r < 10; ++r) {
      PhiloxVec hi0, lo0, hi1, lo1;
      pv_mulhilo(c0, m0, &hi0, &lo0);
      pv_mulhilo(c2, m1, &hi1, &lo1);
      c0 = pv_xor(pv_xor(hi1, c1), pv_set1(k0));
      c1 = lo1;
      c2 = pv_xor(pv_xor(hi0, c3), pv_set1(k1));
      c3 = lo0;
      k0 += kWeyl0;
      k1 += kWeyl1;
    }
    pv_store(&w[0][l], c0);
    pv_store(&w[1][l], c1);
    pv_store(&w[2][l], c2);
    pv_store(&w[3][l], c3);
  }
#else
  for (int l = 0; l < N; ++l) {
    const Philox4x32 r = philox_block(seed, n0 + uint64_t(l));
    for (int j = 0; j < 4; ++j) w[j][l] = r.v[j];
  }
#endif
}

}  // namespace pygen
