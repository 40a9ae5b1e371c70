// Attention ops: the checks and params both devices share, and the CPU implementation.
#include "bindings/attention.h"

#include <ATen/ATen.h>
#include <torch/library.h>

#include <cmath>

#include "bindings/checks.h"

namespace pygen {

namespace {

// Attention reads rows of head_dim elements: the last dim must be contiguous.
at::Tensor rows_contiguous(const at::Tensor& t) { return t.stride(-1) == 1 ? t : t.contiguous(); }

// The layout's index tensors are read on the host before the kernel runs, so a bad
// index raises instead of reading out of bounds.
at::Tensor host_index(const std::optional<at::Tensor>& t, const char* name, at::ScalarType dtype,
                      const at::Device& device) {
  TORCH_CHECK_TYPE(t->scalar_type() == dtype, "layout ", name, " must be ", dtype, ", got ",
                   t->scalar_type());
  TORCH_CHECK_VALUE(t->dim() == 1, "layout ", name, " must be 1-D, got shape ", t->sizes());
  TORCH_CHECK(t->device() == device, "layout ", name, " must be on the inputs' device ", device, ", got ",
              t->device());
  return t->contiguous();
}

void check_layout(const AttentionCall& c) {
  const AttentionShape& s = c.shape;
  const int64_t q_tiles = attention_tiles(s.len_q, s.block), k_tiles = attention_tiles(s.len_k, s.block);
  const int64_t rows = c.row_ptr.numel() - 1;
  TORCH_CHECK_VALUE(rows == q_tiles || (q_tiles > 0 && rows == s.heads_q * q_tiles), "layout has ", rows,
                    " block rows, but q needs ", q_tiles, " (len_q ", s.len_q, " in blocks of ", s.block,
                    "), shared by all heads or once per each of the ", s.heads_q,
                    " heads: was the layout built for this sequence length?");
  if (!c.row_ptr.is_cpu()) return;  // the CUDA kernels clamp indices instead
  const at::Tensor rp = c.row_ptr.cpu(), ci = c.col_idx.cpu();
  const int32_t* r = rp.data_ptr<int32_t>();
  const int32_t* col = ci.data_ptr<int32_t>();
  TORCH_CHECK_VALUE(r[0] == 0 && r[rows] == ci.numel(), "layout row_ptr must run from 0 to col_idx.numel()");
  for (int64_t i = 0; i < rows; ++i) {
    TORCH_CHECK_VALUE(r[i] <= r[i + 1], "layout row_ptr must be non-decreasing");
    for (int32_t n = r[i]; n < r[i + 1]; ++n)
      TORCH_CHECK_VALUE(col[n] >= 0 && col[n] < k_tiles && (n == r[i] || col[n] > col[n - 1]),
                        "layout col_idx must hold increasing key blocks in [0, ", k_tiles, ") per row");
  }
}

void check_perm(const AttentionCall& c) {
  const int64_t len = c.shape.len_q;
  TORCH_CHECK_VALUE(c.shape.len_k == len && c.perm.numel() == len,
                    "a layout with a permutation needs len_q == ", "len_k == len(perm), got ", c.shape.len_q,
                    ", ", c.shape.len_k, ", ", c.perm.numel());
  if (!c.perm.is_cpu()) return;
  std::vector<char> seen(len, 0);
  const int64_t* p = c.perm.data_ptr<int64_t>();
  for (int64_t i = 0; i < len; ++i) {
    TORCH_CHECK_VALUE(p[i] >= 0 && p[i] < len && !seen[p[i]], "layout perm must be a permutation of 0..",
                      len - 1);
    seen[p[i]] = 1;
  }
}

}  // namespace

at::ScalarType lse_dtype(const at::Tensor& q) {
  return q.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

AttentionStrides attention_strides(const at::Tensor& t) { return {t.stride(0), t.stride(1), t.stride(2)}; }

AttentionCall attention_call(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                             const AttentionLayoutArgs& layout) {
  TORCH_CHECK_VALUE(q.dim() == 4 && k.dim() == 4 && v.dim() == 4,
                    "q, k, v must be [batch, heads, len, head_dim], got shapes ", q.sizes(), ", ", k.sizes(),
                    ", ", v.sizes());
  TORCH_CHECK_TYPE(k.scalar_type() == q.scalar_type() && v.scalar_type() == q.scalar_type(),
                   "q, k, v must share a dtype, got ", q.scalar_type(), ", ", k.scalar_type(), ", ",
                   v.scalar_type());
  TORCH_CHECK(k.device() == q.device() && v.device() == q.device(), "q, k, v must be on one device, got ",
              q.device(), ", ", k.device(), ", ", v.device());
  check_device_compiled(q.device(), "q");
  AttentionCall c;
  c.dtype = to_dtype(q.scalar_type(), "q");
  const int64_t batch = q.size(0), heads_q = q.size(1), heads_kv = k.size(1), head_dim = q.size(3);
  TORCH_CHECK_VALUE(k.size(0) == batch && v.size(0) == batch,
                    "q, k, v must share the batch size, got shapes ", q.sizes(), ", ", k.sizes(), ", ",
                    v.sizes());
  TORCH_CHECK_VALUE(v.size(1) == heads_kv && v.size(2) == k.size(2), "k and v must have the same heads and ",
                    "length, got shapes ", k.sizes(), " and ", v.sizes());
  TORCH_CHECK_VALUE(heads_kv > 0 && heads_q % heads_kv == 0, "k's heads (", heads_kv,
                    ") must divide q's heads (", heads_q, ") (grouped-query attention)");
  TORCH_CHECK_VALUE(k.size(3) == head_dim && v.size(3) == head_dim,
                    "q, k, v must share head_dim, got shapes ", q.sizes(), ", ", k.sizes(), ", ", v.sizes());
  TORCH_CHECK_VALUE(head_dim % 16 == 0 && head_dim >= 16 && head_dim <= 256,
                    "head_dim must be a multiple of 16 in [16, 256], got ", head_dim);
  const int64_t bs = layout.block;
  TORCH_CHECK_VALUE(bs >= 16 && bs <= 256 && (bs & (bs - 1)) == 0,
                    "block size must be a power of two in [16, 256], got ", bs);
  TORCH_CHECK_VALUE(layout.window >= -1, "window must be >= 0 (or -1 for none), got ", layout.window);
  TORCH_CHECK_VALUE(std::isfinite(layout.scale), "scale must be finite, got ", layout.scale);
  c.q = rows_contiguous(q);
  c.k = rows_contiguous(k);
  c.v = rows_contiguous(v);
  c.shape = {batch,         heads_q,       heads_kv, q.size(2), k.size(2), head_dim, float(layout.scale),
             layout.causal, layout.window, bs,       nullptr,   nullptr,   0,        nullptr};
  TORCH_CHECK_VALUE(layout.row_ptr.has_value() == layout.col_idx.has_value(),
                    "layout row_ptr and col_idx come together");
  if (layout.row_ptr) {
    c.row_ptr = host_index(layout.row_ptr, "row_ptr", at::kInt, q.device());
    c.col_idx = host_index(layout.col_idx, "col_idx", at::kInt, q.device());
    check_layout(c);
    c.shape.row_ptr = c.row_ptr.data_ptr<int32_t>();
    c.shape.col_idx = c.col_idx.data_ptr<int32_t>();
    c.shape.layout_heads = (c.row_ptr.numel() - 1) / std::max<int64_t>(attention_tiles(c.shape.len_q, bs), 1);
    c.shape.layout_nnz = c.col_idx.numel();
  }
  if (layout.perm) {
    c.perm = host_index(layout.perm, "perm", at::kLong, q.device());
    check_perm(c);
    c.shape.perm = c.perm.data_ptr<int64_t>();
  }
  return c;
}

AttentionForwardCall attention_forward_call(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                            const AttentionLayoutArgs& layout) {
  AttentionForwardCall f{attention_call(q, k, v, layout)};
  f.out = at::empty(q.sizes(), q.options());
  f.lse = at::empty({q.size(0), q.size(1), q.size(2)}, q.options().dtype(lse_dtype(q)));
  return f;
}

AttentionForwardParams AttentionForwardCall::params() const {
  const AttentionCall& c = call;
  return {c.shape,
          c.dtype,
          c.q.data_ptr(),
          c.k.data_ptr(),
          c.v.data_ptr(),
          attention_strides(c.q),
          attention_strides(c.k),
          attention_strides(c.v),
          out.data_ptr(),
          lse.data_ptr()};
}

namespace {

void check_like(const at::Tensor& t, const at::Tensor& like, const char* name, const char* like_name) {
  TORCH_CHECK_VALUE(t.sizes() == like.sizes(), name, " must have the shape of ", like_name, " ", like.sizes(),
                    ", got ", t.sizes());
  TORCH_CHECK_TYPE(t.scalar_type() == like.scalar_type(), name, " must be ", like.scalar_type(), ", got ",
                   t.scalar_type());
  TORCH_CHECK(t.device() == like.device(), name, " must be on ", like.device(), ", got ", t.device());
}

}  // namespace

AttentionBackwardCall attention_backward_call(const at::Tensor& grad_out,
                                              const std::optional<at::Tensor>& grad_lse, const at::Tensor& q,
                                              const at::Tensor& k, const at::Tensor& v, const at::Tensor& out,
                                              const at::Tensor& lse, const AttentionLayoutArgs& layout) {
  AttentionBackwardCall b{attention_call(q, k, v, layout)};
  check_like(out, q, "out", "q");
  check_like(grad_out, q, "grad_out", "q");
  b.out = rows_contiguous(out);
  b.grad_out = rows_contiguous(grad_out);
  TORCH_CHECK_VALUE(lse.sizes() == q.sizes().slice(0, 3) && lse.scalar_type() == lse_dtype(q), "lse must be ",
                    lse_dtype(q), " [batch, heads, len_q], got ", lse.scalar_type(), " ", lse.sizes());
  TORCH_CHECK(lse.device() == q.device(), "lse must be on ", q.device(), ", got ", lse.device());
  b.lse = lse.contiguous();
  if (grad_lse) {
    check_like(*grad_lse, lse, "grad_lse", "lse");
    b.grad_lse = grad_lse->contiguous();
  }
  b.grad_q = at::empty(q.sizes(), q.options());
  b.grad_k = at::empty(k.sizes(), k.options());
  b.grad_v = at::empty(v.sizes(), v.options());
  return b;
}

AttentionBackwardParams AttentionBackwardCall::params() const {
  const AttentionCall& c = call;
  return {c.shape,
          c.dtype,
          c.q.data_ptr(),
          c.k.data_ptr(),
          c.v.data_ptr(),
          out.data_ptr(),
          grad_out.data_ptr(),
          attention_strides(c.q),
          attention_strides(c.k),
          attention_strides(c.v),
          attention_strides(out),
          attention_strides(grad_out),
          lse.data_ptr(),
          grad_lse.defined() ? grad_lse.data_ptr() : nullptr,
          grad_q.data_ptr(),
          grad_k.data_ptr(),
          grad_v.data_ptr()};
}

namespace {

std::tuple<at::Tensor, at::Tensor> attention_forward_cpu_op(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const std::optional<at::Tensor>& row_ptr,
    const std::optional<at::Tensor>& col_idx, const std::optional<at::Tensor>& perm, int64_t block,
    bool causal, int64_t window, double scale) {
  const AttentionForwardCall f =
      attention_forward_call(q, k, v, {row_ptr, col_idx, perm, block, causal, window, scale});
  attention_forward_cpu(f.params());
  return {f.out, f.lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> attention_backward_cpu_op(
    const at::Tensor& grad_out, const std::optional<at::Tensor>& grad_lse, const at::Tensor& q,
    const at::Tensor& k, const at::Tensor& v, const at::Tensor& out, const at::Tensor& lse,
    const std::optional<at::Tensor>& row_ptr, const std::optional<at::Tensor>& col_idx,
    const std::optional<at::Tensor>& perm, int64_t block, bool causal, int64_t window, double scale) {
  const AttentionBackwardCall b = attention_backward_call(
      grad_out, grad_lse, q, k, v, out, lse, {row_ptr, col_idx, perm, block, causal, window, scale});
  attention_backward_cpu(b.params());
  return {b.grad_q, b.grad_k, b.grad_v};
}

}  // namespace

TORCH_LIBRARY_IMPL(pygen, CPU, m) {
  m.impl("attention_forward", attention_forward_cpu_op);
  m.impl("attention_backward", attention_backward_cpu_op);
}

}  // namespace pygen
