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


@dataclass
class JacobiStats:
    """What a GS-Jacobi inverse of one block did: ``iterations`` (Jacobi sweeps, summed
    over the groups), ``evaluations`` (transformer calls, including the calls that
    write a converged group's keys to the cache) and the last sweep's largest change."""

    iterations: int = 0
    evaluations: int = 0
    residual: float = 0.0


class TarFlowBlock(nn.Module):
    """One TarFlow block on ``[B, tokens, token_dim]``.

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
        one token each), the earlier positions' keys and values kept in a KV cache."""
        self._check(z)
        z = self._order(z)
        caches = [KVCache() for _ in self.blocks]
        xs = [z[:, :1]]
        for i in range(1, self.tokens):
            shift, raw = self.params(xs[-1], i - 1, caches)
            xs.append(self._invert(z[:, i : i + 1], shift, raw))
        return self._order(torch.cat(xs, 1))

    def inverse_gs_jacobi(
        self, z: torch.Tensor, *, groups: int = 1, tol: float = 1e-5, max_iterations: int | None = None
    ) -> tuple[torch.Tensor, JacobiStats]:
        """``z`` -> ``x`` by Gauss-Seidel-Jacobi iteration: positions ``1 .. L - 1`` cut
        into ``groups`` consecutive groups, solved one after another (Gauss-Seidel); in
        a group, every position is updated in parallel from the previous sweep
        (Jacobi), ``x <- (z - shift(x)) / scale(x)``, starting from ``x = z``, until the
        largest change is at most ``tol`` (or ``max_iterations``). A group of ``n``
        positions is exact after at most ``n`` sweeps (the map is triangular), so the
        sweeps never exceed that. ``groups = L - 1`` is the sequential inverse;
        ``groups = 1`` is plain Jacobi. Returns ``x`` and the :class:`JacobiStats`."""
        self._check(z)
        if not 1 <= groups <= self.tokens - 1:
            raise ValueError(f"groups must be in [1, {self.tokens - 1}], got {groups}")
        if tol < 0:
            raise ValueError(f"tol must be >= 0, got {tol}")
        z = self._order(z)
        bounds = torch.linspace(1, self.tokens, groups + 1).round().long().tolist()
        caches = [KVCache() for _ in self.blocks]
        stats, x = JacobiStats(), [z[:, :1]]
        for g, (s, e) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
            target, guess = z[:, s:e], z[:, s:e]
            limit = e - s if max_iterations is None else min(e - s, max_iterations)
            for _ in range(limit):
                inputs = torch.cat([x[-1][:, -1:], guess[:, :-1]], 1)
                new = self._invert(target, *self.params(inputs, s - 1, caches, update=False))
                stats.residual = (new - guess).abs().max().item()
                stats.iterations += 1
                stats.evaluations += 1
                guess = new
                if stats.residual <= tol:
                    break
            x.append(guess)
            if g < groups - 1:  # the next group attends to this one's final tokens
                self.params(torch.cat([x[-2][:, -1:], guess[:, :-1]], 1), s - 1, caches)
                stats.evaluations += 1
        return self._order(torch.cat(x, 1)), stats
