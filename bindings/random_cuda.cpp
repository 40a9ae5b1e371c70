// CUDA implementations of the random ops: check, allocate, launch on the current stream.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "bindings/random.h"
#include "cuda/common/random.h"

namespace pygen {

namespace {

at::Tensor fill_cuda(c10::SymIntArrayRef size, int64_t seed, int64_t offset, at::ScalarType dtype,
                     at::Device device, Distribution dist) {
  at::Tensor out = random_empty(size, offset, dtype, device);
  const c10::cuda::CUDAGuard guard(out.device());
  C10_CUDA_CHECK(
      fill_random_cuda(random_fill_params(out, seed, offset, dist), at::cuda::getCurrentCUDAStream()));
  return out;
}

at::Tensor rand_cuda(c10::SymIntArrayRef size, int64_t seed, int64_t offset, at::ScalarType dtype,
                     at::Device device) {
  return fill_cuda(size, seed, offset, dtype, device, Distribution::kUniform);
}

at::Tensor randn_cuda(c10::SymIntArrayRef size, int64_t seed, int64_t offset, at::ScalarType dtype,
                      at::Device device) {
  return fill_cuda(size, seed, offset, dtype, device, Distribution::kNormal);
}

at::Tensor philox4x32_10_cuda_op(const at::Tensor& counter, const at::Tensor& key) {
  auto [c, k] = philox_inputs(counter, key);
  at::Tensor out = at::empty_like(c);
  const c10::cuda::CUDAGuard guard(c.device());
  C10_CUDA_CHECK(philox4x32_10_cuda({reinterpret_cast<const uint32_t*>(c.data_ptr<int32_t>()),
                                     reinterpret_cast<const uint32_t*>(k.data_ptr<int32_t>()),
                                     reinterpret_cast<uint32_t*>(out.data_ptr<int32_t>()), c.numel() / 4},
                                    at::cuda::getCurrentCUDAStream()));
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(pygen, CUDA, m) {
  m.impl("rand", rand_cuda);
  m.impl("randn", randn_cuda);
  m.impl("philox4x32_10", philox4x32_10_cuda_op);
}

}  // namespace pygen
