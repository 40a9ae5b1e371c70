// CUDA launchers of the masked-diffusion steps. Torch-free: plain params and a stream.
#pragma once

#include <cuda_runtime.h>

#include "csrc/sampling/masked_diffusion.h"

namespace pygen {

// `chunk_sums` is scratch of categorical_chunks(vocab) doubles per position
// (batch * length of them; per row, batch, for the first-hitting step).
cudaError_t unmask_ancestral_cuda(const AncestralParams& p, double* chunk_sums, cudaStream_t stream);
cudaError_t unmask_by_confidence_cuda(const ConfidenceParams& p, double* chunk_sums, cudaStream_t stream);
cudaError_t unmask_first_hitting_cuda(const MaskedStepParams& p, double* chunk_sums, cudaStream_t stream);

}  // namespace pygen
