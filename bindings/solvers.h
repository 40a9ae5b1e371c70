// Pieces of the solver ops' bindings that the CPU and CUDA implementations share.
#pragma once

#include <ATen/ATen.h>

#include <functional>
#include <vector>

#include "csrc/solvers/solver_update.h"

namespace pygen {

// solver_update for either device: checks the arguments, allocates y and pred, and runs
// `launch` once, or twice with dynamic thresholding (pred first, then its per-sample
// quantile, then the clamped pred and y).
std::tuple<at::Tensor, at::Tensor> solver_update_impl(
    const at::Tensor& x, const std::optional<at::Tensor>& out, const std::optional<at::Tensor>& uncond,
    at::TensorList hist, const at::Tensor& coef, bool noise, int64_t seed, int64_t offset,
    double threshold_ratio, double threshold_max,
    const std::function<void(const SolverUpdateParams&)>& launch);

}  // namespace pygen
