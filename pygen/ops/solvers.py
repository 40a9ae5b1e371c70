"""The fused update step of the ODE/SDE solvers in :mod:`pygen.solvers`.

Every solver step there is the same shape of arithmetic: convert the model output to
the solver's parameterization (a linear map of x and the output, after an optional
classifier-free guidance combine), then take a linear combination of the state, that
prediction, earlier predictions and fresh noise. ``solver_update`` does it reading each
tensor once and writing each result once, with coefficients per sample.
"""

from collections.abc import Sequence

import torch

from pygen.ops.random import resolve_seed

#: Columns of ``coef``, in order; history coefficients follow.
COEF_COLUMNS = ("w", "cx", "co", "a", "bp", "c")


def solver_update(
    x: torch.Tensor,
    coef: torch.Tensor,
    *,
    out: torch.Tensor | None = None,
    uncond: torch.Tensor | None = None,
    history: Sequence[torch.Tensor] = (),
    noise: bool = False,
    seed: int | None = None,
    offset: int = 0,
    generator: torch.Generator | None = None,
    threshold_ratio: float = 0.0,
    threshold_max: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One fused solver step, per sample ``b``:

    ``g = out`` (or ``uncond + w * (out - uncond)`` with ``uncond``),
    ``pred = cx * x + co * g``,
    ``y = a * x + bp * pred + sum_j bh_j * history[j] + c * noise``.

    Args:
        x: ``[B, ...]`` state, float32, float64, float16 or bfloat16 (computed in
            float32, or float64 for float64).
        coef: float64 ``[B, 6 + len(history)]`` on x's device, columns
            ``w, cx, co, a, bp, c`` (:data:`COEF_COLUMNS`) then one ``bh_j`` per
            history tensor. Build it before the sampling loop so the loop never
            synchronizes with the host.
        out: model output, x's shape and dtype; None skips the prediction (``pred``
            is then empty and ``bp`` unused).
        uncond: unconditional model output for classifier-free guidance with scale ``w``.
        history: up to 8 more operands of x's shape and dtype: earlier predictions
            (multistep solvers) or states (the start of a Runge-Kutta step).
        noise: add ``c * z`` with ``z`` the standard normal stream ``(seed, offset)``:
            the same values as ``pygen.ops.randn(x.shape, seed=seed, offset=offset,
            dtype=float32)`` (float64 for float64 x), on every device.
        seed, offset, generator: the noise stream, as :func:`pygen.ops.randn`.
        threshold_ratio: dynamic thresholding (Imagen): when in (0, 1], each sample's
            ``pred`` is clamped to ``[-s, s]`` and divided by ``s``, with ``s`` the
            ``threshold_ratio`` quantile of ``|pred|`` clamped to ``[1,
            threshold_max]``; 0 turns it off. It costs a second pass and, on CUDA, a
            selection by ATen.
        threshold_max: upper bound of ``s``.

    Returns:
        ``(y, pred)``, both of x's shape and dtype (``pred`` empty without ``out``).
    """
    if not isinstance(x, torch.Tensor) or not isinstance(coef, torch.Tensor):
        raise TypeError("x and coef must be tensors")
    seed_bits = resolve_seed(seed, generator) if noise else 0
    if not isinstance(offset, int) or not 0 <= offset < 1 << 63:
        raise ValueError(f"offset must be an int in [0, 2**63), got {offset!r}")
    return torch.ops.pygen.solver_update(
        x,
        out,
        uncond,
        list(history),
        coef,
        noise,
        seed_bits,
        offset,
        float(threshold_ratio),
        float(threshold_max),
    )


@torch.library.register_fake("pygen::solver_update")
def _solver_update_fake(x, out, uncond, history, coef, noise, seed, offset, ratio, tmax):
    pred = torch.empty_like(x) if out is not None else x.new_empty(0)
    return torch.empty_like(x), pred
