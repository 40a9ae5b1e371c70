// Pieces of the masked-diffusion steps' bindings that the CPU and CUDA implementations
// share: argument checks, params, and per-position status to errors.
#pragma once

#include <ATen/ATen.h>

#include "csrc/sampling/masked_diffusion.h"

namespace pygen {

// Checks logits, x, mask_id, temperature, seed and offset, allocates out and status,
// and returns the params; the call holds every tensor the params point into.
struct MaskedStepCall {
  at::Tensor logits, x, temperature, seed, out, status;
  MaskedStepParams params;
};
MaskedStepCall masked_step_call(const at::Tensor& logits, const at::Tensor& x, int64_t mask_id,
                                const at::Tensor& temperature, const at::Tensor& seed, int64_t offset);

// alpha_t and alpha_s checked (float64, per row, in [0, 1], alpha_s >= alpha_t) and
// added to a step's params.
struct AncestralCall {
  MaskedStepCall step;
  at::Tensor alpha_t, alpha_s;
  AncestralParams params;
};
AncestralCall ancestral_call(const at::Tensor& logits, const at::Tensor& x, int64_t mask_id,
                             const at::Tensor& alpha_t, const at::Tensor& alpha_s,
                             const at::Tensor& temperature, const at::Tensor& seed, int64_t offset);

// k checked (int64, per row, in [0, length]), the confidence named, the scores allocated.
struct ConfidenceCall {
  MaskedStepCall step;
  at::Tensor k, score;
  ConfidenceParams params;
};
ConfidenceCall confidence_call(const at::Tensor& logits, const at::Tensor& x, int64_t mask_id,
                               const at::Tensor& k, c10::string_view confidence,
                               const at::Tensor& temperature, const at::Tensor& seed, int64_t offset);

// Raises the error of the first position whose status is not ok (reads it on the host).
void raise_masked_status(const at::Tensor& status, int64_t length);

}  // namespace pygen
