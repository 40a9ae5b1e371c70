// CUDA implementation of the sampling ops: check, allocate, launch on the current stream.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "bindings/sampling.h"
#include "cuda/sampling/categorical.h"

namespace pygen {

namespace {

std::tuple<at::Tensor, at::Tensor> sample_categorical_cuda_op(
    const at::Tensor& logits, const at::Tensor& temperature, const at::Tensor& top_k, const at::Tensor& top_p,
    const at::Tensor& min_p, const at::Tensor& seed, int64_t offset) {
  const CategoricalCall call = categorical_call(logits, temperature, top_k, top_p, min_p, seed, offset);
  const c10::cuda::CUDAGuard guard(call.logits.device());
  const at::Tensor chunk_sums = at::empty({call.params.rows * categorical_chunks(call.params.vocab)},
                                          call.logits.options().dtype(at::kDouble));
  C10_CUDA_CHECK(
      sample_categorical_cuda(call.params, chunk_sums.data_ptr<double>(), c10::cuda::getCurrentCUDAStream()));
  // Bad rows are reported by the kernel; reading the status waits for it.
  raise_categorical_status(call.status);
  return {call.token, call.logprob};
}

}  // namespace

TORCH_LIBRARY_IMPL(pygen, CUDA, m) { m.impl("sample_categorical", sample_categorical_cuda_op); }

}  // namespace pygen
