"""Fused attention with block-sparse layouts (flash-style, forward and backward).

Scores are computed tile by tile with an online softmax and never stored; the backward
recomputes them from q, k, v, the output and the saved log-sum-exp, so memory is
O(len) per head, as in the Sparse Transformer paper's recomputation.
"""

import torch

from pygen._build import _C  # noqa: F401  (registers the ops)
from pygen.sparse import DEFAULT_BLOCK, BlockLayout


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = False,
    scale: float | None = None,
    layout: BlockLayout | None = None,
    return_lse: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Softmax attention, ``softmax(q k^T * scale) v``, as ``scaled_dot_product_attention``.

    Args:
        q: ``[B, Hq, Lq, D]``; float32, bfloat16, float16, or on CPU float64 (float64
            computes in float64, the others accumulate in float32; on CUDA float32 runs on
            FMAs, not TF32, and the 16-bit types on tensor cores). ``D`` a multiple of 16
            up to 256.
        k, v: ``[B, Hkv, Lk, D]``, same dtype and device; ``Hkv`` divides ``Hq``
            (grouped-query attention). Any strides with a contiguous last dim.
        causal: hide keys after the query, aligned at the top left as SDPA's
            ``is_causal`` (query ``i`` sees keys ``j <= i``). A causal layout implies it.
        scale: multiplies the scores; default ``D ** -0.5``.
        layout: a :class:`pygen.sparse.BlockLayout` built for ``(Lq, Lk)``: only its
            blocks are computed. None computes every block.
        return_lse: also return the log-sum-exp of each query's scaled scores
            (differentiable).

    Returns:
        ``[B, Hq, Lq, D]`` in q's dtype, and with ``return_lse`` a ``[B, Hq, Lq]``
        in float32 (float64 for float64 inputs). A query that sees no key (fully masked) gets zeros and
        log-sum-exp -inf, not NaN.
    """
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a tensor, got {type(t).__name__}")
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(
            "q, k, v must be [batch, heads, len, head_dim], got shapes "
            f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    if scale is None:
        scale = q.shape[-1] ** -0.5
    if layout is None:
        row_ptr = col_idx = perm = None
        block, window = DEFAULT_BLOCK, -1
    else:
        if not isinstance(layout, BlockLayout):
            raise TypeError(f"layout must be a pygen.sparse.BlockLayout, got {type(layout).__name__}")
        layout.check_lengths(q.shape[2], k.shape[2])
        if layout.heads not in (1, q.shape[1]):
            raise ValueError(f"layout has {layout.heads} heads, q has {q.shape[1]}: use 1 or {q.shape[1]}")
        row_ptr, col_idx, perm = layout.index_tensors(q.device)
        block, window = layout.block_size, -1 if layout.window is None else layout.window
        causal = causal or layout.causal
    out, lse = torch.ops.pygen.attention_forward(
        q, k, v, row_ptr, col_idx, perm, block, bool(causal), window, float(scale)
    )
    return (out, lse) if return_lse else out


@torch.library.register_fake("pygen::attention_forward")
def _attention_forward_fake(q, k, v, row_ptr, col_idx, perm, block, causal, window, scale):
    lse_dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    return q.new_empty(q.shape), q.new_empty(q.shape[:3], dtype=lse_dtype)


@torch.library.register_fake("pygen::attention_backward")
def _attention_backward_fake(
    grad_out, grad_lse, q, k, v, out, lse, row_ptr, col_idx, perm, block, causal, window, scale
):
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


def _setup_context(ctx, inputs, output):
    q, k, v, row_ptr, col_idx, perm, *ctx.config = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse, row_ptr, col_idx, perm)
    ctx.mark_non_differentiable()


def _backward(ctx, grad_out, grad_lse):
    q, k, v, out, lse, row_ptr, col_idx, perm = ctx.saved_tensors
    if grad_out is None:
        grad_out = torch.zeros_like(out)
    grad_q, grad_k, grad_v = torch.ops.pygen.attention_backward(
        grad_out, grad_lse, q, k, v, out, lse, row_ptr, col_idx, perm, *ctx.config
    )
    return grad_q, grad_k, grad_v, None, None, None, None, None, None, None


torch.library.register_autograd("pygen::attention_forward", _backward, setup_context=_setup_context)
