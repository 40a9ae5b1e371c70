"""Conversion between pygen's int4 weights and PyTorch's own int4 layout, the one
``torch.ops.aten._weight_int4pack_mm_for_cpu`` (gpt-fast, torchao's int4 weight-only
path on CPU) multiplies with.

PyTorch's format: codes q in 0..15 packed by ``_convert_weight_to_int4pack_for_cpu``
(a tiling that depends on the CPU's SIMD width, so it is only ever read back through the
op) and ``scales_and_zeros [K / group, N, 2]`` with ``w = (q - 8) * scale + zero``, the
zero a float offset. pygen's ``w = s (q - z)`` is that with ``scale = s`` and
``zero = s (8 - z)``; the way back needs ``8 - zero / scale`` to be an integer in 0..15.
"""

from __future__ import annotations

import torch

from pygen.quant.weight import QuantizedWeight, _check_weight

_SCALE_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_DECODE_ROWS = 1024  # identity rows per decoding matmul (bounds its memory)


def _torch_ops():
    aten = torch.ops.aten
    if not hasattr(aten, "_convert_weight_to_int4pack_for_cpu"):
        raise RuntimeError(f"torch {torch.__version__} has no CPU int4pack ops (added in torch 2.5)")
    return aten._convert_weight_to_int4pack_for_cpu, aten._weight_int4pack_mm_for_cpu


def to_torch_int4pack(
    qweight: QuantizedWeight, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(packed, scales_and_zeros)`` for ``torch.ops.aten._weight_int4pack_mm_for_cpu(x,
    packed, qweight.group_size, scales_and_zeros)``, which then computes ``x @ W^T``.

    Args:
        qweight: an int4 :class:`QuantizedWeight` on CPU with ``out_features`` a multiple
            of 16 (PyTorch's tiling).
        dtype: of ``scales_and_zeros``, which must be x's dtype in the matmul. float32
            holds ``s (8 - z)`` exactly; bfloat16 / float16 may round the zero offset.

    Returns:
        uint8 ``packed`` (PyTorch's layout) and ``scales_and_zeros [K / group, N, 2]``.
    """
    _check_weight(qweight)
    if qweight.format != "int4":
        raise ValueError(f"qweight must be an int4 weight, got format {qweight.format!r}")
    if qweight.device.type != "cpu":
        raise ValueError(f"qweight must be on the CPU (PyTorch's int4pack CPU layout), got {qweight.device}")
    if dtype not in _SCALE_DTYPES:
        raise ValueError(f"dtype must be torch.float32, float16 or bfloat16, got {dtype}")
    n, k = qweight.shape
    if n % 16:
        raise ValueError(f"PyTorch's int4pack layout needs out_features to be a multiple of 16, got {n}")
    convert, _ = _torch_ops()
    codes = torch.ops.pygen.unpack_codes(qweight.packed, "int4", k).to(torch.int32)
    s = qweight.scales.float()
    z = 8.0 if qweight.zeros is None else qweight.zeros.float()
    scales_and_zeros = torch.stack([s, s * (8.0 - z)], -1).transpose(0, 1).contiguous().to(dtype)
    return convert(codes, 1), scales_and_zeros


def from_torch_int4pack(
    packed: torch.Tensor, scales_and_zeros: torch.Tensor, group_size: int
) -> QuantizedWeight:
    """The :class:`QuantizedWeight` of a PyTorch int4pack CPU weight (the inverse of
    :func:`to_torch_int4pack`). Scales keep ``scales_and_zeros``'s dtype; the weight is
    symmetric (no zero points) when every zero offset is 0.

    Args:
        packed: uint8 ``[N, K / 2]`` from ``_convert_weight_to_int4pack_for_cpu``.
        scales_and_zeros: ``[K / group_size, N, 2]`` float32, float16 or bfloat16; each
            zero offset must be ``scale * (8 - z)`` for an integer z in 0..15.
        group_size: 32, 64 or 128 (pygen's int4 groups).
    """
    if not isinstance(packed, torch.Tensor) or packed.dtype != torch.uint8 or packed.dim() != 2:
        raise ValueError("packed must be a uint8 [out_features, in_features / 2] tensor")
    n, k = packed.shape[0], packed.shape[1] * 2
    if group_size not in (32, 64, 128) or k % group_size:
        raise ValueError(f"group_size must be 32, 64 or 128 and divide in_features ({k}), got {group_size}")
    sz = scales_and_zeros
    if (
        not isinstance(sz, torch.Tensor)
        or sz.dtype not in _SCALE_DTYPES
        or sz.shape != (k // group_size, n, 2)
    ):
        raise ValueError(
            f"scales_and_zeros must be a float [{k // group_size}, {n}, 2] tensor, got "
            f"{tuple(sz.shape) if isinstance(sz, torch.Tensor) else type(sz).__name__}"
        )
    _, mm = _torch_ops()
    # The packed tiling is private to PyTorch's kernel: read the weight back through it.
    sz32 = sz.float()
    w = torch.cat(
        [mm(torch.eye(k)[i : i + _DECODE_ROWS], packed, group_size, sz32) for i in range(0, k, _DECODE_ROWS)]
    ).T
    s = sz32[..., 0].T.contiguous()
    zero = sz32[..., 1].T
    z = torch.where(s > 0, 8.0 - zero / torch.where(s > 0, s, 1.0), 8.0)
    if not ((z - z.round()).abs() < 1e-3).all() or not ((z.round() >= 0) & (z.round() <= 15)).all():
        raise ValueError(
            "scales_and_zeros holds zero offsets that are not scale * (8 - z), z an integer 0..15"
        )
    z = z.round()
    s_full, z_full = s.repeat_interleave(group_size, 1), z.repeat_interleave(group_size, 1)
    codes = torch.where(s_full > 0, torch.round(w / torch.where(s_full > 0, s_full, 1.0)) + z_full, z_full)
    codes = torch.ops.pygen.pack_codes(codes.clamp(0, 15).to(torch.uint8), "int4")
    zeros = None if (z == 8).all() else z.to(torch.uint8)
    return QuantizedWeight("int4", codes, s.to(sz.dtype), zeros, group_size)
