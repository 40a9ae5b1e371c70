"""Coupling layers (Dinh et al. 2016; Durkan et al. 2019; Ho et al. 2019): half of the
channels pass through and condition an elementwise bijection of the other half.

Inputs are ``[B, C, H, W]`` (``conv=True``, convolutional conditioner) or ``[B, C]``
(an MLP); ``C >= 2``. ``parity`` picks which half is transformed, so alternating
parities (or an invertible 1x1 convolution in between) transform every channel.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from pygen.nn.flows.base import checks_input, conditioner, logdet_dtype
from pygen.ops.flows import affine_coupling, affine_coupling_layer, mix_logistic_cdf, rq_spline_coupling_layer


class _Coupling(nn.Module):
    """The split, the conditioner and the merge; subclasses give ``params_per_element``
    and the elementwise transform ``_transform(x, params, inverse) -> (y, logdet [B])``,
    with ``params`` ``[B, C_b, P, ...]`` (a view of the network's output), or derive from
    :class:`_FusedCoupling`."""

    params_per_element: int

    def __init__(self, channels: int, hidden: int, conv: bool, parity: int):
        super().__init__()
        if channels < 2:
            raise ValueError(f"a coupling needs channels >= 2, got {channels}")
        if parity not in (0, 1):
            raise ValueError(f"parity must be 0 or 1, got {parity!r}")
        self.channels, self.parity, self.conv = channels, parity, conv
        self.passive = channels // 2
        self.active = channels - self.passive
        self.net = conditioner(self.passive, self.active * self.params_per_element, hidden, conv)

    def _check(self, x: torch.Tensor) -> None:
        if x.dim() != (4 if self.conv else 2) or x.shape[1] != self.channels:
            expected = "[B, C, H, W]" if self.conv else "[B, C]"
            raise ValueError(f"x must be {expected} with C = {self.channels}, got {tuple(x.shape)}")

    def _split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._check(x)
        # One split rather than two slices: its backward concatenates the halves' gradients,
        # where each slice's would fill a zero tensor of x's size and the two would be summed.
        if self.parity:
            active, passive = x.split([self.active, self.passive], 1)
            return passive, active
        return x.split([self.passive, self.active], 1)

    def _merge(self, passive: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
        return torch.cat([active, passive] if self.parity else [passive, active], 1)

    def _params(self, passive: torch.Tensor) -> torch.Tensor:
        p = self.net(passive)
        return p.view(p.shape[0], self.active, self.params_per_element, *p.shape[2:])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` -> ``(y, logdet [B])``."""
        passive, active = self._split(x)
        y, logdet = self._transform(active, self._params(passive), inverse=False)
        return self._merge(passive, y), logdet

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """``y`` -> ``x``."""
        passive, active = self._split(y)
        x, _ = self._transform(active, self._params(passive), inverse=True)
        return self._merge(passive, x)


class _FusedCoupling(_Coupling):
    """A coupling whose op does the split, the transform and the merge: no split, merge or
    slices of the network output. The op reads the active channels and the network's whole
    output in place, copies the passive channels into y, sums the log-det per sample, and
    its backward writes x's and the output's gradients whole. Subclasses give
    ``_layer(x, params, active_begin, inverse) -> (y, logdet [B])``."""

    def _couple(self, x: torch.Tensor, inverse: bool) -> tuple[torch.Tensor, torch.Tensor]:
        self._check(x)
        active_begin = 0 if self.parity else self.passive
        passive = x.narrow(1, self.active if self.parity else 0, self.passive)
        return self._layer(x, self.net(passive), active_begin, inverse)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` -> ``(y, logdet [B])``."""
        return self._couple(x, inverse=False)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """``y`` -> ``x``."""
        return self._couple(y, inverse=True)[0]


class AffineCoupling(_FusedCoupling):
    """RealNVP / Glow affine coupling, ``y_b = x_b * scale(x_a) + shift(x_a)``.

    ``scale_fn="exp"`` with ``clamp`` (a soft bound on |log scale|, RealNVP's tanh) or
    ``"sigmoid"`` (Glow's ``sigmoid(h + 2)``, ``clamp`` None).

    ``x [B, C, H, W]`` (``conv``) or ``[B, C]``, float32/float64 (bfloat16/float16
    computed in float32); y in x's dtype, logdet ``[B]`` float32 (float64 for float64 x)."""

    params_per_element = 2

    def __init__(
        self,
        channels: int,
        hidden: int = 64,
        *,
        conv: bool = True,
        parity: int = 0,
        scale_fn: str = "exp",
        clamp: float | None = 3.0,
    ):
        super().__init__(channels, hidden, conv, parity)
        if scale_fn not in ("exp", "sigmoid"):
            raise ValueError(f"scale_fn must be 'exp' or 'sigmoid', got {scale_fn!r}")
        self.scale_fn, self.clamp = scale_fn, clamp if scale_fn == "exp" else None

    def _layer(self, x, params, active_begin, inverse):
        return affine_coupling_layer(
            x, params, active_begin, self.active, scale_fn=self.scale_fn, clamp=self.clamp, inverse=inverse
        )


class SplineCoupling(_FusedCoupling):
    """Neural spline coupling (Durkan et al. 2019): a rational-quadratic spline with
    ``bins`` bins on ``[-tail_bound, tail_bound]`` per element, identity outside. It
    starts as the identity (uniform bins, unit derivatives). Shapes and dtypes as
    :class:`AffineCoupling`: ``x [B, C, H, W]`` or ``[B, C]``, logdet ``[B]`` float32
    (float64 for float64 x)."""

    def __init__(
        self,
        channels: int,
        hidden: int = 64,
        *,
        conv: bool = True,
        parity: int = 0,
        bins: int = 8,
        tail_bound: float = 3.0,
    ):
        if bins < 2:
            raise ValueError(f"bins must be >= 2, got {bins}")
        self.params_per_element = 3 * bins - 1
        super().__init__(channels, hidden, conv, parity)
        self.bins, self.tail_bound = bins, tail_bound
        with torch.no_grad():
            # Softplus of this bias plus the minimum derivative (1e-3) is 1.
            bias = self.net[-1].bias.view(self.active, self.params_per_element)
            bias[:, 2 * bins :] = math.log(math.expm1(1 - 1e-3))

    def _layer(self, x, params, active_begin, inverse):
        return rq_spline_coupling_layer(
            x,
            params,
            active_begin,
            self.active,
            inverse=inverse,
            tail_bound=self.tail_bound,
            validate=checks_input(x),
        )


class MixLogisticCoupling(_Coupling):
    """Flow++'s coupling (Ho et al. 2019): ``y_b = logit(F(x_b)) * scale + shift`` with
    ``F`` a mixture of ``components`` logistics, all conditioned on ``x_a``. The
    inverse of the mixture CDF is :func:`pygen.ops.mix_logistic_cdf`'s safeguarded
    Newton-bisection. Shapes and dtypes as :class:`AffineCoupling`: ``x [B, C, H, W]``
    or ``[B, C]``, logdet ``[B]`` float32 (float64 for float64 x)."""

    def __init__(
        self,
        channels: int,
        hidden: int = 64,
        *,
        conv: bool = True,
        parity: int = 0,
        components: int = 4,
        clamp: float = 3.0,
    ):
        if components < 1:
            raise ValueError(f"components must be >= 1, got {components}")
        self.params_per_element = 3 * components + 2
        super().__init__(channels, hidden, conv, parity)
        self.components, self.clamp = components, clamp
        with torch.no_grad():
            # Distinct component means, or the zero-initialized components never separate.
            bias = self.net[-1].bias.view(self.active, self.params_per_element)
            bias[:, components : 2 * components] = torch.linspace(-1, 1, components)

    def _transform(self, x, params, inverse):
        k = self.components
        params = params.movedim(2, -1)
        logits, means, log_scales = (params[..., i * k : (i + 1) * k].contiguous() for i in range(3))
        shift, raw = params[..., 3 * k].contiguous(), params[..., 3 * k + 1].contiguous()
        validate = checks_input(x)
        if inverse:
            u, ld_affine = affine_coupling(x, shift, raw, clamp=self.clamp, inverse=True)
            y, ld_mix = mix_logistic_cdf(u, logits, means, log_scales, inverse=True, validate=validate)
        else:
            u, ld_mix = mix_logistic_cdf(x, logits, means, log_scales, validate=validate)
            y, ld_affine = affine_coupling(u, shift, raw, clamp=self.clamp)
        return y, ld_affine + ld_mix.to(logdet_dtype(x)).flatten(1).sum(1)
