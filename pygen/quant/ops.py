"""Fused dequantize-matmul with packed low-bit weights, and int8 activations for ternary
weights (W1.58A8)."""

import torch

from pygen.quant.weight import QuantizedWeight, _check_weight

INT8_MAX = 127
COMPUTE_DTYPES = (torch.bfloat16, torch.float16)  # for float32 x (float16 on CUDA only)


def matmul(
    x: torch.Tensor,
    qweight: QuantizedWeight,
    bias: torch.Tensor | None = None,
    *,
    x_scale: torch.Tensor | None = None,
    compute_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """``x @ W^T (+ bias)`` with ``W`` dequantized inside the kernel (never materialized).

    Args:
        x: ``[..., in_features]`` float32, bfloat16 or float16 (accumulation in float32);
            or int8 activations from :func:`quantize_activations` for a ternary weight.
        qweight: a :class:`QuantizedWeight` ``[out_features, in_features]``.
        bias: ``[out_features]`` of x's dtype (float32 for int8 x), or None.
        x_scale: with int8 ``x`` only: float32 ``[...]``, x's dequantization scale per row.
        compute_dtype: the dtype the products run in. None (the default) or x's dtype:
            x's own. For float32 x, ``torch.bfloat16`` (and on CUDA ``torch.float16``)
            runs the kernels of 16-bit x (on the CPU with AVX512-BF16 the bfloat16 GEMM,
            from 5 rows of x: the GEMV below is bound by the weight bytes anyway), x
            rounded to that dtype inside the kernel where it is copied or loaded (no
            converted copy), the sums, output and bias float32: the result is
            ``matmul(x.to(compute_dtype), qweight)`` before its final rounding to 16 bits,
            plus the float32 bias. Accuracy: x's rounding (bfloat16: relative 2^-9 an
            element; on the 16-bit GEMMs W's too, as for 16-bit x) gives a mean relative
            error against float32 compute of 1.7e-3 to 2.4e-3 for bfloat16 and 2.0e-4 to
            2.7e-4 for float16, where x above 65504 overflows.

    Returns:
        ``[..., out_features]`` in x's dtype (float32 for int8 x: ``sum(x_q w_q) * x_scale *
        w_scale``, the integer sum exact).

    Raises:
        ValueError: ``compute_dtype`` other than None, x's dtype, or for float32 x bfloat16
            (float16 on CUDA); any ``compute_dtype`` with int8 x.
    """
    _check_weight(qweight)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a tensor, got {type(x).__name__}")
    if compute_dtype is not None and not isinstance(compute_dtype, torch.dtype):
        raise TypeError(f"compute_dtype must be a torch.dtype or None, got {type(compute_dtype).__name__}")
    if x.dtype == torch.int8:
        if compute_dtype is not None:
            raise ValueError(f"compute_dtype is for float x only (int8 x sums integers), got {compute_dtype}")
        if qweight.format != "ternary":
            raise ValueError(f"int8 x needs a ternary weight, got format {qweight.format!r}")
        if x_scale is None:
            raise ValueError("int8 x needs x_scale (see pygen.quant.quantize_activations)")
        return torch.ops.pygen.quant_matmul_int8(x, x_scale, qweight.packed, qweight.scales, bias)
    if x_scale is not None:
        raise ValueError(f"x_scale is for int8 x only, got x of dtype {x.dtype}")
    return torch.ops.pygen.quant_matmul(
        x,
        qweight.packed,
        qweight.scales,
        qweight.zeros,
        qweight.format,
        qweight.group_size,
        bias,
        compute_dtype=compute_dtype,
    )


def quantize_activations(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row (per-token) absmax int8 quantization, as BitNet b1.58 does it.

    Args:
        x: ``[..., K]`` float tensor.

    Returns:
        ``(x_q, x_scale)``: int8 ``[..., K]`` with ``x_q = round(x / x_scale)`` in [-127, 127],
        and float32 ``[...]`` ``x_scale = max|x| / 127`` per row (1 for an all-zero row).
    """
    x = x.float()
    amax = x.abs().amax(dim=-1)
    scale = torch.where(amax > 0, amax / INT8_MAX, torch.ones_like(amax))
    x_q = torch.round(x / scale[..., None]).clamp_(-INT8_MAX, INT8_MAX).to(torch.int8)
    return x_q, scale


@torch.library.register_fake("pygen::quantize_weight")
def _quantize_weight_fake(weight, format, group_size, symmetric, scale_dtype, per_channel):
    n, k = weight.shape
    codes = weight.new_empty((n, k), dtype=torch.uint8)
    no_zeros = weight.new_empty((0,), dtype=torch.uint8)
    if format == "ternary":
        return codes, weight.new_empty((n if per_channel else 1,), dtype=torch.float32), no_zeros
    if format == "mxfp4":
        return codes, weight.new_empty((n, k // 32), dtype=torch.uint8), no_zeros
    scales = weight.new_empty((n, k // group_size), dtype=scale_dtype)
    zeros = no_zeros if symmetric else weight.new_empty((n, k // group_size), dtype=torch.uint8)
    return codes, scales, zeros


def _row_bytes(layout, cols):
    return {"int4": cols // 2, "int2": cols // 4}.get(layout, (cols + 4) // 5)


@torch.library.register_fake("pygen::pack_codes")
def _pack_codes_fake(codes, layout):
    return codes.new_empty((codes.shape[0], _row_bytes(layout, codes.shape[1])))


@torch.library.register_fake("pygen::unpack_codes")
def _unpack_codes_fake(packed, layout, cols):
    return packed.new_empty((packed.shape[0], cols))


def _in_features(packed, format):
    return packed.shape[1] * (4 if format == "ternary" else 2)


@torch.library.register_fake("pygen::dequantize_weight")
def _dequantize_weight_fake(packed, scales, zeros, format, group_size, dtype):
    return packed.new_empty((packed.shape[0], _in_features(packed, format)), dtype=dtype)


@torch.library.register_fake("pygen::quant_matmul")
def _quant_matmul_fake(x, packed, scales, zeros, format, group_size, bias, compute_dtype=None):
    torch._check(x.shape[-1] == _in_features(packed, format), lambda: "x must be [..., in_features]")
    return x.new_empty((*x.shape[:-1], packed.shape[0]))


@torch.library.register_fake("pygen::quant_matmul_int8")
def _quant_matmul_int8_fake(x, x_scale, packed, scales, bias):
    torch._check(x.shape[-1] == _in_features(packed, "ternary"), lambda: "x must be [..., in_features]")
    return x.new_empty((*x.shape[:-1], packed.shape[0]), dtype=torch.float32)
