"""GPTQ (Frantar et al. 2022): int4 weights that minimize the layer's output error on
calibration inputs, ``||W X - Q X||^2``, instead of each weight's own rounding error.

Columns of ``W`` are quantized one at a time; the error each makes is spread over the
columns not yet quantized through the inverse Hessian ``H^-1`` (``H = 2 X X^T``, from
its upper Cholesky factor), updates deferred to whole blocks of columns (lazy batch
updates) so most of the work is one matrix product per block. The result is an ordinary
:class:`pygen.quant.QuantizedWeight` in the int4 group format (scales, zero points and
rounding exactly as :func:`pygen.quant.quantize` defines them), so every kernel runs it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from pygen.quant.weight import QuantizedWeight

_GROUPS = (32, 64, 128)


@dataclass(frozen=True)
class GPTQ:
    """GPTQ's options (``method=`` of :func:`pygen.quant.quantize_model`).

    Attributes:
        damp: added to H's diagonal, as a fraction of its mean (numerical stability).
        block_size: columns per lazy batch update (rounded up to a multiple of the group).
        act_order: quantize columns in decreasing order of ``H``'s diagonal (the inputs
            with the most energy first). The groups stay the contiguous groups of the
            int4 format, with scales taken from the unquantized weight ("static groups").
        sequential: (model level) quantize layers in the order the forward pass calls
            them, each one's calibration inputs computed through the layers already
            quantized, as the paper does; False collects every layer's inputs from the
            float model in one pass (faster, a little less accurate).
    """

    damp: float = 0.01
    block_size: int = 128
    act_order: bool = False
    sequential: bool = True

    def __post_init__(self):
        if not (self.damp > 0 and math.isfinite(self.damp)):
            raise ValueError(f"damp must be a positive number, got {self.damp}")
        if not (isinstance(self.block_size, int) and self.block_size > 0):
            raise ValueError(f"block_size must be a positive int, got {self.block_size}")


class Hessian:
    """Accumulates ``H = 2 / n * sum x x^T`` over the rows of calibration inputs (float64)."""

    def __init__(self, in_features: int):
        self.sum = torch.zeros(in_features, in_features, dtype=torch.float64)
        self.count = 0

    def add(self, x: torch.Tensor) -> None:
        """``x [..., in_features]``: one batch of the layer's inputs."""
        x = x.detach().reshape(-1, self.sum.shape[0]).to("cpu", torch.float64)
        self.sum.addmm_(x.T, x)
        self.count += x.shape[0]

    def matrix(self) -> torch.Tensor:
        if self.count == 0:
            raise ValueError("the Hessian has no inputs: the layer was not called on the calibration data")
        return self.sum * (2.0 / self.count)


def group_params(w: torch.Tensor, symmetric: bool, scale_dtype: torch.dtype):
    """Scale and zero point of each group ``w [..., group]`` (float32) as the int4 format
    computes them: symmetric ``s = max|w| / 7``, z = 8; asymmetric ``s = (max - min) / 15``
    over a range holding 0, ``z = round(-min / s)``. ``s`` is rounded to ``scale_dtype``
    (returned as float32 holding that value), z as float32."""
    if symmetric:
        s = (w.abs().amax(-1) / 7.0).to(scale_dtype).float()
        return s, torch.full_like(s, 8.0)
    lo, hi = w.amin(-1).clamp(max=0.0), w.amax(-1).clamp(min=0.0)
    s = ((hi - lo) / 15.0).to(scale_dtype).float()
    z = torch.where(s > 0, torch.round(-lo / s).clamp(0, 15), torch.zeros_like(s))
    return s, z


def quantize_codes(w: torch.Tensor, s: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """int4 codes (float32 0..15) of float32 ``w`` with scale ``s`` and zero point ``z``
    (broadcast); a group whose scale is 0 gets code z (weight 0)."""
    q = (torch.round(w / torch.where(s > 0, s, 1.0)) + z).clamp(0, 15)
    return torch.where(s > 0, q, z)


def gptq_quantize(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    *,
    group_size: int = 128,
    symmetric: bool = True,
    scale_dtype: torch.dtype = torch.float16,
    damp: float = 0.01,
    block_size: int = 128,
    act_order: bool = False,
) -> QuantizedWeight:
    """GPTQ-quantizes ``weight [out_features, in_features]`` to the int4 group format.

    Args:
        weight: float tensor ``[N, K]``, finite; ``K`` a multiple of ``group_size``.
        hessian: ``[K, K]`` ``2 X X^T / n`` of the layer's calibration inputs (see
            :class:`Hessian`); its scale does not matter.
        group_size, symmetric, scale_dtype: the int4 format's options, as in
            :func:`pygen.quant.quantize`.
        damp, block_size, act_order: see :class:`GPTQ`.

    Returns:
        An int4 :class:`QuantizedWeight` on ``weight``'s device. With a diagonal
        ``hessian`` (uncorrelated inputs) no error is propagated and it equals
        ``pygen.quant.quantize(weight, "int4", ...)`` (round to nearest) exactly.
    """
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
        raise ValueError(f"weight must be a 2-D tensor [out_features, in_features], got {_shape(weight)}")
    n, k = weight.shape
    if group_size not in _GROUPS:
        raise ValueError(f"group_size must be one of {_GROUPS}, got {group_size}")
    if k % group_size:
        raise ValueError(f"weight's in_features ({k}) must be a multiple of group_size {group_size}")
    if not isinstance(hessian, torch.Tensor) or hessian.shape != (k, k):
        raise ValueError(f"hessian must be a [{k}, {k}] tensor (in_features squared), got {_shape(hessian)}")
    if scale_dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"scale_dtype must be torch.float32, float16 or bfloat16, got {scale_dtype}")
    options = GPTQ(damp=damp, block_size=block_size, act_order=act_order)
    w = weight.detach().to("cpu", torch.float64).clone()
    h = hessian.detach().to("cpu", torch.float64).clone()
    if not (torch.isfinite(w).all() and torch.isfinite(h).all()):
        raise ValueError("weight and hessian must be finite")
    # A column whose input was always 0 has no curvature: give it a unit diagonal so it
    # rounds to nearest and passes no error on (the reference code also zeroes the
    # weight; keeping it keeps the layer right on inputs the calibration did not show).
    diag = h.diagonal()
    diag[diag == 0] = 1.0
    perm = torch.argsort(diag, descending=True, stable=True) if act_order else torch.arange(k)
    w, h = w[:, perm], h[perm][:, perm]
    h.diagonal().add_(options.damp * h.diagonal().mean())
    u = _inverse_cholesky_upper(h)

    groups = k // group_size
    scales = torch.zeros(n, groups)
    zeros = torch.zeros(n, groups)
    if act_order:  # static groups: params of the contiguous groups from the float weight
        scales, zeros = group_params(
            weight.detach().cpu().float().reshape(n, groups, -1), symmetric, scale_dtype
        )
    codes = torch.zeros(n, k)
    block = -(-options.block_size // group_size) * group_size  # groups never straddle blocks
    for b0 in range(0, k, block):
        b1 = min(b0 + block, k)
        w1, u1 = w[:, b0:b1].clone(), u[b0:b1, b0:b1]
        err = torch.zeros(n, b1 - b0, dtype=torch.float64)
        for i in range(b1 - b0):
            col = int(perm[b0 + i])
            g = col // group_size
            if not act_order and col % group_size == 0:  # first column of a group: its params now
                scales[:, g], zeros[:, g] = group_params(
                    w1[:, i : i + group_size].float(), symmetric, scale_dtype
                )
            s, z = scales[:, g], zeros[:, g]
            c = quantize_codes(w1[:, i].float(), s, z)
            codes[:, b0 + i] = c
            e = (w1[:, i] - ((c - z) * s).double()) / u1[i, i]
            w1[:, i:] -= e[:, None] * u1[i, i:][None, :]
            err[:, i] = e
        w[:, b1:] -= err @ u[b0:b1, b1:]

    if not torch.isfinite(scales).all():
        raise ValueError(
            f"weight has a group whose scale overflows {scale_dtype}: use scale_dtype=torch.float32"
        )
    codes = codes[:, torch.argsort(perm)].to(torch.uint8)
    packed = torch.ops.pygen.pack_codes(codes, "int4")
    zeros_u8 = None if symmetric else zeros.to(torch.uint8)
    return QuantizedWeight("int4", packed, scales.to(scale_dtype), zeros_u8, group_size).to(weight.device)


def _inverse_cholesky_upper(h: torch.Tensor) -> torch.Tensor:
    """Upper Cholesky factor of ``h^-1`` (the rows GPTQ reads its updates from)."""
    lower, info = torch.linalg.cholesky_ex(h)
    if info.item() != 0:
        raise ValueError("the damped Hessian is not positive definite: raise damp")
    return torch.linalg.cholesky(torch.cholesky_inverse(lower), upper=True)


def _shape(t) -> str:
    return f"shape {tuple(t.shape)}" if isinstance(t, torch.Tensor) else type(t).__name__
