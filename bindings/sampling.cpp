// CPU implementation of the sampling ops: checks, params, launch, and turning the
// kernels' per-row status into errors.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <cmath>
#include <limits>

#include "bindings/checks.h"
#include "csrc/sampling/categorical.h"

namespace pygen {

namespace {

std::tuple<at::Tensor, at::Tensor> sample_categorical_cpu_op(const at::Tensor& logits, const at::Tensor& temperature,
                                                             double min_p, const at::Tensor& seed, int64_t offset) {
  TORCH_CHECK_VALUE(logits.dim() >= 1, "logits must have shape [..., V], got a scalar");
  const int64_t vocab = logits.size(-1);
  TORCH_CHECK_VALUE(vocab > 0, "logits must have V >= 1 categories in the last dim, got shape ", logits.sizes());
  const DType dtype = to_dtype(logits.scalar_type(), "logits");
  const int64_t rows = logits.numel() / vocab;
  TORCH_CHECK_TYPE(temperature.scalar_type() == at::kFloat, "temperature must be float32, got ",
                   temperature.scalar_type());
  TORCH_CHECK_VALUE(temperature.numel() == rows, "temperature must have one value per row (", rows, "), got ",
                    temperature.numel());
  TORCH_CHECK_TYPE(seed.scalar_type() == at::kLong, "seed must be int64, got ", seed.scalar_type());
  TORCH_CHECK_VALUE(seed.numel() == rows, "seed must have one value per row (", rows, "), got ", seed.numel());
  TORCH_CHECK(temperature.device() == logits.device() && seed.device() == logits.device(),
              "logits, temperature and seed must be on one device, got ", logits.device(), ", ",
              temperature.device(), " and ", seed.device());
  TORCH_CHECK_VALUE(min_p >= 0 && min_p <= 1, "min_p must be in [0, 1], got ", min_p);
  TORCH_CHECK_VALUE(offset >= 0, "offset must be non-negative, got ", offset);
  const at::Tensor t = temperature.contiguous();
  TORCH_CHECK_VALUE(t.ge(0).logical_and(t.isfinite()).all().item<bool>(),
                    "temperature must be finite and >= 0 (0 is greedy)");

  const at::Tensor x = logits.contiguous();
  const at::Tensor s = seed.contiguous();
  const auto batch = logits.sizes().slice(0, logits.dim() - 1);
  at::Tensor token = at::empty(batch, logits.options().dtype(at::kLong));
  at::Tensor logprob = at::empty(batch, logits.options().dtype(at::kFloat));
  at::Tensor status = at::empty({rows}, logits.options().dtype(at::kInt));
  const float log_min_p = min_p > 0 ? float(std::log(min_p)) : -std::numeric_limits<float>::infinity();
  sample_categorical_cpu({x.data_ptr(), dtype, rows, vocab, t.data_ptr<float>(), log_min_p, s.data_ptr<int64_t>(),
                          uint64_t(offset), token.data_ptr<int64_t>(), logprob.data_ptr<float>(),
                          status.data_ptr<int32_t>()});

  const int32_t* st = status.data_ptr<int32_t>();
  for (int64_t r = 0; r < rows; ++r) {
    TORCH_CHECK_VALUE(st[r] != kCategoricalBadLogit, "logits must not contain NaN or +inf (row ", r, ")");
    TORCH_CHECK_VALUE(st[r] != kCategoricalNoSupport, "logits of row ", r,
                      " are all -inf: no category can be drawn");
  }
  return {token, logprob};
}

}  // namespace

TORCH_LIBRARY_IMPL(pygen, CPU, m) { m.impl("sample_categorical", sample_categorical_cpu_op); }

}  // namespace pygen
