"""An adaptive embedded Runge-Kutta solver (Dormand-Prince 5(4), error control): the
accuracy reference for the fixed-step samplers.

It integrates the probability-flow ODE in ``x~ = x / alpha`` over ``u = log sigma~``
(``sigma~ = sigma / alpha``): ``dx~/du = sigma~ eps``, so step sizes are relative to the
noise level, which the dynamics follow from sigma~ ~ 100 down to 1e-6. Step sizes
depend on the whole batch (one error norm), and each step syncs with the host: this is a
reference, not a fast sampler.
"""

from collections.abc import Callable

import numpy as np
import torch

from pygen.solvers.predictions import conversion
from pygen.solvers.schedules import Schedule

# Dormand-Prince 5(4): nodes, stage weights, 5th-order and error weights.
_C = [0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0]
_A = [
    [],
    [1 / 5],
    [3 / 40, 9 / 40],
    [44 / 45, -56 / 15, 32 / 9],
    [19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729],
    [9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656],
    [35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84],
]
_B = _A[6] + [0.0]
_E = [71 / 57600, 0.0, -71 / 16695, 71 / 1920, -17253 / 339200, 22 / 525, -1 / 40]


def solve_adaptive(
    model_fn: Callable,
    x: torch.Tensor,
    *,
    schedule: Schedule,
    prediction: str = "eps",
    t_max: float | None = None,
    t_min: float | None = None,
    final_zero: bool = True,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    max_steps: int = 10_000,
) -> tuple[torch.Tensor, int]:
    """Solves the probability-flow ODE from ``x`` at ``t_max`` to ``t_min``, then (with
    ``final_zero``) takes the data prediction there, the same last step to sigma = 0
    as the fixed-step samplers' (one more model call).

    Args:
        model_fn, x, schedule, prediction: as :func:`pygen.solvers.sample` (x float64
            recommended; one time for the whole batch).
        t_max, t_min: start and end times (default the schedule's).
        final_zero: end with the data prediction at ``t_min``.
        rtol, atol: the local error tolerance, per element (scipy's RMS norm).
        max_steps: accepted plus rejected steps before giving up with an error.

    Returns:
        ``(x, nfe)``.
    """
    if not (rtol > 0 and atol > 0):
        raise ValueError("rtol and atol must be positive")
    t0 = schedule.t_max if t_max is None else float(t_max)
    t1 = schedule.t_min if t_min is None else float(t_min)
    (a0, s0), (a1, s1) = ((float(v) for v in schedule.alpha_sigma(t)) for t in (t0, t1))
    if not (s1 > 0 and s0 / a0 > s1 / a1):
        raise ValueError(f"need t_max > t_min and noise at t_min (sigma(t_min) = {s1})")
    s, s_end = np.log(s0 / a0), np.log(s1 / a1)
    nfe, batch = 0, x.shape[0]

    def call(t: float, xt: torch.Tensor, target: str) -> tuple[float, torch.Tensor]:
        """alpha(t) and the model's ``target`` prediction at x = alpha x~."""
        nonlocal nfe
        alpha, sigma = (float(v) for v in schedule.alpha_sigma(t))
        da_ds = [float(v) for v in schedule.derivatives(t)] if prediction == "flow" else (None, None)
        cx, co = (
            float(v) for v in conversion(prediction, target, np.float64(alpha), np.float64(sigma), *da_ds)
        )
        out = model_fn(alpha * xt, torch.full((batch,), t, dtype=xt.dtype, device=xt.device))
        nfe += 1
        return alpha, cx * alpha * xt + co * out

    def f(u: float, xt: torch.Tensor) -> torch.Tensor:
        # The end point exactly: t_of_sigma_tilde(sigma~(t_min)) may round past t_min.
        sig = float(np.exp(u))
        t = t1 if u <= s_end else float(schedule.t_of_sigma_tilde(sig))
        return sig * call(t, xt, "eps")[1]

    xt = x / a0
    k = [f(s, xt)]
    h = -0.05 * (s - s_end)
    for _ in range(max_steps):
        h = max(h, s_end - s)
        stages = k[:1]
        for j in range(1, 7):
            stages.append(
                f(s + _C[j] * h, xt + h * sum(a * kk for a, kk in zip(_A[j], stages, strict=False)))
            )
        new = xt + h * sum(b * kk for b, kk in zip(_B, stages, strict=True))
        err = h * sum(e * kk for e, kk in zip(_E, stages, strict=True))
        scale = atol + rtol * torch.maximum(xt.abs(), new.abs())
        norm = (err / scale).pow(2).mean().sqrt().item()
        if norm <= 1.0:
            s, xt, k = s + h, new, [stages[6]]  # first same as last
            if s <= s_end:
                if final_zero:
                    return call(t1, xt, "x0")[1], nfe
                return a1 * xt, nfe
        h *= min(10.0, max(0.2, 0.9 * (norm + 1e-16) ** -0.2))
    raise RuntimeError(f"solve_adaptive: no convergence in {max_steps} steps (rtol={rtol}, atol={atol})")
