"""Model families assembled from pygen's kernels."""

from pygen.models.diffusion import DiffusionConfig, DiffusionModel
from pygen.models.masked_diffusion import MaskedDiffusionConfig, MaskedDiffusionLM
from pygen.models.sparse_transformer import SparseTransformerConfig, SparseTransformerLM

__all__ = [
    "DiffusionConfig",
    "DiffusionModel",
    "MaskedDiffusionConfig",
    "MaskedDiffusionLM",
    "SparseTransformerConfig",
    "SparseTransformerLM",
]
