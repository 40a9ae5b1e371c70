"""Model families assembled from pygen's kernels."""

from pygen.models.sparse_transformer import SparseTransformerConfig, SparseTransformerLM

__all__ = ["SparseTransformerConfig", "SparseTransformerLM"]
