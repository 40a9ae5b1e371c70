"""Documented wrappers of the ``torch.ops.pygen`` ops, and their pure-PyTorch references."""

from pygen.ops.attention import attention
from pygen.ops.random import philox4x32_10, philox_blocks, rand, randn
from pygen.ops.sampling import sample_categorical
from pygen.ops.solvers import solver_update

__all__ = [
    "attention",
    "philox4x32_10",
    "philox_blocks",
    "rand",
    "randn",
    "sample_categorical",
    "solver_update",
]
