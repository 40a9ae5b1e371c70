// CUDA launchers of fused block-sparse attention (sm_80+). Torch-free: plain params and a
// stream. float32, float16 and bfloat16 (float64 is CPU only); head_dim a multiple of 16
// up to 256.
#pragma once

#include <cuda_runtime.h>

#include "csrc/attention/attention.h"

namespace pygen {

// What the backward needs beyond its params, allocated by the caller.
struct AttentionBackwardCudaArgs {
  float* delta;  // [batch, heads_q, len_q] scratch: rowsum(grad_out * out) - grad_lse
  // The layout transposed (null when p.s.row_ptr is null): for layout head h and key tile
  // j, the query tiles that visit it are t_idx[t_ptr[h * k_tiles + j] .. t_ptr[.. + 1]),
  // ascending; t_ptr has layout_heads * k_tiles + 1 entries, t_idx layout_nnz.
  const int32_t* t_ptr;
  const int32_t* t_idx;
};

cudaError_t attention_forward_cuda(const AttentionForwardParams& p, cudaStream_t stream);
cudaError_t attention_backward_cuda(const AttentionBackwardParams& p, const AttentionBackwardCudaArgs& args,
                                    cudaStream_t stream);

}  // namespace pygen
