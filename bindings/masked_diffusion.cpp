// Masked-diffusion steps: the checks and params both devices share, per-position status
// to errors (on the CPU always; on a GPU with debug checks, see masked_diffusion_cuda.cpp),
// and the CPU implementation.
#include "bindings/masked_diffusion.h"

#include <ATen/ATen.h>
#include <torch/library.h>

#include "bindings/checks.h"
#include "bindings/sampling.h"

namespace pygen {

MaskedStepCall masked_step_call(const at::Tensor& logits, const at::Tensor& x, int64_t mask_id,
                                const at::Tensor& temperature, const at::Tensor& seed, int64_t offset) {
  TORCH_CHECK_VALUE(logits.dim() == 3, "logits must have shape [batch, length, vocab], got ", logits.sizes());
  const int64_t batch = logits.size(0), length = logits.size(1), vocab = logits.size(2);
  TORCH_CHECK_VALUE(vocab >= 2, "logits must have vocab >= 2 (the mask token and one other), got shape ",
                    logits.sizes());
  const DType dtype = to_dtype(logits.scalar_type(), "logits");
  TORCH_CHECK_TYPE(x.scalar_type() == at::kLong, "x must be int64, got ", x.scalar_type());
  TORCH_CHECK_VALUE(x.dim() == 2 && x.size(0) == batch && x.size(1) == length,
                    "x must have shape [batch, length] = [", batch, ", ", length, "] like logits, got ",
                    x.sizes());
  TORCH_CHECK(x.device() == logits.device(), "x must be on the logits' device ", logits.device(), ", got ",
              x.device());
  TORCH_CHECK_VALUE(mask_id >= 0 && mask_id < vocab, "mask_id must be in [0, vocab = ", vocab, "), got ",
                    mask_id);
  TORCH_CHECK_VALUE(offset >= 0, "offset must be non-negative, got ", offset);
  MaskedStepCall call;
  call.temperature = row_param<float>(temperature, "temperature", batch, logits, temperature_ok,
                                      "finite and >= 0 (0 is greedy)");
  call.seed = seed_param(seed, batch, logits);
  call.logits = logits.contiguous();
  call.x = x.contiguous();
  call.out = at::empty({batch, length}, x.options());
  call.status = at::empty({batch * length}, x.options().dtype(at::kInt));
  call.params = {call.logits.data_ptr(),
                 dtype,
                 batch,
                 length,
                 vocab,
                 call.x.data_ptr<int64_t>(),
                 mask_id,
                 call.temperature.data_ptr<float>(),
                 call.seed.data_ptr<int64_t>(),
                 uint64_t(offset),
                 call.out.data_ptr<int64_t>(),
                 call.status.data_ptr<int32_t>()};
  return call;
}

AncestralCall ancestral_call(const at::Tensor& logits, const at::Tensor& x, int64_t mask_id,
                             const at::Tensor& alpha_t, const at::Tensor& alpha_s,
                             const at::Tensor& temperature, const at::Tensor& seed, int64_t offset) {
  AncestralCall call{masked_step_call(logits, x, mask_id, temperature, seed, offset), {}, {}, {}};
  const int64_t batch = call.step.params.batch;
  call.alpha_t = row_param<double>(alpha_t, "alpha_t", batch, logits, alpha_ok, "in [0, 1]");
  call.alpha_s = row_param<double>(alpha_s, "alpha_s", batch, logits, alpha_ok, "in [0, 1]");
  if (logits.is_cpu() || debug_checks()) {  // as row_param: on a GPU the kernel checks it
    const at::Tensor t = call.alpha_t.cpu(), s = call.alpha_s.cpu();
    for (int64_t r = 0; r < batch; ++r)
      TORCH_CHECK_VALUE(s.data_ptr<double>()[r] >= t.data_ptr<double>()[r],
                        "alpha_s must be >= alpha_t (s is the less noisy time), got alpha_s = ",
                        s.data_ptr<double>()[r], " < alpha_t = ", t.data_ptr<double>()[r], " in row ", r);
  }
  call.params = {call.step.params, call.alpha_t.data_ptr<double>(), call.alpha_s.data_ptr<double>()};
  return call;
}

ConfidenceCall confidence_call(const at::Tensor& logits, const at::Tensor& x, int64_t mask_id,
                               const at::Tensor& k, c10::string_view confidence,
                               const at::Tensor& temperature, const at::Tensor& seed, int64_t offset) {
  Confidence mode = Confidence::kProbability;
  if (confidence == "margin")
    mode = Confidence::kMargin;
  else if (confidence == "random")
    mode = Confidence::kRandom;
  else
    TORCH_CHECK_VALUE(confidence == "probability",
                      "confidence must be 'probability', 'margin' or 'random', got '", confidence, "'");
  ConfidenceCall call{masked_step_call(logits, x, mask_id, temperature, seed, offset), {}, {}, {}};
  const int64_t batch = call.step.params.batch, length = call.step.params.length;
  call.k = row_param<int64_t>(
      k, "k", batch, logits, [length](int64_t v) { return v >= 0 && v <= length; },
      "in [0, length] (positions to unmask per row)");
  call.score = at::empty({batch, length}, logits.options().dtype(at::kFloat));
  call.params = {call.step.params, mode, call.k.data_ptr<int64_t>(), call.score.data_ptr<float>()};
  return call;
}

void raise_masked_status(const at::Tensor& status, int64_t length) {
  const at::Tensor st = status.cpu();
  const int32_t* s = st.data_ptr<int32_t>();
  for (int64_t i = 0; i < st.numel(); ++i)
    TORCH_CHECK_VALUE(s[i] == kMaskedOk, masked_status_message(s[i]), " (row ", i / length, ", position ",
                      i % length, ")");
}

namespace {

at::Tensor unmask_ancestral_cpu_op(const at::Tensor& logits, const at::Tensor& x, int64_t mask_id,
                                   const at::Tensor& alpha_t, const at::Tensor& alpha_s,
                                   const at::Tensor& temperature, const at::Tensor& seed, int64_t offset) {
  const AncestralCall call = ancestral_call(logits, x, mask_id, alpha_t, alpha_s, temperature, seed, offset);
  unmask_ancestral_cpu(call.params);
  raise_masked_status(call.step.status, call.step.params.length);
  return call.step.out;
}

std::tuple<at::Tensor, at::Tensor> unmask_by_confidence_cpu_op(const at::Tensor& logits, const at::Tensor& x,
                                                               int64_t mask_id, const at::Tensor& k,
                                                               c10::string_view confidence,
                                                               const at::Tensor& temperature,
                                                               const at::Tensor& seed, int64_t offset) {
  const ConfidenceCall call = confidence_call(logits, x, mask_id, k, confidence, temperature, seed, offset);
  unmask_by_confidence_cpu(call.params);
  raise_masked_status(call.step.status, call.step.params.length);
  return {call.step.out, call.score};
}

at::Tensor unmask_first_hitting_cpu_op(const at::Tensor& logits, const at::Tensor& x, int64_t mask_id,
                                       const at::Tensor& temperature, const at::Tensor& seed,
                                       int64_t offset) {
  const MaskedStepCall call = masked_step_call(logits, x, mask_id, temperature, seed, offset);
  unmask_first_hitting_cpu(call.params);
  raise_masked_status(call.status, call.params.length);
  return call.out;
}

}  // namespace

TORCH_LIBRARY_IMPL(pygen, CPU, m) {
  m.impl("unmask_ancestral", unmask_ancestral_cpu_op);
  m.impl("unmask_by_confidence", unmask_by_confidence_cpu_op);
  m.impl("unmask_first_hitting", unmask_first_hitting_cpu_op);
}

}  // namespace pygen
