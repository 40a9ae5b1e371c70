// Sampling ops: the checks and params both devices share, the CPU implementation, and
// turning the kernels' per-row status into errors.
#include "bindings/sampling.h"

#include <ATen/ATen.h>
#include <torch/library.h>

#include <cmath>
#include <limits>

#include "bindings/checks.h"
#include "csrc/sampling/categorical.h"

namespace pygen {

CategoricalCall categorical_call(const at::Tensor& logits, const at::Tensor& temperature, double min_p,
                                 const at::Tensor& seed, int64_t offset) {
  TORCH_CHECK_VALUE(logits.dim() >= 1, "logits must have shape [..., V], got a scalar");
  const int64_t vocab = logits.size(-1);
  TORCH_CHECK_VALUE(vocab > 0, "logits must have V >= 1 categories in the last dim, got shape ",
                    logits.sizes());
  const DType dtype = to_dtype(logits.scalar_type(), "logits");
  const int64_t rows = logits.numel() / vocab;
  TORCH_CHECK_TYPE(temperature.scalar_type() == at::kFloat, "temperature must be float32, got ",
                   temperature.scalar_type());
  TORCH_CHECK_VALUE(temperature.numel() == rows, "temperature must have one value per row (", rows, "), got ",
                    temperature.numel());
  TORCH_CHECK_TYPE(seed.scalar_type() == at::kLong, "seed must be int64, got ", seed.scalar_type());
  TORCH_CHECK_VALUE(seed.numel() == rows, "seed must have one value per row (", rows, "), got ",
                    seed.numel());
  TORCH_CHECK(temperature.device() == logits.device() && seed.device() == logits.device(),
              "logits, temperature and seed must be on one device, got ", logits.device(), ", ",
              temperature.device(), " and ", seed.device());
  TORCH_CHECK_VALUE(min_p >= 0 && min_p <= 1, "min_p must be in [0, 1], got ", min_p);
  TORCH_CHECK_VALUE(offset >= 0, "offset must be non-negative, got ", offset);
  CategoricalCall call;
  call.temperature = temperature.contiguous();
  TORCH_CHECK_VALUE(call.temperature.ge(0).logical_and(call.temperature.isfinite()).all().item<bool>(),
                    "temperature must be finite and >= 0 (0 is greedy)");
  call.logits = logits.contiguous();
  call.seed = seed.contiguous();
  const auto batch = logits.sizes().slice(0, logits.dim() - 1);
  call.token = at::empty(batch, logits.options().dtype(at::kLong));
  call.logprob = at::empty(batch, logits.options().dtype(at::kFloat));
  call.status = at::empty({rows}, logits.options().dtype(at::kInt));
  const float log_min_p = min_p > 0 ? float(std::log(min_p)) : -std::numeric_limits<float>::infinity();
  call.params = {call.logits.data_ptr(),
                 dtype,
                 rows,
                 vocab,
                 call.temperature.data_ptr<float>(),
                 log_min_p,
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
  for (int64_t r = 0; r < st.numel(); ++r) {
    TORCH_CHECK_VALUE(s[r] != kCategoricalBadLogit, "logits must not contain NaN or +inf (row ", r, ")");
    TORCH_CHECK_VALUE(s[r] != kCategoricalNoSupport, "logits of row ", r,
                      " are all -inf: no category can be drawn");
  }
}

namespace {

std::tuple<at::Tensor, at::Tensor> sample_categorical_cpu_op(const at::Tensor& logits,
                                                             const at::Tensor& temperature, double min_p,
                                                             const at::Tensor& seed, int64_t offset) {
  const CategoricalCall call = categorical_call(logits, temperature, min_p, seed, offset);
  sample_categorical_cpu(call.params);
  raise_categorical_status(call.status);
  return {call.token, call.logprob};
}

}  // namespace

TORCH_LIBRARY_IMPL(pygen, CPU, m) { m.impl("sample_categorical", sample_categorical_cpu_op); }

}  // namespace pygen
