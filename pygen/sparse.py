"""Block-sparse attention layouts, including the patterns of Sparse Transformers.

A :class:`BlockLayout` cuts queries and keys into blocks of ``block_size`` positions and
says which (query block, key block) pairs are computed; the attention kernels visit only
those, so empty blocks cost nothing. Inside a visited pair, element rules apply on
sequence positions: ``causal`` (a key at or before the query) and ``window`` (query and
key at most ``window`` apart).

The builders follow "Generating Long Sequences with Sparse Transformers" (Child et al.,
2019), with ``l`` the stride and positions counted from 0:

- :func:`local` (their A(1) of the strided pattern): each query sees the previous ``l``
  positions and itself, ``max(0, i - l) <= j <= i``.
- :func:`strided` (their A(2)): each query sees every ``l``-th earlier position,
  ``(i - j) mod l == 0``. Those keys are ``l`` apart, so in the natural order every
  block holds one of them and nothing could be skipped. The layout is therefore written
  on the transposed arrangement the paper's code uses: the sequence viewed as
  ``[len / l, l]`` and transposed to ``[l, len / l]``, so that the positions of one
  residue ``j mod l`` are contiguous. There the pattern is block diagonal (density
  ``1 / l``). The layout carries that order (``perm``); the kernels gather rows through
  it, so callers pass q, k, v in the natural order and get the output in it.
- :func:`fixed` (their A(1) and A(2) of the fixed pattern, merged): each query sees its
  own stride block, ``floor(j / l) == floor(i / l)``, and the last ``c`` positions of
  every stride block, ``j mod l >= l - c`` (causal in both).

The paper's strided attention uses :func:`local` and :func:`strided` in different
heads (or layers); :class:`pygen.nn.SparseTransformerBlock` does so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

__all__ = [
    "BlockLayout",
    "causal",
    "dense",
    "fixed",
    "from_block_mask",
    "local",
    "strided",
    "union",
]

DEFAULT_BLOCK = 64


@dataclass(frozen=True, eq=False)
class BlockLayout:
    """Which blocks of a ``[len_q, len_k]`` attention matrix are computed.

    Attributes:
        block_size: positions per block, a power of two in [16, 256].
        mask: bool ``[heads, q_blocks, k_blocks]``; ``heads`` is 1 (shared by all
            heads) or the number of query heads.
        causal: whether a key after the query is hidden (applied per element).
        window: if set, keys more than ``window`` positions from the query are hidden.
        perm: int64 ``[len]`` or None: the order the mask is written in (row ``i`` of
            the mask's blocks holds position ``perm[i]``); see the module docstring.
    """

    block_size: int
    mask: torch.Tensor
    causal: bool = False
    window: int | None = None
    perm: torch.Tensor | None = None
    _device_cache: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self):
        b = self.block_size
        if not isinstance(b, int) or not 16 <= b <= 256 or b & (b - 1):
            raise ValueError(f"block_size must be a power of two in [16, 256], got {b!r}")
        if not isinstance(self.mask, torch.Tensor) or self.mask.dtype != torch.bool:
            raise TypeError("mask must be a bool tensor [heads, q_blocks, k_blocks]")
        if self.mask.dim() != 3:
            raise ValueError(f"mask must be [heads, q_blocks, k_blocks], got {tuple(self.mask.shape)}")
        if self.window is not None and (not isinstance(self.window, int) or self.window < 0):
            raise ValueError(f"window must be an int >= 0 or None, got {self.window!r}")
        object.__setattr__(self, "mask", self.mask.detach().to("cpu").contiguous())
        if self.perm is not None:
            perm = self.perm.detach().to("cpu", torch.int64)
            if perm.dim() != 1 or not torch.equal(perm.sort().values, torch.arange(len(perm))):
                raise ValueError("perm must be a permutation of 0..len-1")
            if math.ceil(len(perm) / b) != self.q_blocks or self.q_blocks != self.k_blocks:
                raise ValueError(f"a layout with perm of length {len(perm)} needs square blocks")
            object.__setattr__(self, "perm", perm)

    @property
    def heads(self) -> int:
        return self.mask.shape[0]

    @property
    def q_blocks(self) -> int:
        return self.mask.shape[1]

    @property
    def k_blocks(self) -> int:
        return self.mask.shape[2]

    @property
    def density(self) -> float:
        """Fraction of block pairs computed (before element rules)."""
        return self.mask.float().mean().item()

    def index_tensors(self, device: torch.device | str = "cpu"):
        """``(row_ptr, col_idx, perm)`` for the kernels, on ``device`` (cached).

        ``row_ptr`` int32 ``[heads * q_blocks + 1]`` and ``col_idx`` int32 ``[nnz]``
        are the mask's compressed rows; ``perm`` is int64 or None.
        """
        device = torch.device(device)
        if device not in self._device_cache:
            flat = self.mask.reshape(-1, self.k_blocks)
            counts = flat.sum(1, dtype=torch.int32)
            row_ptr = torch.zeros(flat.shape[0] + 1, dtype=torch.int32)
            row_ptr[1:] = counts.cumsum(0)
            col_idx = flat.nonzero()[:, 1].to(torch.int32)
            perm = None if self.perm is None else self.perm.to(device)
            self._device_cache[device] = (row_ptr.to(device), col_idx.to(device), perm)
        return self._device_cache[device]

    def check_lengths(self, len_q: int, len_k: int) -> None:
        """Raises ValueError unless this layout fits queries and keys of these lengths."""
        b = self.block_size
        if (math.ceil(len_q / b), math.ceil(len_k / b)) != (self.q_blocks, self.k_blocks):
            raise ValueError(
                f"layout has {self.q_blocks} x {self.k_blocks} blocks of {b}, but len_q={len_q}, "
                f"len_k={len_k} need {math.ceil(len_q / b)} x {math.ceil(len_k / b)}: build it for "
                "these lengths"
            )
        if self.perm is not None and not len_q == len_k == len(self.perm):
            raise ValueError(f"this layout is for sequences of exactly {len(self.perm)} positions")

    def dense_mask(self, len_q: int, len_k: int) -> torch.Tensor:
        """The element mask it stands for: bool ``[heads, len_q, len_k]``, natural order."""
        self.check_lengths(len_q, len_k)
        b = self.block_size
        qi, ki = torch.arange(len_q), torch.arange(len_k)
        pq = qi if self.perm is None else self.perm
        pk = ki if self.perm is None else self.perm
        m = self.mask[:, qi // b][:, :, ki // b]
        d = pq[:, None] - pk[None, :]
        if self.causal:
            m = m & (d >= 0)
        if self.window is not None:
            m = m & (d.abs() <= self.window)
        if self.perm is None:
            return m
        out = torch.empty_like(m)
        out[:, pq[:, None], pk[None, :]] = m
        return out

    def __or__(self, other: BlockLayout) -> BlockLayout:
        return union(self, other)


def _blocks(length: int, block_size: int) -> torch.Tensor:
    return torch.arange(math.ceil(length / block_size))


def from_block_mask(
    mask: torch.Tensor, block_size: int = DEFAULT_BLOCK, *, causal: bool = False, window: int | None = None
) -> BlockLayout:
    """A layout from a bool block mask ``[q_blocks, k_blocks]`` or ``[heads, q_blocks, k_blocks]``."""
    if isinstance(mask, torch.Tensor) and mask.dim() == 2:
        mask = mask[None]
    return BlockLayout(block_size, mask, causal=causal, window=window)


def dense(len_q: int, len_k: int | None = None, *, block_size: int = DEFAULT_BLOCK) -> BlockLayout:
    """Every block: plain attention, as a layout."""
    len_k = len_q if len_k is None else len_k
    mask = torch.ones(1, len(_blocks(len_q, block_size)), len(_blocks(len_k, block_size)), dtype=torch.bool)
    return BlockLayout(block_size, mask)


def causal(seq_len: int, *, block_size: int = DEFAULT_BLOCK) -> BlockLayout:
    """Each position sees itself and every earlier one (the lower block triangle)."""
    i = _blocks(seq_len, block_size)
    return BlockLayout(block_size, (i[:, None] >= i[None, :])[None], causal=True)


def local(seq_len: int, window: int, *, block_size: int = DEFAULT_BLOCK, causal: bool = True) -> BlockLayout:
    """Each query sees keys at most ``window`` positions back (and ahead, if not causal).

    With ``causal`` (default) this is the Sparse Transformer's A(1) of the strided
    pattern with stride ``window``: ``max(0, i - window) <= j <= i``.
    """
    if not isinstance(window, int) or window < 0:
        raise ValueError(f"window must be an int >= 0, got {window!r}")
    i = _blocks(seq_len, block_size)
    lo, hi = i[:, None] * block_size, i[:, None] * block_size + block_size - 1  # query block span
    klo, khi = i[None, :] * block_size, i[None, :] * block_size + block_size - 1
    mask = (lo - khi <= window) & (klo - hi <= (0 if causal else window))
    return BlockLayout(block_size, mask[None], causal=causal, window=window)


def strided(seq_len: int, stride: int, *, block_size: int = DEFAULT_BLOCK) -> BlockLayout:
    """The Sparse Transformer's A(2): every ``stride``-th earlier position, ``(i - j) mod stride == 0``.

    Written on the transposed arrangement (see the module docstring), where it is block
    diagonal; needs ``seq_len`` a multiple of ``stride`` and ``seq_len / stride`` a
    multiple of ``block_size``.
    """
    if not isinstance(stride, int) or stride < 1:
        raise ValueError(f"stride must be an int >= 1, got {stride!r}")
    if seq_len % stride or (seq_len // stride) % block_size:
        raise ValueError(
            f"strided needs seq_len ({seq_len}) a multiple of stride ({stride}) and seq_len / stride a "
            f"multiple of block_size ({block_size}), so each residue class fills whole blocks"
        )
    rows = seq_len // stride
    perm = torch.arange(seq_len).view(rows, stride).t().reshape(-1)
    i = _blocks(seq_len, block_size)
    segment = i * block_size // rows  # the residue each block holds
    mask = (segment[:, None] == segment[None, :]) & (i[:, None] >= i[None, :])
    return BlockLayout(block_size, mask[None], causal=True, perm=perm)


def fixed(seq_len: int, stride: int, c: int, *, block_size: int = DEFAULT_BLOCK) -> BlockLayout:
    """The Sparse Transformer's fixed pattern, A(1) and A(2) merged (causal).

    Each query sees its own stride block and the last ``c`` positions of every earlier
    stride block ("summary" positions). ``stride`` and ``c`` must be multiples of
    ``block_size``, with ``c <= stride``.
    """
    if not isinstance(stride, int) or not isinstance(c, int) or not 0 < c <= stride:
        raise ValueError(f"need ints 0 < c <= stride, got stride={stride!r}, c={c!r}")
    if stride % block_size or c % block_size:
        raise ValueError(f"stride ({stride}) and c ({c}) must be multiples of block_size ({block_size})")
    i = _blocks(seq_len, block_size)
    start = i * block_size
    same = (start[:, None] // stride) == (start[None, :] // stride)
    summary = (start[None, :] % stride) >= stride - c
    mask = (same | summary) & (i[:, None] >= i[None, :])
    return BlockLayout(block_size, mask[None], causal=True)


def union(*layouts: BlockLayout) -> BlockLayout:
    """Blocks computed by any of the layouts; they must agree on everything but the mask."""
    if not layouts:
        raise ValueError("union needs at least one layout")
    first = layouts[0]
    for other in layouts[1:]:
        same_perm = (first.perm is None and other.perm is None) or (
            first.perm is not None and other.perm is not None and torch.equal(first.perm, other.perm)
        )
        if (
            other.block_size != first.block_size
            or other.mask.shape[1:] != first.mask.shape[1:]
            or (other.causal, other.window) != (first.causal, first.window)
            or not same_perm
        ):
            raise ValueError(
                "union needs layouts with the same block size, block counts, causal, window and perm; "
                "patterns on different orders (local and strided) go in different heads"
            )
    heads = max(layout.heads for layout in layouts)
    mask = torch.zeros(heads, first.q_blocks, first.k_blocks, dtype=torch.bool)
    for layout in layouts:
        if layout.heads not in (1, heads):
            raise ValueError(f"union of layouts with {layout.heads} and {heads} heads")
        mask |= layout.mask
    return BlockLayout(first.block_size, mask, causal=first.causal, window=first.window, perm=first.perm)
