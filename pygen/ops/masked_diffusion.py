"""Masked-diffusion sampling: fused steps for absorbing (mask) diffusion LMs, and the
sampling loops that call them.

The steps read ``logits [B, L, V]`` (one pass over the logits of the masked positions)
and the current tokens ``x [B, L]``, and return the new tokens:

- :func:`unmask_ancestral`: MDLM's ancestral update (Sahoo et al., 2024).
- :func:`unmask_by_confidence`: LLaDA's low-confidence remasking (Nie et al., 2025).
- :func:`unmask_first_hitting`: the first-hitting sampler's step (Zheng et al., 2024), with
  :func:`first_hitting_time` for the time of the next unmasking.

Tokens are drawn as :func:`pygen.ops.sample_categorical` draws them: by inversion of
``softmax(logits / temperature)`` with a 53-bit uniform (float32 weights, float64 sums),
exact far into the tail where float32 Gumbel noise is not, and with the mask token's
logit left out, so the mask token is never drawn. Position ``l`` of row ``b`` uses Philox
block ``offset`` of substream ``b * L + l`` of its row's seed (the first-hitting step:
substream ``b``), so results do not depend on the device's thread count; use a new
``offset`` per step.

Bad input (a token of ``x`` out of range, NaN or +inf logits, a position with nothing
to draw, a per-row parameter out of range) raises ``ValueError`` naming the row and
position on the CPU. On a GPU the steps never synchronize by default: their kernels
check, and a bad position fails a device-side assertion with that message on stderr
(the CUDA context is then lost, as with :func:`pygen.ops.sample_categorical`);
:func:`pygen.set_debug_checks` makes the GPU raise the ``ValueError`` instead, at one
synchronization per step.

The loops (:func:`sample_ancestral`, :func:`sample_by_confidence`,
:func:`sample_first_hitting`) take a time-agnostic denoiser ``model(x) -> logits``, as
RADD and Zheng et al. show masked diffusion models can be, and cache like RADD: when a
step unmasks nothing, the sequence is unchanged and so are the logits, so the network is
not run again.
"""

from collections.abc import Callable

import torch

from pygen.ops.random import philox4x32_10, resolve_seed
from pygen.ops.sampling import _check_offset, _per_row, _row_seeds

_CONFIDENCES = ("probability", "margin", "random")


def _step_args(logits, x, mask_id, temperature, seed, offset, generator):
    """The arguments every step shares, checked and made per row (the op checks ranges)."""
    if not isinstance(logits, torch.Tensor) or not isinstance(x, torch.Tensor):
        raise TypeError("logits and x must be tensors")
    if logits.dim() != 3:
        raise ValueError(f"logits must have shape [batch, length, vocab], got {tuple(logits.shape)}")
    if isinstance(mask_id, bool) or not isinstance(mask_id, int):
        raise TypeError(f"mask_id must be an int, got {type(mask_id).__name__}")
    rows = logits.shape[:1]
    temp = _per_row(temperature, 1.0, torch.float32, "temperature", rows, logits.device)
    seeds = _row_seeds(seed, generator, rows, logits.device)
    _check_offset(offset)
    return rows, temp, seeds


def unmask_ancestral(
    logits: torch.Tensor,
    x: torch.Tensor,
    mask_id: int,
    alpha_t: float | torch.Tensor,
    alpha_s: float | torch.Tensor,
    *,
    temperature: float | torch.Tensor = 1.0,
    seed: int | torch.Tensor | None = None,
    offset: int = 0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One ancestral step of absorbing diffusion (MDLM), from time t to the earlier s.

    Each masked position is unmasked with probability
    ``(alpha_s - alpha_t) / (1 - alpha_t)`` (1 when ``alpha_t`` = 1) and then gets a
    token drawn from ``softmax(logits / temperature)`` without the mask token; unmasked
    positions are carried over. ``alpha`` is the probability that a token is not masked
    (1 - the masked fraction); ``alpha_s = 1`` unmasks everything.

    Args:
        logits: ``[B, L, V]`` float32, bfloat16, float16 (or float64, read as float32).
            Every masked position's logits are read and checked: NaN or +inf raise, and
            so does a position whose logits are -inf for every token but the mask's
            (on a GPU without debug checks: a device-side assertion, see the module
            docstring). Unmasked positions' logits are not read.
        x: int64 ``[B, L]`` current tokens, each in ``[0, V)``.
        mask_id: the mask token, in ``[0, V)``.
        alpha_t: the current time's alpha, in [0, 1]: a float, or a tensor
            broadcastable to ``[B]`` (per row).
        alpha_s: the next time's alpha, in ``[alpha_t, 1]``, likewise.
        temperature: finite and >= 0, a float or per-row tensor; 0 is greedy (the first
            maximum), and so is a temperature so small that the logits over it overflow.
        seed: an int in [0, 2**64) for all rows, or an int64 tensor of per-row seeds
            broadcastable to ``[B]``.
        offset: the Philox block of each position's substream; a new one per step.
        generator: a ``torch.Generator`` to draw one seed from, instead of ``seed``.

    Returns:
        int64 ``[B, L]``, the tokens at time s.
    """
    rows, temp, seeds = _step_args(logits, x, mask_id, temperature, seed, offset, generator)
    a_t = _per_row(alpha_t, None, torch.float64, "alpha_t", rows, logits.device)
    a_s = _per_row(alpha_s, None, torch.float64, "alpha_s", rows, logits.device)
    return torch.ops.pygen.unmask_ancestral(logits, x, mask_id, a_t, a_s, temp, seeds, offset)


def unmask_by_confidence(
    logits: torch.Tensor,
    x: torch.Tensor,
    mask_id: int,
    k: int | torch.Tensor,
    *,
    confidence: str = "probability",
    temperature: float | torch.Tensor = 1.0,
    seed: int | torch.Tensor | None = None,
    offset: int = 0,
    generator: torch.Generator | None = None,
    return_confidence: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """LLaDA's low-confidence remasking: unmask the ``k`` most confident masked positions.

    Every masked position draws a candidate token from
    ``softmax(logits / temperature)`` without the mask token (the first maximum at
    temperature 0) and gets a confidence; in each row the ``k`` masked positions of
    highest confidence take their candidates (ties: the earlier position), the others
    stay masked. Confidences are taken under ``softmax(logits)`` (no temperature, the
    mask token excluded; LLaDA normalizes over the mask token too, which is the same
    when its logit is -inf):

    - ``"probability"``: the candidate's probability (LLaDA's ``low_confidence``);
    - ``"margin"``: the top probability minus the second (Dream's margin);
    - ``"random"``: a uniform random number (LLaDA's ``random``): a uniformly random
      choice of k masked positions.

    For LLaDA's semi-autoregressive blocks, pass the current block's slice of logits and x.

    Args:
        logits: ``[B, L, V]``, as in :func:`unmask_ancestral` (masked positions read
            and checked, the others not).
        x: int64 ``[B, L]`` current tokens in ``[0, V)``.
        mask_id: the mask token, in ``[0, V)``.
        k: positions to unmask per row, in ``[0, L]``: an int or a tensor broadcastable
            to ``[B]``; a row with fewer masked positions unmasks them all.
        confidence: ``"probability"``, ``"margin"`` or ``"random"``.
        temperature, seed, offset, generator: as in :func:`unmask_ancestral`.
        return_confidence: also return the confidences.

    Returns:
        int64 ``[B, L]`` new tokens; with ``return_confidence`` also float32 ``[B, L]``
        confidences of the masked positions (-inf at the positions that were unmasked).
    """
    rows, temp, seeds = _step_args(logits, x, mask_id, temperature, seed, offset, generator)
    if confidence not in _CONFIDENCES:
        raise ValueError(f"confidence must be one of {_CONFIDENCES}, got {confidence!r}")
    k = _per_row(k, None, torch.int64, "k", rows, logits.device)
    out, score = torch.ops.pygen.unmask_by_confidence(logits, x, mask_id, k, confidence, temp, seeds, offset)
    return (out, score) if return_confidence else out


def unmask_first_hitting(
    logits: torch.Tensor,
    x: torch.Tensor,
    mask_id: int,
    *,
    temperature: float | torch.Tensor = 1.0,
    seed: int | torch.Tensor | None = None,
    offset: int = 0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One step of the first-hitting sampler: in each row, one masked position chosen
    uniformly at random gets a token drawn from ``softmax(logits / temperature)``
    without the mask token. Rows with no masked position are returned unchanged.

    Only the chosen positions' logits are read (and checked for NaN, +inf and all -inf).
    :func:`first_hitting_time` draws the time at which this unmasking happens.

    Args:
        logits, x, mask_id, temperature, seed, offset, generator: as in
            :func:`unmask_ancestral`; row ``b`` uses substream ``b`` of its seed.

    Returns:
        int64 ``[B, L]`` new tokens: at most one position per row changed.
    """
    _, temp, seeds = _step_args(logits, x, mask_id, temperature, seed, offset, generator)
    return torch.ops.pygen.unmask_first_hitting(logits, x, mask_id, temp, seeds, offset)


def first_hitting_time(
    t: float | torch.Tensor,
    num_masked: torch.Tensor,
    *,
    alpha: Callable[[torch.Tensor], torch.Tensor] | None = None,
    alpha_inverse: Callable[[torch.Tensor], torch.Tensor] | None = None,
    seed: int | None = None,
    offset: int = 0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The time of the next unmasking in the first-hitting sampler (Zheng et al., 2024).

    At time ``t`` with ``n`` masked tokens, each masked token was masked at a time whose
    distribution given t is ``P(tau <= s) = (1 - alpha(s)) / (1 - alpha(t))`` for s <= t,
    independently; the next unmasking (going back in time) is the latest of the n, so
    ``P(next <= s) = ((1 - alpha(s)) / (1 - alpha(t)))^n``. Inverting with a uniform u:
    ``s = alpha^-1(1 - (1 - alpha(t)) u^(1/n))``, which for the linear schedule
    ``alpha(t) = 1 - t`` (the default) is ``s = t u^(1/n)``.

    Args:
        t: current times in (0, 1], a float or a tensor of shape ``[B]``.
        num_masked: int64 ``[B]``, masked tokens per row (``(x == mask_id).sum(-1)``).
        alpha, alpha_inverse: another schedule, as a pair of float64 tensor functions
            (alpha decreasing from alpha(0) = 1); both or neither.
        seed, offset, generator: the stream of the uniforms: row b uses Philox block
            ``offset`` of substream ``2**63 + b``, which no step uses, so the steps' seed
            and offset can be passed as they are.

    Returns:
        float64 ``[B]`` times s <= t, and 0 for rows with nothing masked.
    """
    if (alpha is None) != (alpha_inverse is None):
        raise ValueError("pass both alpha= and alpha_inverse=, or neither (the linear schedule)")
    if not isinstance(num_masked, torch.Tensor) or num_masked.dim() != 1:
        raise ValueError("num_masked must be a 1-D tensor of masked tokens per row")
    n = num_masked.to(torch.float64)
    t = torch.as_tensor(t, dtype=torch.float64, device=n.device).expand_as(n)
    u = _time_uniforms(n.shape[0], resolve_seed(seed, generator), offset, n.device)
    root = torch.exp(torch.log(u) / n.clamp(min=1))  # u^(1/n), accurate for large n
    s = t * root if alpha is None else alpha_inverse(1 - (1 - alpha(t)) * root)
    return torch.where(n > 0, s, 0.0)


def _time_uniforms(rows: int, seed: int, offset: int, device) -> torch.Tensor:
    """53-bit uniforms (as ``pygen.ops.rand`` makes them) from Philox block ``offset`` of
    substreams 2**63 + b, b < rows: words 2-3 of the counter carry the substream."""
    _check_offset(offset)
    mask32 = 0xFFFFFFFF

    def words(values: list[int]) -> list[int]:  # uint32 bit patterns as int32 values
        return [v - (1 << 32) if v >= 1 << 31 else v for v in values]

    counter = torch.tensor(
        [words([offset & mask32, offset >> 32, b & mask32, (b >> 32) | 1 << 31]) for b in range(rows)],
        dtype=torch.int32,
    ).reshape(rows, 4)
    seed &= (1 << 64) - 1
    key = torch.tensor(words([seed & mask32, seed >> 32]), dtype=torch.int32).expand(rows, 2)
    w = philox4x32_10(counter.to(device), key.to(device)).long() & mask32
    k = (w[:, 0] << 21) | (w[:, 1] >> 11)  # 53 bits
    # Bin k of 2^53 as its midpoint rounded toward zero (both terms exact in float64).
    return (2 * k + (k < 1 << 52).long()).double() * 2.0**-54


class CachedDenoiser:
    """RADD's caching for a time-agnostic denoiser: ``model(x)`` is only run again when
    ``x`` changed since the last call (a step that unmasked nothing), else the last
    logits are returned. ``calls`` counts the network evaluations."""

    def __init__(self, model: Callable[[torch.Tensor], torch.Tensor]):
        self.model = model
        self.calls = 0
        self._x: torch.Tensor | None = None
        self._logits: torch.Tensor | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self._x is None or self._x.shape != x.shape or not torch.equal(self._x, x):
            self._logits = self.model(x)
            self._x = x.clone()
            self.calls += 1
        return self._logits


def _loop_seed(seed, generator) -> int | torch.Tensor:
    """The loops' seed: a per-row tensor as given, else one int for every step."""
    return seed if isinstance(seed, torch.Tensor) else resolve_seed(seed, generator)


def sample_ancestral(
    model: Callable[[torch.Tensor], torch.Tensor] | CachedDenoiser,
    x: torch.Tensor,
    mask_id: int,
    steps: int,
    *,
    alpha: Callable[[float], float] = lambda t: 1.0 - t,
    temperature: float | torch.Tensor = 1.0,
    seed: int | torch.Tensor | None = None,
    offset: int = 0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """MDLM's ancestral sampler: ``steps`` updates from t = 1 to t = 0 on a uniform time
    grid with schedule ``alpha`` (default linear, ``1 - t``); the last step unmasks every
    remaining position. ``model`` is called through :class:`CachedDenoiser` (pass one to
    read its ``calls``). Step i uses Philox offset ``offset + i``. Returns ``[B, L]`` tokens."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    denoiser = model if isinstance(model, CachedDenoiser) else CachedDenoiser(model)
    seed = _loop_seed(seed, generator)
    for i in range(steps):
        t, s = 1.0 - i / steps, 1.0 - (i + 1) / steps
        x = unmask_ancestral(
            denoiser(x), x, mask_id, alpha(t), alpha(s), temperature=temperature, seed=seed, offset=offset + i
        )
    return x


def unmask_schedule(num_masked: torch.Tensor, steps: int) -> torch.Tensor:
    """LLaDA's ``get_num_transfer_tokens``: int64 ``[B, steps]`` positions to unmask per
    step, ``num_masked // steps`` each and one more in the first ``num_masked % steps``."""
    base = (num_masked // steps)[:, None]
    extra = torch.arange(steps, device=num_masked.device)[None, :] < (num_masked % steps)[:, None]
    return base + extra.long()


def sample_by_confidence(
    model: Callable[[torch.Tensor], torch.Tensor] | CachedDenoiser,
    x: torch.Tensor,
    mask_id: int,
    steps: int,
    *,
    confidence: str = "probability",
    temperature: float | torch.Tensor = 0.0,
    seed: int | torch.Tensor | None = None,
    offset: int = 0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """LLaDA's sampler: ``steps`` rounds of :func:`unmask_by_confidence`, unmasking the
    positions of :func:`unmask_schedule` per round (greedy by default, as LLaDA). Rounds
    that unmask nothing in any row (fewer masked positions than steps) are skipped.
    Returns ``[B, L]`` tokens with nothing masked."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    denoiser = model if isinstance(model, CachedDenoiser) else CachedDenoiser(model)
    seed = _loop_seed(seed, generator)
    k = unmask_schedule((x == mask_id).sum(-1), steps)
    for i in range(steps):
        if not k[:, i].any():  # nothing to unmask: no step, no network call
            continue
        x = unmask_by_confidence(
            denoiser(x),
            x,
            mask_id,
            k[:, i],
            confidence=confidence,
            temperature=temperature,
            seed=seed,
            offset=offset + i,
        )
    return x


def sample_first_hitting(
    model: Callable[[torch.Tensor], torch.Tensor] | CachedDenoiser,
    x: torch.Tensor,
    mask_id: int,
    *,
    temperature: float | torch.Tensor = 1.0,
    seed: int | torch.Tensor | None = None,
    offset: int = 0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The first-hitting sampler for a time-agnostic model: one token per row per step
    (:func:`unmask_first_hitting`) until nothing is masked, so at most L network calls
    whatever the time grid. (A time-conditioned model needs the times:
    :func:`first_hitting_time`.) Step i uses Philox offset ``offset + i``."""
    denoiser = model if isinstance(model, CachedDenoiser) else CachedDenoiser(model)
    seed = _loop_seed(seed, generator)
    for i in range(x.shape[-1]):
        if not (x == mask_id).any():
            break
        x = unmask_first_hitting(
            denoiser(x), x, mask_id, temperature=temperature, seed=seed, offset=offset + i
        )
    return x


@torch.library.register_fake("pygen::unmask_ancestral")
def _unmask_ancestral_fake(logits, x, mask_id, alpha_t, alpha_s, temperature, seed, offset):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


@torch.library.register_fake("pygen::unmask_by_confidence")
def _unmask_by_confidence_fake(logits, x, mask_id, k, confidence, temperature, seed, offset):
    return (
        torch.empty_like(x, memory_format=torch.contiguous_format),
        x.new_empty(x.shape, dtype=torch.float32),
    )


@torch.library.register_fake("pygen::unmask_first_hitting")
def _unmask_first_hitting_fake(logits, x, mask_id, temperature, seed, offset):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


__all__ = [
    "CachedDenoiser",
    "first_hitting_time",
    "sample_ancestral",
    "sample_by_confidence",
    "sample_first_hitting",
    "unmask_ancestral",
    "unmask_by_confidence",
    "unmask_first_hitting",
    "unmask_schedule",
]
