// Pieces of the sampling ops' bindings that the CPU and CUDA implementations share.
#pragma once

#include <ATen/ATen.h>

#include "csrc/sampling/categorical.h"

namespace pygen {

// Checks the arguments of sample_categorical, allocates token / logprob / status, and
// returns the kernel's params; the call holds every tensor the params point into.
struct CategoricalCall {
  at::Tensor logits, temperature, top_k, top_p, min_p, seed, token, logprob, status;
  CategoricalParams params;
};
CategoricalCall categorical_call(const at::Tensor& logits, const at::Tensor& temperature,
                                 const at::Tensor& top_k, const at::Tensor& top_p, const at::Tensor& min_p,
                                 const at::Tensor& seed, int64_t offset);
// Raises the error of the first row whose status is not ok (reads status on the host).
void raise_categorical_status(const at::Tensor& status);

}  // namespace pygen
