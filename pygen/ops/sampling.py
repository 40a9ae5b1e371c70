"""Exact categorical sampling on Philox streams.

Each row ``[..., V]`` is drawn by inversion with a 53-bit uniform: softmax weights in
float32, their sums in float64, so a category of probability ``p`` is drawn with
probability ``p`` (to float32's relative rounding of its weight, ~1e-7 of ``p``) far into
the tail, where Gumbel-max with float32 noise truncates it (Zheng et al., 2024), and
without float64 logits. Row ``r`` of a call uses Philox block ``offset`` of the
substream ``r`` of its seed, so rows never share randomness and a call at ``offset + 1``
draws afresh.
"""

import contextlib
from collections.abc import Iterator

import torch

from pygen._build import _C
from pygen.ops.random import resolve_seed


def sample_categorical(
    logits: torch.Tensor,
    *,
    temperature: float | torch.Tensor = 1.0,
    top_k: int | torch.Tensor | None = None,
    top_p: float | torch.Tensor | None = None,
    min_p: float | torch.Tensor | None = None,
    seed: int | torch.Tensor | None = None,
    offset: int = 0,
    generator: torch.Generator | None = None,
    return_logprob: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Draws one category per row of ``softmax(logits / temperature)``.

    Args:
        logits: ``[..., V]`` float32, bfloat16, float16 (or float64, read as float32).
            NaN or +inf raise; -inf excludes a category; a row of all -inf raises (on
            a GPU without debug checks: a device-side assertion, see below).
        temperature: a float or a tensor broadcastable to ``logits.shape[:-1]`` (per
            row); finite and >= 0, 0 meaning greedy (the first maximum). A temperature
            so small that ``max(logits) / temperature`` overflows float32 acts as 0:
            every other category's probability underflows to 0 there anyway.
        top_k: keep the k most probable categories (and any tied with the k-th); an
            int >= 1 or a per-row int64 tensor; None keeps all.
        top_p: then keep the most probable categories that hold at least ``top_p`` of
            the remaining mass (nucleus; ties at the cut are kept); in (0, 1], or a
            per-row float tensor; None keeps all.
        min_p: keep only categories with ``p >= min_p * max(p)``; in [0, 1], or a
            per-row float tensor; None keeps all. Top-k and min-p cut first, top-p
            then applies to what they keep; all after temperature, none sorts.
        seed: an int in [0, 2**64) for all rows, or an int64 tensor of per-row seeds
            (uint64 bit patterns) broadcastable to ``logits.shape[:-1]``.
        offset: Philox block of each row's substream; use a new offset per step.
        generator: a ``torch.Generator`` to draw one seed from, instead of ``seed``.
        return_logprob: also return the log-probability of each drawn category under
            the tempered, truncated distribution (0 for greedy rows).

    Bad input is never sampled silently. The CPU raises ``ValueError`` naming the
    argument or row. On a GPU the call never synchronizes by default (a sampling loop
    can be captured in a CUDA graph): the kernel checks the per-row parameters and the
    logits, and a bad row fails a device-side assertion whose message on stderr names
    the row and cause; the next synchronizing call raises "device-side assert
    triggered", and the CUDA context is lost. With :func:`pygen.set_debug_checks` the
    GPU raises the CPU's ``ValueError`` instead, at one synchronization per call.

    Returns:
        int64 ``logits.shape[:-1]`` category indices, and with ``return_logprob`` a
        float32 tensor of the same shape.
    """
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"logits must be a tensor, got {type(logits).__name__}")
    if logits.dim() == 0:
        raise ValueError("logits must have shape [..., V], got a scalar")
    rows = logits.shape[:-1]
    device = logits.device
    temp = _per_row(temperature, 1.0, torch.float32, "temperature", rows, device)
    k = _per_row(top_k, logits.shape[-1], torch.int64, "top_k", rows, device)
    p = _per_row(top_p, 1.0, torch.float32, "top_p", rows, device)
    m = _per_row(min_p, 0.0, torch.float32, "min_p", rows, device)
    seeds = _row_seeds(seed, generator, rows, device)
    _check_offset(offset)
    token, logprob = torch.ops.pygen.sample_categorical(logits, temp, k, p, m, seeds, offset)
    return (token, logprob) if return_logprob else token


def _row_seeds(seed, generator, rows, device) -> torch.Tensor:
    """One int64 seed per row: a per-row seed tensor broadcast, or one seed (an int, or
    drawn from ``generator``) for all rows."""
    if not isinstance(seed, torch.Tensor):
        return torch.full(rows, resolve_seed(seed, generator), dtype=torch.int64, device=device)
    if generator is not None:
        raise ValueError("pass exactly one of seed= or generator=")
    if seed.dtype != torch.int64:
        raise TypeError(f"a seed tensor must be int64, got {seed.dtype}")
    try:
        return seed.to(device).expand(rows).contiguous()
    except RuntimeError:
        raise ValueError(f"seed of shape {tuple(seed.shape)} does not broadcast to {tuple(rows)}") from None


def _check_offset(offset) -> None:
    if isinstance(offset, bool) or not isinstance(offset, int) or not 0 <= offset < 1 << 63:
        raise ValueError(f"offset must be an int in [0, 2**63), got {offset!r}")


def _per_row(value, default, dtype, name, rows, device) -> torch.Tensor:
    """A scalar or tensor parameter as one value per row (checked in range by the op)."""
    if value is None:
        value = default
    if isinstance(value, bool) or not isinstance(value, int | float | torch.Tensor):
        raise TypeError(f"{name} must be a number or a tensor, got {type(value).__name__}")
    if isinstance(value, float) and dtype == torch.int64:
        raise TypeError(f"{name} must be an int, got {value!r}")
    if not isinstance(value, torch.Tensor):
        return torch.full(rows, value, dtype=dtype, device=device)
    if dtype == torch.int64 and value.is_floating_point():
        raise TypeError(f"{name} must be an int64 tensor, got {value.dtype}")
    try:
        return value.to(device=device, dtype=dtype).expand(rows).contiguous()
    except RuntimeError:
        raise ValueError(
            f"{name} of shape {tuple(value.shape)} does not broadcast to {tuple(rows)}"
        ) from None


@contextlib.contextmanager
def _cuda_split(blocks: int) -> Iterator[None]:
    """Internal test knob, not a public API: how the CUDA kernels of
    :func:`sample_categorical` spread a row over thread blocks, inside the ``with``.

    ``0`` (the default) chooses from the rows, the vocabulary and the SM count (few long
    rows are split so that every SM reads); ``1`` forces one block per row; ``n >= 2``
    forces the split kernels with ``min(n, ceil(V / 512))`` blocks per row, each a range
    of whole 512-category chunks (even a single block). Tokens and log-probabilities are
    the same bit for bit whatever the choice, which is what the tests check with it.
    Process-wide; the CPU kernel ignores it.
    """
    if isinstance(blocks, bool) or not isinstance(blocks, int) or blocks < 0:
        raise ValueError(f"blocks must be an int >= 0, got {blocks!r}")
    before = _C._categorical_split()
    _C._set_categorical_split(blocks)
    try:
        yield
    finally:
        _C._set_categorical_split(before)


@torch.library.register_fake("pygen::sample_categorical")
def _sample_categorical_fake(logits, temperature, top_k, top_p, min_p, seed, offset):
    rows = logits.shape[:-1]
    return (
        logits.new_empty(rows, dtype=torch.int64),
        logits.new_empty(rows, dtype=torch.float32),
    )
