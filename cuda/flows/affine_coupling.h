// CUDA launchers of affine_coupling. Torch-free: plain params and a stream.
#pragma once

#include <cuda_runtime.h>

#include "csrc/flows/affine_coupling.h"

namespace pygen {

cudaError_t affine_coupling_cuda(const AffineCouplingParams& p, cudaStream_t stream);
cudaError_t affine_coupling_backward_cuda(const AffineCouplingBackwardParams& p, cudaStream_t stream);

}  // namespace pygen
