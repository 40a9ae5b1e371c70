// CUDA implementations of the random ops: check, allocate, launch on the current stream.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "bindings/random.h"
#include "cuda/common/random.h"

namespace pygen {

namespace {

void fill_cuda(const at::Tensor& out, const RandomFillParams& p) {
  const c10::cuda::CUDAGuard guard(out.device());
  C10_CUDA_CHECK(fill_random_cuda(p, c10::cuda::getCurrentCUDAStream()));
}

at::Tensor philox4x32_10_cuda_op(const at::Tensor& counter, const at::Tensor& key) {
  const PhiloxCall call = philox_call(counter, key);
  const c10::cuda::CUDAGuard guard(call.out.device());
  C10_CUDA_CHECK(philox4x32_10_cuda(call.params, c10::cuda::getCurrentCUDAStream()));
  return call.out;
}

}  // namespace

TORCH_LIBRARY_IMPL(pygen, CUDA, m) {
  m.impl("rand", random_factory<Distribution::kUniform, fill_cuda>);
  m.impl("randn", random_factory<Distribution::kNormal, fill_cuda>);
  m.impl("philox4x32_10", philox4x32_10_cuda_op);
}

}  // namespace pygen
