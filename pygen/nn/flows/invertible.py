"""Glow's per-channel layers (Kingma & Dhariwal 2018): activation normalization and the
invertible 1x1 convolution. Both act on dim 1 of ``[B, C, ...]`` (images ``[B, C, H, W]``
or vectors ``[B, C]``), the same map at every other position."""

from __future__ import annotations

import torch
from torch import nn

from pygen.nn.flows.base import logdet_zeros


def _positions(x: torch.Tensor) -> int:
    """Positions per sample sharing each channel's map (H * W for images)."""
    return x[0, 0].numel()


def _check(x: torch.Tensor, channels: int) -> None:
    if x.dim() < 2 or x.shape[1] != channels:
        raise ValueError(f"x must be [B, {channels}, ...], got {tuple(x.shape)}")


class ActNorm(nn.Module):
    """``y = (x + bias) * exp(log_scale)`` per channel. Data-dependent initialization:
    the first forward pass (before any ``load_state_dict``) sets the parameters so that
    its output has zero mean and unit variance per channel. ``x [B, C, ...]`` float;
    y in x's dtype, logdet ``[B]`` float32 (float64 for float64 x)."""

    def __init__(self, channels: int):
        super().__init__()
        self.channels = channels
        self.bias = nn.Parameter(torch.zeros(channels))
        self.log_scale = nn.Parameter(torch.zeros(channels))
        self.register_buffer("initialized", torch.tensor(False))
        # The buffer read once, so forward does not synchronize with the device every call.
        self._known_initialized = False

    def _load_from_state_dict(self, *args, **kwargs):
        self._known_initialized = False
        super()._load_from_state_dict(*args, **kwargs)

    def _view(self, p: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return p.view(1, -1, *([1] * (x.dim() - 2))).to(x.dtype)

    @torch.no_grad()
    def initialize(self, x: torch.Tensor) -> None:
        """Sets the parameters from a batch ``x`` (zero mean, unit variance output)."""
        flat = x.transpose(0, 1).reshape(self.channels, -1).double()
        self.bias.copy_(-flat.mean(1))
        self.log_scale.copy_(-flat.std(1, correction=0).clamp(min=1e-6).log())
        self.initialized.fill_(True)
        self._known_initialized = True

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` -> ``(y, logdet [B])``."""
        _check(x, self.channels)
        if not self._known_initialized:
            if not self.initialized:
                self.initialize(x)
            self._known_initialized = True
        y = (x + self._view(self.bias, x)) * torch.exp(self._view(self.log_scale, x))
        ld = self.log_scale.to(logdet_zeros(x).dtype).sum() * _positions(x)
        return y, ld.expand(x.shape[0])

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """``y`` -> ``x``."""
        _check(y, self.channels)
        return y * torch.exp(-self._view(self.log_scale, y)) - self._view(self.bias, y)


class Invertible1x1Conv(nn.Module):
    """Glow's invertible 1x1 convolution, LU-parameterized: ``W = P L (U + diag(s))``
    with ``P`` a fixed permutation, ``L`` unit lower triangular, ``U`` strictly upper
    triangular and ``s = sign * exp(log_s)``, so ``log |det W| = sum(log_s)`` costs
    nothing (summed in float64). Starts as a random rotation. The inverse builds ``W^-1``
    in float64 from the triangular factors, so the round trip stays exact to the input's
    precision. ``x [B, C, ...]`` float; y in x's dtype, logdet ``[B]`` float32 (float64 for float64 x)."""

    def __init__(self, channels: int):
        super().__init__()
        self.channels = channels
        w = torch.linalg.qr(torch.randn(channels, channels, dtype=torch.float64))[0]
        p, lower, upper = torch.linalg.lu(w)
        s = upper.diagonal()
        self.register_buffer("perm", p.float())
        self.register_buffer("sign_s", s.sign().float())
        self.register_buffer("lower_mask", torch.ones(channels, channels).tril(-1))
        self.lower = nn.Parameter(lower.float())
        self.upper = nn.Parameter(upper.triu(1).float())
        self.log_s = nn.Parameter(s.abs().log().float())

    def _factors(self, dtype: torch.dtype):
        eye = torch.eye(self.channels, dtype=dtype, device=self.lower.device)
        lower = self.lower.to(dtype) * self.lower_mask.to(dtype) + eye
        upper = self.upper.to(dtype) * self.lower_mask.T.to(dtype)
        upper = upper + torch.diag(self.sign_s.to(dtype) * torch.exp(self.log_s.to(dtype)))
        return self.perm.to(dtype), lower, upper

    def weight(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """``W`` ``[C, C]``."""
        p, lower, upper = self._factors(dtype)
        return p @ lower @ upper

    def inverse_weight(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """``W^-1 = U^-1 L^-1 P^T`` by triangular solves in float64, cast to ``dtype``."""
        p, lower, upper = self._factors(torch.float64)
        eye = torch.eye(self.channels, dtype=torch.float64, device=p.device)
        lower_inv = torch.linalg.solve_triangular(lower, eye, upper=False, unitriangular=True)
        upper_inv = torch.linalg.solve_triangular(upper, eye, upper=True)
        return (upper_inv @ lower_inv @ p.T).to(dtype)

    @staticmethod
    def _mix(w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return (w @ x.flatten(2)).view_as(x) if x.dim() > 2 else x @ w.T

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` -> ``(y, logdet [B])``."""
        _check(x, self.channels)
        # The log-det's only arithmetic (the sum, the scaling by positions) in float64.
        ld = (self.log_s.double().sum() * _positions(x)).to(logdet_zeros(x).dtype)
        return self._mix(self.weight(x.dtype), x), ld.expand(x.shape[0])

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """``y`` -> ``x``."""
        _check(y, self.channels)
        return self._mix(self.inverse_weight(y.dtype), y)
