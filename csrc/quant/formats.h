// Low-bit weight formats: the packed layouts and the per-element numerics that the CPU
// kernels, the CUDA kernels and the pack/unpack ops share.
//
// A weight W is [N, K] (out features, in features), quantized along K. Every format
// stores each row of W on its own as codes packed into bytes:
//
//   int4 / mxfp4 ("nibbles", 4 bits): row bytes [K / 2]. K is cut into blocks of 32
//     elements, 16 bytes each; byte i of a block holds element i in its low nibble and
//     element i + 16 in its high nibble. A 16-byte load thus gives elements 0..15 by
//     `& 15` and 16..31 by `>> 4`, each already in order, with no shuffle.
//   ternary ("crumbs", 2 bits): row bytes [K / 4]. Blocks of 64 elements, 16 bytes
//     each; byte i holds elements i, i + 16, i + 32, i + 48 in bits 0-1, 2-3, 4-5, 6-7.
//   ternary storage ("trits", 1.6 bits): row bytes [ceil(K / 5)]. Byte j holds elements
//     5j .. 5j + 4 as c0 + 3 c1 + 9 c2 + 27 c3 + 81 c4 (<= 242); a row's last byte is
//     padded with the code of 0. Not computed on: unpacked to crumbs on load.
//
// Codes:
//   int4: q in [0, 15], w = s (q - z). Symmetric: z = 8 (q = round(w / s) + 8 with
//     s = max|w| / 7 per group); asymmetric: z in [0, 15] stored per group, s = (max -
//     min) / 15 over a range widened to hold 0, so 0 is exact. One scale (fp32, fp16 or
//     bf16) and zero (uint8) per group of 32, 64 or 128 elements along K.
//   mxfp4 (OCP Microscaling v1.0): E2M1 elements, bit 3 the sign, bits 2-1 the exponent
//     (bias 1), bit 0 the mantissa: magnitudes 0, 0.5, 1, 1.5, 2, 3, 4, 6. One E8M0
//     scale 2^(e - 127) per 32 elements, e = floor(log2(max|w|)) - 2 + 127, elements
//     rounded to nearest (ties to even) and saturated at 6.
//   ternary (BitNet b1.58): c = w + 1 in {0, 1, 2} for w in {-1, 0, +1}, w = s (c - 1)
//     with s = mean|W| per tensor or per row, codes round(W / (s + 1e-5)) clamped.
#pragma once

#include <cstdint>

#include "csrc/common/hd.h"
#include "csrc/common/math.h"

namespace pygen {

enum class QuantFormat { kInt4 = 0, kMxfp4 = 1, kTernary = 2 };
// How codes are packed into bytes (see the layouts above).
enum class QuantLayout { kNibbles = 0, kCrumbs = 1, kTrits = 2 };
// Scale element types: the int4 scales are fp32/fp16/bf16; mxfp4's are E8M0 bytes.
enum class ScaleType { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2, kE8M0 = 3 };

constexpr int kNibbleBlock = 32;       // elements per 16-byte int4 / mxfp4 block
constexpr int kCrumbBlock = 64;        // elements per 16-byte ternary block
constexpr int kTritsPerByte = 5;       // 3^5 = 243 <= 256
constexpr int kMxBlock = 32;           // elements per E8M0 scale
constexpr int kInt4SymmetricZero = 8;  // offset of the symmetric int4 codes
constexpr float kTernaryEps = 1e-5f;   // BitNet's guard against an all-zero weight

// Elements per row that a layout packs into one byte.
PYGEN_HD int64_t layout_row_bytes(QuantLayout layout, int64_t cols) {
  return layout == QuantLayout::kNibbles  ? cols / 2
         : layout == QuantLayout::kCrumbs ? cols / 4
                                          : (cols + kTritsPerByte - 1) / kTritsPerByte;
}

// Byte and bit position of element k of a row, nibble layout.
PYGEN_HD int64_t nibble_byte(int64_t k) { return (k / kNibbleBlock) * 16 + (k % 16); }
PYGEN_HD int nibble_shift(int64_t k) { return (k & 16) ? 4 : 0; }
PYGEN_HD uint32_t get_nibble(const uint8_t* row, int64_t k) {
  return (uint32_t(row[nibble_byte(k)]) >> nibble_shift(k)) & 15u;
}

// Byte and bit position of element k of a row, crumb layout.
PYGEN_HD int64_t crumb_byte(int64_t k) { return (k / kCrumbBlock) * 16 + (k % 16); }
PYGEN_HD int crumb_shift(int64_t k) { return int((k % kCrumbBlock) / 16) * 2; }
PYGEN_HD uint32_t get_crumb(const uint8_t* row, int64_t k) {
  return (uint32_t(row[crumb_byte(k)]) >> crumb_shift(k)) & 3u;
}

// Five ternary codes (each 0..2) as one base-3 byte, and code i of such a byte.
PYGEN_HD uint8_t trits_pack(const uint32_t c[kTritsPerByte]) {
  return uint8_t(c[0] + 3u * (c[1] + 3u * (c[2] + 3u * (c[3] + 3u * c[4]))));
}
PYGEN_HD uint32_t trits_get(uint32_t byte, int i) {
  for (int j = 0; j < i; ++j) byte /= 3u;
  return byte % 3u;
}

// E2M1 magnitudes by code (bit 3, the sign, cleared).
PYGEN_HD float e2m1_magnitude(uint32_t code) {
  // Exponent field e (bias 1) and mantissa m: e = 0 is subnormal, m * 0.5.
  const uint32_t e = (code >> 1) & 3u, m = code & 1u;
  return e == 0 ? 0.5f * float(m) : float(1u << (e - 1)) * (1.0f + 0.5f * float(m));
}
PYGEN_HD float e2m1_value(uint32_t code) {
  const float a = e2m1_magnitude(code & 7u);
  return (code & 8u) ? -a : a;
}

// Nearest E2M1 code to v (ties to the even code, saturating at +-6). A value that
// rounds to zero gets code 0 whatever its sign, so zero has one code.
PYGEN_HD uint32_t e2m1_encode(float v) {
  const float a = v < 0.0f ? -v : v;
  // Midpoints between neighbouring magnitudes; at a tie the even code wins, so the
  // comparison is strict where the lower neighbour's code is even.
  const uint32_t c = uint32_t(a > 0.25f) + uint32_t(a >= 0.75f) + uint32_t(a > 1.25f) + uint32_t(a >= 1.75f) +
                     uint32_t(a > 2.5f) + uint32_t(a >= 3.5f) + uint32_t(a > 5.0f);
  return c | (v < 0.0f && c != 0 ? 8u : 0u);
}

// E8M0 scale 2^(e - 127) (e = 255, NaN in the spec, is never written by pygen).
PYGEN_HD float e8m0_value(uint32_t e) {
  return e == 0 ? bits_float(0x00400000u) : bits_float(e << 23);  // 2^-127 is subnormal
}

// floor(log2(a)) of a positive finite float, subnormals included.
PYGEN_HD int floor_log2(float a) {
  const uint32_t u = float_bits(a);
  const int e = int(u >> 23);
  if (e != 0) return e - 127;
  int m = -127;  // a subnormal: 2^-126 times its 23-bit fraction
  for (uint32_t f = u & 0x7fffffu; f >>= 1;) ++m;
  return m - 22;
}

// The MX shared exponent (as the E8M0 byte) of a block whose largest magnitude is amax.
PYGEN_HD uint32_t mx_scale_code(float amax) {
  if (!(amax > 0.0f)) return 0;
  const int e = floor_log2(amax) - 2 + 127;  // 2: E2M1's largest exponent, 6 = 1.5 * 2^2
  return uint32_t(e < 0 ? 0 : e > 254 ? 254 : e);
}

// Scale element `g` of a row of scales of type `t`, as float.
PYGEN_HD float scale_value(const void* scales, ScaleType t, int64_t g) {
  switch (t) {
    case ScaleType::kFloat16:
      return f16_bits_to_f32(static_cast<const uint16_t*>(scales)[g]);
    case ScaleType::kBFloat16:
      return bf16_bits_to_f32(static_cast<const uint16_t*>(scales)[g]);
    case ScaleType::kE8M0:
      return e8m0_value(static_cast<const uint8_t*>(scales)[g]);
    default:
      return static_cast<const float*>(scales)[g];
  }
}

// Element value of code `c` before the group scale: int4 c - z, mxfp4 the E2M1
// value, ternary c - 1. The dequantized weight is scale * code_value, in fp32.
PYGEN_HD float code_value(QuantFormat f, uint32_t c, uint32_t zero) {
  return f == QuantFormat::kMxfp4 ? e2m1_value(c) : float(int(c) - int(zero));
}

}  // namespace pygen
