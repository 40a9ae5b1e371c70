"""A Gaussian mixture whose noised marginals, and so its exact denoiser, are known in
closed form: the test problem for solver accuracy (no network, no training noise).

Data ``x0 ~ sum_k w_k N(mu_k, v_k I)``; at ``x = alpha x0 + sigma eps`` the marginal is
``sum_k w_k N(alpha mu_k, (alpha^2 v_k + sigma^2) I)`` and ``E[x0 | x]`` mixes the
components' posterior means by their responsibilities.
"""

import torch

from pygen.solvers.predictions import PREDICTIONS
from pygen.solvers.schedules import Schedule


class GaussianMixture:
    """``weights`` ``[K]``, ``means`` ``[K, D]``, ``variances`` ``[K]`` (isotropic)."""

    def __init__(self, weights, means, variances):
        self.weights = torch.as_tensor(weights, dtype=torch.float64)
        self.means = torch.as_tensor(means, dtype=torch.float64)
        self.variances = torch.as_tensor(variances, dtype=torch.float64)
        k = len(self.weights)
        if self.means.dim() != 2 or self.means.shape[0] != k or self.variances.shape != (k,):
            raise ValueError("weights [K], means [K, D] and variances [K] must agree")
        if (self.weights <= 0).any() or (self.variances <= 0).any():
            raise ValueError("weights and variances must be positive")
        self.weights = self.weights / self.weights.sum()

    @classmethod
    def ring(cls, k: int = 8, dim: int = 2, radius: float = 2.0, variance: float = 0.02):
        """``k`` equal components on a circle in the first two of ``dim`` coordinates."""
        angle = torch.arange(k, dtype=torch.float64) * (2 * torch.pi / k)
        means = torch.zeros(k, dim, dtype=torch.float64)
        means[:, 0], means[:, 1] = radius * angle.cos(), radius * angle.sin()
        return cls(torch.ones(k), means, torch.full((k,), variance))

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``[n, D]`` float64 draws of the data."""
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, dtype=torch.float64, generator=generator)
        return self.means[k] + self.variances[k].sqrt()[:, None] * z

    def denoise(self, x: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """``E[x0 | x]`` for ``x`` ``[B, D]`` and per-sample ``alpha``, ``sigma`` ``[B]``
        (float64 throughout)."""
        x = x.double()
        a, s = alpha.double().reshape(-1, 1, 1), sigma.double().reshape(-1, 1, 1)
        var = a**2 * self.variances.reshape(1, -1, 1) + s**2  # [B, K, 1]
        diff = x[:, None, :] - a * self.means[None]  # [B, K, D]
        log_r = (
            self.weights.log() - 0.5 * (diff**2).sum(-1) / var[..., 0] - 0.5 * self.dim * var[..., 0].log()
        )
        r = torch.softmax(log_r, dim=1)[..., None]
        post = self.means[None] + a * self.variances.reshape(1, -1, 1) / var * diff
        return (r * post).sum(1)

    def model(self, schedule: Schedule, prediction: str = "eps"):
        """A ``model_fn(x, t)`` for :func:`pygen.solvers.sample` predicting ``prediction``
        exactly, in x's dtype (computed in float64)."""
        if prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")

        def model_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            tc = t.double().cpu().numpy()  # a host sync: fine for a test problem
            alpha, sigma = (torch.from_numpy(v).to(x.device) for v in schedule.alpha_sigma(tc))
            x0 = self.denoise(x.reshape(x.shape[0], -1), alpha, sigma)
            xf = x.reshape(x.shape[0], -1).double()
            a, s = alpha[:, None], sigma[:, None]
            if prediction == "x0":
                out = x0
            else:
                eps = (xf - a * x0) / s
                if prediction == "eps":
                    out = eps
                elif prediction == "v":
                    out = a * eps - s * x0
                else:
                    da, ds = (torch.from_numpy(v).to(x.device)[:, None] for v in schedule.derivatives(tc))
                    out = da * x0 + ds * eps
            return out.to(x.dtype).reshape(x.shape)

        return model_fn


def sliced_wasserstein(a: torch.Tensor, b: torch.Tensor, projections: int = 256) -> float:
    """Sliced Wasserstein-1 distance between two sample sets ``[N, ...]`` (flattened; the
    larger is cut to the smaller's size): the mean over fixed random directions of the
    1-D distance between sorted projections."""
    n = min(len(a), len(b))
    a, b = a[:n].flatten(1).double().cpu(), b[:n].flatten(1).double().cpu()
    d = torch.randn(a.shape[1], projections, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    d = d / d.norm(dim=0)
    return ((a @ d).sort(0).values - (b @ d).sort(0).values).abs().mean().item()
