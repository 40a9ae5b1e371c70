// CUDA implementation of the flow ops: launch on the current stream (rq_spline's
// finite check reads one flag back, so it waits for the kernel unless validate is off).
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "bindings/flows.h"
#include "cuda/flows/rq_spline.h"

namespace pygen {

namespace {

// Each op takes its device guard at launch, after the impl's checks: the dispatcher comes
// here when any argument is on CUDA, and a guard on a cpu x would fail with CUDAGuard's
// internal message before the checks could name the argument.

std::tuple<at::Tensor, at::Tensor> rq_spline_cuda_op(const at::Tensor& x, const at::Tensor& widths,
                                                     const at::Tensor& heights, const at::Tensor& derivatives,
                                                     bool inverse, double tail_bound, bool validate) {
  return rq_spline_impl(x, widths, heights, derivatives, inverse, tail_bound, validate,
                        [&](const RqSplineParams& p) {
                          const c10::cuda::CUDAGuard guard(x.device());
                          C10_CUDA_CHECK(rq_spline_cuda(p, c10::cuda::getCurrentCUDAStream()));
                        });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> rq_spline_backward_cuda_op(
    const std::optional<at::Tensor>& grad_y, const std::optional<at::Tensor>& grad_logabsdet,
    const at::Tensor& x, const at::Tensor& widths, const at::Tensor& heights, const at::Tensor& derivatives,
    bool inverse, double tail_bound) {
  return rq_spline_backward_impl(
      grad_y, grad_logabsdet, x, widths, heights, derivatives, inverse, tail_bound,
      [&](const RqSplineBackwardParams& p) {
        const c10::cuda::CUDAGuard guard(x.device());
        C10_CUDA_CHECK(rq_spline_backward_cuda(p, c10::cuda::getCurrentCUDAStream()));
      });
}

std::tuple<at::Tensor, at::Tensor> rq_spline_packed_cuda_op(const at::Tensor& x, const at::Tensor& params,
                                                            bool inverse, double tail_bound, bool validate) {
  return rq_spline_packed_impl(x, params, inverse, tail_bound, validate, [&](const RqSplineParams& p) {
    const c10::cuda::CUDAGuard guard(x.device());
    C10_CUDA_CHECK(rq_spline_cuda(p, c10::cuda::getCurrentCUDAStream()));
  });
}

std::tuple<at::Tensor, at::Tensor> rq_spline_packed_backward_cuda_op(
    const std::optional<at::Tensor>& grad_y, const std::optional<at::Tensor>& grad_logabsdet,
    const at::Tensor& x, const at::Tensor& params, bool inverse, double tail_bound) {
  return rq_spline_packed_backward_impl(
      grad_y, grad_logabsdet, x, params, inverse, tail_bound, [&](const RqSplineBackwardParams& p) {
        const c10::cuda::CUDAGuard guard(x.device());
        C10_CUDA_CHECK(rq_spline_backward_cuda(p, c10::cuda::getCurrentCUDAStream()));
      });
}

std::tuple<at::Tensor, at::Tensor> rq_spline_coupling_layer_cuda_op(const at::Tensor& x,
                                                                    const at::Tensor& params,
                                                                    int64_t active_begin, int64_t active,
                                                                    bool inverse, double tail_bound,
                                                                    bool validate) {
  return rq_spline_coupling_layer_impl(
      x, params, active_begin, active, inverse, tail_bound, validate, [&](const RqCouplingParams& p) {
        const c10::cuda::CUDAGuard guard(x.device());
        C10_CUDA_CHECK(rq_spline_coupling_cuda(p, c10::cuda::getCurrentCUDAStream()));
      });
}

std::tuple<at::Tensor, at::Tensor> rq_spline_coupling_layer_backward_cuda_op(
    const std::optional<at::Tensor>& grad_y, const std::optional<at::Tensor>& grad_logdet,
    const at::Tensor& x, const at::Tensor& params, int64_t active_begin, int64_t active, bool inverse,
    double tail_bound) {
  return rq_spline_coupling_layer_backward_impl(
      grad_y, grad_logdet, x, params, active_begin, active, inverse, tail_bound,
      [&](const RqCouplingBackwardParams& p) {
        const c10::cuda::CUDAGuard guard(x.device());
        C10_CUDA_CHECK(rq_spline_coupling_backward_cuda(p, c10::cuda::getCurrentCUDAStream()));
      });
}

}  // namespace

TORCH_LIBRARY_IMPL(pygen, CUDA, m) {
  m.impl("rq_spline", rq_spline_cuda_op);
  m.impl("rq_spline_backward", rq_spline_backward_cuda_op);
  m.impl("rq_spline_packed", rq_spline_packed_cuda_op);
  m.impl("rq_spline_packed_backward", rq_spline_packed_backward_cuda_op);
  m.impl("rq_spline_coupling_layer", rq_spline_coupling_layer_cuda_op);
  m.impl("rq_spline_coupling_layer_backward", rq_spline_coupling_layer_backward_cuda_op);
}

}  // namespace pygen
