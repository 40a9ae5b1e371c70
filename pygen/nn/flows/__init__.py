"""Normalizing-flow layers on pygen's flow ops, and the :class:`Flow` container.

Every layer maps ``forward(x) -> (y, logdet [B])`` and ``inverse(y) -> x``.
"""

from pygen.debug import set_debug_checks
from pygen.nn.flows.autoregressive import JacobiStats, TarFlowBlock
from pygen.nn.flows.base import Flow, standard_normal_log_prob
from pygen.nn.flows.couplings import AffineCoupling, MixLogisticCoupling, SplineCoupling
from pygen.nn.flows.dequantization import LogitTransform, UniformDequantization, VariationalDequantization
from pygen.nn.flows.invertible import ActNorm, Invertible1x1Conv
from pygen.nn.flows.multiscale import Patchify, Split, Squeeze, Unsqueeze

__all__ = [
    "ActNorm",
    "AffineCoupling",
    "Flow",
    "Invertible1x1Conv",
    "JacobiStats",
    "LogitTransform",
    "MixLogisticCoupling",
    "Patchify",
    "SplineCoupling",
    "Split",
    "Squeeze",
    "TarFlowBlock",
    "UniformDequantization",
    "Unsqueeze",
    "VariationalDequantization",
    "set_debug_checks",
    "standard_normal_log_prob",
]
