"""Documented wrappers of the ``torch.ops.pygen`` ops, and their pure-PyTorch references."""

from pygen.ops.attention import attention
from pygen.ops.flows import (
    affine_coupling,
    affine_coupling_layer,
    mix_logistic_cdf,
    rq_spline,
    rq_spline_coupling_layer,
    rq_spline_packed,
)
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
    "affine_coupling",
    "affine_coupling_layer",
    "attention",
    "first_hitting_time",
    "mix_logistic_cdf",
    "philox4x32_10",
    "philox_blocks",
    "rand",
    "randn",
    "rq_spline",
    "rq_spline_coupling_layer",
    "rq_spline_packed",
    "sample_categorical",
    "solver_update",
    "unmask_ancestral",
    "unmask_by_confidence",
    "unmask_first_hitting",
]
