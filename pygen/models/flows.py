"""What the flow families on 8x8 digits share: the likelihood in bits per dimension, seeded
sampling to gray levels, and training with :func:`pygen.train.train`.

The data are scikit-learn's digits as 17 integer gray levels (:func:`pygen.data.digits`);
a model's :class:`~pygen.nn.flows.Flow` starts with a dequantization layer, so its
``log_prob`` is a lower bound on the discrete log-likelihood and the bits per dimension
an upper bound (uniform levels: log2(17) = 4.09 bits).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
from torch import nn

from pygen.data import digits
from pygen.nn.flows import Flow, UniformDequantization, VariationalDequantization
from pygen.train import Checkpointable, TrainConfig, train

LEVELS = 17  # gray levels of the digits, 0..16
SHAPE = (1, 8, 8)
DEQUANTIZATIONS = ("uniform", "variational")


def dequantization(kind: str, hidden: int) -> nn.Module:
    """The first layer of a digits flow: ``"uniform"`` or ``"variational"`` noise."""
    if kind == "uniform":
        return UniformDequantization(LEVELS)
    if kind == "variational":
        return VariationalDequantization(LEVELS, SHAPE[0], hidden)
    raise ValueError(f"dequantization must be one of {DEQUANTIZATIONS}, got {kind!r}")


class DigitsFlow(Checkpointable, nn.Module):
    """Base of the digits flow families: a subclass builds ``self.flow`` (a
    :class:`~pygen.nn.flows.Flow` from levels ``[B, 1, 8, 8]`` to a latent of
    ``self.flow.event_shape``) and names its ``family`` and ``config_class``."""

    flow: Flow

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """Mean negative log-likelihood bound in bits per dimension of levels ``x [B, 1, 8, 8]``."""
        return -self.flow.log_prob(x).mean() / (x[0].numel() * math.log(2))

    @torch.no_grad()
    def bits_per_dim(self, data: torch.Tensor, *, seed: int = 0, batch: int = 512) -> float:
        """Held-out bits per dimension of ``data`` (levels ``[N, 1, 8, 8]``), one draw of
        dequantization noise per image from ``seed`` (the same for every call)."""
        device = next(self.parameters()).device
        total = 0.0
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            for i in range(0, len(data), batch):
                chunk = data[i : i + batch].to(device)
                total += self.loss(chunk).item() * len(chunk)
        return total / len(data)

    def _levels(self, y: torch.Tensor) -> torch.Tensor:
        """Continuous flow output in level units -> int64 levels."""
        return y.round().clamp(0, LEVELS - 1).long()

    @torch.no_grad()
    def sample(self, n: int, *, seed: int = 0, temperature: float = 1.0) -> torch.Tensor:
        """``n`` digits, int64 levels ``[n, 1, 8, 8]``, from seeded latents."""
        self.eval()
        return self._levels(self.flow.sample(n, seed=seed, temperature=temperature))


def to_images(levels: torch.Tensor) -> torch.Tensor:
    """Levels 0..16 -> float images in [-1, 1] (the diffusion family's scale)."""
    return levels.float() / 8 - 1


def fit_digits(
    model: DigitsFlow,
    train_config: TrainConfig,
    *,
    batch_size: int,
    device: str,
    out: str | Path | None,
) -> list[dict]:
    """Trains ``model`` on the digits' train split, evaluating held-out bits per
    dimension. The first batch initializes data-dependent layers (ActNorm) before the
    trainer copies rank 0's weights to every rank. With ``out``, saves the model there
    (rank 0) and a grid of 64 samples as samples.png."""
    from pygen.models.diffusion import save_grid

    data, held_out = digits("train").to(device), digits("val")
    generator = torch.Generator().manual_seed(train_config.seed)

    def batches(g: torch.Generator) -> torch.Tensor:
        return data[torch.randint(len(data), (batch_size,), generator=g).to(device)]

    with torch.no_grad():
        model.loss(batches(generator))
    log = train(model, batches, train_config, lambda m: m.bits_per_dim(held_out))
    if out is not None and int(os.environ.get("RANK", "0")) == 0:
        model.save(out)
        save_grid(to_images(model.sample(64, seed=0)), Path(out) / "samples.png")
    return log
