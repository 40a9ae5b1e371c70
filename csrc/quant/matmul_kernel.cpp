// CPU kernels of the low-bit matmuls, compiled once per ISA (PYGEN_CPU_NS); parallel
// over N (output features), since the weights are the memory traffic.
//
// Float activations: a code is turned into its dequantized weight by a 16-entry table
// per group, (base[c] - z) * s (base: c for int4, the E2M1 values for mxfp4, c & 3 for
// ternary), looked up with a vector permute on the codes' bits, so a weight costs a
// fraction of an instruction and equals dequantize()'s value exactly. Up to
// kGemvRows rows of x take the GEMV path: each weight vector is decoded into
// registers and multiplies every row. More rows take the GEMM path: a block of weight
// rows is decoded once into a float buffer in cache and every row of x runs over it
// in register tiles; for bfloat16 x on AVX512-BF16 the buffer holds bfloat16 weights
// (decoded by one 16-bit permute per 32 codes) multiplied by vdpbf16ps. float32 x with
// a bfloat16 compute dtype takes the same paths, rounded to bfloat16 where x is copied
// (the GEMM's blocks, the GEMV's float copy), its output and bias staying float32.
//
// int8 activations (ternary only): codes are widened to bytes c in {0, 1, 2} and
// multiplied with the int8 x by u8 x s8 dot products (AVX-512 VNNI vpdpbusd where
// present, else maddubs + madd), exactly in int32; sum(x (c - 1)) = sum(x c) - sum(x).
#include <immintrin.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "csrc/common/parallel_for.h"
#include "csrc/common/tile_gemm_cpu.h"
#include "csrc/quant/quant.h"

namespace pygen::PYGEN_CPU_NS {

namespace {

constexpr int kGemvRows = 4;  // x rows up to which decoding in registers beats the buffer

// ---- code -> weight tables, per ISA -----------------------------------------------

// Codes as int32 lanes, kVecF of them, read from kVecF bytes.
#if defined(__AVX512F__)
using IdxV = __m512i;
inline IdxV load_idx(const uint8_t* p) { return _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i*)p)); }
inline IdxV idx_shr(IdxV v, int s) { return _mm512_srli_epi32(v, unsigned(s)); }
struct Lut {
  __m512 t;
};
inline Lut make_lut(const float* base, float z, float s) {
  return {_mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(base), _mm512_set1_ps(z)), _mm512_set1_ps(s))};
}
// Table entry of each lane's low 4 bits (vpermps ignores the bits above).
inline VecF lookup(const Lut& l, IdxV i) { return _mm512_permutexvar_ps(i, l.t); }
inline float hsum(VecF v) { return _mm512_reduce_add_ps(v); }
#elif defined(__AVX2__)
using IdxV = __m256i;
inline IdxV load_idx(const uint8_t* p) { return _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i*)p)); }
inline IdxV idx_shr(IdxV v, int s) { return _mm256_srli_epi32(v, s); }
struct Lut {
  __m256 lo, hi;  // entries 0-7 and 8-15
};
inline Lut make_lut(const float* base, float z, float s) {
  const __m256 vz = _mm256_set1_ps(z), vs = _mm256_set1_ps(s);
  return {_mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(base), vz), vs),
          _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(base + 8), vz), vs)};
}
// vpermps reads 3 bits; bit 3 picks the half, through the sign bit blendv tests.
inline VecF lookup(const Lut& l, IdxV i) {
  return _mm256_blendv_ps(_mm256_permutevar8x32_ps(l.lo, i), _mm256_permutevar8x32_ps(l.hi, i),
                          _mm256_castsi256_ps(_mm256_slli_epi32(i, 28)));
}
inline float hsum(VecF v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}
#else
struct IdxV {
  uint32_t i[kVecF];
};
inline IdxV load_idx(const uint8_t* p) { return {{p[0], p[1], p[2], p[3]}}; }
inline IdxV idx_shr(IdxV v, int s) { return {{v.i[0] >> s, v.i[1] >> s, v.i[2] >> s, v.i[3] >> s}}; }
struct Lut {
  float t[16];
};
inline Lut make_lut(const float* base, float z, float s) {
  Lut l;
  for (int i = 0; i < 16; ++i) l.t[i] = mul_rn(base[i] - z, s);
  return l;
}
inline VecF lookup(const Lut& l, IdxV i) {
  return _mm_setr_ps(l.t[i.i[0] & 15u], l.t[i.i[1] & 15u], l.t[i.i[2] & 15u], l.t[i.i[3] & 15u]);
}
inline float hsum(VecF v) {
  alignas(16) float t[4];
  _mm_store_ps(t, v);
  return (t[0] + t[1]) + (t[2] + t[3]);
}
#endif

// base[c] of the table (base[c] - z) * s, per format.
struct Bases {
  float int4[16], mxfp4[16], ternary[16];
  Bases() {
    for (uint32_t c = 0; c < 16; ++c) {
      int4[c] = float(c);
      mxfp4[c] = e2m1_value(c);
      ternary[c] = float(c & 3u);
    }
  }
};
const float* table_base(QuantFormat f) {
  static const Bases b;
  return f == QuantFormat::kInt4 ? b.int4 : f == QuantFormat::kMxfp4 ? b.mxfp4 : b.ternary;
}

// ---- one 16-byte block of a row, decoded to float vectors -------------------------

// Elements per 16-byte block, and float vectors they fill.
template <QuantLayout L>
constexpr int kBlockElems = L == QuantLayout::kNibbles ? kNibbleBlock : kCrumbBlock;
template <QuantLayout L>
constexpr int kBlockVecs = kBlockElems<L> / kVecF;

// out[v] = weights of elements v * kVecF .. + kVecF of the block.
template <QuantLayout L>
inline __attribute__((always_inline)) void decode_block(const uint8_t* p, const Lut& lut, VecF* out) {
  constexpr int kFields = L == QuantLayout::kNibbles ? 2 : 4;  // codes per byte
  constexpr int kBits = 8 / kFields;
  constexpr int kChunks = 16 / kVecF;  // byte loads per block
#pragma GCC unroll 4
  for (int h = 0; h < kChunks; ++h) {
    const IdxV idx = load_idx(p + h * kVecF);
#pragma GCC unroll 4
    for (int f = 0; f < kFields; ++f)
      out[f * kChunks + h] = lookup(lut, f == 0 ? idx : idx_shr(idx, f * kBits));
  }
}

// The table of group g of row n; `groups` = K / group, passed in to keep a division out
// of the loop. fp16 scales convert in one F16C instruction where the ISA has it (the
// same exact value as scale_value's portable conversion).
inline __attribute__((always_inline)) Lut group_lut(const QuantWeight& w, const float* base, int64_t n,
                                                    int64_t g, int64_t groups) {
  const int64_t i = n * w.scale_row_stride + g;
  float s;
#if defined(__F16C__)
  if (w.scale_type == ScaleType::kFloat16)
    s = _cvtsh_ss(static_cast<const uint16_t*>(w.scales)[i]);
  else
#endif
    s = scale_value(w.scales, w.scale_type, i);
  const uint32_t z =
      w.format == QuantFormat::kInt4 && w.zeros ? w.zeros[n * groups + g] : weight_zero(w, n, g);
  return make_lut(base, float(z), s);
}

// ---- float activations ------------------------------------------------------------

template <class T>
inline __attribute__((always_inline)) void store_out(T* out, float v) {
  if constexpr (std::is_same_v<T, float>)
    *out = v;
  else
    *out = T::round(v);
}

// Vector v of a 16-byte block: weights of elements v * kVecF .. + kVecF. Blocks are
// decoded a vector at a time so that several rows' vectors fit in registers at once.
template <QuantLayout L>
inline __attribute__((always_inline)) VecF decode_vec(const uint8_t* p, const Lut& lut, int v) {
  constexpr int kBits = L == QuantLayout::kNibbles ? 4 : 2;  // per code
  constexpr int kChunks = 16 / kVecF;                        // byte loads per block
  const IdxV idx = load_idx(p + (v % kChunks) * kVecF);
  const int field = v / kChunks;
  return lookup(lut, field == 0 ? idx : idx_shr(idx, field * kBits));
}

// GEMV register tile: NR rows of W at once, so each x vector loaded serves NR rows and
// the NR * MR accumulators are independent chains (one row alone waits on FMA latency).
#if defined(__AVX512F__)
constexpr int kGemvTileN = 4;
#else
constexpr int kGemvTileN = 2;
#endif

// out[m, n] for m < MR, n in [n, n + NR), x [MR, K].
template <QuantLayout L, int MR, int NR, class T>
inline __attribute__((always_inline)) void gemv_tile(const QuantWeight& w, const float* base, const float* x,
                                                     const T* bias, T* out, int64_t n) {
  const int64_t K = w.K, row_bytes = weight_row_bytes(w), groups = K / w.group;
  const int64_t blocks_per_group = w.group / kBlockElems<L>;
  const uint8_t* rows = w.packed + n * row_bytes;
  VecF acc[MR][NR];
#pragma GCC unroll 4
  for (int m = 0; m < MR; ++m)
#pragma GCC unroll 4
    for (int j = 0; j < NR; ++j) acc[m][j] = vec_set1(0.0f);
  int64_t k = 0;
  for (int64_t g = 0; g < groups; ++g) {
    Lut lut[NR];
#pragma GCC unroll 4
    for (int j = 0; j < NR; ++j) lut[j] = group_lut(w, base, n + j, g, groups);
    for (int64_t b = 0; b < blocks_per_group; ++b, k += kBlockElems<L>) {
      const uint8_t* block = rows + k / kBlockElems<L> * 16;
      // Rows are short streams (K / 2 bytes) that the hardware prefetcher picks up late:
      // ask for the same line of the next tile's rows, one tile ahead.
      if ((k / kBlockElems<L>) % 4 == 0)
#pragma GCC unroll 4
        for (int j = 0; j < NR; ++j) __builtin_prefetch(block + (NR + j) * row_bytes);
#pragma GCC unroll 4
      for (int v = 0; v < kBlockVecs<L>; ++v) {
        VecF wv[NR];
#pragma GCC unroll 4
        for (int j = 0; j < NR; ++j) wv[j] = decode_vec<L>(block + j * row_bytes, lut[j], v);
#pragma GCC unroll 4
        for (int m = 0; m < MR; ++m) {
          const VecF xv = vec_load(x + m * K + k + v * kVecF);
#pragma GCC unroll 4
          for (int j = 0; j < NR; ++j) acc[m][j] = vec_fma(wv[j], xv, acc[m][j]);
        }
      }
    }
  }
  for (int j = 0; j < NR; ++j) {
    const float b = bias ? to_float(bias[n + j]) : 0.0f;
    for (int m = 0; m < MR; ++m) store_out(out + m * w.N + n + j, hsum(acc[m][j]) + b);
  }
}

// Rows n0..n1 of out[0:MR, :] (row stride N) for MR <= kGemvRows rows of x [MR, K].
template <QuantLayout L, int MR, class T>
void gemv(const QuantWeight& w, const float* x, const T* bias, T* out, int64_t n0, int64_t n1) {
  const float* base = table_base(w.format);
  int64_t n = n0;
  for (; n + kGemvTileN <= n1; n += kGemvTileN) gemv_tile<L, MR, kGemvTileN, T>(w, base, x, bias, out, n);
  for (; n < n1; ++n) gemv_tile<L, MR, 1, T>(w, base, x, bias, out, n);
}

// Dequantizes rows n0..n0+rows, columns k0..k0+cols of W into dst [rows, cols].
template <QuantLayout L>
void decode_rows(const QuantWeight& w, int64_t n0, int64_t rows, int64_t k0, int64_t cols, float* dst) {
  const float* base = table_base(w.format);
  const int64_t row_bytes = weight_row_bytes(w), groups = w.K / w.group;
  for (int64_t r = 0; r < rows; ++r) {
    const uint8_t* row = w.packed + (n0 + r) * row_bytes;
    for (int64_t k = k0, g = k0 / w.group; k < k0 + cols; ++g) {
      const int64_t end = std::min(k0 + cols, (g + 1) * w.group);
      const Lut lut = group_lut(w, base, n0 + r, g, groups);
      for (; k < end; k += kBlockElems<L>) {
        VecF wv[kBlockVecs<L>];
        decode_block<L>(row + k / kBlockElems<L> * 16, lut, wv);
#pragma GCC unroll 8
        for (int v = 0; v < kBlockVecs<L>; ++v) vec_store(dst + r * cols + (k - k0) + v * kVecF, wv[v]);
      }
    }
  }
}

// Register tile of the GEMM path: kTileM rows of x by kTileN rows of W, dot products
// along K kept as vectors (lane sums once at the end).
#if defined(__AVX512F__)
constexpr int kTileM = 4, kTileN = 4;
#else
constexpr int kTileM = 2, kTileN = 4;
#endif
// A panel of W rows is decoded kDecodeCols columns at a time (one long read per row,
// which the hardware prefetcher follows; 16 short interleaved reads it does not), then
// every row of x passes over it kDotCols columns at a time, so the panel's part and
// the x rows of a tile stay in L1.
constexpr int64_t kPanelRows = 16;  // a multiple of kTileN
constexpr int64_t kDecodeCols = 1024;
constexpr int64_t kDotCols = 256;

// Prefetches the packed bytes of the panel after (nb, d0) in the order gemm decodes
// panels (columns first, then the next rows), so that reading them from memory overlaps
// the dot products on the current one instead of following them.
inline void prefetch_next_panel(const QuantWeight& w, int64_t nb, int64_t d0, int64_t decode_cols,
                                int64_t n1) {
  int64_t next_nb = nb, next_d0 = d0 + decode_cols;
  if (next_d0 >= w.K) next_nb += kPanelRows, next_d0 = 0;
  if (next_nb >= n1) return;
  const int64_t row_bytes = weight_row_bytes(w);
  const int64_t first = next_d0 * row_bytes / w.K,
                bytes = std::min(decode_cols, w.K - next_d0) * row_bytes / w.K;
  for (int64_t r = next_nb; r < std::min(n1, next_nb + kPanelRows); ++r)
    for (int64_t b = 0; b < bytes; b += 64) __builtin_prefetch(w.packed + r * row_bytes + first + b);
}

// acc[m * lda + j] += x[m, :cols] * wd[j, :cols] lane-wise, for MR x NR (row strides
// ldx and ldw).
template <int MR, int NR>
void dot_tile(const float* x, int64_t ldx, const float* wd, int64_t ldw, int64_t cols, float* acc,
              int64_t lda) {
  VecF a[MR][NR];
#pragma GCC unroll 4
  for (int m = 0; m < MR; ++m)
#pragma GCC unroll 4
    for (int j = 0; j < NR; ++j) a[m][j] = vec_load(acc + (m * lda + j) * kVecF);
  for (int64_t k = 0; k < cols; k += kVecF) {
    VecF wv[NR];
#pragma GCC unroll 4
    for (int j = 0; j < NR; ++j) wv[j] = vec_load(wd + j * ldw + k);
#pragma GCC unroll 4
    for (int m = 0; m < MR; ++m) {
      const VecF xv = vec_load(x + m * ldx + k);
#pragma GCC unroll 4
      for (int j = 0; j < NR; ++j) a[m][j] = vec_fma(xv, wv[j], a[m][j]);
    }
  }
#pragma GCC unroll 4
  for (int m = 0; m < MR; ++m)
#pragma GCC unroll 4
    for (int j = 0; j < NR; ++j) vec_store(acc + (m * lda + j) * kVecF, a[m][j]);
}

template <int MR>
void dot_panel(const float* x, int64_t ldx, const float* wd, int64_t ldw, int64_t rows, int64_t cols,
               float* acc) {
  int64_t j = 0;
  for (; j + kTileN <= rows; j += kTileN)
    dot_tile<MR, kTileN>(x, ldx, wd + j * ldw, ldw, cols, acc + j * kVecF, kPanelRows);
  for (; j < rows; ++j) dot_tile<MR, 1>(x, ldx, wd + j * ldw, ldw, cols, acc + j * kVecF, kPanelRows);
}

// The GEMM path on float panels.
template <QuantLayout L, class T>
void gemm(const QuantWeight& w, int64_t M, const float* x, const T* bias, T* out, int64_t n0, int64_t n1) {
  const int64_t K = w.K;
  std::vector<float> panel(kPanelRows * std::min(K, kDecodeCols));
  std::vector<float> acc(M * kPanelRows * kVecF);  // vector partial sums
  for (int64_t nb = n0; nb < n1; nb += kPanelRows) {
    const int64_t rows = std::min(kPanelRows, n1 - nb);
    std::fill(acc.begin(), acc.end(), 0.0f);
    for (int64_t d0 = 0; d0 < K; d0 += kDecodeCols) {
      const int64_t ldw = std::min(kDecodeCols, K - d0);
      decode_rows<L>(w, nb, rows, d0, ldw, panel.data());
      prefetch_next_panel(w, nb, d0, kDecodeCols, n1);
      for (int64_t k0 = 0; k0 < ldw; k0 += kDotCols) {
        const int64_t cols = std::min(kDotCols, ldw - k0);
        const float* wd = panel.data() + k0;
        int64_t m = 0;
        for (; m + kTileM <= M; m += kTileM)
          dot_panel<kTileM>(x + m * K + d0 + k0, K, wd, ldw, rows, cols, acc.data() + m * kPanelRows * kVecF);
        for (; m < M; ++m)
          dot_panel<1>(x + m * K + d0 + k0, K, wd, ldw, rows, cols, acc.data() + m * kPanelRows * kVecF);
      }
    }
    for (int64_t m = 0; m < M; ++m)
      for (int64_t j = 0; j < rows; ++j)
        store_out(out + m * w.N + nb + j, hsum(vec_load(acc.data() + (m * kPanelRows + j) * kVecF)) +
                                              (bias ? to_float(bias[nb + j]) : 0.0f));
  }
}

#if defined(__AVX512F__)
// ---- bfloat16 x (AVX-512 BF16): a GEMM on bfloat16 panels that stay in cache ----------
//
// A panel of kPanelRows rows of W, kCols columns (16 KB), is decoded once, then every row
// of x multiplies it: blocks of 16 rows by 16 weight rows at once (see kXBlock), the rows
// after the last whole block in tiles of kBf16TileM x kBf16TileN lane-wise dot products. x is
// copied once into blocks of the same columns, each block's rows contiguous: rows K
// apart in x itself would share cache sets (K * 2 bytes being a multiple of 4 KB) and
// evict each other. Decoded panel and x block then stay in L1 or close (16 KB each at
// M = 16), and a panel reads 4 lines of each packed int4 row at once (256 columns, half
// that, measured 10-20% slower with the weights coming from memory). (The float GEMM,
// bound by the fp32 FMA rate, measured no faster blocked this way.)
constexpr int kBf16TileM = 4, kBf16TileN = 4;
constexpr int64_t kCols = 512;
constexpr int64_t kPrefetchPanels = 2;

// bfloat16 x with AVX512-BF16 (vdpbf16ps: 32 products a lane pair, twice the fp32 FMA
// rate). Weights are decoded to bfloat16 by one vpermw over a 32-entry table per group:
// the 16 float entries of the Lut rounded to bfloat16, twice, so that bit 4 of a lane's
// index (the next code's low bit) selects the same entry. Each weight thus rounds once
// more, to the bfloat16 that torch.matmul in bfloat16 would use for dequantize(W). The
// functions that use BF16 instructions are compiled for that target on their own (the
// AVX-512 baseline of this file lacks it) and called only after a run-time check.
#define PYGEN_BF16 __attribute__((target("avx512bf16")))
bool has_avx512_bf16() {
  static const bool v = __builtin_cpu_supports("avx512bf16");
  return v;
}
PYGEN_BF16 inline __m512 dot_bf16(__m512 acc, __m512i a, __m512i b) {
  return _mm512_dpbf16_ps(acc, (__m512bh)a, (__m512bh)b);
}
// 32 bfloat16s: lo's 16 floats, then hi's.
PYGEN_BF16 inline __m512i to_bf16(__m512 lo, __m512 hi) { return (__m512i)_mm512_cvtne2ps_pbh(hi, lo); }
// 16 words (bytes widened) shifted right by s0 in lanes 0-15 and by s1 in lanes 16-31.
inline __m512i index_pair(__m256i b, int s0, int s1) {
  return _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_srli_epi16(b, s0)), _mm256_srli_epi16(b, s1), 1);
}

// Codes of a 16-byte block as bfloat16 weights, through the group's table t: nibbles
// (element i low, i + 16 high) give one vector, crumbs (i, i + 16, i + 32, i + 48) two.
template <QuantLayout L>
inline __attribute__((always_inline)) void decode_block_bf16(const uint8_t* p, __m512i t, __m512i* out) {
  const __m256i b = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i*)p));
  if constexpr (L == QuantLayout::kNibbles) {
    out[0] = _mm512_permutexvar_epi16(index_pair(b, 0, 4), t);
  } else {
    out[0] = _mm512_permutexvar_epi16(index_pair(b, 0, 2), t);
    out[1] = _mm512_permutexvar_epi16(index_pair(b, 4, 6), t);
  }
}

// Scales and zero points of the `count` (<= 16) groups from g0 of row n, as floats,
// read a vector at a time (masked loads, so nothing past the row is touched): with
// groups of 32 a scalar read per group costs as much as decoding the group. The same
// exact values as scale_value and weight_zero.
inline void group_params(const QuantWeight& w, int64_t n, int64_t g0, int count, float* s, float* z) {
  const __mmask16 mask = __mmask16((1u << count) - 1u);
  const int64_t i = n * w.scale_row_stride + g0;
  const auto* s16 = static_cast<const uint16_t*>(w.scales) + i;
  __m512 sv;
  switch (w.scale_type) {
    case ScaleType::kFloat16:
      sv = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mask, s16));
      break;
    case ScaleType::kBFloat16:
      sv = _mm512_castsi512_ps(
          _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(mask, s16)), 16));
      break;
    case ScaleType::kE8M0: {
      const __m512i e =
          _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(mask, static_cast<const uint8_t*>(w.scales) + i));
      sv = _mm512_mask_blend_ps(_mm512_cmpeq_epi32_mask(e, _mm512_setzero_si512()),
                                _mm512_castsi512_ps(_mm512_slli_epi32(e, 23)), _mm512_set1_ps(e8m0_value(0)));
      break;
    }
    default:
      sv = _mm512_maskz_loadu_ps(mask, static_cast<const float*>(w.scales) + i);
  }
  _mm512_storeu_ps(s, sv);
  const __m512 zv = w.format == QuantFormat::kInt4 && w.zeros
                        ? _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(
                              _mm_maskz_loadu_epi8(mask, w.zeros + n * (w.K / w.group) + g0)))
                        : _mm512_set1_ps(float(weight_zero(w, n, g0)));
  _mm512_storeu_ps(z, zv);
}

// Groups of 32 or 64 (int4, mxfp4) are decoded in their own column order, which halves
// the cost of the per-group tables and the index arithmetic: a 64-byte chunk of a packed
// row (128 codes, 2 or 4 groups) is read as 32 words, word i holding bytes 2i and 2i + 1,
// and vector f of the chunk's decoded columns is nibble f of every word, looked up by one
// two-register word permute (vpermt2w) on the word shifted right. x's columns are copied
// into the same order (see matmul_bf16), so every weight still meets its own x; only the
// order in which the products are summed differs from element order. Columns after a
// panel's last whole chunk, and larger groups and ternary weights (one table for a
// chunk or more, where chunks measured no faster), keep element order.
constexpr int kChunk = 128;

// Whether decode_panel reads w in chunk order.
inline bool chunked(const QuantWeight& w) { return w.format != QuantFormat::kTernary && w.group < kChunk; }

// Element (within its chunk) of the chunk's decoded column p.
constexpr int chunk_element(int p) {
  const int f = p / 32, i = p % 32;  // nibble of the word, word
  return (i / 8) * kNibbleBlock + 2 * (i % 8) + (f & 1) * 16 + (f >> 1);
}

// Decodes a chunk (groups of 32 or 64) into out [4 vectors of 32]: 16-byte block b of the
// chunk has its own 16 table entries, b of the 64-entry table [lo, hi] (a group of 64:
// the same 16 twice). Bits 4-5 of an index pick the block (words 8b..8b + 7 come from
// block b), set over the next field's bits by one ternary-logic select.
inline __attribute__((always_inline)) void decode_chunk_groups(const uint8_t* p, __m512i lo, __m512i hi,
                                                               uint16_t* out) {
  const __m512i v = _mm512_loadu_si512(p);
  const __m512i block = _mm512_set_epi64(0x0030003000300030, 0x0030003000300030, 0x0020002000200020,
                                         0x0020002000200020, 0x0010001000100010, 0x0010001000100010, 0, 0);
  const __m512i bits45 = _mm512_set1_epi16(0x30);
#pragma GCC unroll 4
  for (int f = 0; f < 4; ++f) {
    const __m512i idx = _mm512_ternarylogic_epi32(bits45, block, _mm512_srli_epi16(v, f * 4), 0xca);
    _mm512_storeu_si512(out + f * 32, _mm512_permutex2var_epi16(lo, idx, hi));
  }
}

// The group's table as 32 bfloat16s (the Lut twice), or two groups' (a's, then b's).
PYGEN_BF16 inline __m512i bf16_table(const float* base, float za, float sa, float zb, float sb) {
  return to_bf16(make_lut(base, za, sa).t, make_lut(base, zb, sb).t);
}

// Decodes rows n0..n0+rows, columns k0..k1 of W into dst [rows, k1 - k0] as bfloat16, in
// chunk order where chunked(w), else in element order.
template <QuantLayout L>
PYGEN_BF16 void decode_panel(const QuantWeight& w, const float* base, int64_t n0, int64_t rows, int64_t k0,
                             int64_t k1, uint16_t* dst) {
  constexpr int kVecs = kBlockElems<L> / 32;
  static_assert(kCols / kNibbleBlock <= 16, "group_params reads at most 16 groups");
  static_assert(kCols % kChunk == 0, "panels hold whole chunks");
  const int64_t row_bytes = weight_row_bytes(w), cols = k1 - k0, whole = cols / kChunk * kChunk;
  const int64_t g0 = k0 / w.group, count = (k1 - 1) / w.group + 1 - g0, groups = w.K / w.group;
  for (int64_t r = 0; r < rows; ++r) {
    const uint8_t* row = w.packed + (n0 + r) * row_bytes + k0 / kBlockElems<L> * 16;
    uint16_t* out = dst + r * kCols;  // rows kCols apart: constant offsets in the tiles
    int64_t k = 0;
    if (chunked(w)) {
      float s[16], z[16];
      group_params(w, n0 + r, g0, int(count), s, z);
      const int shift = w.group == 32 ? 0 : 1;  // block -> group
      for (; k < whole; k += kChunk) {
        const int64_t b = k / kNibbleBlock;
        const int64_t g[4] = {b >> shift, (b + 1) >> shift, (b + 2) >> shift, (b + 3) >> shift};
        decode_chunk_groups(row + k / 2, bf16_table(base, z[g[0]], s[g[0]], z[g[1]], s[g[1]]),
                            bf16_table(base, z[g[2]], s[g[2]], z[g[3]], s[g[3]]), out + k);
      }
    }
    // Element order, a table a group, its scale and zero read as scalars: a row of a panel
    // has 1 to 4 such groups, and group_params' vectors, stored and read back as scalars,
    // made each row wait on a store-to-load forward (measured 10% of the whole ternary
    // GEMM at M = 16 and 32).
    for (int64_t g = (k0 + k) / w.group; k < cols; ++g) {
      const int64_t end = std::min(cols, (g + 1) * w.group - k0);
      const Lut l = group_lut(w, base, n0 + r, g, groups);
      const __m512i t = to_bf16(l.t, l.t);
      for (; k < end; k += kBlockElems<L>) {
        __m512i wv[kVecs];
        decode_block_bf16<L>(row + k / kBlockElems<L> * 16, t, wv);
#pragma GCC unroll 2
        for (int v = 0; v < kVecs; ++v) _mm512_storeu_si512(out + k + v * 32, wv[v]);
      }
    }
  }
}

// acc[m * lda + j * 16 ..] += x[m, :cols] * wd[j, :cols] lane-wise for m < MR, j < NR
// (row strides ldx and ldw).
template <int MR, int NR>
PYGEN_BF16 void panel_tile(const uint16_t* x, int64_t ldx, const uint16_t* wd, int64_t ldw, int64_t cols,
                           float* acc, int64_t lda) {
  __m512 a[MR][NR];
#pragma GCC unroll 8
  for (int m = 0; m < MR; ++m)
#pragma GCC unroll 4
    for (int j = 0; j < NR; ++j) a[m][j] = _mm512_loadu_ps(acc + m * lda + j * 16);
  for (int64_t k = 0; k < cols; k += 32) {
    __m512i wv[NR];
#pragma GCC unroll 4
    for (int j = 0; j < NR; ++j) wv[j] = _mm512_loadu_si512(wd + j * ldw + k);
#pragma GCC unroll 8
    for (int m = 0; m < MR; ++m) {
      const __m512i xv = _mm512_loadu_si512(x + m * ldx + k);
#pragma GCC unroll 4
      for (int j = 0; j < NR; ++j) a[m][j] = dot_bf16(a[m][j], xv, wv[j]);
    }
  }
#pragma GCC unroll 8
  for (int m = 0; m < MR; ++m)
#pragma GCC unroll 4
    for (int j = 0; j < NR; ++j) _mm512_storeu_ps(acc + m * lda + j * 16, a[m][j]);
}

// All rows of x (block [M, cols]) times the panel [rows, cols], into acc [M, kPanelRows, 16].
template <int MR>
void panel_rows(const uint16_t* x, const uint16_t* wd, int64_t rows, int64_t cols, float* acc) {
  int64_t j = 0;
  for (; j + kBf16TileN <= rows; j += kBf16TileN)
    panel_tile<MR, kBf16TileN>(x, cols, wd + j * kCols, kCols, cols, acc + j * 16, kPanelRows * 16);
  for (; j < rows; ++j)
    panel_tile<MR, 1>(x, cols, wd + j * kCols, kCols, cols, acc + j * 16, kPanelRows * 16);
}

// Whole blocks of kXBlock rows of x are multiplied another way: each block's columns in
// pairs, word 2 (p * kXBlock + i) + e of the block holding x[i, 2p + e] (within the block of
// columns), so that one vector holds column pair p of every row of the block. vdpbf16ps of
// that vector and a weight pair broadcast from the panel (a 32-bit broadcast load, no
// shuffle) adds the pair's products to one output per lane: an accumulator holds kXBlock
// whole outputs of one weight row, with no lane sums at the end, and 16 weight rows at
// once cost one x load and 16 broadcasts a step (the 4 x 4 tile: 8 vector loads for 16
// dot products). Measured on Zen 4 at M = 16: the dot products run at the vdpbf16ps rate
// (decoding no panel: 205 GFLOP/s), 10-20% faster overall than the 4 x 4 tiles, whose
// lane partial sums also needed a horizontal sum per output. Two blocks at once (8 weight
// rows x 2 blocks, one broadcast for two products) measured slower at M = 32 and 64.
constexpr int kXBlock = 16;
// 32-bit views of bfloat16 buffers (column pairs), which may alias them.
using Pair = uint32_t __attribute__((may_alias));

// acc[j * 16 + i] += x_block[i, :cols] . wd[j, :cols] for j < NR, i < 16 (x_block in pairs,
// see kXBlock; acc [NR, 16] floats).
template <int NR>
PYGEN_BF16 void panel_tile_pairs(const uint16_t* x, const uint16_t* wd, int64_t cols, float* acc) {
  __m512 a[NR];
#pragma GCC unroll 16
  for (int j = 0; j < NR; ++j) a[j] = _mm512_loadu_ps(acc + j * 16);
  const Pair* w32 = reinterpret_cast<const Pair*>(wd);
  constexpr int64_t ld32 = kCols / 2;
#pragma GCC unroll 2
  for (int64_t p = 0; p < cols / 2; ++p) {
    const __m512i xv = _mm512_loadu_si512(x + p * 2 * kXBlock);
#pragma GCC unroll 16
    for (int j = 0; j < NR; ++j) a[j] = dot_bf16(a[j], xv, _mm512_set1_epi32(int(w32[j * ld32 + p])));
  }
#pragma GCC unroll 16
  for (int j = 0; j < NR; ++j) _mm512_storeu_ps(acc + j * 16, a[j]);
}

// A block of 16 rows of x (in pairs) times the panel [rows, cols], into acc [kPanelRows, 16].
inline void panel_rows_pairs(const uint16_t* x, const uint16_t* wd, int64_t rows, int64_t cols, float* acc) {
  int64_t j = 0;
  for (; j + 16 <= rows; j += 16) panel_tile_pairs<16>(x, wd + j * kCols, cols, acc + j * 16);
  if (rows - j >= 8) panel_tile_pairs<8>(x, wd + j * kCols, cols, acc + j * 16), j += 8;
  if (rows - j >= 4) panel_tile_pairs<4>(x, wd + j * kCols, cols, acc + j * 16), j += 4;
  for (; j < rows; ++j) panel_tile_pairs<1>(x, wd + j * kCols, cols, acc + j * 16);
}

// Prefetches the packed bytes of columns k0..k0+cols of the panel at row nb (none past
// n1): panels are small, so the hardware prefetcher, which follows long runs, misses
// them; asked kPrefetchPanels panels ahead, memory latency overlaps the dot products.
inline void prefetch_panel(const QuantWeight& w, int64_t nb, int64_t k0, int64_t cols, int64_t n1) {
  const int64_t row_bytes = weight_row_bytes(w);
  const int64_t first = k0 * row_bytes / w.K, bytes = std::min(cols, w.K - k0) * row_bytes / w.K;
  for (int64_t r = nb; r < std::min(n1, nb + kPanelRows); ++r)
    for (int64_t b = 0; b < bytes; b += 64) __builtin_prefetch(w.packed + r * row_bytes + first + b);
}

// Rows n0..n1 of out[M, N] (+ bias) for x in blocks (see matmul_bf16); T is x's dtype
// (bfloat16, or float32 computed in bfloat16).
template <QuantLayout L, class T>
void gemm_bf16(const QuantWeight& w, int64_t M, const uint16_t* xb, const T* bias, T* out, int64_t n0,
               int64_t n1) {
  const float* base = table_base(w.format);
  const int64_t K = w.K;
  std::vector<uint16_t> panel(kPanelRows * kCols);
  // [row of x][row of W][lane] for the rows after the pair blocks; the pair blocks'
  // [block][row of W][row of x in the block] before them, the same size.
  std::vector<float> acc(M * kPanelRows * 16);
  const int64_t M16 = M / kXBlock * kXBlock;
  for (int64_t nb = n0; nb < n1; nb += kPanelRows) {
    const int64_t rows = std::min(kPanelRows, n1 - nb);
    std::fill(acc.begin(), acc.end(), 0.0f);
    for (int64_t k0 = 0; k0 < K; k0 += kCols) {
      const int64_t k1 = std::min(K, k0 + kCols), cols = k1 - k0;
      decode_panel<L>(w, base, nb, rows, k0, k1, panel.data());
      prefetch_panel(w, nb + (k0 + kPrefetchPanels * kCols) / K * kPanelRows,
                     (k0 + kPrefetchPanels * kCols) % K, kCols, n1);
      const uint16_t* block = xb + M * k0;  // [M, cols]
      for (int64_t m = 0; m < M16; m += kXBlock)
        panel_rows_pairs(block + m * cols, panel.data(), rows, cols, acc.data() + m * kPanelRows * 16);
      int64_t m = M16;
      static_assert(kBf16TileM == 4, "the switch below covers remainders 1..3");
      for (; m + kBf16TileM <= M; m += kBf16TileM)
        panel_rows<kBf16TileM>(block + m * cols, panel.data(), rows, cols, acc.data() + m * kPanelRows * 16);
      float* acc_m = acc.data() + m * kPanelRows * 16;
      switch (M - m) {  // the last rows, in one tile
        case 3:
          panel_rows<3>(block + m * cols, panel.data(), rows, cols, acc_m);
          break;
        case 2:
          panel_rows<2>(block + m * cols, panel.data(), rows, cols, acc_m);
          break;
        case 1:
          panel_rows<1>(block + m * cols, panel.data(), rows, cols, acc_m);
      }
    }
    for (int64_t m = 0; m < M16; m += kXBlock)
      for (int64_t j = 0; j < rows; ++j) {
        const float* a = acc.data() + (m * kPanelRows + j) * 16;
        const float b = bias ? to_float(bias[nb + j]) : 0.0f;
        for (int64_t i = 0; i < kXBlock; ++i) store_out(out + (m + i) * w.N + nb + j, a[i] + b);
      }
    for (int64_t m = M16; m < M; ++m)
      for (int64_t j = 0; j < rows; ++j)
        store_out(out + m * w.N + nb + j, hsum(_mm512_loadu_ps(acc.data() + (m * kPanelRows + j) * 16)) +
                                              (bias ? to_float(bias[nb + j]) : 0.0f));
  }
}

// 16 float32 x elements as bfloat16 bits, rounded as f32_to_bf16_bits rounds (to nearest
// even, NaN kept and quieted), so they equal x.bfloat16()'s values. Integer arithmetic:
// vcvtne2ps2bf16 would flush subnormal inputs to zero.
inline __m256i round_bf16(__m512 v) {
  const __m512i u = _mm512_castps_si512(v);
  const __m512i odd = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
  const __m512i r =
      _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(odd, _mm512_set1_epi32(0x7fff))), 16);
  const __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
  return _mm512_cvtepi32_epi16(
      _mm512_mask_or_epi32(r, nan, _mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x40)));
}

// 32 elements of x as bfloat16 bits: bfloat16 x as it is, float32 x rounded.
inline __m512i load_bf16(const uint16_t* p) { return _mm512_loadu_si512(p); }
inline __m512i load_bf16(const float* p) {
  return _mm512_inserti64x4(_mm512_castsi256_si512(round_bf16(_mm512_loadu_ps(p))),
                            round_bf16(_mm512_loadu_ps(p + 16)), 1);
}
inline uint16_t bf16_bits(uint16_t v) { return v; }
inline uint16_t bf16_bits(float v) { return f32_to_bf16_bits(v); }

// Copies a chunk of x's columns into decode_panel's order: the 8 words of block b of
// output vector f come from x's vector b, by one masked word permute.
template <class S>
void chunk_order(const S* src, uint16_t* dst) {
  struct Order {
    __m512i idx[4];
    Order() {
      for (int f = 0; f < 4; ++f) {
        alignas(64) uint16_t i[32];
        for (int l = 0; l < 32; ++l) i[l] = uint16_t(chunk_element(f * 32 + l) % 32);
        idx[f] = _mm512_load_si512(i);
      }
    }
  };
  static const Order order;
  __m512i in[4];
#pragma GCC unroll 4
  for (int b = 0; b < 4; ++b) in[b] = load_bf16(src + 32 * b);
#pragma GCC unroll 4
  for (int f = 0; f < 4; ++f) {
    __m512i v = _mm512_setzero_si512();
#pragma GCC unroll 4
    for (int b = 0; b < 4; ++b)
      v = _mm512_mask_permutexvar_epi16(v, __mmask32(0xffu) << (8 * b), order.idx[f], in[b]);
    _mm512_storeu_si512(dst + f * 32, v);
  }
}

// x [M, K] (S: bfloat16 bits, or float32, rounded to bfloat16 here: the conversion
// costs nothing beside this copy) into xb: column blocks of kCols (the last one
// narrower; K, a multiple of 32 in every format, keeps widths even), each block [M, width]
// with its columns in decode_panel's order, the rows of whole blocks of kXBlock in column
// pairs (see kXBlock), the rows after them row-major.
template <class S>
void block_x(const S* x, int64_t M, int64_t K, int64_t chunk, uint16_t* xb) {
  const int64_t M16 = M / kXBlock * kXBlock;
  std::vector<uint16_t> rows(kXBlock * std::min(K, kCols));
  for (int64_t k0 = 0; k0 < K; k0 += kCols) {
    const int64_t width = std::min(K - k0, kCols), whole = chunk ? width / chunk * chunk : 0;
    for (int64_t m = 0; m < M; ++m) {
      const S* src = x + m * K + k0;
      // Rows of a pair block are written in order first, then interleaved into pairs.
      uint16_t* dst = m < M16 ? rows.data() + m % kXBlock * width : xb + M * k0 + m * width;
      for (int64_t k = 0; k < whole; k += chunk) chunk_order(src + k, dst + k);
      for (int64_t k = whole; k < width; ++k) dst[k] = bf16_bits(src[k]);
      if (m < M16 && m % kXBlock == kXBlock - 1) {
        auto* pairs = reinterpret_cast<Pair*>(xb + M * k0 + (m + 1 - kXBlock) * width);
        const auto* r32 = reinterpret_cast<const Pair*>(rows.data());
        for (int64_t p = 0; p < width / 2; ++p)
          for (int64_t i = 0; i < kXBlock; ++i) pairs[p * kXBlock + i] = r32[i * (width / 2) + p];
      }
    }
  }
}

// Runs the bfloat16 GEMM when it applies (products in bfloat16, more than kGemvRows
// rows, AVX512-BF16); false otherwise.
bool matmul_bf16(const QuantMatmulParams& p) {
  if (p.compute != DType::kBFloat16 || p.M <= kGemvRows || !has_avx512_bf16()) return false;
  const QuantWeight& w = p.w;
  const int64_t M = p.M, K = w.K;
  std::vector<uint16_t> xb(M * K);
  const int64_t chunk = chunked(w) ? kChunk : 0;
  if (p.dtype == DType::kFloat32)
    block_x(static_cast<const float*>(p.x), M, K, chunk, xb.data());
  else
    block_x(static_cast<const uint16_t*>(p.x), M, K, chunk, xb.data());
  const auto run = [&](auto tag) {
    using T = decltype(tag);
    const auto* bias = static_cast<const T*>(p.bias);
    auto* out = static_cast<T*>(p.out);
    parallel_for(0, (w.N + kPanelRows - 1) / kPanelRows, 1, [&](int64_t b0, int64_t b1) {
      const int64_t n0 = b0 * kPanelRows, n1 = std::min(w.N, b1 * kPanelRows);
      if (w.format == QuantFormat::kTernary)
        gemm_bf16<QuantLayout::kCrumbs, T>(w, M, xb.data(), bias, out, n0, n1);
      else
        gemm_bf16<QuantLayout::kNibbles, T>(w, M, xb.data(), bias, out, n0, n1);
    });
  };
  if (p.dtype == DType::kFloat32)
    run(float{});
  else
    run(BFloat16{});
  return true;
}
#endif

template <QuantLayout L, class T>
void matmul_typed(const QuantMatmulParams& p, const float* x) {
  const QuantWeight& w = p.w;
  const T* bias = static_cast<const T*>(p.bias);
  T* out = static_cast<T*>(p.out);
  if (p.M > kGemvRows) {
    parallel_for(0, (w.N + kPanelRows - 1) / kPanelRows, 1, [&](int64_t b0, int64_t b1) {
      gemm<L, T>(w, p.M, x, bias, out, b0 * kPanelRows, std::min(w.N, b1 * kPanelRows));
    });
    return;
  }
  using Gemv = void (*)(const QuantWeight&, const float*, const T*, T*, int64_t, int64_t);
  static constexpr Gemv kGemv[] = {gemv<L, 1, T>, gemv<L, 2, T>, gemv<L, 3, T>, gemv<L, 4, T>};
  static_assert(sizeof(kGemv) / sizeof(Gemv) == kGemvRows, "one GEMV per row count");
  parallel_for(0, w.N, 16, [&](int64_t n0, int64_t n1) { kGemv[p.M - 1](w, x, bias, out, n0, n1); });
}

// ---- int8 activations, ternary weights ----------------------------------------------

// 16 crumb bytes (64 codes) as bytes c in {0, 1, 2}, in element order, into vectors of
// kI8 bytes; dot(a, b) adds the u8 x s8 products of 4-byte runs to int32 lanes.
#if defined(__AVX512F__)
using VecI = __m512i;
constexpr int kI8 = 64;
inline void widen_crumbs(const uint8_t* p, VecI* out) {
  const __m512i v = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i*)p));
  // 128-bit lane j shifted right by 2j: its bytes' low 2 bits are field j.
  out[0] =
      _mm512_and_si512(_mm512_srlv_epi64(v, _mm512_set_epi64(6, 6, 4, 4, 2, 2, 0, 0)), _mm512_set1_epi8(3));
}
inline VecI dot_u8s8(VecI acc, VecI u, VecI s) {
  return _mm512_add_epi32(acc, _mm512_madd_epi16(_mm512_maddubs_epi16(u, s), _mm512_set1_epi16(1)));
}
// vpdpbusd (AVX512-VNNI, which the AVX-512 baseline of this file does not assume) as
// inline assembly: an intrinsic would need the whole call chain compiled for that target.
// Called only after a run-time check.
inline VecI dot_u8s8_vnni(VecI acc, VecI u, VecI s) {
  asm("vpdpbusd %[s], %[u], %[acc]" : [acc] "+v"(acc) : [u] "v"(u), [s] "v"(s));
  return acc;
}
inline VecI load_i8(const int8_t* p) { return _mm512_loadu_si512(p); }
inline VecI zero_i32() { return _mm512_setzero_si512(); }
inline int32_t hsum_i32(VecI v) { return _mm512_reduce_add_epi32(v); }
#elif defined(__AVX2__)
using VecI = __m256i;
constexpr int kI8 = 32;
inline void widen_crumbs(const uint8_t* p, VecI* out) {
  const __m256i v = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i*)p));
  const __m256i three = _mm256_set1_epi8(3);
  out[0] = _mm256_and_si256(_mm256_srlv_epi64(v, _mm256_set_epi64x(2, 2, 0, 0)), three);
  out[1] = _mm256_and_si256(_mm256_srlv_epi64(v, _mm256_set_epi64x(6, 6, 4, 4)), three);
}
inline VecI dot_u8s8(VecI acc, VecI u, VecI s) {
  return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)));
}
inline VecI dot_u8s8_vnni(VecI acc, VecI u, VecI s) { return dot_u8s8(acc, u, s); }  // no VNNI here
inline VecI load_i8(const int8_t* p) { return _mm256_loadu_si256((const __m256i*)p); }
inline VecI zero_i32() { return _mm256_setzero_si256(); }
inline int32_t hsum_i32(VecI v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
  return _mm_cvtsi128_si32(_mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1)));
}
#endif

// sum_k x[m, k] c[n, k] for kTileN rows of W and MR rows of x, into acc[m][j].
#if defined(__AVX512F__) || defined(__AVX2__)
template <int MR, bool kVnni>
inline __attribute__((always_inline)) void int8_tile(const QuantWeight& w, const int8_t* x, int64_t n,
                                                     int64_t nr, int32_t* acc) {
  const int64_t K = w.K, row_bytes = weight_row_bytes(w);
  VecI a[MR][kTileN];
#pragma GCC unroll 4
  for (int m = 0; m < MR; ++m)
#pragma GCC unroll 4
    for (int j = 0; j < kTileN; ++j) a[m][j] = zero_i32();
  for (int64_t k = 0; k < K; k += kCrumbBlock) {
    VecI c[kTileN][kCrumbBlock / kI8];
#pragma GCC unroll 4
    for (int j = 0; j < kTileN; ++j)
      widen_crumbs(w.packed + (n + (j < nr ? j : 0)) * row_bytes + k / kCrumbBlock * 16, c[j]);
#pragma GCC unroll 2
    for (int h = 0; h < kCrumbBlock / kI8; ++h)
#pragma GCC unroll 4
      for (int m = 0; m < MR; ++m) {
        const VecI xv = load_i8(x + m * K + k + h * kI8);
#pragma GCC unroll 4
        for (int j = 0; j < kTileN; ++j) {
          a[m][j] = kVnni ? dot_u8s8_vnni(a[m][j], c[j][h], xv) : dot_u8s8(a[m][j], c[j][h], xv);
        }
      }
  }
  for (int m = 0; m < MR; ++m)
    for (int j = 0; j < kTileN; ++j) acc[m * kTileN + j] = hsum_i32(a[m][j]);
}
#else
template <int MR, bool kVnni>
inline __attribute__((always_inline)) void int8_tile(const QuantWeight& w, const int8_t* x, int64_t n,
                                                     int64_t nr, int32_t* acc) {
  for (int m = 0; m < MR; ++m)
    for (int j = 0; j < kTileN; ++j) {
      const int64_t row = n + (j < nr ? j : 0);
      int32_t s = 0;
      for (int64_t k = 0; k < w.K; ++k) s += int32_t(x[m * w.K + k]) * int32_t(weight_code(w, row, k));
      acc[m * kTileN + j] = s;
    }
}
#endif

template <bool kVnni>
void int8_rows(const QuantMatmulInt8Params& p, const int32_t* xsum, int64_t n0, int64_t n1) {
  const QuantWeight& w = p.w;
  const float* ws = static_cast<const float*>(w.scales);
  int32_t acc[4 * kTileN];
  for (int64_t n = n0; n < n1; n += kTileN) {
    const int64_t nr = std::min<int64_t>(kTileN, n1 - n);
    for (int64_t m = 0; m < p.M; m += 4) {
      const int64_t mr = std::min<int64_t>(4, p.M - m);
      const int8_t* x = p.x + m * w.K;
      switch (mr) {
        case 1:
          int8_tile<1, kVnni>(w, x, n, nr, acc);
          break;
        case 2:
          int8_tile<2, kVnni>(w, x, n, nr, acc);
          break;
        case 3:
          int8_tile<3, kVnni>(w, x, n, nr, acc);
          break;
        default:
          int8_tile<4, kVnni>(w, x, n, nr, acc);
      }
      for (int64_t i = 0; i < mr; ++i)
        for (int64_t j = 0; j < nr; ++j) {
          const float y =
              float(acc[i * kTileN + j] - xsum[m + i]) * p.x_scale[m + i] * ws[(n + j) * w.scale_row_stride];
          p.out[(m + i) * w.N + n + j] = p.bias ? y + p.bias[n + j] : y;
        }
    }
  }
}

#if defined(__AVX512F__)
bool has_vnni() {
  static const bool v = __builtin_cpu_supports("avx512vnni");
  return v;
}
#endif

}  // namespace

void quant_matmul(const QuantMatmulParams& p) {
  const QuantWeight& w = p.w;
  if (p.M == 0 || w.N == 0) return;
#if defined(__AVX512F__)
  if (matmul_bf16(p)) return;
#endif
  // The float kernels read float32 x: 16-bit x widened, and float32 x computed in
  // bfloat16 rounded to the values bfloat16 x would hold, in the same copy (the GEMV's
  // few rows; all of x only on CPUs without AVX512-BF16, as for bfloat16 x).
  std::vector<float> xf;
  const float* x = static_cast<const float*>(p.x);
  if (p.dtype != DType::kFloat32 || p.compute == DType::kBFloat16) {
    xf.resize(p.M * w.K);
    const bool round = p.dtype == DType::kFloat32;
    visit_dtype(p.dtype, [&](auto tag) {
      const auto* src = static_cast<const decltype(tag)*>(p.x);
      parallel_for(0, p.M * w.K, 1 << 14, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i)
          xf[i] = round ? to_float(BFloat16::round(to_float(src[i]))) : to_float(src[i]);
      });
    });
    x = xf.data();
  }
  visit_dtype(p.dtype, [&](auto tag) {
    using T = decltype(tag);
    if constexpr (!std::is_same_v<T, double>) {
      if (w.format == QuantFormat::kTernary)
        matmul_typed<QuantLayout::kCrumbs, T>(p, x);
      else
        matmul_typed<QuantLayout::kNibbles, T>(p, x);
    }
  });
}

void quant_matmul_int8(const QuantMatmulInt8Params& p) {
  if (p.M == 0 || p.w.N == 0) return;
  std::vector<int32_t> xsum(p.M, 0);
  for (int64_t m = 0; m < p.M; ++m)
    for (int64_t k = 0; k < p.w.K; ++k) xsum[m] += p.x[m * p.w.K + k];
  parallel_for(0, (p.w.N + kTileN - 1) / kTileN, 4, [&](int64_t b0, int64_t b1) {
    const int64_t n0 = b0 * kTileN, n1 = std::min(p.w.N, b1 * kTileN);
#if defined(__AVX512F__)
    if (has_vnni()) return int8_rows<true>(p, xsum.data(), n0, n1);
#endif
    int8_rows<false>(p, xsum.data(), n0, n1);
  });
}

}  // namespace pygen::PYGEN_CPU_NS
