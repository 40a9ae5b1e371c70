"""Model families assembled from pygen's kernels."""

from pygen.models.diffusion import DiffusionConfig, DiffusionModel
from pygen.models.sparse_transformer import SparseTransformerConfig, SparseTransformerLM

__all__ = ["DiffusionConfig", "DiffusionModel", "SparseTransformerConfig", "SparseTransformerLM"]
