"""Noise schedules ``x_t = alpha_t x_0 + sigma_t eps``, in float64 NumPy on the host.

Every schedule gives ``alpha(t)``, ``sigma(t)``, their time derivatives (for velocity
predictions), ``lambda(t) = log(alpha_t / sigma_t)`` and its inverse, so grids uniform in
logSNR or in Karras' sigma can be mapped back to model times. Times decrease while
sampling, from ``t_max`` (noise) to ``t_min``; grids may end with a last point at
``sigma = 0`` exactly (``alpha = 1``: the clean data), which the model never sees.
"""

import math
from abc import ABC, abstractmethod

import numpy as np


def _t(t) -> np.ndarray:
    return np.asarray(t, dtype=np.float64)


class Schedule(ABC):
    """Base class: subclasses define ``alpha_sigma``, ``derivatives`` and ``t_of_lambda``."""

    t_max: float
    t_min: float

    @abstractmethod
    def alpha_sigma(self, t) -> tuple[np.ndarray, np.ndarray]:
        """``(alpha_t, sigma_t)`` as float64 arrays of t's shape."""

    @abstractmethod
    def derivatives(self, t) -> tuple[np.ndarray, np.ndarray]:
        """``(d alpha / dt, d sigma / dt)`` as float64 arrays."""

    @abstractmethod
    def t_of_lambda(self, lam) -> np.ndarray:
        """The time whose ``lambda = log(alpha / sigma)`` is ``lam`` (float64)."""

    def lam(self, t) -> np.ndarray:
        alpha, sigma = self.alpha_sigma(t)
        return np.log(alpha) - np.log(sigma)

    def t_of_sigma_tilde(self, s) -> np.ndarray:
        """The time whose ``sigma / alpha`` (Karras' sigma) is ``s``."""
        return self.t_of_lambda(-np.log(_t(s)))


class VPLinear(Schedule):
    """Variance preserving, linear betas in continuous time (Song et al. 2021; DDPM's
    default betas 1e-4 .. 0.02 over 1000 steps correspond to 0.1 .. 20)."""

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, t_min: float = 1e-3):
        self.b0, self.b1 = float(beta_min), float(beta_max)
        self.t_max, self.t_min = 1.0, float(t_min)

    def _log_alpha(self, t):
        t = _t(t)
        return -0.25 * t**2 * (self.b1 - self.b0) - 0.5 * t * self.b0

    def alpha_sigma(self, t):
        la = self._log_alpha(t)
        return np.exp(la), np.sqrt(-np.expm1(2 * la))

    def derivatives(self, t):
        t = _t(t)
        alpha, sigma = self.alpha_sigma(t)
        da = alpha * (-0.5 * t * (self.b1 - self.b0) - 0.5 * self.b0)
        return da, -alpha * da / sigma

    def t_of_lambda(self, lam):
        log_term = np.logaddexp(-2.0 * _t(lam), 0.0)  # log(1 + e^-2l)
        delta = self.b1 - self.b0
        return 2.0 * log_term / (np.sqrt(self.b0**2 + 2.0 * delta * log_term) + self.b0)


class VPCosine(Schedule):
    """Variance preserving, cosine schedule (Nichol & Dhariwal 2021), offset ``s``."""

    def __init__(self, s: float = 0.008, t_max: float = 0.9946, t_min: float = 1e-3):
        self.s = float(s)
        self._log_alpha_0 = math.log(math.cos(self.s / (1 + self.s) * math.pi / 2))
        self.t_max, self.t_min = float(t_max), float(t_min)

    def _angle(self, t):
        return (_t(t) + self.s) / (1 + self.s) * math.pi / 2

    def alpha_sigma(self, t):
        la = np.log(np.cos(self._angle(t))) - self._log_alpha_0
        return np.exp(la), np.sqrt(-np.expm1(2 * la))

    def derivatives(self, t):
        alpha, sigma = self.alpha_sigma(t)
        da = -alpha * np.tan(self._angle(t)) * math.pi / (2 * (1 + self.s))
        return da, -alpha * da / sigma

    def t_of_lambda(self, lam):
        log_alpha = -0.5 * np.logaddexp(0.0, -2.0 * _t(lam))
        return 2 * (1 + self.s) / math.pi * np.arccos(np.exp(log_alpha + self._log_alpha_0)) - self.s


class VPDiscrete(Schedule):
    """Variance preserving with a discrete ``betas`` table (DDPM, Stable Diffusion).

    Time is the training step index, continuous in ``[0, N - 1]``, and ``log alpha`` is
    interpolated linearly between steps (as DPM-Solver's discrete wrapper); the model
    receives this time. ``alphas_cumprod`` of step ``n`` is ``alpha(n)**2``.
    """

    def __init__(self, betas):
        betas = _t(betas)
        if betas.ndim != 1 or len(betas) < 2 or not ((betas > 0) & (betas < 1)).all():
            raise ValueError("betas must be a 1-D table of at least 2 values in (0, 1)")
        self.log_alpha = 0.5 * np.cumsum(np.log1p(-betas))
        self.t_max, self.t_min = float(len(betas) - 1), 0.0

    @classmethod
    def linear(cls, beta_start=1e-4, beta_end=0.02, steps=1000):
        return cls(np.linspace(beta_start, beta_end, steps))

    @classmethod
    def scaled_linear(cls, beta_start=0.00085, beta_end=0.012, steps=1000):
        """Stable Diffusion's betas."""
        return cls(np.linspace(beta_start**0.5, beta_end**0.5, steps) ** 2)

    def _interp(self, t, table):
        t = np.clip(_t(t), 0, self.t_max)
        i = np.minimum(np.floor(t).astype(np.int64), len(table) - 2)
        w = t - i
        return table[i] * (1 - w) + table[i + 1] * w

    def alpha_sigma(self, t):
        la = self._interp(t, self.log_alpha)
        return np.exp(la), np.sqrt(-np.expm1(2 * la))

    def derivatives(self, t):
        t = _t(t)
        alpha, sigma = self.alpha_sigma(t)
        i = np.minimum(np.floor(np.clip(t, 0, self.t_max)).astype(np.int64), len(self.log_alpha) - 2)
        da = alpha * (self.log_alpha[i + 1] - self.log_alpha[i])
        return da, -alpha * da / sigma

    def t_of_lambda(self, lam):
        # VP: alpha^2 = 1 / (1 + e^(-2 lambda)); log alpha is linear between steps.
        target = -0.5 * np.logaddexp(0.0, -2.0 * _t(lam))
        rising = -self.log_alpha  # increasing in the step index
        x = np.clip(-target, rising[0], rising[-1])
        i = np.clip(np.searchsorted(rising, x) - 1, 0, len(rising) - 2)
        return i + (x - rising[i]) / (rising[i + 1] - rising[i])


class VE(Schedule):
    """Variance exploding (Song et al. 2021): ``alpha = 1``, geometric ``sigma``."""

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0):
        self.s0, self.s1 = float(sigma_min), float(sigma_max)
        self.t_max, self.t_min = 1.0, 0.0

    def alpha_sigma(self, t):
        t = _t(t)
        return np.ones_like(t), self.s0 * (self.s1 / self.s0) ** t

    def derivatives(self, t):
        _, sigma = self.alpha_sigma(t)
        return np.zeros_like(sigma), sigma * math.log(self.s1 / self.s0)

    def t_of_lambda(self, lam):
        return (-_t(lam) - math.log(self.s0)) / math.log(self.s1 / self.s0)


class EDM(Schedule):
    """Karras et al. 2022: ``alpha = 1``, ``sigma = t``; the model gets sigma as time."""

    def __init__(self, sigma_min: float = 0.002, sigma_max: float = 80.0):
        self.t_max, self.t_min = float(sigma_max), float(sigma_min)

    def alpha_sigma(self, t):
        t = _t(t)
        return np.ones_like(t), t.copy()

    def derivatives(self, t):
        t = _t(t)
        return np.zeros_like(t), np.ones_like(t)

    def t_of_lambda(self, lam):
        return np.exp(-_t(lam))


class Flow(Schedule):
    """Rectified flow / flow matching: ``alpha = 1 - t``, ``sigma = t``; the velocity
    is ``eps - x_0``."""

    def __init__(self, t_max: float = 1.0, t_min: float = 1e-3):
        self.t_max, self.t_min = float(t_max), float(t_min)

    def alpha_sigma(self, t):
        t = _t(t)
        return 1.0 - t, t.copy()

    def derivatives(self, t):
        t = _t(t)
        return -np.ones_like(t), np.ones_like(t)

    def t_of_lambda(self, lam):
        return 1.0 / (1.0 + np.exp(_t(lam)))
