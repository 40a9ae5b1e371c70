"""Model families assembled from pygen's kernels."""

from pygen.models.diffusion import DiffusionConfig, DiffusionModel
from pygen.models.glow import Glow, GlowConfig
from pygen.models.masked_diffusion import MaskedDiffusionConfig, MaskedDiffusionLM
from pygen.models.sparse_transformer import SparseTransformerConfig, SparseTransformerLM
from pygen.models.tarflow import TarFlow, TarFlowConfig

__all__ = [
    "DiffusionConfig",
    "DiffusionModel",
    "Glow",
    "GlowConfig",
    "MaskedDiffusionConfig",
    "MaskedDiffusionLM",
    "SparseTransformerConfig",
    "SparseTransformerLM",
    "TarFlow",
    "TarFlowConfig",
]
