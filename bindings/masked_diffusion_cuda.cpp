// CUDA implementation of the masked-diffusion steps: check, allocate, launch on the
// current stream. As sample_categorical (sampling_cuda.cpp): bad positions and
// parameters fail a device-side assertion, and nothing waits for the GPU, unless debug
// checks are on; then the status is read back and raised as a Python exception.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cstdint>
#include <limits>

#include "bindings/checks.h"
#include "bindings/masked_diffusion.h"
#include "cuda/sampling/masked_diffusion.h"

namespace pygen {

namespace {

// The kernels run a thread block per position (per row for first hitting), and gridDim.x
// holds at most 2^31 - 1 blocks: a larger grid would fail to launch, or past 2^32 wrap to
// a silent partial step. Checked before the call makes logits and x contiguous.
void check_grid(const at::Tensor& logits, bool per_position) {
  if (logits.dim() != 3) return;  // the call's own check names the shape
  const int64_t units = per_position ? logits.size(0) * logits.size(1) : logits.size(0);
  TORCH_CHECK_VALUE(units <= std::numeric_limits<int32_t>::max(), "logits must have at most 2^31 - 1 ",
                    per_position ? "positions (batch * length)" : "rows (batch)", " on CUDA, got ", units);
}

// Float64 chunk-sum scratch for `units` positions (or rows) of the logits' vocab.
at::Tensor chunk_scratch(const MaskedStepCall& call, int64_t units) {
  return at::empty({units * categorical_chunks(call.params.vocab)}, call.logits.options().dtype(at::kDouble));
}

at::Tensor unmask_ancestral_cuda_op(const at::Tensor& logits, const at::Tensor& x, int64_t mask_id,
                                    const at::Tensor& alpha_t, const at::Tensor& alpha_s,
                                    const at::Tensor& temperature, const at::Tensor& seed, int64_t offset) {
  check_grid(logits, true);
  const AncestralCall call = ancestral_call(logits, x, mask_id, alpha_t, alpha_s, temperature, seed, offset);
  const c10::cuda::CUDAGuard guard(call.step.logits.device());
  const at::Tensor sums = chunk_scratch(call.step, call.step.params.batch * call.step.params.length);
  const bool host_checks = debug_checks();
  C10_CUDA_CHECK(unmask_ancestral_cuda(call.params, sums.data_ptr<double>(), !host_checks,
                                       c10::cuda::getCurrentCUDAStream()));
  if (host_checks) raise_masked_status(call.step.status, call.step.params.length);
  return call.step.out;
}

std::tuple<at::Tensor, at::Tensor> unmask_by_confidence_cuda_op(const at::Tensor& logits, const at::Tensor& x,
                                                                int64_t mask_id, const at::Tensor& k,
                                                                c10::string_view confidence,
                                                                const at::Tensor& temperature,
                                                                const at::Tensor& seed, int64_t offset) {
  check_grid(logits, true);
  const ConfidenceCall call = confidence_call(logits, x, mask_id, k, confidence, temperature, seed, offset);
  const c10::cuda::CUDAGuard guard(call.step.logits.device());
  const at::Tensor sums = chunk_scratch(call.step, call.step.params.batch * call.step.params.length);
  const bool host_checks = debug_checks();
  C10_CUDA_CHECK(unmask_by_confidence_cuda(call.params, sums.data_ptr<double>(), !host_checks,
                                           c10::cuda::getCurrentCUDAStream()));
  if (host_checks) raise_masked_status(call.step.status, call.step.params.length);
  return {call.step.out, call.score};
}

at::Tensor unmask_first_hitting_cuda_op(const at::Tensor& logits, const at::Tensor& x, int64_t mask_id,
                                        const at::Tensor& temperature, const at::Tensor& seed,
                                        int64_t offset) {
  check_grid(logits, false);
  const MaskedStepCall call = masked_step_call(logits, x, mask_id, temperature, seed, offset);
  const c10::cuda::CUDAGuard guard(call.logits.device());
  const at::Tensor sums = chunk_scratch(call, call.params.batch);
  const bool host_checks = debug_checks();
  C10_CUDA_CHECK(unmask_first_hitting_cuda(call.params, sums.data_ptr<double>(), !host_checks,
                                           c10::cuda::getCurrentCUDAStream()));
  if (host_checks) raise_masked_status(call.status, call.params.length);
  return call.out;
}

}  // namespace

TORCH_LIBRARY_IMPL(pygen, CUDA, m) {
  m.impl("unmask_ancestral", unmask_ancestral_cuda_op);
  m.impl("unmask_by_confidence", unmask_by_confidence_cuda_op);
  m.impl("unmask_first_hitting", unmask_first_hitting_cuda_op);
}

}  // namespace pygen
