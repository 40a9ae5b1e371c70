"""Counter-based random numbers: Philox4x32-10 streams, the same on every device.

A stream is named by a 64-bit ``seed`` (the Philox key); ``offset`` skips that many
128-bit Philox blocks into it. Value ``i`` of a result comes from block
``offset + i // per_block`` (4 values a block, 2 for float64), so results do not depend
on the device, the thread count or the SIMD path, and a caller can continue a stream
where the last call stopped with ``offset += philox_blocks(numel, dtype)``.
"""

import functools
import operator
from collections.abc import Sequence

import torch

from pygen._build import _C

_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
_UINT64 = 1 << 64
_INTS = (int, torch.SymInt)


def resolve_seed(seed: int | None, generator: torch.Generator | None) -> int:
    """The int64 bit pattern of the stream's seed, from ``seed`` or drawn from ``generator``."""
    if (seed is None) == (generator is None):
        raise ValueError("pass exactly one of seed= (an int in [0, 2**64)) or generator= (a torch.Generator)")
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        # One 64-bit draw per call: a fresh, reproducible stream, and the generator advances.
        drawn = torch.randint(
            -(1 << 63), (1 << 63) - 1, (), dtype=torch.int64, generator=generator, device=generator.device
        )
        return int(drawn)
    if isinstance(seed, bool) or not hasattr(type(seed), "__index__"):
        raise TypeError(f"seed must be an int in [0, 2**64), got {type(seed).__name__}")
    seed = operator.index(seed)  # Python and NumPy integers
    if not 0 <= seed < _UINT64:
        raise ValueError(f"seed must be in [0, 2**64), got {seed}")
    return seed - _UINT64 if seed >= 1 << 63 else seed


def _size(shape: int | Sequence[int]) -> list[int]:
    if isinstance(shape, int):
        return [shape]
    if isinstance(shape, (tuple, list)) and all(isinstance(s, _INTS) for s in shape):
        return list(shape)  # torch.Size is a tuple
    raise TypeError(f"shape must be an int or a sequence of ints, got {shape!r}")


@functools.lru_cache(maxsize=64)
def _device(device: str | int) -> torch.device:
    return torch.device(device)


def _check(dtype: torch.dtype, offset: int) -> None:
    if dtype not in _DTYPES:
        raise TypeError(f"dtype must be one of float32, float64, float16, bfloat16, got {dtype}")
    if isinstance(offset, int) and not 0 <= offset < 1 << 63:
        raise ValueError(f"offset must be an int in [0, 2**63) (Philox blocks to skip), got {offset}")


def _call(op, eager, shape, seed, offset, generator, dtype, device) -> torch.Tensor:
    _check(dtype, offset)
    device = device if isinstance(device, torch.device) else _device(device)
    args = (_size(shape), resolve_seed(seed, generator), offset, dtype, device)
    # torch.compile traces the registered op; eager calls skip torch.ops' overhead.
    return op(*args) if torch.compiler.is_compiling() else eager(*args)


def rand(
    shape: int | Sequence[int],
    *,
    seed: int | None = None,
    offset: int = 0,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Uniform random numbers in the open interval (0, 1).

    Args:
        shape: output shape (an int or a sequence of ints, each >= 0).
        seed: 64-bit stream key, an int in [0, 2**64). Give ``seed`` or ``generator``.
        offset: Philox blocks of the stream to skip (see :func:`philox_blocks`).
        generator: a ``torch.Generator`` to draw the seed from (one draw per call,
            offset 0); it advances, so repeated calls differ and replay after
            ``generator.manual_seed``. A CUDA generator costs a device sync per
            call; under ``torch.compile`` pass ``seed`` instead.
        dtype: float32 (default), float64, float16 or bfloat16.
        device: ``"cpu"`` or a CUDA device.

    Returns:
        Tensor of ``shape`` and ``dtype``. Each value uses the format's full
        significand: p random bits (24 for float32, 53 for float64, 11 for float16, 8
        for bfloat16) pick one of 2^p equal bins of (0, 1), represented by its midpoint
        rounded toward zero, so values lie in [2^-(p+1), 1 - 2^-p] and are never 0 or 1.
        Bit-identical on every device, thread count and SIMD path.
    """
    return _call(torch.ops.pygen.rand, _C.rand, shape, seed, offset, generator, dtype, device)


def randn(
    shape: int | Sequence[int],
    *,
    seed: int | None = None,
    offset: int = 0,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Standard normal random numbers (Box-Muller on Philox4x32-10 streams).

    Arguments as :func:`rand`. Every rounding of the arithmetic is fixed (pygen's own
    log, sin and cos), so results are bit-identical on CPU and CUDA. float16 and
    bfloat16 are the float32 values rounded to nearest even; float32 tails reach
    |z| = 6.66 (31-bit radius input), float64 tails |z| = 8.65 (53-bit).

    Returns:
        Tensor of ``shape`` and ``dtype``.
    """
    return _call(torch.ops.pygen.randn, _C.randn, shape, seed, offset, generator, dtype, device)


def philox_blocks(numel: int, dtype: torch.dtype = torch.float32) -> int:
    """Philox blocks that :func:`rand`/:func:`randn` consume for ``numel`` values of ``dtype``.

    Pass ``offset + philox_blocks(n, dtype)`` to the next call to continue the stream.
    Blocks are whole (4 values each, 2 for float64): the unused values of a partial last
    block are skipped, so two draws of 10 float32 values are not one draw of 20.
    """
    _check(dtype, 0)
    per_block = 2 if dtype == torch.float64 else 4
    return -(-numel // per_block)


def philox4x32_10(counter: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    """The raw Philox4x32-10 generator (Salmon et al., 2011), one block per row.

    Args:
        counter: int32 ``[..., 4]``, the 128-bit counters as uint32 bit patterns.
        key: int32 ``[..., 2]``, the 64-bit keys, same leading shape and device.

    Returns:
        int32 ``[..., 4]``: the output words as uint32 bit patterns
        (``out.view(torch.uint32)`` or ``out.numpy().view("uint32")`` to read them).
    """
    return torch.ops.pygen.philox4x32_10(counter, key)


@torch.library.register_fake("pygen::rand")
def _rand_fake(size, seed, offset, dtype, device):
    return torch.empty(size, dtype=dtype, device=device)


@torch.library.register_fake("pygen::randn")
def _randn_fake(size, seed, offset, dtype, device):
    return torch.empty(size, dtype=dtype, device=device)


@torch.library.register_fake("pygen::philox4x32_10")
def _philox_fake(counter, key):
    torch._check(counter.shape[-1] == 4, lambda: "counter must have shape [..., 4]")
    torch._check(key.shape[-1] == 2, lambda: "key must have shape [..., 2]")
    return torch.empty_like(counter, memory_format=torch.contiguous_format)
