// CUDA implementation of the sampling ops: check, allocate, launch on the current stream;
// no synchronization unless debug checks are on.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "bindings/checks.h"
#include "bindings/sampling.h"
#include "cuda/sampling/categorical.h"

namespace pygen {

namespace {

std::tuple<at::Tensor, at::Tensor> sample_categorical_cuda_op(
    const at::Tensor& logits, const at::Tensor& temperature, const at::Tensor& top_k, const at::Tensor& top_p,
    const at::Tensor& min_p, const at::Tensor& seed, int64_t offset) {
  const CategoricalCall call = categorical_call(logits, temperature, top_k, top_p, min_p, seed, offset);
  const c10::cuda::CUDAGuard guard(call.logits.device());
  const int64_t splits =
      categorical_cuda_splits(call.params.rows, call.params.vocab, categorical_split_override());
  const at::Tensor workspace =
      at::empty({categorical_cuda_workspace_bytes(call.params.rows, call.params.vocab, splits)},
                call.logits.options().dtype(at::kByte));
  // Bad rows (and, without debug checks, bad parameters, which categorical_call then did
  // not read) stop the kernel with a device-side assertion naming the row and the cause:
  // nothing here waits for the GPU. With debug checks the kernel only records them, and
  // reading the status (a synchronization) raises a Python exception.
  const bool host_checks = debug_checks();
  C10_CUDA_CHECK(sample_categorical_cuda(call.params, splits, workspace.data_ptr(), !host_checks,
                                         c10::cuda::getCurrentCUDAStream()));
  if (host_checks) raise_categorical_status(call.status);
  return {call.token, call.logprob};
}

}  // namespace

TORCH_LIBRARY_IMPL(pygen, CUDA, m) { m.impl("sample_categorical", sample_categorical_cuda_op); }

}  // namespace pygen
