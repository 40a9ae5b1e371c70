"""Elementwise normalizing-flow transforms (pure PyTorch; kernel-backed versions replace
this file). Every function returns ``(y, logabsdet)`` and is differentiable by autograd,
except ``mix_logistic_cdf``'s inverse (bisection), which is meant for sampling.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def affine_coupling(
    x: torch.Tensor,
    shift: torch.Tensor,
    raw_scale: torch.Tensor,
    *,
    scale_fn: str = "exp",
    clamp: float | None = None,
    inverse: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The affine half of a coupling layer, ``y = x * scale + shift``.

    Args:
        x, shift, raw_scale: the same shape ``[B, ...]``, dtype and device.
        scale_fn: ``"exp"``: ``log scale = raw_scale``, or ``clamp * tanh(raw_scale / clamp)``
            when ``clamp`` is given (a soft bound on |log scale|); ``"sigmoid"``:
            ``scale = sigmoid(raw_scale + 2)`` (Glow's choice; ``clamp`` must be None).
        inverse: compute ``x = (y - shift) / scale`` from ``y`` given as ``x``.

    Returns:
        ``y`` like ``x``, and ``logabsdet`` ``[B]``: the sum over non-batch dims of
        ``log scale`` (negated for the inverse); float32, float64 for float64 inputs.
    """
    for name, t in (("x", x), ("shift", shift), ("raw_scale", raw_scale)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a tensor, got {type(t).__name__}")
        if t.shape != x.shape or t.dtype != x.dtype or t.device != x.device:
            raise ValueError(
                f"{name} must match x's shape {tuple(x.shape)}, dtype {x.dtype} and device {x.device}, got "
                f"{tuple(t.shape)}, {t.dtype}, {t.device}"
            )
    if x.dim() < 1:
        raise ValueError("x must have a batch dimension, got a 0-d tensor")
    if scale_fn not in ("exp", "sigmoid"):
        raise ValueError(f"scale_fn must be 'exp' or 'sigmoid', got {scale_fn!r}")
    if clamp is not None and (scale_fn != "exp" or not clamp > 0):
        raise ValueError(f"clamp must be None or > 0, and only with scale_fn='exp', got {clamp!r}")
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    raw = raw_scale.to(acc)
    if scale_fn == "sigmoid":
        log_scale = F.logsigmoid(raw + 2)
    else:
        log_scale = raw if clamp is None else clamp * torch.tanh(raw / clamp)
    xa, shift_a = x.to(acc), shift.to(acc)
    if inverse:
        y = (xa - shift_a) * torch.exp(-log_scale)
    else:
        y = xa * torch.exp(log_scale) + shift_a
    logabsdet = log_scale.flatten(1).sum(1) if x.dim() > 1 else log_scale
    return y.to(x.dtype), -logabsdet if inverse else logabsdet


def rq_spline(
    x: torch.Tensor,
    widths: torch.Tensor,
    heights: torch.Tensor,
    derivatives: torch.Tensor,
    *,
    inverse: bool = False,
    tail_bound: float = 3.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Monotonic rational-quadratic spline (Durkan et al. 2019), as nflows'
    ``unconstrained_rational_quadratic_spline`` with ``tails="linear"``.

    Inside ``[-tail_bound, tail_bound]`` the map is a spline with K bins; outside it is
    the identity. The knots' boundary derivatives are 1, so the map is C1.

    Args:
        x: any shape ``[...]``, float32 or float64.
        widths, heights: ``[..., K]`` unnormalized bin widths and heights (softmax, at
            least 1e-3 of the interval each).
        derivatives: ``[..., K - 1]`` unnormalized interior knot derivatives
            (``1e-3 + softplus``).
        inverse: invert the map (solve the rational quadratic for x).

    Returns:
        ``y`` like ``x`` and the elementwise ``logabsdet`` like ``x`` (of the inverse map
        when ``inverse``).
    """
    for name, t in (("x", x), ("widths", widths), ("heights", heights), ("derivatives", derivatives)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a tensor, got {type(t).__name__}")
    bins = widths.shape[-1] if widths.dim() else 0
    for name, t, last in (
        ("widths", widths, bins),
        ("heights", heights, bins),
        ("derivatives", derivatives, bins - 1),
    ):
        if t.shape != (*x.shape, last) or t.dtype != x.dtype or t.device != x.device:
            raise ValueError(
                f"{name} must be {tuple(x.shape) + (last,)} with x's dtype {x.dtype} and device {x.device}, "
                f"got {tuple(t.shape)}, {t.dtype}, {t.device}"
            )
    if bins < 2:
        raise ValueError(f"widths must have at least 2 bins in the last dim, got {bins}")
    if not tail_bound > 0:
        raise ValueError(f"tail_bound must be > 0, got {tail_bound!r}")
    # nflows' minimum bin width and height (the same) and knot derivative.
    min_size = min_derivative = 1e-3
    if bins * min_size >= 1:
        raise ValueError(f"too many bins ({bins}) for the minimum bin size {min_size}")
    left, right = -tail_bound, tail_bound
    inside = (x >= left) & (x <= right)
    xin = x.clamp(left, right)

    def knots(unnormalized):
        sizes = min_size + (1 - min_size * bins) * torch.softmax(unnormalized, -1)
        cum = F.pad(torch.cumsum(sizes, -1), (1, 0))
        cum = (right - left) * cum + left
        cum = torch.cat(
            [torch.full_like(cum[..., :1], left), cum[..., 1:-1], torch.full_like(cum[..., :1], right)], -1
        )
        return cum, cum[..., 1:] - cum[..., :-1]

    cumwidths, w = knots(widths)
    cumheights, h = knots(heights)
    # The boundary derivatives are 1 (softplus of this constant, plus the minimum).
    boundary = math.log(math.expm1(1 - min_derivative))
    d = F.pad(derivatives, (1, 1), value=boundary)
    d = min_derivative + F.softplus(d)

    locations = cumheights if inverse else cumwidths
    # nflows' searchsorted: the last knot nudged up so x == right lands in the last bin.
    locations = torch.cat([locations[..., :-1], locations[..., -1:] + 1e-6], -1)
    idx = ((xin[..., None] >= locations).sum(-1, keepdim=True) - 1).clamp(0, bins - 1)

    def pick(t):
        return t.gather(-1, idx)[..., 0]

    x0, bw, y0, bh = pick(cumwidths), pick(w), pick(cumheights), pick(h)
    delta = bh / bw
    d0, d1 = pick(d[..., :-1]), pick(d[..., 1:])
    curve = d0 + d1 - 2 * delta
    if inverse:
        dy = xin - y0
        a = dy * curve + bh * (delta - d0)
        b = bh * d0 - dy * curve
        c = -delta * dy
        disc = (b.square() - 4 * a * c).clamp(min=0)
        theta = (2 * c) / (-b - torch.sqrt(disc))
        out = theta * bw + x0
    else:
        theta = (xin - x0) / bw
        out = y0 + bh * (delta * theta.square() + d0 * theta * (1 - theta)) / (
            delta + curve * theta * (1 - theta)
        )
    t1t = theta * (1 - theta)
    numerator = delta.square() * (d1 * theta.square() + 2 * delta * t1t + d0 * (1 - theta).square())
    logabsdet = torch.log(numerator) - 2 * torch.log(delta + curve * t1t)
    if inverse:
        logabsdet = -logabsdet
    return torch.where(inside, out, x), torch.where(inside, logabsdet, torch.zeros_like(logabsdet))


def mix_logistic_cdf(
    x: torch.Tensor,
    logits: torch.Tensor,
    means: torch.Tensor,
    log_scales: torch.Tensor,
    *,
    inverse: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flow++'s elementwise mixture-of-logistics CDF in logit space,
    ``y = logit(F(x))``, ``F(x) = sum_k softmax(logits)_k sigmoid((x - means_k) exp(-log_scales_k))``.

    Args:
        x: any shape ``[...]``, float32 or float64.
        logits, means, log_scales: ``[..., K]``, x's dtype and device.
        inverse: find ``x`` with ``logit(F(x)) = y`` (bisection inside the bracket
            ``[min_k, max_k] (means_k + exp(log_scales_k) y)``, which holds the root).

    Returns:
        ``y`` like ``x`` and the elementwise ``logabsdet`` like ``x`` (of the inverse map
        when ``inverse``).
    """
    for name, t in (("x", x), ("logits", logits), ("means", means), ("log_scales", log_scales)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a tensor, got {type(t).__name__}")
    k = logits.shape[-1] if logits.dim() else 0
    for name, t in (("logits", logits), ("means", means), ("log_scales", log_scales)):
        if t.shape != (*x.shape, k) or t.dtype != x.dtype or t.device != x.device:
            raise ValueError(
                f"{name} must be {tuple(x.shape) + (k,)} with x's dtype {x.dtype} and device {x.device}, "
                f"got {tuple(t.shape)}, {t.dtype}, {t.device}"
            )
    if k < 1:
        raise ValueError("logits must have at least one component in the last dim")
    log_pi = torch.log_softmax(logits, -1)

    def forward(v):
        # log F, log(1 - F) and log F' by log-sum-exp, so the tails keep their precision.
        u = (v[..., None] - means) * torch.exp(-log_scales)
        log_f = torch.logsumexp(log_pi + F.logsigmoid(u), -1)
        log_1mf = torch.logsumexp(log_pi + F.logsigmoid(-u), -1)
        log_pdf = torch.logsumexp(log_pi + F.logsigmoid(u) + F.logsigmoid(-u) - log_scales, -1)
        return log_f - log_1mf, log_pdf - log_f - log_1mf

    if not inverse:
        return forward(x)
    with torch.no_grad():
        ends = means + torch.exp(log_scales) * x[..., None]
        lo, hi = ends.min(-1).values, ends.max(-1).values
        # Each step halves the bracket: 64 (120) halvings take any bracket of a sane width
        # below float32's (float64's) resolution at the root.
        for _ in range(120 if x.dtype == torch.float64 else 64):
            mid = (lo + hi) / 2
            below = forward(mid)[0] < x
            lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
        root = (lo + hi) / 2
    return root, -forward(root)[1]
