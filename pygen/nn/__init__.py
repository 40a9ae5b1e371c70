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

__all__ = [
    "ActNorm",
    "AffineCoupling",
    "Attention",
    "Flow",
    "Invertible1x1Conv",
    "KVCache",
    "LogitTransform",
    "MixLogisticCoupling",
    "MultiheadAttention",
    "Patchify",
    "SparseTransformerBlock",
    "SplineCoupling",
    "Split",
    "Squeeze",
    "TarFlowBlock",
    "UniformDequantization",
    "Unsqueeze",
    "VariationalDequantization",
    "sparse_transformer_layout",
]
