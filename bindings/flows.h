// Pieces of the flow ops' bindings that the CPU and CUDA implementations share.
#pragma once

#include <ATen/ATen.h>

#include <functional>

#include "csrc/flows/rq_spline.h"

namespace pygen {

// rq_spline for either device: checks the arguments (messages name them), allocates y
// and logabsdet, runs `launch`, then with `validate` raises on non-finite parameters
// (reading the kernel's flag, a host sync on CUDA).
std::tuple<at::Tensor, at::Tensor> rq_spline_impl(const at::Tensor& x, const at::Tensor& widths,
                                                  const at::Tensor& heights, const at::Tensor& derivatives,
                                                  bool inverse, double tail_bound, bool validate,
                                                  const std::function<void(const RqSplineParams&)>& launch);

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> rq_spline_backward_impl(
    const std::optional<at::Tensor>& grad_y, const std::optional<at::Tensor>& grad_logabsdet,
    const at::Tensor& x, const at::Tensor& widths, const at::Tensor& heights, const at::Tensor& derivatives,
    bool inverse, double tail_bound, const std::function<void(const RqSplineBackwardParams&)>& launch);

}  // namespace pygen
