"""Glow / RealNVP-style multiscale flow on 8x8 digits (Kingma & Dhariwal 2018; Dinh et al.
2016): dequantization and a logit transform, then per scale a squeeze and ``depth``
flow steps (ActNorm, invertible 1x1 convolution, coupling), half of the channels
factored out (with Glow's learned conditional prior) before the next scale.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from pygen.models.flows import SHAPE, DigitsFlow, dequantization, fit_digits
from pygen.nn.flows import (
    ActNorm,
    AffineCoupling,
    Flow,
    Invertible1x1Conv,
    LogitTransform,
    MixLogisticCoupling,
    SplineCoupling,
    Split,
    Squeeze,
    Unsqueeze,
)
from pygen.train import TrainConfig

COUPLINGS = ("affine", "spline", "mixlogistic")


@dataclass
class GlowConfig:
    """Hyperparameters of :class:`Glow` (each a flag of ``python -m pygen train glow``)."""

    scales: int = 2  # 1..3: each squeezes 2x2 (8x8 -> 4x4 -> 2x2 -> 1x1)
    depth: int = 4  # flow steps (ActNorm, 1x1 conv, coupling) per scale
    hidden: int = 64  # conditioner channels
    coupling: str = "affine"  # "affine", "spline" (rational quadratic) or "mixlogistic" (Flow++)
    dequantization: str = "uniform"  # or "variational" (Flow++)
    learned_prior: bool = True  # Glow's conditional prior on factored-out channels
    alpha: float = 0.05  # logit-transform margin


class Glow(DigitsFlow):
    """``flow``: levels ``[B, 1, 8, 8]`` (int64 in 0..16) -> float32 latent ``[B, 1, 8, 8]``
    (the factored-out channels of every scale, put back in place)."""

    family, config_class = "glow", GlowConfig

    def __init__(self, config: GlowConfig):
        super().__init__()
        if not 1 <= config.scales <= 3:
            raise ValueError(f"scales must be 1, 2 or 3 for 8x8 images, got {config.scales}")
        if config.coupling not in COUPLINGS:
            raise ValueError(f"coupling must be one of {COUPLINGS}, got {config.coupling!r}")
        if config.depth < 1:
            raise ValueError(f"depth must be >= 1, got {config.depth}")
        self.config = config
        layers = [dequantization(config.dequantization, config.hidden), LogitTransform(config.alpha)]
        self.flow = Flow(layers + self._scale(SHAPE[0], 0), event_shape=SHAPE)

    def _coupling(self, channels: int, parity: int):
        kind, hidden = self.config.coupling, self.config.hidden
        cls = {"affine": AffineCoupling, "spline": SplineCoupling, "mixlogistic": MixLogisticCoupling}[kind]
        return cls(channels, hidden, parity=parity)

    def _scale(self, channels: int, index: int) -> list:
        c = 4 * channels
        layers = [Squeeze()]
        for i in range(self.config.depth):
            layers += [ActNorm(c), Invertible1x1Conv(c), self._coupling(c, i % 2)]
        if index < self.config.scales - 1:
            inner = Flow(self._scale(c - c // 2, index + 1))
            layers.append(Split(c, inner, learned_prior=self.config.learned_prior, hidden=self.config.hidden))
        return layers + [Unsqueeze()]


def fit(
    config: GlowConfig,
    train_config: TrainConfig,
    *,
    batch_size: int = 64,
    device: str = "cpu",
    out: str | Path | None = None,
) -> tuple[Glow, list[dict]]:
    """Trains a :class:`Glow` on the digits, evaluating held-out bits per dimension;
    saves it and samples.png to ``out`` (rank 0) when given."""
    torch.manual_seed(train_config.seed)
    model = Glow(config).to(device)
    return model, fit_digits(model, train_config, batch_size=batch_size, device=device, out=out)
