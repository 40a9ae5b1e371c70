// Low-bit weights (int4 groups, MXFP4, ternary): parameters and the CPU entry points of
// quantize, pack/unpack, dequantize and the fused dequantize-matmul. The layouts and
// per-element numerics are in csrc/quant/formats.h.
#pragma once

#include <cstdint>

#include "csrc/common/dtype.h"
#include "csrc/common/hd.h"
#include "csrc/quant/formats.h"

namespace pygen {

// A packed weight W [N, K] as the kernels read it.
struct QuantWeight {
  QuantFormat format;
  int64_t N, K;
  int64_t group;          // elements along K per scale: 32/64/128 (int4), 32 (mxfp4), K (ternary)
  const uint8_t* packed;  // [N, row bytes]: nibbles (int4, mxfp4) or crumbs (ternary)
  const void* scales;     // [N or 1, K / group] of scale_type
  ScaleType scale_type;
  int64_t scale_row_stride;  // in elements; 0: one scale shared by every row (ternary per tensor)
  const uint8_t* zeros;      // [N, K / group] int4 zero points, or null (symmetric: 8)
};

PYGEN_HD QuantLayout weight_layout(QuantFormat f) {
  return f == QuantFormat::kTernary ? QuantLayout::kCrumbs : QuantLayout::kNibbles;
}
PYGEN_HD int64_t weight_row_bytes(const QuantWeight& w) {
  return layout_row_bytes(weight_layout(w.format), w.K);
}
// The code's zero point of group g of row n: what code_value subtracts.
PYGEN_HD uint32_t weight_zero(const QuantWeight& w, int64_t n, int64_t g) {
  if (w.format == QuantFormat::kTernary) return 1;
  if (w.format == QuantFormat::kMxfp4) return 0;
  return w.zeros ? w.zeros[n * (w.K / w.group) + g] : uint32_t(kInt4SymmetricZero);
}
PYGEN_HD float weight_scale(const QuantWeight& w, int64_t n, int64_t g) {
  return scale_value(w.scales, w.scale_type, n * w.scale_row_stride + g);
}
// Code of element (n, k).
PYGEN_HD uint32_t weight_code(const QuantWeight& w, int64_t n, int64_t k) {
  const uint8_t* row = w.packed + n * weight_row_bytes(w);
  return w.format == QuantFormat::kTernary ? get_crumb(row, k) : get_nibble(row, k);
}

// Quantizes a float32 weight [N, K] (contiguous, finite) to codes, one byte each, and
// the scales (and int4 zero points) of the QuantWeight layout.
struct QuantizeParams {
  QuantFormat format;
  int64_t N, K, group;
  bool symmetric;              // int4 only
  const float* weight;         // [N, K]
  const float* ternary_scale;  // ternary: mean|W|, [N] per row or [1] per tensor; else null
  bool ternary_per_row;
  uint8_t* codes;  // [N, K]
  void* scales;    // [N, K / group] of scale_type (int4, mxfp4); ternary: unused
  ScaleType scale_type;
  uint8_t* zeros;  // [N, K / group] for asymmetric int4, else null
};

// Codes [rows, cols] (one per byte) <-> packed bytes [rows, layout_row_bytes(cols)].
struct PackParams {
  QuantLayout layout;
  int64_t rows, cols;
  uint8_t* codes;
  uint8_t* packed;
};

struct DequantizeParams {
  QuantWeight w;
  DType dtype;  // of out
  void* out;    // [N, K]
};

// out[M, N] = x[M, K] W^T (+ bias), x contiguous in float32 / bfloat16 / float16,
// out and bias (or null) of x's dtype; accumulation in float32. `compute` is the dtype
// the products run in: x's, or for float32 x bfloat16 (float16 too on CUDA), each x
// element then rounded to it first, as if x had that dtype (the kernels of 16-bit x
// run, on x converted where they read it), but out and bias stay float32.
struct QuantMatmulParams {
  QuantWeight w;
  int64_t M;
  DType dtype;
  DType compute;
  const void* x;
  const void* bias;
  void* out;
};

// Ternary weights times int8 activations (W1.58A8): out[m, n] = float(sum_k x[m, k]
// (c[n, k] - 1)) * x_scale[m] * w_scale[n] (+ bias[n]), in that order, the sum exact
// in int32 (|x| <= 127 keeps it exact for K < 2^24 / 127).
struct QuantMatmulInt8Params {
  QuantWeight w;  // ternary, float32 scales
  int64_t M;
  const int8_t* x;       // [M, K]
  const float* x_scale;  // [M]
  const float* bias;     // [N] or null
  float* out;            // [M, N]
};

void quantize_cpu(const QuantizeParams& p);
void pack_codes_cpu(const PackParams& p);
// Returns the row of the first base-3 byte above 242 (not a valid trits byte), or -1.
int64_t unpack_codes_cpu(const PackParams& p);
void dequantize_cpu(const DequantizeParams& p);
void quant_matmul_cpu(const QuantMatmulParams& p);
void quant_matmul_int8_cpu(const QuantMatmulInt8Params& p);

}  // namespace pygen
