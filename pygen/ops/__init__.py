"""Documented wrappers of the ``torch.ops.pygen`` ops, and their pure-PyTorch references."""

from pygen.ops.attention import attention
from pygen.ops.flows import rq_spline
from pygen.ops.masked_diffusion import (
    first_hitting_time,
    unmask_ancestral,
    unmask_by_confidence,
    unmask_first_hitting,
)
from pygen.ops.random import philox4x32_10, philox_blocks, rand, randn
from pygen.ops.sampling import sample_categorical
from pygen.ops.solvers import solver_update

__all__ = [
    "attention",
    "first_hitting_time",
    "philox4x32_10",
    "philox_blocks",
    "rand",
    "randn",
    "rq_spline",
    "sample_categorical",
    "solver_update",
    "unmask_ancestral",
    "unmask_by_confidence",
    "unmask_first_hitting",
]
