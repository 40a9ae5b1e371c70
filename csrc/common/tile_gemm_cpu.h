// Small float32 matrix products for CPU kernels that work on tiles in cache (attention
// blocks): C += A B with B row-major and N a multiple of the vector width. Include it
// only from kernel sources compiled per ISA (PYGEN_CPU_NS): the vector width and the
// register tile follow the ISA the file is compiled for.
#pragma once

#include <immintrin.h>

#include <cstdint>

namespace pygen::PYGEN_CPU_NS {

#if defined(__AVX512F__)
using VecF = __m512;
constexpr int kVecF = 16;
constexpr int kTileRows = 6, kTileVecs = 4;  // 24 accumulators of 32 registers
inline VecF vec_load(const float* p) { return _mm512_loadu_ps(p); }
inline void vec_store(float* p, VecF v) { _mm512_storeu_ps(p, v); }
inline VecF vec_set1(float x) { return _mm512_set1_ps(x); }
inline VecF vec_fma(VecF a, VecF b, VecF c) { return _mm512_fmadd_ps(a, b, c); }
#elif defined(__AVX2__)
using VecF = __m256;
constexpr int kVecF = 8;
constexpr int kTileRows = 6, kTileVecs = 2;  // 12 accumulators of 16 registers
inline VecF vec_load(const float* p) { return _mm256_loadu_ps(p); }
inline void vec_store(float* p, VecF v) { _mm256_storeu_ps(p, v); }
inline VecF vec_set1(float x) { return _mm256_set1_ps(x); }
inline VecF vec_fma(VecF a, VecF b, VecF c) { return _mm256_fmadd_ps(a, b, c); }
#else
using VecF = __m128;
constexpr int kVecF = 4;
constexpr int kTileRows = 6, kTileVecs = 2;
inline VecF vec_load(const float* p) { return _mm_loadu_ps(p); }
inline void vec_store(float* p, VecF v) { _mm_storeu_ps(p, v); }
inline VecF vec_set1(float x) { return _mm_set1_ps(x); }
inline VecF vec_fma(VecF a, VecF b, VecF c) { return _mm_add_ps(_mm_mul_ps(a, b), c); }
#endif

// A matrix read through strides: element (m, k) at ptr[m * rs + k * cs], so a
// transposed operand is the same matrix with its strides swapped.
template <class T>
struct StridedF {
  const T* ptr;
  int64_t rs, cs;
};

namespace tile_gemm_detail {

// C[0:MR, 0:NV*kVecF] (+)= A[0:MR, 0:K] B[0:K, same columns], accumulators in registers.
template <int MR, int NV>
inline void micro(int64_t K, StridedF<float> A, const float* B, int64_t ldb, float* C, int64_t ldc,
                  bool accumulate) {
  VecF acc[MR][NV];
#pragma GCC unroll 8
  for (int m = 0; m < MR; ++m)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[m][v] = accumulate ? vec_load(C + m * ldc + v * kVecF) : vec_set1(0.0f);
  for (int64_t k = 0; k < K; ++k) {
    VecF b[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) b[v] = vec_load(B + k * ldb + v * kVecF);
#pragma GCC unroll 8
    for (int m = 0; m < MR; ++m) {
      const VecF a = vec_set1(A.ptr[m * A.rs + k * A.cs]);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[m][v] = vec_fma(a, b[v], acc[m][v]);
    }
  }
#pragma GCC unroll 8
  for (int m = 0; m < MR; ++m)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) vec_store(C + m * ldc + v * kVecF, acc[m][v]);
}

// One column panel of NV vectors over all M rows, kTileRows at a time.
template <int NV>
inline void panel(int64_t M, int64_t K, StridedF<float> A, const float* B, int64_t ldb, float* C, int64_t ldc,
                  bool accumulate) {
  int64_t m = 0;
  for (; m + kTileRows <= M; m += kTileRows)
    micro<kTileRows, NV>(K, {A.ptr + m * A.rs, A.rs, A.cs}, B, ldb, C + m * ldc, ldc, accumulate);
  using Micro = void (*)(int64_t, StridedF<float>, const float*, int64_t, float*, int64_t, bool);
  static constexpr Micro kRemainder[] = {nullptr,      micro<1, NV>, micro<2, NV>,
                                         micro<3, NV>, micro<4, NV>, micro<5, NV>};
  static_assert(sizeof(kRemainder) / sizeof(Micro) == kTileRows,
                "one tile per remainder of 1..kTileRows-1 rows");
  if (M > m) kRemainder[M - m](K, {A.ptr + m * A.rs, A.rs, A.cs}, B, ldb, C + m * ldc, ldc, accumulate);
}

}  // namespace tile_gemm_detail

// C[M, N] = A[M, K] B[K, N], or += with `accumulate`: B row-major (row stride ldb), C
// row-major (ldc), N a multiple of kVecF. Columns go in panels of kTileVecs vectors (B's panel stays in
// cache while all rows pass), rows in register tiles of kTileRows.
inline void tile_gemm(int64_t M, int64_t N, int64_t K, StridedF<float> A, const float* B, int64_t ldb,
                      float* C, int64_t ldc, bool accumulate) {
  constexpr int64_t kPanel = int64_t(kTileVecs) * kVecF;
  int64_t n = 0;
  for (; n + kPanel <= N; n += kPanel)
    tile_gemm_detail::panel<kTileVecs>(M, K, A, B + n, ldb, C + n, ldc, accumulate);
  for (; n < N; n += kVecF) tile_gemm_detail::panel<1>(M, K, A, B + n, ldb, C + n, ldc, accumulate);
}

// The float64 version, for kernels' reference-precision path: plain loops.
inline void tile_gemm(int64_t M, int64_t N, int64_t K, StridedF<double> A, const double* B, int64_t ldb,
                      double* C, int64_t ldc, bool accumulate) {
  for (int64_t m = 0; m < M; ++m) {
    double* c = C + m * ldc;
    if (!accumulate)
      for (int64_t n = 0; n < N; ++n) c[n] = 0;
    for (int64_t k = 0; k < K; ++k) {
      const double a = A.ptr[m * A.rs + k * A.cs];
      const double* b = B + k * ldb;
      for (int64_t n = 0; n < N; ++n) c[n] += a * b[n];
    }
  }
}

}  // namespace pygen::PYGEN_CPU_NS
