// Sampling ops: the checks and params both devices share, the CPU implementation, and
// turning the kernels' per-row status into errors (on the CPU always; on a GPU with
// debug checks, see sampling_cuda.cpp).
#include "bindings/sampling.h"

#include <ATen/ATen.h>
#include <torch/library.h>

#include "bindings/checks.h"
#include "csrc/sampling/categorical.h"

namespace pygen {

CategoricalCall categorical_call(const at::Tensor& logits, const at::Tensor& temperature,
                                 const at::Tensor& top_k, const at::Tensor& top_p, const at::Tensor& min_p,
                                 const at::Tensor& seed, int64_t offset) {
  TORCH_CHECK_VALUE(logits.dim() >= 1, "logits must have shape [..., V], got a scalar");
  const int64_t vocab = logits.size(-1);
  TORCH_CHECK_VALUE(vocab > 0, "logits must have V >= 1 categories in the last dim, got shape ",
                    logits.sizes());
  const DType dtype = to_dtype(logits.scalar_type(), "logits");
  const int64_t rows = logits.numel() / vocab;
  TORCH_CHECK_VALUE(offset >= 0, "offset must be non-negative, got ", offset);
  CategoricalCall call;
  call.temperature = row_param<float>(temperature, "temperature", rows, logits, temperature_ok,
                                      "finite and >= 0 (0 is greedy)");
  call.top_k = row_param<int64_t>(top_k, "top_k", rows, logits, top_k_ok, ">= 1");
  call.top_p = row_param<float>(top_p, "top_p", rows, logits, top_p_ok, "in (0, 1]");
  call.min_p = row_param<float>(min_p, "min_p", rows, logits, min_p_ok, "in [0, 1]");
  call.logits = logits.contiguous();
  call.seed = seed_param(seed, rows, logits);
  const auto batch = logits.sizes().slice(0, logits.dim() - 1);
  call.token = at::empty(batch, logits.options().dtype(at::kLong));
  call.logprob = at::empty(batch, logits.options().dtype(at::kFloat));
  call.status = at::empty({rows}, logits.options().dtype(at::kInt));
  call.params = {call.logits.data_ptr(),
                 dtype,
                 rows,
                 vocab,
                 call.temperature.data_ptr<float>(),
                 call.top_k.data_ptr<int64_t>(),
                 call.top_p.data_ptr<float>(),
                 call.min_p.data_ptr<float>(),
                 call.seed.data_ptr<int64_t>(),
                 uint64_t(offset),
                 call.token.data_ptr<int64_t>(),
                 call.logprob.data_ptr<float>(),
                 call.status.data_ptr<int32_t>()};
  return call;
}

void raise_categorical_status(const at::Tensor& status) {
  const at::Tensor st = status.cpu();
  const int32_t* s = st.data_ptr<int32_t>();
  for (int64_t r = 0; r < st.numel(); ++r)
    TORCH_CHECK_VALUE(s[r] == kCategoricalOk, categorical_status_message(s[r]), " (row ", r, ")");
}

namespace {

std::tuple<at::Tensor, at::Tensor> sample_categorical_cpu_op(const at::Tensor& logits,
                                                             const at::Tensor& temperature,
                                                             const at::Tensor& top_k, const at::Tensor& top_p,
                                                             const at::Tensor& min_p, const at::Tensor& seed,
                                                             int64_t offset) {
  const CategoricalCall call = categorical_call(logits, temperature, top_k, top_p, min_p, seed, offset);
  sample_categorical_cpu(call.params);
  raise_categorical_status(call.status);
  return {call.token, call.logprob};
}

}  // namespace

TORCH_LIBRARY_IMPL(pygen, CPU, m) { m.impl("sample_categorical", sample_categorical_cpu_op); }

}  // namespace pygen
