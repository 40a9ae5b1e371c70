"""torch.nn modules built on pygen's kernels."""

from pygen.nn.attention import (
    Attention,
    MultiheadAttention,
    SparseTransformerBlock,
    sparse_transformer_layout,
)

__all__ = ["Attention", "MultiheadAttention", "SparseTransformerBlock", "sparse_transformer_layout"]
