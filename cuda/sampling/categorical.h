// CUDA launcher of sample_categorical. Torch-free: plain params and a stream.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "csrc/sampling/categorical.h"

namespace pygen {

// Thread blocks per row: 0 runs one block per row (one kernel); s >= 1 spreads each row
// over s blocks, each a contiguous range of whole chunks (two kernels: the maximum, then
// the chunk sums, the row's last block inverting). `force` is the test knob
// (pygen.ops.sampling._cuda_split): 0 chooses from the rows, the vocabulary and the
// current device's SM count (a split when the rows alone would leave SMs idle and rows
// are long); 1 forces one block per row; n >= 2 forces the split kernels with
// min(n, chunks) blocks per row, even one. The result is the same bit for bit either way.
int64_t categorical_cuda_splits(int64_t rows, int64_t vocab, int64_t force);

// Bytes of device scratch sample_categorical_cuda needs (a caching allocator's block
// will do: it is written before it is read, and needs no zeroing).
int64_t categorical_cuda_workspace_bytes(int64_t rows, int64_t vocab, int64_t splits);

// Every row gets a status (p.status); with `device_assert`, a row whose status is not ok
// (its logits, or a parameter out of range) also fails a device-side assertion naming
// it. No host synchronization; the kernels can be captured in a CUDA graph.
cudaError_t sample_categorical_cuda(const CategoricalParams& p, int64_t splits, void* workspace,
                                    bool device_assert, cudaStream_t stream);

}  // namespace pygen
