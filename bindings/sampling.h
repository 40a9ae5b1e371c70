// Pieces of the sampling ops' bindings that the CPU and CUDA implementations share.
#pragma once

#include <ATen/ATen.h>

#include "bindings/checks.h"
#include "csrc/sampling/categorical.h"

namespace pygen {

// A per-row parameter: dtype, one value per row, on the logits' device, every value in
// range (`ok`). Values are checked on the CPU, and on a GPU only with debug checks (a
// copy to the host, which waits for the GPU); otherwise the CUDA kernel checks them and
// fails with a device-side assertion. Returns it contiguous, on the logits' device.
template <class V, class Ok>
at::Tensor row_param(const at::Tensor& t, const char* name, int64_t rows, const at::Tensor& logits, Ok ok,
                     const char* range) {
  const at::ScalarType dtype = c10::CppTypeToScalarType<V>::value;
  TORCH_CHECK_TYPE(t.scalar_type() == dtype, name, " must be ", dtype, ", got ", t.scalar_type());
  TORCH_CHECK_VALUE(t.numel() == rows, name, " must have one value per row (", rows, "), got ", t.numel());
  TORCH_CHECK(t.device() == logits.device(), name, " must be on the logits' device ", logits.device(),
              ", got ", t.device());
  const at::Tensor c = t.contiguous();
  if (!c.is_cpu() && !debug_checks()) return c;
  const at::Tensor host = c.is_cpu() ? c : c.cpu();
  const V* v = host.data_ptr<V>();
  for (int64_t i = 0; i < rows; ++i) TORCH_CHECK_VALUE(ok(v[i]), name, " must be ", range, ", got ", v[i]);
  return c;
}

// Per-row seeds: int64 (uint64 bit patterns), one per row, on the logits' device.
inline at::Tensor seed_param(const at::Tensor& seed, int64_t rows, const at::Tensor& logits) {
  TORCH_CHECK_TYPE(seed.scalar_type() == at::kLong, "seed must be int64, got ", seed.scalar_type());
  TORCH_CHECK_VALUE(seed.numel() == rows, "seed must have one value per row (", rows, "), got ",
                    seed.numel());
  TORCH_CHECK(seed.device() == logits.device(), "seed must be on the logits' device ", logits.device(),
              ", got ", seed.device());
  return seed.contiguous();
}

// The CUDA kernel's blocks per row, forced for tests (pygen.ops.sampling._cuda_split;
// cuda/sampling/categorical.h): 0 (default) chooses. Defined in module.cpp.
int64_t categorical_split_override();
void set_categorical_split_override(int64_t blocks);

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
