"""Attention modules on pygen's fused kernels, and the Sparse Transformer block."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from pygen import sparse
from pygen.ops.attention import attention

# A layout for queries and keys of given lengths, or a list of them: heads are then split
# evenly among the layouts (the Sparse Transformer's split heads).
LayoutSpec = sparse.BlockLayout | Sequence[sparse.BlockLayout]
LayoutFactory = Callable[[int, int], LayoutSpec]


def attend(q, k, v, *, causal=False, layout: LayoutSpec | None = None) -> torch.Tensor:
    """pygen.ops.attention with ``layout`` also a list of layouts for equal head groups."""
    if layout is None or isinstance(layout, sparse.BlockLayout):
        return attention(q, k, v, causal=causal, layout=layout)
    groups = len(layout)
    hq, hkv = q.shape[1], k.shape[1]
    if hq % groups or hkv % groups:
        raise ValueError(f"{groups} layouts need q heads ({hq}) and kv heads ({hkv}) divisible by {groups}")
    parts = []
    for i, lay in enumerate(layout):
        qs = slice(i * hq // groups, (i + 1) * hq // groups)
        ks = slice(i * hkv // groups, (i + 1) * hkv // groups)
        parts.append(attention(q[:, qs], k[:, ks], v[:, ks], causal=causal, layout=lay))
    return torch.cat(parts, 1)


@dataclass
class KVCache:
    """Keys and values of the positions an attention layer has already seen, for
    incremental (autoregressive) evaluation: ``k``, ``v`` ``[B, Hkv, n, D]``, None until
    the first call. One cache per attention layer.

    ``capacity``: positions to reserve on the first append; appends then copy the new
    positions into that buffer (``k``, ``v`` are views of it) instead of concatenating,
    which copies the whole cache every step. Without it the cache grows by concatenation.

    A call with ``update_cache=False`` leaves the cache as it was and keeps the new
    positions' keys and values in ``pending``; :meth:`commit` appends a prefix of them
    (Jacobi iterations: the positions that have converged join the cache without
    another evaluation)."""

    k: torch.Tensor | None = None
    v: torch.Tensor | None = None
    capacity: int | None = None
    pending: tuple[torch.Tensor, torch.Tensor] | None = field(default=None, repr=False)
    _buffers: tuple[torch.Tensor, torch.Tensor] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return 0 if self.k is None else self.k.shape[2]

    def append(self, k: torch.Tensor, v: torch.Tensor) -> None:
        """Appends the keys and values ``[B, Hkv, m, D]`` of the next ``m`` positions."""
        n, m = len(self), k.shape[2]
        if self.capacity is None:
            self.k = k if self.k is None else torch.cat([self.k, k], 2)
            self.v = v if self.v is None else torch.cat([self.v, v], 2)
            return
        if self._buffers is None or n + m > self._buffers[0].shape[2]:
            size = max(self.capacity, 2 * (n + m))
            shape = (k.shape[0], k.shape[1], size, k.shape[3])
            buffers = (k.new_empty(shape), v.new_empty(shape))
            if n:
                buffers[0][:, :, :n].copy_(self.k)
                buffers[1][:, :, :n].copy_(self.v)
            self._buffers = buffers
        bk, bv = self._buffers
        bk[:, :, n : n + m].copy_(k)
        bv[:, :, n : n + m].copy_(v)
        self.k, self.v = bk[:, :, : n + m], bv[:, :, : n + m]

    def commit(self, n: int) -> None:
        """Appends the first ``n`` positions of ``pending`` (from the last call made with
        ``update_cache=False``)."""
        if self.pending is None or not 0 <= n <= self.pending[0].shape[2]:
            held = 0 if self.pending is None else self.pending[0].shape[2]
            raise ValueError(f"commit needs 0 <= n <= {held} pending positions, got {n}")
        k, v = self.pending
        self.append(k[:, :, :n], v[:, :, :n])


def _merge(out_a, lse_a, out_b, lse_b) -> torch.Tensor:
    """Softmax attention over the union of two disjoint key sets from each set's output
    and log-sum-exp (flash-decoding's split-KV merge)."""
    lse = torch.logaddexp(lse_a, lse_b)
    wa, wb = torch.exp(lse_a - lse)[..., None], torch.exp(lse_b - lse)[..., None]
    # A query that saw no key in either set has lse -inf: weights NaN, output 0.
    wa, wb = wa.nan_to_num(0.0), wb.nan_to_num(0.0)
    return (out_a * wa + out_b * wb).to(out_a.dtype)


class MultiheadAttention(nn.Module):
    """Multi-head attention on inputs ``[batch, len, embed_dim]`` (batch first), in
    :func:`pygen.ops.attention`'s dtypes (float32, bfloat16, float16, float64); the
    output has the input's shape and dtype.

    Args:
        embed_dim: model width; ``embed_dim / num_heads`` must be a multiple of 16.
        num_heads: query heads.
        kv_heads: key/value heads (grouped-query attention); default ``num_heads``.
        bias: biases in the projections.
        causal: hide keys after each query.
        layout: None (dense), a :class:`pygen.sparse.BlockLayout`, a list of layouts
            (heads split evenly among them), or a function ``(len_q, len_k) -> layout``
            called once per new pair of lengths (cached).
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        *,
        kv_heads: int | None = None,
        bias: bool = True,
        causal: bool = False,
        layout: LayoutSpec | LayoutFactory | None = None,
    ):
        super().__init__()
        kv_heads = num_heads if kv_heads is None else kv_heads
        if embed_dim % num_heads or num_heads % kv_heads:
            raise ValueError(
                f"embed_dim ({embed_dim}) must split into num_heads ({num_heads}), and kv_heads ({kv_heads}) "
                "must divide num_heads"
            )
        self.num_heads, self.kv_heads, self.head_dim = num_heads, kv_heads, embed_dim // num_heads
        self.causal, self.layout = causal, layout
        self._layouts: dict[tuple[int, int], LayoutSpec] = {}
        self.q_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.kv_proj = nn.Linear(embed_dim, 2 * kv_heads * self.head_dim, bias=bias)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)

    def layout_for(self, len_q: int, len_k: int) -> LayoutSpec | None:
        if not callable(self.layout):
            return self.layout
        if (len_q, len_k) not in self._layouts:
            self._layouts[(len_q, len_k)] = self.layout(len_q, len_k)
        return self._layouts[(len_q, len_k)]

    def forward(
        self,
        query: torch.Tensor,
        key_value: torch.Tensor | None = None,
        *,
        cache: KVCache | None = None,
        update_cache: bool = True,
    ) -> torch.Tensor:
        """``query`` ``[B, Lq, E]``; ``key_value`` ``[B, Lk, E]`` (default: ``query``,
        self-attention). Returns ``[B, Lq, E]``.

        With a ``cache`` (self-attention, dense layouts only), ``query`` holds the next
        ``Lq`` positions after the ``len(cache)`` cached ones: they attend to every cached
        position and, causally when ``causal``, to each other. ``update_cache`` appends
        their keys and values (False evaluates provisional positions, as in Jacobi
        iterations, leaving the cache as it was but for ``cache.pending``)."""
        kv_in = query if key_value is None else key_value
        b, lq, e = query.shape
        lk = kv_in.shape[1]
        # [B, L, H, D] viewed as [B, H, L, D]: the kernels take the strides as they are.
        q = self.q_proj(query).view(b, lq, self.num_heads, self.head_dim).transpose(1, 2)
        kv = self.kv_proj(kv_in).view(b, lk, 2, self.kv_heads, self.head_dim)
        k, v = kv[:, :, 0].transpose(1, 2), kv[:, :, 1].transpose(1, 2)
        if cache is None:
            out = attend(q, k, v, causal=self.causal, layout=self.layout_for(lq, lk))
        else:
            if key_value is not None or self.layout is not None:
                raise ValueError("a KV cache needs dense self-attention (no key_value, layout None)")
            out = self._attend_cached(q, k, v, cache, update_cache)
        return self.out_proj(out.transpose(1, 2).reshape(b, lq, e))

    def _attend_cached(self, q, k, v, cache: KVCache, update: bool) -> torch.Tensor:
        if len(cache) == 0:
            out = attention(q, k, v, causal=self.causal)
        else:
            # The new positions come after every cached one: the causal mask (top-left
            # aligned) applies among the new positions only, so attend to the two key
            # sets separately and merge.
            past, lse_past = attention(q, cache.k, cache.v, return_lse=True)
            new, lse_new = attention(q, k, v, causal=self.causal, return_lse=True)
            out = _merge(past, lse_past, new, lse_new)
        if update:
            cache.append(k, v)
        else:
            cache.pending = (k, v)
        return out


class Attention(MultiheadAttention):
    """Self-attention ``x [B, L, E] -> [B, L, E]`` (x's dtype): MultiheadAttention with
    key = value = x."""

    def forward(  # noqa: D102
        self, x: torch.Tensor, *, cache: KVCache | None = None, update_cache: bool = True
    ) -> torch.Tensor:
        return super().forward(x, cache=cache, update_cache=update_cache)


def sparse_transformer_layout(pattern: str, stride: int, c: int = 32, block_size: int = 64) -> LayoutFactory:
    """The Sparse Transformer's attention patterns as a layout factory for
    :class:`MultiheadAttention`: ``"dense"`` (causal), ``"strided"`` (half the heads
    :func:`pygen.sparse.local`, half :func:`pygen.sparse.strided`) or ``"fixed"``
    (:func:`pygen.sparse.fixed` with ``c`` summary positions)."""
    if pattern == "dense":
        return lambda lq, lk: sparse.causal(lq, block_size=block_size)
    if pattern == "strided":
        return lambda lq, lk: [
            sparse.local(lq, stride, block_size=block_size),
            sparse.strided(lq, stride, block_size=block_size),
        ]
    if pattern == "fixed":
        return lambda lq, lk: sparse.fixed(lq, stride, c, block_size=block_size)
    raise ValueError(f"pattern must be 'dense', 'strided' or 'fixed', got {pattern!r}")


class SparseTransformerBlock(nn.Module):
    """Pre-norm residual block of the Sparse Transformer (Child et al., 2019):
    ``x + attn(norm(x))`` then ``x + mlp(norm(x))`` with a GELU MLP.

    The output projections of the attention and the MLP start scaled by
    ``1 / sqrt(2 * depth)`` (the paper's initialization, keeping the residual stream's
    scale independent of depth). ``recompute`` re-runs the block in the backward pass
    instead of storing its activations (the paper's gradient checkpointing); the
    attention kernels already recompute the attention matrix. ``causal=False`` makes it
    bidirectional (masked-diffusion LMs).
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        *,
        depth: int = 1,
        layout: LayoutSpec | LayoutFactory | None = None,
        mlp_ratio: int = 4,
        dropout: float = 0.0,
        recompute: bool = False,
        causal: bool = True,
    ):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, causal=causal, layout=layout)
        self.fc1, self.fc2 = nn.Linear(dim, mlp_ratio * dim), nn.Linear(mlp_ratio * dim, dim)
        self.dropout = nn.Dropout(dropout)
        self.recompute = recompute
        with torch.no_grad():
            for proj in (self.attn.out_proj, self.fc2):
                proj.weight.mul_(1 / math.sqrt(2 * depth))

    def _forward(
        self, x: torch.Tensor, cache: KVCache | None = None, update_cache: bool = True
    ) -> torch.Tensor:
        x = x + self.dropout(self.attn(self.norm1(x), cache=cache, update_cache=update_cache))
        return x + self.dropout(self.fc2(F.gelu(self.fc1(self.norm2(x)))))

    def forward(
        self, x: torch.Tensor, *, cache: KVCache | None = None, update_cache: bool = True
    ) -> torch.Tensor:
        """``x`` ``[B, L, dim]`` -> ``[B, L, dim]``; with a ``cache`` (see
        :meth:`MultiheadAttention.forward`), ``x`` holds the positions after the cached ones."""
        if self.recompute and torch.is_grad_enabled() and cache is None:
            return checkpoint(self._forward, x, use_reentrant=False)
        return self._forward(x, cache, update_cache)
