// CUDA implementation of the coupling-transform ops: launch on the current stream.
// mix_logistic_cdf with validate reads its status flag after the launch (a host sync)
// to raise on non-finite parameters; nothing else here syncs.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "bindings/flows.h"
#include "cuda/flows/affine_coupling.h"
#include "cuda/flows/mix_logistic.h"

namespace pygen {

namespace {

// Each op takes its device guard at launch, after the impl's checks: the dispatcher comes
// here when any argument is on CUDA, and a guard on a cpu x would fail with CUDAGuard's
// internal message before the checks could name the argument.

std::tuple<at::Tensor, at::Tensor> affine_coupling_cuda_op(const at::Tensor& x, const at::Tensor& shift,
                                                           const at::Tensor& raw_scale,
                                                           const std::string& scale_fn,
                                                           std::optional<double> clamp, bool inverse) {
  return affine_coupling_impl(x, shift, raw_scale, scale_fn, clamp, inverse,
                              [&](const AffineCouplingParams& p) {
                                const c10::cuda::CUDAGuard guard(x.device());
                                C10_CUDA_CHECK(affine_coupling_cuda(p, c10::cuda::getCurrentCUDAStream()));
                              });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> affine_coupling_backward_cuda_op(
    const std::optional<at::Tensor>& grad_y, const std::optional<at::Tensor>& grad_logdet,
    const at::Tensor& x, const at::Tensor& shift, const at::Tensor& raw_scale, const std::string& scale_fn,
    std::optional<double> clamp, bool inverse) {
  return affine_coupling_backward_impl(
      grad_y, grad_logdet, x, shift, raw_scale, scale_fn, clamp, inverse,
      [&](const AffineCouplingBackwardParams& p) {
        const c10::cuda::CUDAGuard guard(x.device());
        C10_CUDA_CHECK(affine_coupling_backward_cuda(p, c10::cuda::getCurrentCUDAStream()));
      });
}

std::tuple<at::Tensor, at::Tensor> affine_coupling_layer_cuda_op(
    const at::Tensor& x, const at::Tensor& params, int64_t active_begin, int64_t active, bool interleaved,
    const std::string& scale_fn, std::optional<double> clamp, bool inverse) {
  return affine_coupling_layer_impl(
      x, params, active_begin, active, interleaved, scale_fn, clamp, inverse,
      [&](const AffineCouplingParams& p) {
        const c10::cuda::CUDAGuard guard(x.device());
        C10_CUDA_CHECK(affine_coupling_cuda(p, c10::cuda::getCurrentCUDAStream()));
      });
}

std::tuple<at::Tensor, at::Tensor> affine_coupling_layer_backward_cuda_op(
    const std::optional<at::Tensor>& grad_y, const std::optional<at::Tensor>& grad_logdet,
    const at::Tensor& x, const at::Tensor& params, int64_t active_begin, int64_t active, bool interleaved,
    const std::string& scale_fn, std::optional<double> clamp, bool inverse) {
  return affine_coupling_layer_backward_impl(
      grad_y, grad_logdet, x, params, active_begin, active, interleaved, scale_fn, clamp, inverse,
      [&](const AffineCouplingBackwardParams& p) {
        const c10::cuda::CUDAGuard guard(x.device());
        C10_CUDA_CHECK(affine_coupling_backward_cuda(p, c10::cuda::getCurrentCUDAStream()));
      });
}

std::tuple<at::Tensor, at::Tensor> mix_logistic_cdf_cuda_op(const at::Tensor& x, const at::Tensor& logits,
                                                            const at::Tensor& means,
                                                            const at::Tensor& log_scales, bool inverse,
                                                            double tol, int64_t max_iters, bool validate) {
  return mix_logistic_cdf_impl(x, logits, means, log_scales, inverse, tol, max_iters, validate,
                               [&](const MixLogisticParams& p) {
                                 const c10::cuda::CUDAGuard guard(x.device());
                                 C10_CUDA_CHECK(mix_logistic_cdf_cuda(p, c10::cuda::getCurrentCUDAStream()));
                               });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> mix_logistic_cdf_backward_cuda_op(
    const std::optional<at::Tensor>& grad_y, const std::optional<at::Tensor>& grad_logdet,
    const at::Tensor& x, const at::Tensor& logits, const at::Tensor& means, const at::Tensor& log_scales,
    bool inverse) {
  return mix_logistic_cdf_backward_impl(
      grad_y, grad_logdet, x, logits, means, log_scales, inverse, [&](const MixLogisticBackwardParams& p) {
        const c10::cuda::CUDAGuard guard(x.device());
        C10_CUDA_CHECK(mix_logistic_cdf_backward_cuda(p, c10::cuda::getCurrentCUDAStream()));
      });
}

}  // namespace

TORCH_LIBRARY_IMPL(pygen, CUDA, m) {
  m.impl("affine_coupling", affine_coupling_cuda_op);
  m.impl("affine_coupling_backward", affine_coupling_backward_cuda_op);
  m.impl("affine_coupling_layer", affine_coupling_layer_cuda_op);
  m.impl("affine_coupling_layer_backward", affine_coupling_layer_backward_cuda_op);
  m.impl("mix_logistic_cdf", mix_logistic_cdf_cuda_op);
  m.impl("mix_logistic_cdf_backward", mix_logistic_cdf_backward_cuda_op);
}

}  // namespace pygen
