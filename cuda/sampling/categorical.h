// CUDA launcher of sample_categorical. Torch-free: plain params and a stream.
#pragma once

#include <cuda_runtime.h>

#include "csrc/sampling/categorical.h"

namespace pygen {

// `chunk_sums` is scratch of rows * categorical_chunks(vocab) doubles.
cudaError_t sample_categorical_cuda(const CategoricalParams& p, double* chunk_sums, cudaStream_t stream);

}  // namespace pygen
