// CUDA launchers of the random ops. Torch-free: plain params and a stream.
#pragma once

#include <cuda_runtime.h>

#include "csrc/common/random.h"

namespace pygen {

cudaError_t fill_random_cuda(const RandomFillParams& p, cudaStream_t stream);
cudaError_t philox4x32_10_cuda(const PhiloxParams& p, cudaStream_t stream);

}  // namespace pygen
