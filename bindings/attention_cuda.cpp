// CUDA implementation of the attention ops: the CPU binding's checks (bindings/attention.h),
// then the launchers on the current stream, no host sync. The layout's indices are not
// read on the host here; the kernels clamp them (see AttentionTileList).
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "bindings/attention.h"
#include "cuda/attention/attention.h"

namespace pygen {

namespace {

void check_cuda_dtype(const at::Tensor& q) {
  TORCH_CHECK_TYPE(
      q.scalar_type() != at::kDouble,
      "q, k, v are float64, which attention computes on cpu only; on cuda use float32, float16 or "
      "bfloat16");
}

// The layout transposed for the dK/dV pass, on the device with ATen ops: for layout head
// h and key tile j, the query tiles listing j, ascending (a stable sort by key tile keeps
// the row order). Returns (t_ptr [layout_heads * k_tiles + 1], t_idx [nnz]), int32.
std::pair<at::Tensor, at::Tensor> transposed_layout(const AttentionCall& c) {
  const AttentionShape& s = c.shape;
  const int64_t q_tiles = attention_tiles(s.len_q, s.block), k_tiles = attention_tiles(s.len_k, s.block);
  const int64_t rows = c.row_ptr.numel() - 1, nnz = c.col_idx.numel();
  const at::TensorOptions i32 = c.row_ptr.options(), i64 = i32.dtype(at::kLong);
  // The row of entry n is the last row starting at or before n (clamped: rows are not
  // checked on the host for cuda tensors, and index_add_ below must stay in range).
  const at::Tensor row =
      (at::searchsorted(c.row_ptr, at::arange(nnz, i32), /*out_int32=*/false, /*right=*/true) - 1)
          .clamp(0, rows - 1);
  const at::Tensor head = row.div(q_tiles, "floor");
  const at::Tensor key = head * k_tiles + c.col_idx.to(at::kLong).clamp(0, k_tiles - 1);
  const auto [sorted, order] = at::sort(key, /*stable=*/true, /*dim=*/0, /*descending=*/false);
  const at::Tensor t_idx = (row - head * q_tiles).index_select(0, order).to(at::kInt);
  const at::Tensor counts =
      at::zeros({s.layout_heads * k_tiles}, i64).index_add_(0, sorted, at::ones_like(sorted));
  const at::Tensor t_ptr = at::cat({at::zeros({1}, i64), counts.cumsum(0)}).to(at::kInt);
  return {t_ptr, t_idx};
}

std::tuple<at::Tensor, at::Tensor> attention_forward_cuda_op(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const std::optional<at::Tensor>& row_ptr,
    const std::optional<at::Tensor>& col_idx, const std::optional<at::Tensor>& perm, int64_t block,
    bool causal, int64_t window, double scale) {
  // The checks come before the guard: the dispatcher comes here when any argument is on
  // CUDA, and a guard on a cpu q would fail with an internal message instead of naming it.
  const AttentionForwardCall f =
      attention_forward_call(q, k, v, {row_ptr, col_idx, perm, block, causal, window, scale});
  check_cuda_dtype(q);
  const c10::cuda::CUDAGuard guard(q.device());
  C10_CUDA_CHECK(attention_forward_cuda(f.params(), c10::cuda::getCurrentCUDAStream()));
  return {f.out, f.lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> attention_backward_cuda_op(
    const at::Tensor& grad_out, const std::optional<at::Tensor>& grad_lse, const at::Tensor& q,
    const at::Tensor& k, const at::Tensor& v, const at::Tensor& out, const at::Tensor& lse,
    const std::optional<at::Tensor>& row_ptr, const std::optional<at::Tensor>& col_idx,
    const std::optional<at::Tensor>& perm, int64_t block, bool causal, int64_t window, double scale) {
  const AttentionBackwardCall b = attention_backward_call(
      grad_out, grad_lse, q, k, v, out, lse, {row_ptr, col_idx, perm, block, causal, window, scale});
  check_cuda_dtype(q);
  const c10::cuda::CUDAGuard guard(q.device());  // after the checks, as in the forward
  const AttentionShape& s = b.call.shape;
  if (s.len_q == 0 || s.len_k == 0) {  // no query sees a key: every gradient is zero
    b.grad_q.zero_();
    b.grad_k.zero_();
    b.grad_v.zero_();
    return {b.grad_q, b.grad_k, b.grad_v};
  }
  const at::Tensor delta = at::empty({s.batch, s.heads_q, s.len_q}, q.options().dtype(at::kFloat));
  at::Tensor t_ptr, t_idx;
  if (s.row_ptr) std::tie(t_ptr, t_idx) = transposed_layout(b.call);
  const AttentionBackwardCudaArgs args{delta.data_ptr<float>(),
                                       t_ptr.defined() ? t_ptr.data_ptr<int32_t>() : nullptr,
                                       t_idx.defined() ? t_idx.data_ptr<int32_t>() : nullptr};
  C10_CUDA_CHECK(attention_backward_cuda(b.params(), args, c10::cuda::getCurrentCUDAStream()));
  return {b.grad_q, b.grad_k, b.grad_v};
}

}  // namespace

TORCH_LIBRARY_IMPL(pygen, CUDA, m) {
  m.impl("attention_forward", attention_forward_cuda_op);
  m.impl("attention_backward", attention_backward_cuda_op);
}

}  // namespace pygen
