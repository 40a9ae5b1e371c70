"""Elementwise transforms of normalizing-flow coupling layers, with fused log-determinants.

``affine_coupling`` is the map of RealNVP / Glow affine couplings; ``mix_logistic_cdf``
is Flow++'s logistic-mixture CDF transform. Both run forward and inverse on CPU and
CUDA, and are differentiable in every tensor input through registered backward kernels.
"""

import math

import torch
import torch.nn.functional as F

from pygen._build import _C  # noqa: F401  (registers the ops)

SCALE_FNS = ("exp", "sigmoid")


def _check_tensors(**tensors):
    for name, t in tensors.items():
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a tensor, got {type(t).__name__}")


def affine_coupling(
    x: torch.Tensor,
    shift: torch.Tensor,
    raw_scale: torch.Tensor,
    *,
    scale_fn: str = "exp",
    clamp: float | None = None,
    inverse: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``y = x * scale + shift`` (or the inverse) and its per-sample log-determinant.

    The scale comes from the network's ``raw_scale``:

    - ``scale_fn="exp"``: ``log scale = raw_scale``, or with ``clamp`` the soft clamp
      ``clamp * tanh(raw_scale / clamp)`` (``clamp > 0``);
    - ``scale_fn="sigmoid"`` (Glow): ``scale = sigmoid(raw_scale + 2)``.

    Args:
        x: ``[B, ...]``, float32, float64, float16 or bfloat16 (16-bit inputs compute
            in float32). With ``inverse=True`` this is the ``y`` to invert.
        shift, raw_scale: x's shape, dtype and device (no broadcasting).
        scale_fn: ``"exp"`` or ``"sigmoid"``.
        clamp: soft clamp of the log scale for ``"exp"``; None for none.
        inverse: compute ``x = (y - shift) / scale`` instead.

    Returns:
        ``(y, logabsdet)``: y of x's shape and dtype; logabsdet ``[B]``, float32
        (float64 for float64 x), the sum of ``log scale`` over all non-batch dims, negated
        for the inverse (the log-determinant of the map applied).
    """
    _check_tensors(x=x, shift=shift, raw_scale=raw_scale)
    if scale_fn not in SCALE_FNS:
        raise ValueError(f"scale_fn must be 'exp' or 'sigmoid', got {scale_fn!r}")
    return torch.ops.pygen.affine_coupling(
        x, shift, raw_scale, scale_fn, None if clamp is None else float(clamp), bool(inverse)
    )


def mix_logistic_cdf(
    x: torch.Tensor,
    logits: torch.Tensor,
    means: torch.Tensor,
    log_scales: torch.Tensor,
    *,
    inverse: bool = False,
    tol: float | None = None,
    max_iters: int = 100,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flow++'s elementwise transform ``y = logit F(x)``, or its inverse, with ``log |dy/dx|``.

    ``F(x) = sum_k softmax(logits)_k * sigmoid((x - means_k) * exp(-log_scales_k))``.
    ``F`` and ``1 - F`` are summed separately from positive terms (``1 - F`` never
    comes from a rounded ``F``), and where a sum nears underflow, ``F``, ``1 - F`` and
    the density are evaluated as log-sum-exps of log-sigmoids instead, so ``y`` and the
    log-derivative stay finite and accurate far in the tails.

    The inverse solves ``logit F(x) = y`` by safeguarded Newton-bisection inside the
    bracket ``[min_k(means_k + y e^{log_scales_k}), max_k(...)]``, which provably contains
    the root. It stops when ``|x - root| <= tol * max(1, |root|)`` is guaranteed (or no
    floating-point number is left between the bracket's ends), which takes a few Newton
    steps; ``max_iters`` bounds the steps (bisection alone would need about
    ``log2(bracket width / tol)``). ``y = +-inf`` gives ``x = +-inf``, NaN gives NaN.

    Args:
        x: any shape ``[...]``, float32, float64, float16 or bfloat16 (16-bit inputs
            compute in float32). With ``inverse=True`` this is the ``y`` to invert.
        logits, means, log_scales: ``[..., K]`` (x's shape plus the components), x's
            dtype and device; must be finite (NaN or inf raise).
        inverse: compute ``x = F^{-1}(sigmoid(y))``.
        tol: the inverse's tolerance, relative above 1 and absolute below; default
            ``1e-6`` (float32 and 16-bit) or ``1e-12`` (float64).
        max_iters: the inverse's iteration cap.

    Returns:
        ``(y, logabsdet)``, both of x's shape: y in x's dtype, logabsdet
        ``log |dy/dx|`` of the map applied (``-log |dy/dx|`` at the solution for the
        inverse), float32 (float64 for float64 x). At ``x = +-inf`` the forward gives
        ``y = +-inf`` and logabsdet's limit ``-max_k log_scales_k``.

    Checking the parameters' finiteness reads a flag the kernel writes: on CUDA that is
    a host synchronization per call.
    """
    _check_tensors(x=x, logits=logits, means=means, log_scales=log_scales)
    if tol is None:
        tol = 1e-12 if x.dtype == torch.float64 else 1e-6
    if not isinstance(max_iters, int):
        raise TypeError(f"max_iters must be an int, got {type(max_iters).__name__}")
    return torch.ops.pygen.mix_logistic_cdf(
        x, logits, means, log_scales, bool(inverse), float(tol), max_iters
    )


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


def _logdet_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


@torch.library.register_fake("pygen::affine_coupling")
def _affine_coupling_fake(x, shift, raw_scale, scale_fn, clamp, inverse):
    return torch.empty_like(x), x.new_empty(x.shape[:1], dtype=_logdet_dtype(x))


@torch.library.register_fake("pygen::affine_coupling_backward")
def _affine_coupling_backward_fake(grad_y, grad_logdet, x, shift, raw_scale, scale_fn, clamp, inverse):
    return torch.empty_like(x), torch.empty_like(x), torch.empty_like(x)


@torch.library.register_fake("pygen::mix_logistic_cdf")
def _mix_logistic_cdf_fake(x, logits, means, log_scales, inverse, tol, max_iters):
    return torch.empty_like(x), torch.empty_like(x, dtype=_logdet_dtype(x))


@torch.library.register_fake("pygen::mix_logistic_cdf_backward")
def _mix_logistic_cdf_backward_fake(grad_y, grad_logdet, x, logits, means, log_scales, inverse):
    return (torch.empty_like(x),) + tuple(torch.empty_like(logits) for _ in range(3))


def _affine_setup_context(ctx, inputs, output):
    x, shift, raw_scale, *ctx.config = inputs
    ctx.save_for_backward(x, shift, raw_scale)


def _affine_backward(ctx, grad_y, grad_logdet):
    x, shift, raw_scale = ctx.saved_tensors
    grads = torch.ops.pygen.affine_coupling_backward(grad_y, grad_logdet, x, shift, raw_scale, *ctx.config)
    return (*grads, None, None, None)


def _mix_setup_context(ctx, inputs, output):
    x, logits, means, log_scales, inverse, _tol, _max_iters = inputs
    ctx.inverse = inverse
    # The backward evaluates at the point of x-space: the input, or the inverse's output.
    ctx.save_for_backward(output[0] if inverse else x, logits, means, log_scales)


def _mix_backward(ctx, grad_y, grad_logdet):
    point, logits, means, log_scales = ctx.saved_tensors
    grads = torch.ops.pygen.mix_logistic_cdf_backward(
        grad_y, grad_logdet, point, logits, means, log_scales, ctx.inverse
    )
    return (*grads, None, None, None)


torch.library.register_autograd(
    "pygen::affine_coupling", _affine_backward, setup_context=_affine_setup_context
)
torch.library.register_autograd("pygen::mix_logistic_cdf", _mix_backward, setup_context=_mix_setup_context)
