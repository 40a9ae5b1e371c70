// CUDA launchers of mix_logistic_cdf. Torch-free: plain params and a stream.
#pragma once

#include <cuda_runtime.h>

#include "csrc/flows/mix_logistic.h"

namespace pygen {

cudaError_t mix_logistic_cdf_cuda(const MixLogisticParams& p, cudaStream_t stream);
cudaError_t mix_logistic_cdf_backward_cuda(const MixLogisticBackwardParams& p, cudaStream_t stream);

}  // namespace pygen
