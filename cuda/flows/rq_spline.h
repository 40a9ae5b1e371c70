// CUDA launchers of rq_spline, its coupling-layer form and their backwards. Torch-free: plain params and a
// stream.
#pragma once

#include <cuda_runtime.h>

#include "csrc/flows/rq_spline.h"

namespace pygen {

cudaError_t rq_spline_cuda(const RqSplineParams& p, cudaStream_t stream);
cudaError_t rq_spline_backward_cuda(const RqSplineBackwardParams& p, cudaStream_t stream);
cudaError_t rq_spline_coupling_cuda(const RqCouplingParams& p, cudaStream_t stream);
cudaError_t rq_spline_coupling_backward_cuda(const RqCouplingBackwardParams& p, cudaStream_t stream);

}  // namespace pygen
