// Masked-diffusion sampling steps (pygen.ops.unmask_ancestral, unmask_by_confidence,
// unmask_first_hitting): parameters, the per-position randomness shared by CPU and
// CUDA, and the CPU entry points.
//
// Every token is drawn as sample_categorical draws it (inversion with a 53-bit uniform,
// float32 weights, float64 sums), from softmax(logits / temperature) with the mask
// token's logit excluded, so the mask token is never drawn.
#pragma once

#include <cstdint>

#include "csrc/common/distributions.h"
#include "csrc/common/dtype.h"
#include "csrc/common/hd.h"
#include "csrc/common/philox.h"
#include "csrc/sampling/categorical.h"

namespace pygen {

// Per-position status codes written by the kernels; bindings turn them into errors.
// The parameter codes (a row's parameter, reported at each of its positions) come from
// the CUDA kernels only: on the host the bindings check the parameters before a launch.
enum MaskedStatus : int32_t {
  kMaskedOk = 0,
  kMaskedBadLogit = 1,   // NaN or +inf in a logit the step read
  kMaskedNoSupport = 2,  // every logit but the mask token's is -inf
  kMaskedBadToken = 3,   // a token of x outside [0, vocab)
  kMaskedBadTemperature = 4,
  kMaskedBadAlpha = 5,  // alpha_t or alpha_s outside [0, 1], or alpha_s < alpha_t
  kMaskedBadK = 6,      // k outside [0, length]
};

// What is wrong with a position whose status is `s` (not ok), for the host's exception
// and the device's assertion message alike.
PYGEN_HD const char* masked_status_message(int32_t s) {
  switch (s) {
    case kMaskedBadLogit:
      return "logits must not contain NaN or +inf";
    case kMaskedNoSupport:
      return "logits are -inf for every token but the mask token: no token can be drawn";
    case kMaskedBadToken:
      return "x must hold token ids in [0, vocab)";
    case kMaskedBadTemperature:
      return "temperature must be finite and >= 0 (0 is greedy)";
    case kMaskedBadAlpha:
      return "alpha_t and alpha_s must be in [0, 1] with alpha_s >= alpha_t";
    case kMaskedBadK:
      return "k must be in [0, length] (positions to unmask per row)";
    default:
      return "unknown status";
  }
}

PYGEN_HD bool alpha_ok(double a) { return a >= 0 && a <= 1; }

// What all three steps read and write. Positions are flattened: position l of row b is
// index b * length + l of x, out, status and the logits' [batch * length, vocab].
struct MaskedStepParams {
  const void* logits;  // [batch, length, vocab], contiguous
  DType dtype;
  int64_t batch;
  int64_t length;
  int64_t vocab;
  const int64_t* x;          // [batch, length] current tokens
  int64_t mask_id;           // in [0, vocab)
  const float* temperature;  // [batch], >= 0; 0 is greedy (the first maximum)
  const int64_t* seed;       // [batch], uint64 bit patterns
  uint64_t offset;
  int64_t* out;     // [batch, length] out: the new tokens
  int32_t* status;  // [batch * length] out: MaskedStatus
};

struct AncestralParams {
  MaskedStepParams step;
  const double* alpha_t;  // [batch], the current time's alpha, in [0, 1]
  const double* alpha_s;  // [batch], the next (less noisy) time's, in [alpha_t, 1]
};

enum class Confidence : int32_t { kProbability = 0, kMargin = 1, kRandom = 2 };

struct ConfidenceParams {
  MaskedStepParams step;
  Confidence confidence;
  const int64_t* k;  // [batch], in [0, length]: positions to unmask per row
  float* score;      // [batch * length] out: each masked position's confidence, -inf elsewhere
};

// Row r's status from its parameters alone, per step: the first one out of range, or ok.
PYGEN_HD int32_t masked_row_status(const MaskedStepParams& p, int64_t r) {
  return temperature_ok(p.temperature[r]) ? kMaskedOk : kMaskedBadTemperature;
}
PYGEN_HD int32_t ancestral_row_status(const AncestralParams& a, int64_t r) {
  const double t = a.alpha_t[r], s = a.alpha_s[r];
  const int32_t status = masked_row_status(a.step, r);
  return status != kMaskedOk ? status : alpha_ok(t) && alpha_ok(s) && s >= t ? kMaskedOk : kMaskedBadAlpha;
}
PYGEN_HD int32_t confidence_row_status(const ConfidenceParams& c, int64_t r) {
  const int32_t status = masked_row_status(c.step, r);
  return status != kMaskedOk ? status : c.k[r] >= 0 && c.k[r] <= c.step.length ? kMaskedOk : kMaskedBadK;
}

// The two 53-bit uniforms of one Philox block: block `offset` of substream `index` (a
// flattened position, or a row for the first-hitting step), as categorical_uniform
// lays them out, so positions and calls never share randomness. `token` inverts the
// softmax; `aux` is the unmasking coin, the random confidence or the position choice.
PYGEN_HD void masked_uniforms(uint64_t seed, uint64_t offset, uint64_t index, double* token, double* aux) {
  const Philox4x32 b =
      philox4x32_10({{uint32_t(offset), uint32_t(offset >> 32), uint32_t(index), uint32_t(index >> 32)}},
                    uint32_t(seed), uint32_t(seed >> 32));
  *token = uniform_grid_f64(b.v[0], b.v[1]);
  *aux = uniform_grid_f64(b.v[2], b.v[3]);
}

// MDLM's probability that a masked position is unmasked between alpha_t and alpha_s:
// (alpha_s - alpha_t) / (1 - alpha_t), and 1 when alpha_t = 1 (then alpha_s = 1 too:
// nothing may stay masked). Compared with a 53-bit uniform: u < p with probability p.
PYGEN_HD double unmask_probability(double alpha_t, double alpha_s) {
  return alpha_t < 1 ? div_rn(add_rn(alpha_s, -alpha_t), add_rn(1.0, -alpha_t)) : 1.0;
}

// Position j (0-based) of the n masked ones of a row, for the first-hitting step: a
// uniform choice, floor(u n) (u < 1, so j < n up to rounding, which the min covers).
PYGEN_HD int64_t first_hitting_choice(double u, int64_t n) {
  const int64_t j = int64_t(mul_rn(u, double(n)));
  return j < n - 1 ? j : n - 1;
}

// The selection key of a masked position in unmask_by_confidence: larger keys unmask
// first. The confidence's order key above, the position reversed below, so ties go to
// the earlier position and every key of a row is distinct (the k-th largest key is a
// threshold that selects exactly k positions).
PYGEN_HD uint64_t confidence_key(uint32_t order, int64_t position) {
  return (uint64_t(order) << 32) | uint64_t(0xffffffffu - uint32_t(position));
}

// The 32-bit order of a position's confidence: the float's order key for probability
// and margin, the top 32 bits of the uniform for random confidence (a tie, probability
// ~length^2 2^-33 a step, goes to the earlier position).
PYGEN_HD uint32_t confidence_order(Confidence mode, float score, double u) {
  return mode == Confidence::kRandom ? uint32_t(double_bits(add_rn(u, 1.0)) >> 20) : float_order_key(score);
}

void unmask_ancestral_cpu(const AncestralParams& p);
void unmask_by_confidence_cpu(const ConfidenceParams& p);
void unmask_first_hitting_cpu(const MaskedStepParams& p);

}  // namespace pygen
