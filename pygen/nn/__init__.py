"""torch.nn modules built on pygen's kernels."""

from pygen.nn.attention import (
    Attention,
    KVCache,
    MultiheadAttention,
    SparseTransformerBlock,
    sparse_transformer_layout,
)
from pygen.nn.flows import (
    ActNorm,
    AffineCoupling,
    Flow,
    Invertible1x1Conv,
    LogitTransform,
    MixLogisticCoupling,
    Patchify,
    SplineCoupling,
    Split,
    Squeeze,
    TarFlowBlock,
    UniformDequantization,
    Unsqueeze,
    VariationalDequantization,
)
from pygen.nn.linear_conv import LinearConv2d
from pygen.nn.quant import BitLinear, Int4Linear, MXFP4Linear, TernaryLinear

__all__ = [
    "ActNorm",
    "AffineCoupling",
    "Attention",
    "BitLinear",
    "Flow",
    "Int4Linear",
    "Invertible1x1Conv",
    "KVCache",
    "LinearConv2d",
    "LogitTransform",
    "MXFP4Linear",
    "MixLogisticCoupling",
    "MultiheadAttention",
    "Patchify",
    "SparseTransformerBlock",
    "SplineCoupling",
    "Split",
    "Squeeze",
    "TarFlowBlock",
    "TernaryLinear",
    "UniformDequantization",
    "Unsqueeze",
    "VariationalDequantization",
    "sparse_transformer_layout",
]
