"""Reshaping layers and the multiscale split (RealNVP, Glow): squeeze space into
channels, factor out half of the channels early, and cut images into patch sequences."""

from __future__ import annotations

import torch
from torch import nn

from pygen.nn.flows.base import conditioner, logdet_zeros
from pygen.ops.flows import affine_coupling


def _squeeze(x: torch.Tensor, f: int) -> torch.Tensor:
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // f, f, w // f, f).permute(0, 1, 3, 5, 2, 4)
    return x.reshape(b, c * f * f, h // f, w // f)


def _unsqueeze(x: torch.Tensor, f: int) -> torch.Tensor:
    b, c, h, w = x.shape
    x = x.reshape(b, c // (f * f), f, f, h, w).permute(0, 1, 4, 2, 5, 3)
    return x.reshape(b, c // (f * f), h * f, w * f)


class Squeeze(nn.Module):
    """Space to depth: ``[B, C, H, W]`` -> ``[B, C f^2, H/f, W/f]`` (each ``f x f``
    patch becomes channels); volume preserving. Any dtype; the zero logdet ``[B]``
    float32 (float64 for float64 x)."""

    def __init__(self, factor: int = 2):
        super().__init__()
        if factor < 2:
            raise ValueError(f"factor must be >= 2, got {factor}")
        self.factor = factor

    def _check(self, x: torch.Tensor, squeezed: bool) -> None:
        f = self.factor
        if (
            x.dim() != 4
            or (squeezed and x.shape[1] % (f * f))
            or (not squeezed and (x.shape[2] % f or x.shape[3] % f))
        ):
            what = f"C divisible by {f * f}" if squeezed else f"H and W divisible by {f}"
            raise ValueError(f"x must be [B, C, H, W] with {what}, got {tuple(x.shape)}")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` -> ``(y, logdet [B] = 0)``."""
        self._check(x, squeezed=False)
        return _squeeze(x, self.factor), logdet_zeros(x)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """``y`` -> ``x``."""
        self._check(y, squeezed=True)
        return _unsqueeze(y, self.factor)


class Unsqueeze(Squeeze):
    """Depth to space, the inverse of :class:`Squeeze`: ``[B, C f^2, H/f, W/f]`` ->
    ``[B, C, H, W]``, any dtype."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` -> ``(y, logdet [B] = 0)``."""
        return Squeeze.inverse(self, x), logdet_zeros(x)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """``y`` -> ``x``."""
        return Squeeze.forward(self, y)[0]


class Split(nn.Module):
    """The multiscale split: the first ``C - C // 2`` channels go through ``inner`` (a
    flow layer, typically a :class:`~pygen.nn.flows.Flow` of the next scale), the other
    ``C // 2`` are factored out to the latent as they are. With ``learned_prior``
    (Glow), the factored-out half is first normalized by a mean and log-scale predicted
    from the kept half, ``z_2 = (x_2 - mu(x_1)) / sigma(x_1)``: a learned conditional
    Gaussian prior, written as an affine coupling. The output has the input's shape
    (``[B, C, ...]``) and dtype; logdet ``[B]`` float32 (float64 for float64 x)."""

    def __init__(
        self,
        channels: int,
        inner: nn.Module,
        *,
        learned_prior: bool = True,
        hidden: int = 64,
        conv: bool = True,
    ):
        super().__init__()
        if channels < 2:
            raise ValueError(f"a split needs channels >= 2, got {channels}")
        self.channels, self.kept = channels, channels - channels // 2
        self.inner = inner
        self.prior = (
            conditioner(self.kept, 2 * (channels - self.kept), hidden, conv) if learned_prior else None
        )

    def _halves(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.dim() < 2 or x.shape[1] != self.channels:
            raise ValueError(f"x must be [B, {self.channels}, ...], got {tuple(x.shape)}")
        return x[:, : self.kept], x[:, self.kept :]

    def _prior_params(self, kept: torch.Tensor):
        shift, raw = self.prior(kept).chunk(2, dim=1)
        return shift.contiguous(), raw.contiguous()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` -> ``(z, logdet [B])``."""
        kept, out = self._halves(x)
        logdet = logdet_zeros(x)
        if self.prior is not None:
            out, logdet = affine_coupling(out.contiguous(), *self._prior_params(kept), clamp=3.0)
        z, ld = self.inner(kept)
        return torch.cat([z, out], 1), logdet + ld

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        """``z`` -> ``x``."""
        z_kept, out = self._halves(z)
        kept = self.inner.inverse(z_kept)
        if self.prior is not None:
            out, _ = affine_coupling(out.contiguous(), *self._prior_params(kept), clamp=3.0, inverse=True)
        return torch.cat([kept, out], 1)


class Patchify(nn.Module):
    """``[B, C, H, W]`` -> ``[B, (H/p)(W/p), C p^2]``: non-overlapping ``p x p`` patches
    in raster order, the token sequence of TarFlow; volume preserving, any dtype."""

    def __init__(self, shape: tuple[int, int, int], patch: int):
        super().__init__()
        c, h, w = shape
        if patch < 1 or h % patch or w % patch:
            raise ValueError(f"patch ({patch}) must divide the image size {h}x{w}")
        self.shape, self.patch = tuple(shape), patch
        self.tokens, self.token_dim = (h // patch) * (w // patch), c * patch * patch

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x [B, C, H, W]`` -> ``(tokens [B, L, C p^2], logdet [B] = 0)``."""
        if tuple(x.shape[1:]) != self.shape:
            raise ValueError(f"x must be [B, {', '.join(map(str, self.shape))}], got {tuple(x.shape)}")
        (c, h, w), p, b = self.shape, self.patch, x.shape[0]
        t = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)
        return t.reshape(b, self.tokens, self.token_dim), logdet_zeros(x)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """``tokens [B, L, C p^2]`` -> ``x [B, C, H, W]``."""
        if tuple(y.shape[1:]) != (self.tokens, self.token_dim):
            raise ValueError(f"y must be [B, {self.tokens}, {self.token_dim}], got {tuple(y.shape)}")
        (c, h, w), p, b = self.shape, self.patch, y.shape[0]
        x = y.reshape(b, h // p, w // p, c, p, p).permute(0, 3, 1, 4, 2, 5)
        return x.reshape(b, c, h, w)
