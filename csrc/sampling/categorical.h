// Exact categorical sampling (pygen.ops.sample_categorical): parameters, the per-row
// randomness shared by CPU and CUDA, and the CPU entry point.
//
// Each row is sampled by inversion with a 53-bit uniform: weights exp(y_i - max) in
// float32, their sums in float64, so a token of probability p is drawn with probability
// p up to float32's relative rounding of its weight (~1e-7 of p), far into the tail
// (p down to ~1e-16), unlike Gumbel-max with float32 noise, which truncates it.
#pragma once

#include <cstdint>

#include "csrc/common/distributions.h"
#include "csrc/common/dtype.h"
#include "csrc/common/hd.h"
#include "csrc/common/math.h"
#include "csrc/common/philox.h"

namespace pygen {

// Row status codes written by the kernels; bindings turn them into errors. The
// parameter codes come from the CUDA kernel only: on the host the bindings check the
// parameters before a launch, which on a GPU would cost a synchronization.
enum CategoricalStatus : int32_t {
  kCategoricalOk = 0,
  kCategoricalBadLogit = 1,
  kCategoricalNoSupport = 2,
  kCategoricalBadTemperature = 3,
  kCategoricalBadTopK = 4,
  kCategoricalBadTopP = 5,
  kCategoricalBadMinP = 6,
};

// The per-row parameter ranges, for the host checks and the CUDA kernel alike.
PYGEN_HD bool temperature_ok(float t) { return t >= 0 && t < INFINITY; }  // NaN fails
PYGEN_HD bool top_k_ok(int64_t k) { return k >= 1; }
PYGEN_HD bool top_p_ok(float p) { return p > 0 && p <= 1; }
PYGEN_HD bool min_p_ok(float m) { return m >= 0 && m <= 1; }

// What is wrong with a row whose status is `s` (not ok), for the host's exception and
// the device's assertion message alike.
PYGEN_HD const char* categorical_status_message(int32_t s) {
  switch (s) {
    case kCategoricalBadLogit:
      return "logits must not contain NaN or +inf";
    case kCategoricalNoSupport:
      return "logits are all -inf: no category can be drawn";
    case kCategoricalBadTemperature:
      return "temperature must be finite and >= 0 (0 is greedy)";
    case kCategoricalBadTopK:
      return "top_k must be >= 1";
    case kCategoricalBadTopP:
      return "top_p must be in (0, 1]";
    case kCategoricalBadMinP:
      return "min_p must be in [0, 1]";
    default:
      return "unknown status";
  }
}

struct CategoricalParams {
  const void* logits;  // [rows, vocab], contiguous
  DType dtype;
  int64_t rows;
  int64_t vocab;
  const float* temperature;  // [rows], >= 0; 0 is greedy (first maximum)
  const int64_t* top_k;      // [rows], >= 1; >= vocab keeps all
  const float* top_p;        // [rows], in (0, 1]; 1 keeps all
  const float* min_p;        // [rows], in [0, 1]; 0 keeps all
  const int64_t* seed;       // [rows], uint64 bit patterns
  uint64_t offset;
  int64_t* token;   // [rows] out
  float* logprob;   // [rows] out: log-probability of the token (truncated, tempered)
  int32_t* status;  // [rows] out: CategoricalStatus
};

// Row r's status from its parameters alone: the first one out of range, or ok.
PYGEN_HD int32_t categorical_param_status(const CategoricalParams& p, int64_t r) {
  return !temperature_ok(p.temperature[r]) ? kCategoricalBadTemperature
         : !top_k_ok(p.top_k[r])           ? kCategoricalBadTopK
         : !top_p_ok(p.top_p[r])           ? kCategoricalBadTopP
         : !min_p_ok(p.min_p[r])           ? kCategoricalBadMinP
                                           : kCategoricalOk;
}

// Row r's uniform: block `offset` of the substream whose counter words 2-3 hold r, so
// rows of one call (and calls at different offsets) never share randomness.
PYGEN_HD double categorical_uniform(uint64_t seed, uint64_t offset, uint64_t row) {
  const Philox4x32 b =
      philox4x32_10({{uint32_t(offset), uint32_t(offset >> 32), uint32_t(row), uint32_t(row >> 32)}},
                    uint32_t(seed), uint32_t(seed >> 32));
  return uniform_grid_f64(b.v[0], b.v[1]);
}

// Categories are weighed in chunks: the kernels sum each chunk's weights, find the
// chunk where the running sum passes u * total, and rescan only that chunk.
constexpr int64_t kCategoricalChunk = 512;
PYGEN_HD int64_t categorical_chunks(int64_t vocab) {
  return (vocab + kCategoricalChunk - 1) / kCategoricalChunk;
}

// The temperature a row is sampled at: 0 (greedy, the first maximum) when x_max /
// temperature overflows float32. Then every logit below the maximum has a weight
// exp(-gap / temperature) that underflows to 0 anyway (the gap is at least one ulp of
// x_max), so greedy is the float32 answer up to tied maxima, where the naive scaling
// would give inf - inf = NaN.
PYGEN_HD float categorical_temperature(float x_max, float temperature) {
  const float y_max = temperature > 0 ? mul_rn(x_max, 1.0f / temperature) : 0.0f;
  return y_max < INFINITY && y_max > -INFINITY ? temperature : 0.0f;
}

// Min-p's cut on the scaled logits, y_max + log(min_p) (-inf for min_p = 0), and a drawn
// token's log-probability: pygen's own log (csrc/common/math.h), so both are the same on
// the CPU and on a GPU, whose libm and CUDA's log differ in the last bit.
PYGEN_HD float categorical_min_p_cut(float y_max, float min_p) {
  return min_p > 0 ? add_rn(y_max, float(log_f64(double(min_p)))) : -INFINITY;
}
PYGEN_HD float categorical_logprob(float y_token, float y_max, double total) {
  return float(add_rn(double(add_rn(y_token, -y_max)), -log_f64(total)));
}

// A category's unnormalized probability exp(y - y_max) for scaled logit y, 0 when
// cut: below y_min (top-k, min-p) or with a weight below w_min (top-p). Computed
// unconditionally and then masked, so loops stay branch-free.
PYGEN_HD double categorical_weight(float y, float y_max, float y_min, float w_min) {
  const float w = exp_nonpos_f32(add_rn(y, -y_max));
  return bits_double(double_bits(double(w)) & (0ull - uint64_t((y >= y_min) & (w >= w_min))));
}

// 1 for a logit the op rejects (NaN or +inf), 0 otherwise; -inf is a valid exclusion.
// Integer-valued rather than bool so lane loops can OR it without branches.
PYGEN_HD int32_t categorical_bad_logit(float x) { return int32_t(!(x < INFINITY) & !(x == -INFINITY)); }

// Order-preserving map of floats to uint32 (radix selection of thresholds) and back.
PYGEN_HD uint32_t float_order_key(float x) {
  const uint32_t u = float_bits(x);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
PYGEN_HD float float_from_order_key(uint32_t k) {
  return bits_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}

// One digit of a radix selection from the top: given a 256-bin histogram of the
// candidates' current digit (counts or masses) and what is still `needed` from the
// top, returns the digit holding the threshold and lowers `needed` by what lies above
// it. If rounding leaves `needed` above everything, the lowest non-empty bin is taken.
template <class H>
PYGEN_HD uint32_t radix_select_digit(const H* hist, H* needed) {
  int last = -1;
  for (int b = 255; b >= 0; --b) {
    if (hist[b] == 0) continue;
    if (hist[b] >= *needed) return uint32_t(b);
    *needed -= hist[b];
    last = b;
  }
  return uint32_t(last < 0 ? 0 : last);
}

// Inversion, given the row's chunk sums and target = u * total: the chunk where the
// running sum passes the target, then the category in it. Returns the category and
// sets *y_token to its scaled logit. The chunk sums were taken in another order than
// this scan, so past a chunk's end (or the last chunk) the last weighted category wins.
// Category `excluded` (-1: none) has no weight (the masked-diffusion steps' mask token:
// their sums leave it out).
template <class T>
PYGEN_HD int64_t categorical_invert(const T* row, int64_t vocab, const double* sums, double target,
                                    float inv_t, float y_max, float y_min, float w_min, int64_t excluded,
                                    float* y_token) {
  const int64_t n_chunks = categorical_chunks(vocab);
  double acc = 0;
  int64_t c = 0;
  while (c + 1 < n_chunks && (sums[c] == 0 || acc + sums[c] <= target)) acc += sums[c++];
  while (sums[c] == 0) acc -= sums[--c];
  const int64_t begin = c * kCategoricalChunk;
  const int64_t end = begin + kCategoricalChunk < vocab ? begin + kCategoricalChunk : vocab;
  int64_t token = -1;
  for (int64_t k = begin; k < end; ++k) {
    const float y = mul_rn(to_float(row[k]), inv_t);
    const double w = categorical_weight(y, y_max, y_min, w_min);
    if (w == 0 || k == excluded) continue;
    token = k;
    *y_token = y;
    if (acc + w > target) break;
    acc += w;
  }
  return token;
}

void sample_categorical_cpu(const CategoricalParams& p);

}  // namespace pygen
