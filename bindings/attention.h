// Pieces of the attention ops' bindings that the CPU and CUDA implementations share.
#pragma once

#include <ATen/ATen.h>

#include <optional>

#include "csrc/attention/attention.h"

namespace pygen {

// The layout arguments every attention op takes, as in the schema.
struct AttentionLayoutArgs {
  const std::optional<at::Tensor>& row_ptr;
  const std::optional<at::Tensor>& col_idx;
  const std::optional<at::Tensor>& perm;
  int64_t block;
  bool causal;
  int64_t window;
  double scale;
};

// Checks q, k, v and the layout and returns the shape; `call` keeps the tensors the
// shape points into (contiguous layout tensors) alive.
struct AttentionCall {
  at::Tensor q, k, v, row_ptr, col_idx, perm;
  AttentionShape shape;
  DType dtype;
};
AttentionCall attention_call(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                             const AttentionLayoutArgs& layout);

// The forward's outputs, allocated, and the params pointing at them.
struct AttentionForwardCall {
  AttentionCall call;
  at::Tensor out, lse;
  AttentionForwardParams params() const;
};
AttentionForwardCall attention_forward_call(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                            const AttentionLayoutArgs& layout);

// The backward's checks on top of attention_call's, the tensors its params point into
// (rows-contiguous out and grad_out, contiguous lse and grad_lse) and the gradients,
// allocated.
struct AttentionBackwardCall {
  AttentionCall call;
  at::Tensor out, grad_out, lse, grad_lse, grad_q, grad_k, grad_v;
  AttentionBackwardParams params() const;
};
AttentionBackwardCall attention_backward_call(const at::Tensor& grad_out,
                                              const std::optional<at::Tensor>& grad_lse, const at::Tensor& q,
                                              const at::Tensor& k, const at::Tensor& v, const at::Tensor& out,
                                              const at::Tensor& lse, const AttentionLayoutArgs& layout);

AttentionStrides attention_strides(const at::Tensor& t);
// float64 for float64 inputs (which compute in float64), else float32.
at::ScalarType lse_dtype(const at::Tensor& q);

}  // namespace pygen
