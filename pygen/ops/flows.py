"""Elementwise transforms of normalizing flows (coupling-layer bijections) with their log-determinants."""

import torch

from pygen._build import _C  # noqa: F401  (registers the ops)


def rq_spline(
    x: torch.Tensor,
    widths: torch.Tensor,
    heights: torch.Tensor,
    derivatives: torch.Tensor,
    *,
    inverse: bool = False,
    tail_bound: float = 3.0,
    validate: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Monotone rational-quadratic spline with linear tails (Durkan et al., 2019, "Neural
    Spline Flows"), one spline per element of ``x``.

    The parameters are unnormalized, as the paper's reference implementation (nflows'
    ``unconstrained_rational_quadratic_spline`` with ``tails="linear"``, also in normflows)
    takes them, and give its numbers: bin widths ``2B * (1e-3 + (1 - 1e-3 K)
    softmax(widths))`` partition ``[-B, B]`` (heights likewise), knot derivatives
    ``1e-3 + softplus(derivatives)`` at the ``K - 1`` interior knots and exactly 1 at
    ``-B`` and ``B``, so the spline meets the identity tails with slope 1.

    Domain: elements outside ``[-B, B]`` (and NaN) pass through unchanged with
    ``logabsdet`` 0 and no gradient into the parameters; the map is a bijection of the
    real line, continuous with a continuous derivative at ``+-B``. ``inverse=True``
    inverts it: ``rq_spline(rq_spline(x, ...)[0], ..., inverse=True)[0] == x`` up to
    rounding, and its ``logabsdet`` is minus the forward one at that point.

    Args:
        x: any shape ``S``; float32, float64, float16 or bfloat16 (computed in float32,
            or float64 for float64).
        widths: ``[*S, K]`` unnormalized bin widths, ``1 <= K <= 1000``; x's dtype and
            device. Any strides with a contiguous last dim: slices of one network output
            ``[..., 3K - 1]`` are read in place when its leading dims flatten to one stride.
        heights: ``[*S, K]`` unnormalized bin heights.
        derivatives: ``[*S, K - 1]`` unnormalized derivatives at the interior knots.
        inverse: evaluate the inverse map (``x`` is then a spline output).
        tail_bound: ``B > 0``, the half-width of the spline's interval.
        validate: raise ``ValueError`` when a parameter is NaN or infinite. On CUDA this
            reads a flag back to the host (a synchronization); with False the affected
            elements give NaN instead.

    Returns:
        ``(y, logabsdet)``, both of x's shape and dtype: the spline's value and
        ``log|dy/dx|`` per element (sum it over a coupling layer's dimensions).

    Differentiable in ``x``, ``widths``, ``heights`` and ``derivatives`` in both
    directions (a fused backward kernel recomputes the spline; nothing is saved but the
    inputs).
    """
    for name, t in (("x", x), ("widths", widths), ("heights", heights), ("derivatives", derivatives)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a tensor, got {type(t).__name__}")
    return torch.ops.pygen.rq_spline(
        x, widths, heights, derivatives, bool(inverse), float(tail_bound), bool(validate)
    )


@torch.library.register_fake("pygen::rq_spline")
def _rq_spline_fake(x, widths, heights, derivatives, inverse, tail_bound, validate):
    return x.new_empty(x.shape), x.new_empty(x.shape)


@torch.library.register_fake("pygen::rq_spline_backward")
def _rq_spline_backward_fake(grad_y, grad_logabsdet, x, widths, heights, derivatives, inverse, tail_bound):
    return (
        x.new_empty(x.shape),
        x.new_empty(widths.shape),
        x.new_empty(heights.shape),
        x.new_empty(derivatives.shape),
    )


def _setup_context(ctx, inputs, output):
    x, widths, heights, derivatives, inverse, tail_bound, _ = inputs
    ctx.save_for_backward(x, widths, heights, derivatives)
    ctx.config = (inverse, tail_bound)


def _backward(ctx, grad_y, grad_logabsdet):
    grads = torch.ops.pygen.rq_spline_backward(grad_y, grad_logabsdet, *ctx.saved_tensors, *ctx.config)
    return (*grads, None, None, None)


torch.library.register_autograd("pygen::rq_spline", _backward, setup_context=_setup_context)
