"""The flow container and the conditioner networks the coupling layers share.

Every flow layer is an ``nn.Module`` with ``forward(x) -> (y, logdet)`` (``logdet``
``[B]``: the log |det dy/dx| per sample) and ``inverse(y) -> x``. One dtype rule for
every layer's ``logdet``: the accumulation dtype of ``x`` (:func:`logdet_dtype`:
float32, float64 for float64 inputs), per-element terms cast to it before they are
summed, so 16-bit inputs still sum their log-dets in float32. Layers that compute a
term in float64 (the LU 1x1 convolution's ``sum(log_s)``) cast the result to it.

Input checks that read a device value back to the host (a value range, parameters'
finiteness) run where that costs no synchronization, on the CPU, and on other devices
only with :func:`pygen.set_debug_checks` (or ``PYGEN_DEBUG_CHECKS=1``; the same
switch as ``pygen.nn.flows.set_debug_checks``); never while
``torch.compile`` traces. :class:`Flow` chains them and is a layer itself, so flows nest
(multiscale architectures put whole flows inside a split).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
from torch import nn

from pygen.debug import debug_checks


def checks_input(x: torch.Tensor) -> bool:
    """Whether a check of ``x`` that reads a value back to the host runs: on the CPU
    (no synchronization), elsewhere only with debug checks; never under torch.compile."""
    if torch.compiler.is_compiling():
        return False
    return x.device.type == "cpu" or debug_checks()


def logdet_dtype(x: torch.Tensor) -> torch.dtype:
    """The log-det dtype of input ``x``: float64 for float64, else float32."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def logdet_zeros(x: torch.Tensor) -> torch.Tensor:
    """A ``[B]`` zero log-det in the accumulation dtype of ``x``."""
    return x.new_zeros(x.shape[0], dtype=logdet_dtype(x))


def conditioner(in_channels: int, out_channels: int, hidden: int, conv: bool) -> nn.Sequential:
    """The network predicting a coupling's parameters: 3x3 conv, 1x1 conv, 3x3 conv
    (``conv``, on ``[B, C, H, W]``) or a 3-layer MLP (on ``[B, C]``), ReLU between. The
    last layer starts at zero, so every coupling starts near the identity."""
    if conv:
        layers = [
            nn.Conv2d(in_channels, hidden, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(hidden, hidden, 1),
            nn.ReLU(),
            nn.Conv2d(hidden, out_channels, 3, padding=1),
        ]
    else:
        layers = [
            nn.Linear(in_channels, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, out_channels),
        ]
    nn.init.zeros_(layers[-1].weight)
    nn.init.zeros_(layers[-1].bias)
    return nn.Sequential(*layers)


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """``[B]`` log-density of ``z [B, ...]`` under the standard normal, in the log-det dtype."""
    z = z.to(logdet_zeros(z).dtype).flatten(1)
    return -0.5 * (z.square().sum(1) + z.shape[1] * math.log(2 * math.pi))


class Flow(nn.Module):
    """A chain of flow layers with a standard-normal base distribution.

    Args:
        layers: flow layers, applied in order from data to latent.
        event_shape: the latent's shape per sample, for :meth:`sample` (default: none;
            then only ``forward``, ``inverse`` and ``log_prob`` work).

    ``forward(x [B, ...]) -> (z, logdet [B])`` and ``log_prob(x) -> [B]``, float32
    (float64 for float64 x); ``sample(n)`` gives ``[n, ...]`` in ``dtype`` (float32).
    """

    def __init__(self, layers: Iterable[nn.Module], event_shape: Sequence[int] | None = None):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.event_shape = None if event_shape is None else tuple(event_shape)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x [B, ...]`` -> ``(z, logdet [B])``, the sum of the layers' log-dets."""
        logdet = logdet_zeros(x) if x.is_floating_point() else x.new_zeros(x.shape[0], dtype=torch.float32)
        for layer in self.layers:
            x, ld = layer(x)
            logdet = logdet + ld
        return x, logdet

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        """``z [B, ...]`` -> ``x``, the layers' inverses in reverse order."""
        for layer in reversed(self.layers):
            z = layer.inverse(z)
        return z

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """``[B]`` log-density of ``x``: the base log-density of ``z`` plus the log-det.
        With a dequantization layer first, a lower bound on the discrete log-likelihood
        (one draw of the dequantization noise)."""
        z, logdet = self(x)
        return standard_normal_log_prob(z) + logdet

    @torch.no_grad()
    def sample(
        self,
        n: int,
        *,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        temperature: float = 1.0,
        device: str | torch.device | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> torch.Tensor:
        """``n`` samples: ``inverse(temperature * z)`` with ``z`` standard normal, drawn
        on the CPU from ``generator`` (or ``seed``; default the global RNG), so a seed
        gives the same samples on every device."""
        if self.event_shape is None:
            raise ValueError("sampling needs the flow's event_shape")
        if seed is not None and generator is not None:
            raise ValueError("give seed or generator, not both")
        if seed is not None:
            generator = torch.Generator().manual_seed(seed)
        if device is None:
            device = next(iter(self.parameters()), torch.empty(0)).device
        z = torch.randn((n, *self.event_shape), generator=generator, dtype=dtype)
        return self.inverse((z * temperature).to(device))
