// CUDA implementation of the solver ops: launch on the current stream, no host sync
// (so a sampling loop can be captured in a CUDA graph; thresholding excepted, whose
// quantile is ATen's).
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "bindings/solvers.h"
#include "cuda/solvers/solver_update.h"

namespace pygen {

namespace {

std::tuple<at::Tensor, at::Tensor> solver_update_cuda_op(const at::Tensor& x,
                                                         const std::optional<at::Tensor>& out,
                                                         const std::optional<at::Tensor>& uncond,
                                                         at::TensorList hist, const at::Tensor& coef,
                                                         bool noise, int64_t seed, int64_t offset,
                                                         double threshold_ratio, double threshold_max) {
  // The guard is taken at launch, after the impl's checks: the dispatcher comes here when
  // any argument is on CUDA, and a guard on a cpu x would fail before the checks name it.
  return solver_update_impl(x, out, uncond, hist, coef, noise, seed, offset, threshold_ratio, threshold_max,
                            [&](const SolverUpdateParams& p) {
                              const c10::cuda::CUDAGuard guard(x.device());
                              C10_CUDA_CHECK(solver_update_cuda(p, c10::cuda::getCurrentCUDAStream()));
                            });
}

}  // namespace

TORCH_LIBRARY_IMPL(pygen, CUDA, m) { m.impl("solver_update", solver_update_cuda_op); }

}  // namespace pygen
