"""A small diffusion / flow-matching model family: a DiT denoiser (Peebles & Xie 2023:
patches, pygen attention, adaLN-Zero conditioning on the noise level) trained with the
EDM, VP-epsilon or flow-matching objective on embedded data (scikit-learn's 8x8 digits,
2-D toy distributions), sampled with any solver of :mod:`pygen.solvers`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pygen import solvers
from pygen.nn.attention import Attention
from pygen.solvers.analytic import GaussianMixture
from pygen.train import Checkpointable, TrainConfig, train

OBJECTIVES = ("edm", "eps", "flow")
DATASETS = ("digits", "ring", "moons")


@dataclass
class DiffusionConfig:
    """Hyperparameters of :class:`DiffusionModel` (each a flag of ``python -m pygen train diffusion``)."""

    data: str = "digits"  # "digits" (8x8 images), "ring" or "moons" (2-D points)
    objective: str = "edm"  # "edm" (x0 with EDM preconditioning), "eps" (VP cosine), "flow"
    patch: int = 2  # patch side for images (points use one token per coordinate)
    dim: int = 128
    depth: int = 4
    heads: int = 4
    sigma_data: float = 0.5  # EDM's data standard deviation


def load_data(name: str, split: str = "train", held_out: float = 0.1) -> torch.Tensor:
    """float32 ``[N, C, H, W]`` in about [-1, 1]: ``digits`` are scikit-learn's bundled 8x8
    digits (``[N, 1, 8, 8]``), ``ring`` and ``moons`` 2-D points (``[N, 1, 1, 2]``, a
    fixed draw of 20000). The last ``held_out`` fraction is the ``"val"`` split."""
    if name == "digits":
        from sklearn.datasets import load_digits

        x = torch.from_numpy(load_digits().images).float().div(8).sub(1).unsqueeze(1)
    elif name == "ring":
        x = GaussianMixture.ring(k=8, radius=1.0, variance=0.005)
        x = x.sample(20000, torch.Generator().manual_seed(0)).float().reshape(-1, 1, 1, 2)
    elif name == "moons":
        from sklearn.datasets import make_moons

        pts, _ = make_moons(20000, noise=0.05, random_state=0)
        x = torch.from_numpy((pts - pts.mean(0)) / pts.std(0) * 0.5).float().reshape(-1, 1, 1, 2)
    else:
        raise ValueError(f"data must be one of {DATASETS}, got {name!r}")
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    cut = int(len(x) * (1 - held_out))
    return x[:cut] if split == "train" else x[cut:]


class DiTBlock(nn.Module):
    """Pre-norm attention and MLP, each scaled, shifted and gated by the conditioning
    (adaLN-Zero: the gates start at 0, so every block starts as the identity)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False)
        self.mlp = nn.Sequential(
            nn.Linear(dim, 4 * dim), nn.GELU(approximate="tanh"), nn.Linear(4 * dim, dim)
        )
        self.ada = nn.Linear(dim, 6 * dim)
        nn.init.zeros_(self.ada.weight)
        nn.init.zeros_(self.ada.bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        s1, b1, g1, s2, b2, g2 = self.ada(F.silu(c))[:, None].chunk(6, dim=-1)
        x = x + g1 * self.attn(self.norm1(x) * (1 + s1) + b1)
        return x + g2 * self.mlp(self.norm2(x) * (1 + s2) + b2)


class DiffusionModel(Checkpointable, nn.Module):
    """A DiT on ``[B, C, H, W]`` float32 data (2-D points as ``[B, 1, 1, 2]``) and its training
    objective.

    ``denoiser(x, t)`` is the prediction the objective trains (``x0`` for EDM, ``eps``
    for VP, the velocity for flow matching), ``model_fn()`` hands it to
    :func:`pygen.solvers.sample` with the matching ``schedule`` and ``prediction``.
    """

    family, config_class = "diffusion", DiffusionConfig

    def __init__(self, config: DiffusionConfig):
        super().__init__()
        if config.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {config.objective!r}")
        if config.data not in DATASETS:
            raise ValueError(f"data must be one of {DATASETS}, got {config.data!r}")
        self.config = config
        self.shape = (1, 8, 8) if config.data == "digits" else (1, 1, 2)
        self.patch = (config.patch, config.patch) if config.data == "digits" else (1, 1)
        c, h, w = self.shape
        ph, pw = self.patch
        if h % ph or w % pw:
            raise ValueError(f"patch {config.patch} must divide the image size {h}x{w}")
        tokens, patch_dim = (h // ph) * (w // pw), c * ph * pw
        self.embed = nn.Linear(patch_dim, config.dim)
        self.pos = nn.Parameter(torch.randn(tokens, config.dim) * 0.02)
        self.time = nn.Sequential(nn.Linear(64, config.dim), nn.SiLU(), nn.Linear(config.dim, config.dim))
        self.blocks = nn.ModuleList(DiTBlock(config.dim, config.heads) for _ in range(config.depth))
        self.norm = nn.LayerNorm(config.dim, elementwise_affine=False)
        self.final_ada = nn.Linear(config.dim, 2 * config.dim)
        self.out = nn.Linear(config.dim, patch_dim)
        for layer in (self.final_ada, self.out):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        self.schedule = {"edm": solvers.EDM(), "eps": solvers.VPCosine(), "flow": solvers.Flow()}[
            config.objective
        ]
        self.prediction = {"edm": "x0", "eps": "eps", "flow": "flow"}[config.objective]

    def _features(self, noise_level: torch.Tensor) -> torch.Tensor:
        """64 sinusoidal features of a scalar noise level per sample."""
        freqs = torch.exp(torch.arange(32, device=noise_level.device) * (-math.log(1000.0) / 32))
        angle = noise_level.float()[:, None] * 100 * freqs
        return torch.cat([angle.sin(), angle.cos()], dim=1)

    def net(self, x: torch.Tensor, noise_level: torch.Tensor) -> torch.Tensor:
        """The transformer: ``x`` ``[B, C, H, W]`` and a ``[B]`` noise feature."""
        b, (c, h, w), (ph, pw) = x.shape[0], self.shape, self.patch
        tokens = (
            x.reshape(b, c, h // ph, ph, w // pw, pw).permute(0, 2, 4, 1, 3, 5).reshape(b, -1, c * ph * pw)
        )
        z = self.embed(tokens) + self.pos
        cond = self.time(self._features(noise_level))
        for block in self.blocks:
            z = block(z, cond)
        shift, scale = self.final_ada(F.silu(cond))[:, None].chunk(2, dim=-1)
        z = self.out(self.norm(z) * (1 + scale) + shift)
        z = z.reshape(b, h // ph, w // pw, c, ph, pw).permute(0, 3, 1, 4, 2, 5)
        return z.reshape(b, c, h, w)

    def denoiser(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The trained prediction at state ``x`` and schedule time ``t`` ``[B]``."""
        if self.config.objective == "edm":  # Karras et al. 2022, Table 1 preconditioning
            sd, sigma = self.config.sigma_data, t.to(x.dtype).reshape(-1, 1, 1, 1)
            c_skip = sd**2 / (sigma**2 + sd**2)
            c_out = sigma * sd / (sigma**2 + sd**2).sqrt()
            c_in = 1 / (sigma**2 + sd**2).sqrt()
            return c_skip * x + c_out * self.net(c_in * x, sigma.flatten().log() / 4)
        return self.net(x, t)

    def loss(self, x0: torch.Tensor) -> torch.Tensor:
        """The objective's loss on a batch of data ``[B, C, H, W]``."""
        b, eps = x0.shape[0], torch.randn_like(x0)
        if self.config.objective == "edm":  # log-normal sigma, EDM's weighting
            sigma = (torch.randn(b, device=x0.device) * 1.2 - 1.2).exp()
            s4 = sigma.reshape(-1, 1, 1, 1)
            weight = (s4**2 + self.config.sigma_data**2) / (s4 * self.config.sigma_data) ** 2
            return (weight * (self.denoiser(x0 + s4 * eps, sigma) - x0) ** 2).mean()
        t = torch.rand(b, dtype=torch.float64)  # on the host, where the schedule is: no device sync
        if self.config.objective == "eps":
            t = t * (self.schedule.t_max - 1e-4) + 1e-4
        alpha, sigma = (torch.from_numpy(v).to(x0) for v in self.schedule.alpha_sigma(t.numpy()))
        xt = alpha.reshape(-1, 1, 1, 1) * x0 + sigma.reshape(-1, 1, 1, 1) * eps
        target = eps if self.config.objective == "eps" else eps - x0
        return F.mse_loss(self.denoiser(xt, t.to(x0)), target)

    @torch.no_grad()
    def sample(
        self,
        n: int,
        *,
        solver: str = "dpmpp_2m",
        steps: int = 10,
        seed: int = 0,
        device: str | torch.device | None = None,
        **options,
    ) -> torch.Tensor:
        """``n`` samples ``[n, C, H, W]`` by ``pygen.solvers.sample`` from seeded noise."""
        device = device or next(self.parameters()).device
        g = torch.Generator().manual_seed(seed)
        _, sigma = self.schedule.alpha_sigma(self.schedule.t_max)
        x = (torch.randn((n, *self.shape), generator=g) * float(sigma)).to(device)
        self.eval()
        return solvers.sample(
            self.denoiser,
            x,
            schedule=self.schedule,
            solver=solver,
            steps=steps,
            prediction=self.prediction,
            seed=seed,
            **options,
        )


def save_grid(images: torch.Tensor, path: str | Path, columns: int = 8) -> Path:
    """Writes ``[N, 1, H, W]`` images in [-1, 1] as a PNG grid, or 2-D points as a scatter."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    x = images.detach().float().cpu()
    if x.shape[-2] == 1:
        fig, ax = plt.subplots(figsize=(4, 4))
        pts = x.reshape(-1, 2).numpy()
        ax.scatter(pts[:, 0], pts[:, 1], s=2)
        ax.set_aspect("equal")
    else:
        rows = math.ceil(len(x) / columns)
        tiles = np.ones((rows * (x.shape[-2] + 1), columns * (x.shape[-1] + 1)))
        for i, img in enumerate(x[:, 0].clamp(-1, 1).numpy()):
            r, c = divmod(i, columns)
            h, w = img.shape
            tiles[r * (h + 1) : r * (h + 1) + h, c * (w + 1) : c * (w + 1) + w] = (1 - img) / 2
        fig, ax = plt.subplots(figsize=(columns / 2, rows / 2))
        ax.imshow(tiles, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.axis("off")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def fit(
    config: DiffusionConfig,
    train_config: TrainConfig,
    *,
    batch_size: int = 128,
    device: str = "cpu",
    out: str | Path | None = None,
) -> tuple[DiffusionModel, list[dict]]:
    """Trains on :func:`load_data`; the evaluation is the held-out loss. With ``out``,
    saves the model there (rank 0) and a grid of 64 samples (10 NFE) as samples.png."""
    torch.manual_seed(train_config.seed)
    model = DiffusionModel(config).to(device)
    data, held_out = load_data(config.data, "train").to(device), load_data(config.data, "val").to(device)

    def batches(generator: torch.Generator) -> torch.Tensor:
        return data[torch.randint(len(data), (batch_size,), generator=generator).to(device)]

    def evaluate(m: DiffusionModel) -> float:
        torch.manual_seed(0)  # the same noise every evaluation
        return sum(m.loss(held_out[i : i + 512]).item() for i in range(0, len(held_out), 512)) / math.ceil(
            len(held_out) / 512
        )

    log = train(model, batches, train_config, evaluate)
    if out is not None and int(os.environ.get("RANK", "0")) == 0:
        model.save(out)
        save_grid(model.sample(64, steps=10), Path(out) / "samples.png")
    return model, log
