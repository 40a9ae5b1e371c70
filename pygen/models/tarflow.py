"""TarFlow on 8x8 digits (Zhai et al. 2024): dequantization and a logit transform, the
image cut into patches, then ``blocks`` transformer autoregressive flow blocks reading
the patch sequence in alternating directions. Sampling inverts the blocks exactly, one
patch at a time with a KV cache, or in parallel by GS-Jacobi iteration (Liu et al. 2025).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from pygen.models.flows import SHAPE, DigitsFlow, dequantization, fit_digits
from pygen.nn.flows import Flow, JacobiStats, LogitTransform, Patchify, TarFlowBlock
from pygen.nn.flows.autoregressive import BlockPlan, plan_gs_jacobi
from pygen.train import TrainConfig

METHODS = ("sequential", "gs_jacobi")


@dataclass
class TarFlowConfig:
    """Hyperparameters of :class:`TarFlow` (each a flag of ``python -m pygen train tarflow``)."""

    patch: int = 2  # patch side: 8x8 digits -> 16 tokens of 4 values
    blocks: int = 4  # flow blocks, alternating the reading direction
    layers: int = 2  # transformer layers per block
    dim: int = 64  # transformer width; dim / heads a multiple of 16
    heads: int = 4
    dequantization: str = "uniform"  # or "variational"
    hidden: int = 32  # variational dequantization's conditioner channels
    clamp: float = 3.0  # soft bound on |log scale|
    alpha: float = 0.05  # logit-transform margin


class TarFlow(DigitsFlow):
    """``flow``: levels ``[B, 1, 8, 8]`` (int64 in 0..16) -> float32 latent tokens
    ``[B, L, P]``."""

    family, config_class = "tarflow", TarFlowConfig

    def __init__(self, config: TarFlowConfig):
        super().__init__()
        if config.blocks < 1:
            raise ValueError(f"blocks must be >= 1, got {config.blocks}")
        if config.dim % config.heads or (config.dim // config.heads) % 16:
            raise ValueError(f"dim / heads must be a multiple of 16, got {config.dim} / {config.heads}")
        self.config = config
        patchify = Patchify(SHAPE, config.patch)
        blocks = [
            TarFlowBlock(
                patchify.tokens,
                patchify.token_dim,
                config.dim,
                config.layers,
                config.heads,
                flip=i % 2 == 1,
                clamp=config.clamp,
            )
            for i in range(config.blocks)
        ]
        layers = [
            dequantization(config.dequantization, config.hidden),
            LogitTransform(config.alpha),
            patchify,
        ]
        self.flow = Flow(layers + blocks, event_shape=(patchify.tokens, patchify.token_dim))
        self._plans: dict[tuple[float, int], list[BlockPlan]] = {}  # (tol, batch) -> plan
        self.register_load_state_dict_post_hook(lambda module, keys: module._plans.clear())

    def flow_blocks(self) -> list[TarFlowBlock]:
        """The :class:`TarFlowBlock` layers, first (nearest the data) first."""
        return [layer for layer in self.flow.layers if isinstance(layer, TarFlowBlock)]

    @torch.no_grad()
    def plan_gs_jacobi(
        self, tol: float = 1e-4, *, batch: int = 1, probe: int = 8, seed: int = 0
    ) -> list[BlockPlan]:
        """Each block's GS-Jacobi groups and initialization for batches of ``batch``
        decoded to ``tol`` (see :func:`pygen.nn.flows.autoregressive.plan_gs_jacobi`),
        measured on ``probe`` seeded latents, and kept for ``decode(groups="auto")``
        (first block first). The plan only affects speed: every plan converges to the
        sequential inverse. Loading a state dict drops the kept plans."""
        param = next(self.parameters())
        z = torch.randn((probe, *self.flow.event_shape), generator=torch.Generator().manual_seed(seed))
        plans = plan_gs_jacobi(self.flow_blocks(), z.to(param.device, param.dtype), tol=tol, batch=batch)
        self._plans[(float(tol), batch)] = plans
        return plans

    @torch.no_grad()
    def decode(
        self,
        z: torch.Tensor,
        *,
        method: str = "sequential",
        groups: int | Sequence[int] | str = "auto",
        tol: float = 1e-4,
        init: str | Sequence[str] = "z",
    ) -> tuple[torch.Tensor, list[JacobiStats]]:
        """Latent tokens ``z [B, L, P]`` -> levels, inverting the blocks last to first:
        ``"sequential"`` (exact, L - 1 one-token steps per block, KV cache) or
        ``"gs_jacobi"`` (see :meth:`TarFlowBlock.inverse_gs_jacobi`) to ``tol`` with
        ``groups`` groups of positions and initialization ``init``: one value for every
        block, or a list with one per block, first block first (Liu et al. give the
        blocks that converge slowly more groups); ``groups="auto"`` takes both from
        :meth:`plan_gs_jacobi` (measured on the first such call for this ``tol`` and
        batch size).
        Returns the levels (float) and, for GS-Jacobi, each block's stats (first block
        first)."""
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        blocks = self.flow_blocks()
        if method == "sequential":
            return self.flow.inverse(z), []
        if groups == "auto":
            plans = self._plans.get((float(tol), len(z))) or self.plan_gs_jacobi(tol, batch=len(z))
            per_block, inits = [p.groups for p in plans], [p.init for p in plans]
        else:
            per_block = [groups] * len(blocks) if isinstance(groups, int) else list(groups)
            inits = [init] * len(blocks) if isinstance(init, str) else list(init)
        if len(per_block) != len(blocks):
            raise ValueError(
                f"groups must be an int, 'auto' or one count per block ({len(blocks)}), got {groups!r}"
            )
        if len(inits) != len(blocks):
            raise ValueError(f"init must be a string or one per block ({len(blocks)}), got {init!r}")
        stats = []
        for layer in reversed(self.flow.layers):
            if isinstance(layer, TarFlowBlock):
                i = blocks.index(layer)
                z, s = layer.inverse_gs_jacobi(z, groups=per_block[i], tol=tol, init=inits[i])
                stats.insert(0, s)
            else:
                z = layer.inverse(z)
        return z, stats

    @torch.no_grad()
    def sample(
        self,
        n: int,
        *,
        seed: int = 0,
        temperature: float = 1.0,
        method: str = "sequential",
        groups: int | Sequence[int] | str = "auto",
        tol: float = 1e-4,
        init: str | Sequence[str] = "z",
        return_stats: bool = False,
    ):
        """``n`` digits, int64 levels ``[n, 1, 8, 8]``, from seeded latents, decoded by
        ``method`` (see :meth:`decode`); with ``return_stats`` also the GS-Jacobi stats."""
        self.eval()
        z = torch.randn((n, *self.flow.event_shape), generator=torch.Generator().manual_seed(seed))
        z = (z * temperature).to(next(self.parameters()).device)
        y, stats = self.decode(z, method=method, groups=groups, tol=tol, init=init)
        return (self._levels(y), stats) if return_stats else self._levels(y)


def fit(
    config: TarFlowConfig,
    train_config: TrainConfig,
    *,
    batch_size: int = 64,
    device: str = "cpu",
    out: str | Path | None = None,
) -> tuple[TarFlow, list[dict]]:
    """Trains a :class:`TarFlow` on the digits, evaluating held-out bits per dimension;
    saves it and samples.png to ``out`` (rank 0) when given."""
    torch.manual_seed(train_config.seed)
    model = TarFlow(config).to(device)
    return model, fit_digits(model, train_config, batch_size=batch_size, device=device, out=out)
