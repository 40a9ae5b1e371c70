"""TarFlow's transformer autoregressive flow block (Zhai et al. 2024) and its inverses:
exact sequential decoding with a KV cache, and GS-Jacobi iteration (Liu et al. 2025).

A block maps a token sequence ``x [B, L, P]`` to ``z`` with ``z_0 = x_0`` and
``z_i = x_i * scale_i + shift_i``, where ``(shift_i, log scale_i)`` is predicted by a
causal transformer from ``x_0 .. x_{i-1}`` (its output at position ``i - 1``). With
``flip``, the block reads the sequence in reverse order, so consecutive blocks
alternate directions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from pygen.nn.attention import KVCache, SparseTransformerBlock
from pygen.ops.flows import affine_coupling

INITS = ("z", "zeros")
# Positions x batch rows whose evaluation costs about what one transformer call costs
# regardless of its size (dispatch, small kernels), per device type: the exchange rate
# of GS-Jacobi's cost model. CPU: fitted to pygen.models.tarflow's blocks (width 64, 2
# layers, one thread; 64 tokens: Jacobi 2.5x slower than sequential at batch 64, 5-7x
# faster at batch 1); CUDA: an estimate (a launch is worth a large batch), unmeasured.
CALL_POSITIONS = {"cpu": 192, "cuda": 16384}


@dataclass
class JacobiStats:
    """What a GS-Jacobi inverse of one block did: ``iterations`` (Jacobi sweeps, summed
    over the groups; each is one transformer call, so also the calls), ``positions``
    (token positions evaluated, summed over the sweeps: the sequential inverse evaluates
    ``L - 1``, so ``positions / (L - 1)`` is the work in sequential-inverse units) and
    the last sweep's largest change."""

    iterations: int = 0
    positions: int = 0
    residual: float = 0.0


@dataclass
class BlockPlan:
    """One block's GS-Jacobi settings, from :func:`plan_gs_jacobi`: ``groups``, ``init``
    and the measured Convergence Ranking Metric ``crm`` (plain Jacobi's sweeps to the
    tolerance over the sequential inverse's ``L - 1`` steps: 1 is no faster)."""

    groups: int
    init: str
    crm: float


def plan_gs_jacobi(blocks: list[TarFlowBlock], z: torch.Tensor, *, tol: float, batch: int) -> list[BlockPlan]:
    """Each block's GS-Jacobi groups and initialization for decoding batches of
    ``batch`` to ``tol``, measured on the probe latents ``z [b, L, P]`` (the last
    block's output), decoded through ``blocks`` (first block first) last to first.

    Liu et al. rank the blocks by how easily their inverse converges (the Convergence
    Ranking Metric) and give the hard ones more Gauss-Seidel groups; their Initial
    Guessing Metric picks the initialization. Here both are measured on the probe:
    the initialization is the one of :data:`INITS` with the fewer plain-Jacobi sweeps,
    and the groups the count among 1, 2, 4, ... and ``L - 1`` (the sequential inverse)
    with the least cost, ``calls + positions * batch / CALL_POSITIONS[device]``: a
    hard block (sweeps near ``L - 1``) gains nothing from Jacobi, and large batches
    make the positions Jacobi evaluates again and again cost more than the calls it
    saves."""
    per_call = CALL_POSITIONS.get(z.device.type, CALL_POSITIONS["cuda"])

    def cost(run: JacobiStats) -> float:
        return run.iterations + run.positions * batch / per_call

    plans = []
    for block in reversed(blocks):
        steps = block.tokens - 1
        runs = {init: block.inverse_gs_jacobi(z, tol=tol, init=init)[1] for init in INITS}
        init = min(INITS, key=lambda i: (runs[i].iterations, runs[i].positions))

        costs = {1: cost(runs[init]), steps: steps * (1 + batch / per_call)}
        groups = 2
        while groups < steps:
            costs[groups] = cost(block.inverse_gs_jacobi(z, groups=groups, tol=tol, init=init)[1])
            groups *= 2
        best = min(costs, key=lambda g: (costs[g], g))
        plans.insert(0, BlockPlan(best, init, runs[init].iterations / steps))
        z = block.inverse(z)
    return plans


def group_bounds(positions: int, groups: int) -> list[int]:
    """Boundaries of ``groups`` near-equal consecutive groups of the positions
    ``1 .. positions``: ``[1, ..., positions + 1]``."""
    return [1 + round(g * positions / groups) for g in range(groups + 1)]


class TarFlowBlock(nn.Module):
    """One TarFlow block on ``[B, tokens, token_dim]`` float32/float64: y in x's dtype,
    logdet ``[B]`` float32 (float64 for float64 x).

    Args:
        tokens: sequence length L.
        token_dim: features per token P (``C p^2`` for p x p patches).
        dim, layers, heads: the causal transformer (pygen attention, so ``dim / heads``
            must be a multiple of 16).
        flip: read the sequence in reverse.
        clamp: soft bound on |log scale| (``clamp * tanh(. / clamp)``).
    """

    def __init__(
        self,
        tokens: int,
        token_dim: int,
        dim: int = 64,
        layers: int = 2,
        heads: int = 2,
        *,
        flip: bool = False,
        clamp: float = 3.0,
    ):
        super().__init__()
        if tokens < 2:
            raise ValueError(f"a TarFlow block needs at least 2 tokens, got {tokens}")
        self.tokens, self.token_dim, self.flip, self.clamp = tokens, token_dim, flip, clamp
        self.embed = nn.Linear(token_dim, dim)
        self.pos = nn.Parameter(torch.randn(tokens - 1, dim) * 0.02)
        self.blocks = nn.ModuleList(SparseTransformerBlock(dim, heads, depth=layers) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.out = nn.Linear(dim, 2 * token_dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def _check(self, x: torch.Tensor) -> None:
        if x.dim() != 3 or x.shape[1:] != (self.tokens, self.token_dim):
            raise ValueError(f"x must be [B, {self.tokens}, {self.token_dim}], got {tuple(x.shape)}")

    def _order(self, x: torch.Tensor) -> torch.Tensor:
        return x.flip(1) if self.flip else x

    def params(
        self, x: torch.Tensor, start: int = 0, caches: list[KVCache] | None = None, update: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(shift, raw_scale)`` ``[B, n, P]`` for positions ``start + 1 .. start + n``
        from the tokens ``x [B, n, P]`` at positions ``start .. start + n - 1`` (in the
        block's reading order); with ``caches`` (one per layer), the tokens before
        ``start`` come from the caches (see :class:`pygen.nn.KVCache`)."""
        h = self.embed(x) + self.pos[start : start + x.shape[1]].to(x.dtype)
        for i, block in enumerate(self.blocks):
            h = block(h, cache=None if caches is None else caches[i], update_cache=update)
        shift, raw = self.out(self.norm(h)).chunk(2, dim=-1)
        return shift.contiguous(), raw.contiguous()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x [B, L, P]`` -> ``(z, logdet [B])``, all positions in parallel."""
        self._check(x)
        x = self._order(x)
        shift, raw = self.params(x[:, :-1])
        z, logdet = affine_coupling(x[:, 1:].contiguous(), shift, raw, clamp=self.clamp)
        return self._order(torch.cat([x[:, :1], z], 1)), logdet

    def _invert(self, z: torch.Tensor, shift: torch.Tensor, raw: torch.Tensor) -> torch.Tensor:
        return affine_coupling(z.contiguous(), shift, raw, clamp=self.clamp, inverse=True)[0]

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        """``z`` -> ``x``, exactly: one position at a time (L - 1 transformer calls on
        one token each), the earlier positions' keys and values kept in a KV cache
        (preallocated, written in place)."""
        self._check(z)
        z = self._order(z)
        caches = [KVCache(capacity=self.tokens - 1) for _ in self.blocks]
        x = torch.empty_like(z)
        x[:, :1] = z[:, :1]
        for i in range(1, self.tokens):
            shift, raw = self.params(x[:, i - 1 : i], i - 1, caches)
            x[:, i : i + 1] = self._invert(z[:, i : i + 1], shift, raw)
        return self._order(x)

    def inverse_gs_jacobi(
        self,
        z: torch.Tensor,
        *,
        groups: int = 1,
        tol: float = 1e-5,
        init: str = "z",
        max_iterations: int | None = None,
    ) -> tuple[torch.Tensor, JacobiStats]:
        """``z`` -> ``x`` by Gauss-Seidel-Jacobi iteration (Liu et al. 2025).

        Positions ``1 .. L - 1`` are cut into ``groups`` consecutive groups, solved one
        after another (Gauss-Seidel). In a group every unsettled position is updated in
        parallel from the previous sweep (Jacobi), ``x <- (z - shift(x)) / scale(x)``,
        starting from ``init`` (``"z"``: ``x = z``, exact for a block near the identity;
        ``"zeros"``). After each sweep the leading positions whose change is at most
        ``tol`` (over the batch and features), and always the first (its inputs are
        settled, so it is exact), settle: their keys and values, which that sweep
        computed, join the KV cache, and later sweeps evaluate only the positions after
        them. So a group of ``n`` positions takes at most ``n`` sweeps (``groups = L - 1``
        is the sequential inverse; ``groups = 1`` is Jacobi with a moving front), and
        no transformer call is spent on filling the cache. ``max_iterations`` caps the
        sweeps per group (the unsettled positions then keep their last values).

        Each sweep reads one small tensor back to the host (how many positions
        settled): the decision shapes the next call.

        Args:
            z: ``[B, L, P]``.
        Returns:
            ``x [B, L, P]`` and the :class:`JacobiStats`.
        """
        self._check(z)
        if not isinstance(groups, int) or not 1 <= groups <= self.tokens - 1:
            raise ValueError(f"groups must be an int in [1, {self.tokens - 1}], got {groups!r}")
        if not tol >= 0:
            raise ValueError(f"tol must be >= 0, got {tol}")
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {init!r}")
        if max_iterations is not None and max_iterations < 1:
            raise ValueError(f"max_iterations must be >= 1 or None, got {max_iterations}")
        if groups == self.tokens - 1:  # one position per group: the sequential inverse
            steps = self.tokens - 1
            return self.inverse(z), JacobiStats(iterations=steps, positions=steps)
        z = self._order(z)
        x = z.clone()
        if init == "zeros":
            x[:, 1:] = 0
        caches = [KVCache(capacity=self.tokens - 1) for _ in self.blocks]
        stats = JacobiStats()
        bounds = group_bounds(self.tokens - 1, groups)
        for start, end in zip(bounds[:-1], bounds[1:], strict=True):
            front, sweeps = start, 0
            while front < end:
                shift, raw = self.params(x[:, front - 1 : end - 1], front - 1, caches, update=False)
                new = self._invert(z[:, front:end], shift, raw)
                change = (new - x[:, front:end]).abs().amax(dim=(0, 2))
                x[:, front:end] = new
                sweeps += 1
                stats.iterations += 1
                stats.positions += end - front
                # One read-back: the settled prefix's length and the largest change.
                settled_t = (change <= tol).cumprod(0).sum()
                settled, residual = torch.stack([settled_t.to(change.dtype), change.max()]).tolist()
                stats.residual = residual
                settled = max(1, int(settled))
                if max_iterations is not None and sweeps >= max_iterations:
                    settled = end - front
                front += settled
                if front < self.tokens:  # later positions attend to the settled ones
                    for cache in caches:
                        cache.commit(settled)
        return self._order(x), stats
