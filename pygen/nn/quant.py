"""Linear layers with low-bit weights: inference layers on the packed formats of
:mod:`pygen.quant` (:class:`Int4Linear`, :class:`MXFP4Linear`, :class:`TernaryLinear`)
and :class:`BitLinear`, which trains ternary weights (BitNet b1.58) and exports to
:class:`TernaryLinear`.

The inference layers hold the packed weight as registered buffers (``packed``, ``scales``
and, for asymmetric int4, ``zeros``), so ``state_dict()`` and safetensors checkpoints
carry it as plain tensors; their constructors build an empty layer of the right shapes
(to load a checkpoint into), ``from_linear`` quantizes an ``nn.Linear``. :meth:`config`
is the JSON description :func:`layer_from_config` rebuilds an empty layer from.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pygen.nn.linear_conv import LinearConv2d
from pygen.quant.ops import COMPUTE_DTYPES, matmul, quantize_activations
from pygen.quant.weight import QuantizedWeight, quantize

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_BLOCK = {"int4": 32, "mxfp4": 32, "ternary": 64}  # in_features must be a multiple of this
ACTIVATIONS = ("float", "int8")
TERNARY_EPS = 1e-5  # BitNet's epsilon under the absmean scale (pygen.quant.quantize's)


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def check_in_features(format: str, in_features: int, group_size: int | None = None) -> None:
    """Raises ValueError unless ``format`` can hold rows of ``in_features`` elements."""
    block = group_size or _BLOCK[format]
    if in_features <= 0 or in_features % block:
        raise ValueError(f"{format} weights need in_features to be a multiple of {block}, got {in_features}")


class QuantLinear(nn.Module):
    """``y = x @ W^T + b`` with ``W [out_features, in_features]`` packed in a low-bit
    format and dequantized inside the kernel (:func:`pygen.quant.matmul`).

    ``x`` is ``[..., in_features]`` float32, bfloat16 or float16; ``y`` has x's dtype.
    The bias is a buffer (these layers are for inference) and is cast to x's dtype.

    Every layer takes ``compute_dtype`` (None, ``torch.bfloat16`` or, on CUDA,
    ``torch.float16``): the dtype float32 x is multiplied in (:func:`pygen.quant.matmul`'s
    ``compute_dtype``: x rounded to it inside the kernel, y still float32). 16-bit x
    always computes in its own dtype.
    """

    format: str
    # from_linear options that configure the layer rather than pygen.quant.quantize
    _layer_only_options: tuple[str, ...] = ("compute_dtype",)

    def _init_compute_dtype(self, compute_dtype: torch.dtype | str | None) -> None:
        compute_dtype = _DTYPES.get(compute_dtype, compute_dtype)
        if compute_dtype is not None and compute_dtype not in COMPUTE_DTYPES:
            raise ValueError(
                f"compute_dtype must be None, torch.bfloat16 or torch.float16, got {compute_dtype}"
            )
        self.compute_dtype = compute_dtype

    def _init_buffers(self, in_features, out_features, bias, packed_cols, scales, zeros):
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("packed", torch.zeros(out_features, packed_cols, dtype=torch.uint8))
        self.register_buffer("scales", scales)
        self.register_buffer("zeros", zeros)
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)

    @property
    def group_size(self) -> int:
        return self.in_features

    @property
    def qweight(self) -> QuantizedWeight:
        """The packed weight as a :class:`pygen.quant.QuantizedWeight` (views of the buffers)."""
        return QuantizedWeight(self.format, self.packed, self.scales, self.zeros, self.group_size)

    @property
    def weight_nbytes(self) -> int:
        """Bytes the packed weight takes (codes, scales and zero points; bias aside)."""
        return self.qweight.nbytes

    @classmethod
    def from_quantized(cls, qweight: QuantizedWeight, bias: torch.Tensor | None = None, **options):
        """A layer holding ``qweight`` (its format must be this layer's) and ``bias``."""
        if not isinstance(qweight, QuantizedWeight):
            raise TypeError(f"qweight must be a pygen.quant.QuantizedWeight, got {type(qweight).__name__}")
        if qweight.format != cls.format:
            raise ValueError(f"{cls.__name__} holds {cls.format} weights, got a {qweight.format} qweight")
        out_features, in_features = qweight.shape
        layer = cls(in_features, out_features, bias is not None, **cls._options_of(qweight), **options)
        layer.packed.copy_(qweight.packed)
        layer.scales.copy_(qweight.scales)
        if qweight.zeros is not None:
            layer.zeros.copy_(qweight.zeros)
        if bias is not None:
            layer.bias.copy_(bias.detach())
        return layer.to(qweight.device)

    @classmethod
    def _options_of(cls, qweight: QuantizedWeight) -> dict:
        return {}

    @classmethod
    def from_linear(cls, linear: nn.Linear, **options):
        """Quantizes ``linear``'s weight (round to nearest; ``options`` as the layer's
        constructor, e.g. ``group_size`` for int4) and copies its bias."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"linear must be a torch.nn.Linear, got {type(linear).__name__}")
        layer_options = {k: options.pop(k) for k in cls._layer_only_options if k in options}
        qweight = quantize(linear.weight, cls.format, **options)
        return cls.from_quantized(qweight, linear.bias, **layer_options)

    def config(self) -> dict:
        """JSON-serializable description: :func:`layer_from_config` builds the empty layer."""
        return {
            "class": type(self).__name__,
            "in_features": self.in_features,
            "out_features": self.out_features,
            "bias": self.bias is not None,
            "compute_dtype": None if self.compute_dtype is None else _dtype_name(self.compute_dtype),
        }

    def _apply(self, fn, recurse=True):
        # A module-wide .half() / .bfloat16() must not re-encode the scales: their dtype is
        # part of the format (int4's chosen by scale_dtype, ternary's float32 as the kernel
        # reads them), not the compute type.
        dtype = self.scales.dtype
        super()._apply(fn, recurse)
        self.scales = self.scales.to(dtype)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [..., in_features]`` -> ``[..., out_features]`` in x's dtype."""
        bias = None if self.bias is None else self.bias.to(x.dtype)
        compute_dtype = self.compute_dtype if x.dtype == torch.float32 else None
        return matmul(x, self.qweight, bias, compute_dtype=compute_dtype)

    def extra_repr(self) -> str:
        bits = 8 * self.weight_nbytes / (self.in_features * self.out_features)
        opts = ", ".join(f"{k}={v}" for k, v in self.config().items() if k not in ("class", "bias"))
        return f"{opts}, bias={self.bias is not None}, format={self.format}, bits_per_weight={bits:.3g}"


class Int4Linear(QuantLinear):
    """Linear layer with an int4 weight: groups of ``group_size`` (32, 64 or 128) along
    ``in_features``, each with a scale of ``scale_dtype`` and, unless ``symmetric``, a
    uint8 zero point (see :func:`pygen.quant.quantize`). ``in_features`` must be a
    multiple of ``group_size``. Buffers: ``packed`` uint8 ``[out_features,
    in_features / 2]``, ``scales`` and ``zeros`` ``[out_features, in_features /
    group_size]``."""

    format = "int4"

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        group_size: int = 128,
        symmetric: bool = True,
        scale_dtype: torch.dtype | str = torch.float16,
        compute_dtype: torch.dtype | str | None = None,
    ):
        super().__init__()
        self._init_compute_dtype(compute_dtype)
        if group_size not in (32, 64, 128):
            raise ValueError(f"group_size must be 32, 64 or 128, got {group_size}")
        check_in_features("int4", in_features, group_size)
        scale_dtype = _DTYPES.get(scale_dtype, scale_dtype)
        if scale_dtype not in _DTYPES.values():
            raise ValueError(f"scale_dtype must be torch.float32, float16 or bfloat16, got {scale_dtype}")
        self._group_size, self.symmetric = group_size, symmetric
        groups = (out_features, in_features // group_size)
        scales = torch.zeros(groups, dtype=scale_dtype)
        zeros = None if symmetric else torch.zeros(groups, dtype=torch.uint8)
        self._init_buffers(in_features, out_features, bias, in_features // 2, scales, zeros)

    @property
    def group_size(self) -> int:
        return self._group_size

    @classmethod
    def _options_of(cls, qweight):
        return dict(
            group_size=qweight.group_size, symmetric=qweight.zeros is None, scale_dtype=qweight.scales.dtype
        )

    def config(self) -> dict:
        return {
            **super().config(),
            "group_size": self.group_size,
            "symmetric": self.symmetric,
            "scale_dtype": _dtype_name(self.scales.dtype),
        }


class MXFP4Linear(QuantLinear):
    """Linear layer with an MXFP4 weight (OCP MX: E2M1 elements, an E8M0 scale per 32
    along ``in_features``, which must be a multiple of 32). Buffers: ``packed`` uint8
    ``[out_features, in_features / 2]``, ``scales`` uint8 E8M0 ``[out_features,
    in_features / 32]``."""

    format = "mxfp4"

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        compute_dtype: torch.dtype | str | None = None,
    ):
        super().__init__()
        self._init_compute_dtype(compute_dtype)
        check_in_features("mxfp4", in_features)
        scales = torch.zeros(out_features, in_features // 32, dtype=torch.uint8)
        self._init_buffers(in_features, out_features, bias, in_features // 2, scales, None)

    @property
    def group_size(self) -> int:
        return 32


def _rms_norm(in_features: int, norm: bool) -> nn.Module | None:
    return nn.RMSNorm(in_features, eps=1e-6) if norm else None


class TernaryLinear(QuantLinear):
    """Linear layer with a ternary weight ({-1, 0, +1} times an absmean scale per row,
    or per tensor unless ``per_channel``; ``in_features`` a multiple of 64).

    ``activations="int8"`` is BitNet b1.58's inference path (W1.58A8): x is quantized to
    int8 per token (absmax) and the kernel sums integers exactly; ``"float"`` multiplies
    float x by the ternary weight (weight-only quantization). ``norm=True`` applies an
    RMSNorm (with a learned gain) to x first, as :class:`BitLinear` with ``norm=True``.
    """

    format = "ternary"
    _layer_only_options = ("activations", "norm", "compute_dtype")

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        per_channel: bool = True,
        activations: str = "float",
        norm: bool = False,
        compute_dtype: torch.dtype | str | None = None,
    ):
        super().__init__()
        self._init_compute_dtype(compute_dtype)
        check_in_features("ternary", in_features)
        if activations not in ACTIVATIONS:
            raise ValueError(f"activations must be one of {ACTIVATIONS}, got {activations!r}")
        if activations == "int8" and self.compute_dtype is not None:
            raise ValueError(
                f"compute_dtype is for activations='float' (int8 sums integers), got {compute_dtype}"
            )
        self.per_channel, self.activations = per_channel, activations
        self.norm = _rms_norm(in_features, norm)
        scales = torch.zeros(out_features if per_channel else 1)
        self._init_buffers(in_features, out_features, bias, in_features // 4, scales, None)

    @classmethod
    def _options_of(cls, qweight):
        return dict(per_channel=qweight.scales.numel() != 1 or qweight.shape[0] == 1)

    def config(self) -> dict:
        return {
            **super().config(),
            "per_channel": self.per_channel,
            "activations": self.activations,
            "norm": self.norm is not None,
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [..., in_features]`` -> ``[..., out_features]`` in x's dtype."""
        if self.norm is not None:
            x = self.norm(x)
        if self.activations == "float":
            return super().forward(x)
        x_q, x_scale = quantize_activations(x)
        bias = None if self.bias is None else self.bias.float()
        return matmul(x_q, self.qweight, bias, x_scale=x_scale).to(x.dtype)


def _ste(value: torch.Tensor, rounded: torch.Tensor) -> torch.Tensor:
    """``rounded`` in the forward pass, the identity's gradient to ``value`` in the
    backward (straight-through). Written ``rounded + (value - value.detach())`` rather
    than ``value + (rounded - value).detach()`` so the forward value is ``rounded``
    exactly: the packed kernel's integer sums then match bit for bit."""
    return rounded + (value - value.detach())


class BitLinear(nn.Linear):
    """BitNet b1.58's linear layer for training (Ma et al. 2024): the latent float
    weight is quantized in the forward pass to ternary codes times its absmean scale,
    ``round(W / (mean|W| + eps))`` clamped to {-1, 0, 1}, and x to int8 per token
    (absmax), both with straight-through gradients (the rounding passes the gradient
    unchanged; the scales are treated as constants, as in the paper's recipe).

    The forward computes ``(x_q @ codes^T) * x_scale * w_scale (+ bias)`` with integer
    valued float tensors, which is exactly what :meth:`to_packed`'s W1.58A8 kernel
    computes, so the exported :class:`TernaryLinear` reproduces this layer's eval-mode
    output bit for bit (float32 x, ``in_features`` below 2^24 / 127).

    Args:
        per_channel: one scale per output row (True) or one per tensor (False, the paper).
        norm: an RMSNorm with a learned gain before quantizing x, as BitNet's BitLinear
            (SubLN) does. Off by default: pygen's blocks already normalize the inputs of
            their first projections, and the norm changes the function of a layer made
            by :meth:`from_linear` (per-token absmax quantization is scale invariant, so
            the norm only matters for the output's scale, which trains fine without it).

    ``in_features`` must be a multiple of 64 (the packed ternary layout).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        per_channel: bool = False,
        norm: bool = False,
        device=None,
        dtype=None,
    ):
        check_in_features("ternary", in_features)
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        self.per_channel = per_channel
        self.norm = _rms_norm(in_features, norm)

    @classmethod
    def from_linear(cls, linear: nn.Linear, *, per_channel: bool = False, norm: bool = False) -> BitLinear:
        """A BitLinear starting from ``linear``'s weight and bias (for quantization-aware
        fine-tuning of a trained model)."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"linear must be a torch.nn.Linear, got {type(linear).__name__}")
        w = linear.weight
        layer = cls(
            linear.in_features,
            linear.out_features,
            linear.bias is not None,
            per_channel=per_channel,
            norm=norm,
            device=w.device,
            dtype=w.dtype,
        )
        with torch.no_grad():
            layer.weight.copy_(w)
            if linear.bias is not None:
                layer.bias.copy_(linear.bias)
        return layer

    def weight_scale(self) -> torch.Tensor:
        """The absmean scale, float32 ``[out_features, 1]`` or ``[1, 1]``, summed in
        float64 as :func:`pygen.quant.quantize` does (no gradient)."""
        a = self.weight.detach().float().abs().double()
        s = a.mean(1, keepdim=True) if self.per_channel else a.mean().reshape(1, 1)
        return s.float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [..., in_features]`` -> ``[..., out_features]`` (float32 compute)."""
        if self.norm is not None:
            x = self.norm(x)
        w_scale = self.weight_scale()
        w = self.weight.float() / (w_scale + TERNARY_EPS)
        codes = _ste(w, torch.round(w.detach()).clamp(-1, 1))
        x_q, x_scale = quantize_activations(x.detach())
        a = _ste(x.float() / x_scale[..., None], x_q.float())
        y = F.linear(a, codes) * x_scale[..., None] * w_scale.reshape(-1)
        if self.bias is not None:
            y = y + self.bias.float()
        return y.to(x.dtype)

    def to_packed(self) -> TernaryLinear:
        """The inference layer: ternary codes packed for the W1.58A8 kernel (same
        output as this layer in eval mode), bias and norm copied."""
        layer = TernaryLinear.from_quantized(
            quantize(self.weight.detach(), "ternary", per_channel=self.per_channel),
            self.bias,
            activations="int8",
            norm=self.norm is not None,
        )
        if self.norm is not None:
            layer.norm.load_state_dict(self.norm.state_dict())
        return layer

    def config(self) -> dict:
        """JSON-serializable description (see :func:`layer_from_config`)."""
        return {
            "class": "BitLinear",
            "in_features": self.in_features,
            "out_features": self.out_features,
            "bias": self.bias is not None,
            "per_channel": self.per_channel,
            "norm": self.norm is not None,
        }

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, per_channel={self.per_channel}, format=ternary (fake-quantized)"


LAYERS = {cls.__name__: cls for cls in (Int4Linear, MXFP4Linear, TernaryLinear, BitLinear)}


def layer_from_config(config: dict) -> nn.Module:
    """An empty layer (zero buffers of the right shapes and dtypes) from its
    :meth:`config` dict, ready for ``load_state_dict``; a :class:`LinearConv2d`'s config
    holds its linear layer's."""
    options = dict(config)
    name = options.pop("class", None)
    if name == "LinearConv2d":
        return LinearConv2d(layer_from_config(options.pop("linear")), **options)
    if name not in LAYERS:
        raise ValueError(f"config['class'] must be one of {sorted(LAYERS)} or LinearConv2d, got {name!r}")
    return LAYERS[name](
        options.pop("in_features"), options.pop("out_features"), options.pop("bias"), **options
    )


__all__ = [
    "BitLinear",
    "Int4Linear",
    "LinearConv2d",
    "MXFP4Linear",
    "QuantLinear",
    "TernaryLinear",
    "layer_from_config",
]
