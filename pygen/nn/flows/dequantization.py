"""From discrete data to densities: dequantization (Theis et al. 2016; Ho et al. 2019)
and the logit transform (RealNVP's preprocessing).

A dequantization layer maps integer levels ``x`` in ``{0, ..., levels - 1}`` to
``y = (x + u) / levels`` in ``[0, 1]`` with noise ``u`` in ``[0, 1)``, and returns as its
"log-det" the term that makes ``log p(y) + term`` a lower bound on ``log P(x)``:
``-D log(levels) - log q(u | x)``. Its inverse rounds down, so it is a left inverse.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from pygen.nn.flows.base import (
    checks_input,
    conditioner,
    logdet_dtype,
    logdet_zeros,
    standard_normal_log_prob,
)
from pygen.ops.flows import affine_coupling, rq_spline_packed


class _Dequantization(nn.Module):
    def __init__(self, levels: int):
        super().__init__()
        if levels < 2:
            raise ValueError(f"levels must be >= 2, got {levels}")
        self.levels = levels

    def _levels(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 2:
            raise ValueError(f"x must be [B, ...] integer levels, got shape {tuple(x.shape)}")
        # The range check reads a value back: on the CPU only, unless debug checks are on.
        if checks_input(x) and bool(((x < 0) | (x > self.levels - 1) | (x != torch.floor(x))).any()):
            raise ValueError(f"x must hold integer levels in [0, {self.levels - 1}]")
        return x if x.is_floating_point() else x.float()

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """``y`` in [0, 1] -> the levels ``floor(y * levels)``, clamped to the range,
        in ``y``'s dtype."""
        return torch.floor(y * self.levels).clamp(0, self.levels - 1)


class UniformDequantization(_Dequantization):
    """``u ~ U[0, 1)`` (from the global RNG): the bound's term is ``-D log(levels)``."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x [B, ...]`` levels (any dtype) -> ``(y, -D log(levels) [B])``, ``y`` float
        (float32 for integer ``x``)."""
        x = self._levels(x)
        y = (x + torch.rand_like(x)) / self.levels
        return y, logdet_zeros(x) - x[0].numel() * math.log(self.levels)


class VariationalDequantization(_Dequantization):
    """Learned noise ``u ~ q(u | x)`` (Flow++): ``u = sigmoid(affine(spline(eps)))``,
    ``eps`` standard normal, the spline's and the affine map's parameters predicted per
    element from the whole of ``x`` by a conditioner network (``conv`` for
    ``[B, C, H, W]``, else an MLP on ``[B, C]``). ``x`` integer levels of any dtype;
    ``y`` float (float32 for integer x), the bound's term ``[B]`` float32 (float64 for
    float64 x)."""

    def __init__(self, levels: int, channels: int, hidden: int = 32, *, conv: bool = True, bins: int = 8):
        super().__init__(levels)
        self.channels, self.bins, self.params = channels, bins, 3 * bins + 1
        self.net = conditioner(channels, channels * self.params, hidden, conv)
        with torch.no_grad():
            bias = self.net[-1].bias.view(channels, self.params)
            bias[:, 2 * bins : 3 * bins - 1] = math.log(math.expm1(1 - 1e-3))  # unit spline slopes

    def noise(self, x: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The noise ``u`` for levels ``x`` and standard-normal ``eps`` (same shape), and
        ``log |det du/deps|`` ``[B]``."""
        p = self.net(x / (self.levels - 1) * 2 - 1)
        p = p.view(p.shape[0], self.channels, self.params, *p.shape[2:]).movedim(2, -1)
        v, ld_spline = rq_spline_packed(eps, p[..., : 3 * self.bins - 1], validate=checks_input(eps))
        v, ld_affine = affine_coupling(v, p[..., -2].contiguous(), p[..., -1].contiguous(), clamp=3.0)
        # d sigmoid(v) / dv = sigmoid(v) sigmoid(-v)
        ld_sigmoid = F.logsigmoid(v) + F.logsigmoid(-v)
        ld = (ld_spline + ld_sigmoid).to(logdet_dtype(v)).flatten(1).sum(1)
        return torch.sigmoid(v), ld_affine + ld

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x [B, C, ...]`` levels -> ``(y, -D log(levels) - log q(u | x) [B])``."""
        x = self._levels(x)
        if x.shape[1] != self.channels:
            raise ValueError(f"x must be [B, {self.channels}, ...], got {tuple(x.shape)}")
        eps = torch.randn_like(x)
        u, logdet = self.noise(x, eps)
        log_q = standard_normal_log_prob(eps) - logdet
        # Keep y off the cell's upper edge, where sigmoid rounds to 1 in float32.
        u = u.clamp(max=1 - torch.finfo(u.dtype).eps)
        return (x + u) / self.levels, -x[0].numel() * math.log(self.levels) - log_q


class LogitTransform(nn.Module):
    """``[0, 1] -> R``: ``z = logit(alpha + (1 - 2 alpha) y)`` elementwise (RealNVP),
    the ``alpha`` margin keeping the edges finite. ``y [B, ...]`` float; z in y's dtype,
    logdet ``[B]`` float32 (float64 for float64 y)."""

    def __init__(self, alpha: float = 0.05):
        super().__init__()
        if not 0 < alpha < 0.5:
            raise ValueError(f"alpha must be in (0, 0.5), got {alpha!r}")
        self.alpha = alpha

    def forward(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``y`` -> ``(z, logdet [B])``."""
        s = self.alpha + (1 - 2 * self.alpha) * y
        z = torch.log(s) - torch.log1p(-s)
        ld = math.log(1 - 2 * self.alpha) - torch.log(s) - torch.log1p(-s)
        return z, ld.to(logdet_dtype(y)).flatten(1).sum(1)

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        """``z`` -> ``y``."""
        return (torch.sigmoid(z) - self.alpha) / (1 - 2 * self.alpha)
