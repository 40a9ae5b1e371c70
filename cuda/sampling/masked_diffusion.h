// CUDA launchers of the masked-diffusion steps. Torch-free: plain params and a stream.
#pragma once

#include <cuda_runtime.h>

#include "csrc/sampling/masked_diffusion.h"

namespace pygen {

// `chunk_sums` is scratch of categorical_chunks(vocab) doubles per position
// (batch * length of them; per row, batch, for the first-hitting step). Every position
// gets a status (p.status); with `device_assert`, a position whose status is not ok (a
// bad token, logits, or a parameter of its row) also fails a device-side assertion
// naming it.
cudaError_t unmask_ancestral_cuda(const AncestralParams& p, double* chunk_sums, bool device_assert,
                                  cudaStream_t stream);
cudaError_t unmask_by_confidence_cuda(const ConfidenceParams& p, double* chunk_sums, bool device_assert,
                                      cudaStream_t stream);
cudaError_t unmask_first_hitting_cuda(const MaskedStepParams& p, double* chunk_sums, bool device_assert,
                                      cudaStream_t stream);

}  // namespace pygen
