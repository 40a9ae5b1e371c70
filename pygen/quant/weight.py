"""Packed low-bit weights: :func:`quantize`, :func:`dequantize` and the weight object.

Layouts (bit order and tiling) are documented in ``csrc/quant/formats.h`` and the README.
"""

from dataclasses import dataclass

import torch

from pygen._build import _C  # noqa: F401  (registers the ops)

FORMATS = ("int4", "mxfp4", "ternary")
_LAYOUT = {"int4": "int4", "mxfp4": "int4", "ternary": "int2"}  # codes layout of each format
_CODES_PER_BYTE = {"int4": 2, "mxfp4": 2, "ternary": 4}


@dataclass(frozen=True)
class QuantizedWeight:
    """A weight ``W [out_features, in_features]`` in a low-bit format, as the kernels read it.

    Attributes:
        format: ``"int4"``, ``"mxfp4"`` or ``"ternary"``.
        packed: uint8 ``[N, K / 2]`` (int4, mxfp4: two 4-bit codes a byte) or ``[N, K / 4]``
            (ternary: four 2-bit codes a byte), in the block layout of ``csrc/quant/formats.h``.
        scales: int4: ``[N, K / group_size]`` float32/float16/bfloat16; mxfp4:
            ``[N, K / 32]`` uint8 E8M0 exponents; ternary: float32 ``[N]`` (per channel)
            or ``[1]`` (per tensor).
        zeros: int4 asymmetric: uint8 ``[N, K / group_size]`` zero points; else None.
        group_size: elements along K per scale (ternary: K).
    """

    format: str
    packed: torch.Tensor
    scales: torch.Tensor
    zeros: torch.Tensor | None
    group_size: int

    @property
    def shape(self) -> tuple[int, int]:
        """``(out_features, in_features)`` of the unquantized weight."""
        return self.packed.shape[0], self.packed.shape[1] * _CODES_PER_BYTE[self.format]

    @property
    def device(self) -> torch.device:
        return self.packed.device

    @property
    def nbytes(self) -> int:
        """Bytes of every tensor held, metadata aside (the memory the weight costs)."""
        tensors = (self.packed, self.scales) + (() if self.zeros is None else (self.zeros,))
        return sum(t.numel() * t.element_size() for t in tensors)

    def to(self, device: torch.device | str) -> "QuantizedWeight":
        """The same weight on ``device``."""
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return QuantizedWeight(
            self.format, move(self.packed), move(self.scales), move(self.zeros), self.group_size
        )

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Plain tensors for ``safetensors.torch.save_file`` (no pickled objects).

        Ternary codes are stored in the 1.6-bit base-3 format (5 codes a byte,
        ``"trits"``), the others as held. ``meta`` is an int64 tensor
        ``[format index, out_features, in_features, group_size]``.
        """
        n, k = self.shape
        state = {
            "meta": torch.tensor([FORMATS.index(self.format), n, k, self.group_size], dtype=torch.int64),
            "scales": self.scales.contiguous(),
        }
        if self.format == "ternary":
            codes = torch.ops.pygen.unpack_codes(self.packed.cpu(), "int2", k)
            state["trits"] = torch.ops.pygen.pack_codes(codes, "base3")
        else:
            state["packed"] = self.packed.contiguous()
        if self.zeros is not None:
            state["zeros"] = self.zeros.contiguous()
        return state

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> "QuantizedWeight":
        """The inverse of :meth:`state_dict` (on the device of ``state``'s tensors)."""
        fmt, n, k, group = (int(v) for v in state["meta"].tolist())
        if not 0 <= fmt < len(FORMATS):
            raise ValueError(f"state['meta'] names format index {fmt}; known: {FORMATS}")
        fmt = FORMATS[fmt]
        if fmt == "ternary":
            trits = state["trits"]
            codes = torch.ops.pygen.unpack_codes(trits.cpu(), "base3", k)
            packed = torch.ops.pygen.pack_codes(codes, "int2").to(trits.device)
        else:
            packed = state["packed"]
        weight = cls(fmt, packed, state["scales"], state.get("zeros"), group)
        if weight.shape != (n, k):
            raise ValueError(f"state holds a {weight.shape} weight but its meta says {(n, k)}")
        return weight


def quantize(
    weight: torch.Tensor,
    format: str,
    *,
    group_size: int = 128,
    symmetric: bool = True,
    scale_dtype: torch.dtype = torch.float16,
    per_channel: bool = True,
) -> QuantizedWeight:
    """Quantizes ``weight [out_features, in_features]`` (round to nearest) to a packed format.

    Args:
        weight: 2-D float tensor (float32, float64, float16 or bfloat16), finite.
        format: ``"int4"`` (groups of ``group_size`` along K, each with a scale and, unless
            ``symmetric``, a zero point), ``"mxfp4"`` (OCP MX: E2M1 elements, an E8M0 scale
            per 32) or ``"ternary"`` (BitNet b1.58: {-1, 0, +1} times mean|W|).
        group_size: int4 only: 32, 64 or 128; ``in_features`` must be a multiple of it.
            mxfp4 always uses 32 and needs ``in_features % 32 == 0``; ternary needs
            ``in_features % 64 == 0``.
        symmetric: int4: codes ``round(w / s)`` with ``s = max|w| / 7`` (zero point 8);
            False: ``s = (max - min) / 15`` and a zero point per group.
        scale_dtype: int4 scales: torch.float16 (default), torch.bfloat16 or torch.float32.
        per_channel: ternary: one scale per output row (True) or one for the tensor.

    Returns:
        A :class:`QuantizedWeight` on ``weight``'s device.
    """
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"weight must be a tensor, got {type(weight).__name__}")
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    if format == "mxfp4":
        group_size = 32
    device = weight.device
    codes, scales, zeros = torch.ops.pygen.quantize_weight(
        weight.detach().cpu(), format, group_size, symmetric, scale_dtype, per_channel
    )
    packed = torch.ops.pygen.pack_codes(codes, _LAYOUT[format])
    qw = QuantizedWeight(
        format,
        packed,
        scales,
        zeros if zeros.numel() else None,
        weight.shape[1] if format == "ternary" else group_size,
    )
    return qw.to(device)


def dequantize(qweight: QuantizedWeight, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The weight ``[out_features, in_features]`` that ``qweight`` stands for, in ``dtype``
    (each element ``scale * code value`` rounded once to float32, or exact in float64)."""
    _check_weight(qweight)
    return torch.ops.pygen.dequantize_weight(
        qweight.packed, qweight.scales, qweight.zeros, qweight.format, qweight.group_size, dtype
    )


def _check_weight(qweight) -> None:
    if not isinstance(qweight, QuantizedWeight):
        raise TypeError(f"qweight must be a pygen.quant.QuantizedWeight, got {type(qweight).__name__}")
