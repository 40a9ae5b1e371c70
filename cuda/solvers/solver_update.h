// CUDA launcher of solver_update. Torch-free: plain params and a stream.
#pragma once

#include <cuda_runtime.h>

#include "csrc/solvers/solver_update.h"

namespace pygen {

cudaError_t solver_update_cuda(const SolverUpdateParams& p, cudaStream_t stream);

}  // namespace pygen
