"""torch.nn modules built on pygen's kernels."""

from pygen.nn.attention import (
    Attention,
    MultiheadAttention,
    SparseTransformerBlock,
    sparse_transformer_layout,
)
from pygen.nn.quant import BitLinear, Int4Linear, MXFP4Linear, TernaryLinear

__all__ = [
    "Attention",
    "BitLinear",
    "Int4Linear",
    "MXFP4Linear",
    "MultiheadAttention",
    "SparseTransformerBlock",
    "TernaryLinear",
    "sparse_transformer_layout",
]
