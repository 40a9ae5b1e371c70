// CUDA launcher of sample_categorical. Torch-free: plain params and a stream.
#pragma once

#include <cuda_runtime.h>

#include "csrc/sampling/categorical.h"

namespace pygen {

// `chunk_sums` is scratch of rows * categorical_chunks(vocab) doubles. Every row gets a
// status (p.status); with `device_assert`, a row whose status is not ok (its logits, or
// a parameter out of range) also fails a device-side assertion naming it.
cudaError_t sample_categorical_cuda(const CategoricalParams& p, double* chunk_sums, bool device_assert,
                                    cudaStream_t stream);

}  // namespace pygen
