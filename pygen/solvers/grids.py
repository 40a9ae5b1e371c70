"""Time grids: where a sampler evaluates the model, from noise to data."""

from dataclasses import dataclass

import numpy as np

from pygen.solvers.schedules import Schedule

SPACINGS = ("logsnr", "time", "karras", "quadratic")


@dataclass
class Grid:
    """``steps + 1`` points, float64 ``[steps + 1, B]`` (``B`` is 1 when every sample
    shares the grid): model times ``t`` and the schedule's ``alpha``, ``sigma`` there.
    A last point with ``sigma = 0`` has ``alpha = 1`` and ``t = 0``."""

    t: np.ndarray
    alpha: np.ndarray
    sigma: np.ndarray

    @property
    def steps(self) -> int:
        return self.t.shape[0] - 1

    @property
    def lam(self) -> np.ndarray:
        """``log(alpha / sigma)``; ``+inf`` at ``sigma = 0``."""
        with np.errstate(divide="ignore"):
            return np.log(self.alpha) - np.log(self.sigma)


def _endpoint(value, default, name) -> np.ndarray:
    v = np.asarray(default if value is None else value, dtype=np.float64)
    if v.ndim > 1 or not np.isfinite(v).all():
        raise ValueError(f"{name} must be a finite float or a 1-D per-sample tensor")
    return v.reshape(1, -1)


def time_grid(
    schedule: Schedule,
    steps: int,
    spacing: str = "logsnr",
    *,
    t_max=None,
    t_min=None,
    rho: float = 7.0,
    final_zero: bool = True,
) -> Grid:
    """A grid of ``steps`` solver steps.

    Args:
        schedule: the noise schedule.
        steps: number of steps (>= 1).
        spacing: ``"logsnr"`` (uniform in ``lambda``; DPM-Solver's choice for pixels),
            ``"time"`` (uniform in t), ``"karras"`` (uniform in ``(sigma / alpha)^(1 /
            rho)``, EDM's) or ``"quadratic"`` (uniform in ``sqrt(t)``).
        t_max, t_min: the first and last noisy times (default: the schedule's); floats,
            or ``[B]`` tensors for a grid per sample.
        rho: Karras' exponent.
        final_zero: end with a step to ``sigma = 0`` exactly (then ``steps`` points
            are spaced over ``[t_max, t_min]`` and the zero point follows);
            otherwise the ``steps + 1`` points end at ``t_min``.
    """
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    if spacing not in SPACINGS:
        raise ValueError(f"spacing must be one of {SPACINGS}, got {spacing!r}")
    hi = _endpoint(t_max, schedule.t_max, "t_max")
    lo = _endpoint(t_min, schedule.t_min, "t_min")
    if not (hi > lo).all():
        raise ValueError("t_max must be greater than t_min")
    n = steps if final_zero else steps + 1
    u = np.linspace(0, 1, n).reshape(-1, 1)
    if spacing == "time":
        t = hi + u * (lo - hi)
    elif spacing == "quadratic":
        t = (np.sqrt(hi) + u * (np.sqrt(lo) - np.sqrt(hi))) ** 2
    elif spacing == "logsnr":
        l0, l1 = schedule.lam(hi), schedule.lam(lo)
        t = schedule.t_of_lambda(l0 + u * (l1 - l0))
    else:
        a_hi, s_hi = schedule.alpha_sigma(hi)
        a_lo, s_lo = schedule.alpha_sigma(lo)
        r0, r1 = (s_hi / a_hi) ** (1 / rho), (s_lo / a_lo) ** (1 / rho)
        t = schedule.t_of_sigma_tilde((r0 + u * (r1 - r0)) ** rho)
    t = np.broadcast_to(t, (n, max(hi.shape[1], lo.shape[1]))).copy()
    t[0], t[-1] = hi[0], lo[0]  # exact endpoints, whatever the inverse's rounding
    alpha, sigma = schedule.alpha_sigma(t)
    if final_zero:
        zero = np.zeros_like(t[:1])
        t, alpha, sigma = (np.concatenate([v, zero + z]) for v, z in ((t, 0), (alpha, 1), (sigma, 0)))
    return Grid(t, alpha, sigma)
