"""A 2-D convolution computed by a linear layer over its input patches (im2col), so
that whole-model quantization (:func:`pygen.quantize_model`, :func:`pygen.quant.to_bitlinear`)
treats a convolution as the linear map it is: a ``Conv2d`` weight ``[C_out, C_in, kh, kw]``
is a linear layer's ``[C_out, C_in * kh * kw]`` weight applied at every output position.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv_support(conv: nn.Conv2d) -> str | None:
    """Why ``conv`` cannot be computed as a :class:`LinearConv2d` (None if it can)."""
    if conv.groups != 1:
        return f"groups={conv.groups} (only groups=1)"
    if conv.padding_mode != "zeros":
        return f"padding_mode={conv.padding_mode!r} (only 'zeros')"
    if isinstance(conv.padding, str):
        return f"padding={conv.padding!r} (only integer padding)"
    return None


def _pair(value, name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) for v in pair):
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    return pair


class LinearConv2d(nn.Module):
    """``Conv2d`` semantics (zero padding, ``groups=1``) on ``x [B, C_in, H, W]``, with
    ``linear`` mapping each patch ``[C_in * kh * kw]`` (``F.unfold``'s channel-major
    order, the order of a flattened ``Conv2d`` weight row) to ``C_out`` outputs.

    ``linear`` is any module on ``[..., in_features]``: the exact float ``nn.Linear`` of
    :meth:`from_conv`, a :class:`~pygen.nn.BitLinear` (quantization-aware training: its
    per-token activation scale is then one per output position) or a packed
    :class:`~pygen.nn.quant.QuantLinear`. A 1x1 convolution with stride 1 and no padding
    skips the unfold: a linear layer over the channels of every pixel.

    Returns ``[B, C_out, H_out, W_out]`` (contiguous), H_out and W_out as ``Conv2d``'s.
    """

    def __init__(self, linear: nn.Module, kernel_size, stride=1, padding=0, dilation=1):
        super().__init__()
        self.linear = linear
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.stride = _pair(stride, "stride")
        self.padding = _pair(padding, "padding")
        self.dilation = _pair(dilation, "dilation")
        kh, kw = self.kernel_size
        if min(*self.kernel_size, *self.stride, *self.dilation) < 1 or min(self.padding) < 0:
            raise ValueError(
                "kernel_size, stride and dilation must be >= 1 and padding >= 0, got "
                f"{self.kernel_size}, {self.stride}, {self.dilation}, {self.padding}"
            )
        if linear.in_features % (kh * kw):
            raise ValueError(
                f"linear.in_features ({linear.in_features}) must be C_in * {kh} * {kw} "
                f"for kernel {self.kernel_size}"
            )
        self.in_channels, self.out_channels = linear.in_features // (kh * kw), linear.out_features

    @classmethod
    def from_conv(cls, conv: nn.Conv2d) -> LinearConv2d:
        """The same convolution, its weight and bias copied into an ``nn.Linear``."""
        if not isinstance(conv, nn.Conv2d):
            raise TypeError(f"conv must be a torch.nn.Conv2d, got {type(conv).__name__}")
        reason = conv_support(conv)
        if reason is not None:
            raise ValueError(f"conv cannot be computed as a linear layer: {reason}")
        w = conv.weight
        linear = nn.Linear(w[0].numel(), w.shape[0], conv.bias is not None, device=w.device, dtype=w.dtype)
        with torch.no_grad():
            linear.weight.copy_(w.reshape(w.shape[0], -1))
            if conv.bias is not None:
                linear.bias.copy_(conv.bias)
        return cls(linear, conv.kernel_size, conv.stride, conv.padding, conv.dilation)

    @property
    def pointwise(self) -> bool:
        return self.kernel_size == (1, 1) and self.stride == (1, 1) and self.padding == (0, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, C_in, H, W]`` -> ``[B, C_out, H_out, W_out]``."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"x must be [B, {self.in_channels}, H, W], got {tuple(x.shape)}")
        if self.pointwise:
            return self.linear(x.movedim(1, -1)).movedim(-1, 1).contiguous()
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = self.kernel_size, self.stride, self.padding, self.dilation
        h_out = (x.shape[2] + 2 * ph - dh * (kh - 1) - 1) // sh + 1
        w_out = (x.shape[3] + 2 * pw - dw * (kw - 1) - 1) // sw + 1
        if h_out < 1 or w_out < 1:
            raise ValueError(f"x's spatial size {tuple(x.shape[2:])} is smaller than the kernel's reach")
        cols = F.unfold(x, self.kernel_size, self.dilation, self.padding, self.stride)
        y = self.linear(cols.transpose(1, 2))  # [B, positions, C_out]
        return y.transpose(1, 2).contiguous().view(x.shape[0], self.out_channels, h_out, w_out)

    def config(self) -> dict:
        """JSON-serializable description (see :func:`pygen.nn.quant.layer_from_config`);
        ``linear`` must have a ``config()`` (a quantized or BitLinear layer)."""
        return {
            "class": "LinearConv2d",
            "kernel_size": list(self.kernel_size),
            "stride": list(self.stride),
            "padding": list(self.padding),
            "dilation": list(self.dilation),
            "linear": self.linear.config(),
        }

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}"
        )
