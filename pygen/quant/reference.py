"""Readable pure-PyTorch references of the quant ops: the test oracles.

Each follows the rounding steps of ``csrc/quant/pack.cpp`` (same float32 operations in
the same order), so codes and scales must match the kernels bit for bit.
"""

import torch

E2M1 = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0])
TERNARY_EPS = 1e-5


def _round_scale(s: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return s.to(dtype).float()


def quantize_int4(w: torch.Tensor, group: int, symmetric: bool, scale_dtype: torch.dtype):
    """Codes ``[N, K]`` uint8, scales ``[N, K / group]`` and zeros (uint8, or None)."""
    n, k = w.shape
    g = w.float().reshape(n, k // group, group)
    if symmetric:
        s = _round_scale(g.abs().amax(-1) / 7.0, scale_dtype)
        q = torch.round(g / s[..., None]).clamp(-8, 7) + 8
        q = torch.where(s[..., None] > 0, q, torch.full_like(q, 8))
        return q.to(torch.uint8).reshape(n, k), s.to(scale_dtype), None
    lo = g.amin(-1).clamp(max=0.0)
    hi = g.amax(-1).clamp(min=0.0)
    s = _round_scale((hi - lo) / 15.0, scale_dtype)
    ok = s > 0
    z = torch.where(ok, torch.round(-lo / s).clamp(0, 15), torch.zeros_like(s))
    q = torch.where(ok[..., None], (torch.round(g / s[..., None]) + z[..., None]).clamp(0, 15), 0.0)
    return q.to(torch.uint8).reshape(n, k), s.to(scale_dtype), z.to(torch.uint8)


def e2m1_encode(v: torch.Tensor) -> torch.Tensor:
    """Nearest E2M1 code (ties to even, saturating at 6, zero unsigned)."""
    a = v.abs()
    c = sum(
        (a > t if strict else a >= t).to(torch.int32)
        for t, strict in [(0.25, True), (0.75, False), (1.25, True), (1.75, False), (2.5, True), (3.5, False)]
    ) + (a > 5.0).to(torch.int32)
    return (c | torch.where((v < 0) & (c != 0), 8, 0)).to(torch.uint8)


def quantize_mxfp4(w: torch.Tensor):
    """Codes ``[N, K]`` uint8 and E8M0 scale bytes ``[N, K / 32]``."""
    n, k = w.shape
    g = w.float().reshape(n, k // 32, 32)
    amax = g.abs().amax(-1)
    _, e = torch.frexp(amax)  # amax = m 2^e, m in [0.5, 1): floor(log2(amax)) = e - 1
    code = torch.where(amax > 0, (e - 1 - 2 + 127).clamp(0, 254), 0)
    scale = e8m0_value(code)
    return e2m1_encode(g / scale[..., None]).reshape(n, k), code.to(torch.uint8)


def e8m0_value(code: torch.Tensor) -> torch.Tensor:
    return torch.exp2(code.to(torch.float64) - 127).float()


def ternary_scale(w: torch.Tensor, per_channel: bool) -> torch.Tensor:
    a = w.float().abs().double()
    return a.mean(1).float() if per_channel else a.mean().float().reshape(1)


def quantize_ternary(w: torch.Tensor, per_channel: bool):
    """Codes ``[N, K]`` uint8 (w + 1) and the float32 absmean scale(s)."""
    s = ternary_scale(w, per_channel)
    d = (s + TERNARY_EPS)[:, None] if per_channel else s + TERNARY_EPS
    return (torch.round(w.float() / d).clamp(-1, 1) + 1).to(torch.uint8), s


def pack(codes: torch.Tensor, layout: str) -> torch.Tensor:
    """Codes ``[rows, cols]`` packed as ``csrc/quant/formats.h`` describes."""
    rows, cols = codes.shape
    c = codes.to(torch.int32)
    if layout == "int4":  # blocks of 32: byte i = element i | element i + 16 << 4
        b = c.reshape(rows, cols // 32, 2, 16)
        return (b[:, :, 0] | b[:, :, 1] << 4).reshape(rows, cols // 2).to(torch.uint8)
    if layout == "int2":  # blocks of 64: byte i = elements i, i + 16, i + 32, i + 48
        b = c.reshape(rows, cols // 64, 4, 16)
        return (
            (b[:, :, 0] | b[:, :, 1] << 2 | b[:, :, 2] << 4 | b[:, :, 3] << 6)
            .reshape(rows, cols // 4)
            .to(torch.uint8)
        )
    pad = (-cols) % 5  # base3: 5 codes a byte, little-endian digits, padded with code 1
    c = torch.nn.functional.pad(c, (0, pad), value=1).reshape(rows, -1, 5)
    return (c * torch.tensor([1, 3, 9, 27, 81], dtype=torch.int32)).sum(-1).to(torch.uint8)


def unpack(packed: torch.Tensor, layout: str, cols: int) -> torch.Tensor:
    """The inverse of :func:`pack`."""
    rows = packed.shape[0]
    p = packed.to(torch.int32)
    if layout == "int4":
        b = p.reshape(rows, cols // 32, 1, 16)
        return torch.cat([b & 15, b >> 4], 2).reshape(rows, cols).to(torch.uint8)
    if layout == "int2":
        b = p.reshape(rows, cols // 64, 1, 16)
        return torch.cat([(b >> s) & 3 for s in (0, 2, 4, 6)], 2).reshape(rows, cols).to(torch.uint8)
    digits = torch.stack([(p // d) % 3 for d in (1, 3, 9, 27, 81)], -1)
    return digits.reshape(rows, -1)[:, :cols].to(torch.uint8)


def dequantize(qweight, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """``scale * code value`` of every element from the packed tensors, in ``dtype``
    (float64: exact)."""
    n, k = qweight.shape
    fmt = qweight.format
    codes = unpack(qweight.packed.cpu(), "int2" if fmt == "ternary" else "int4", k).long()
    if fmt == "ternary":
        values = (codes - 1).double()
        s = qweight.scales.cpu().double()
        s = s[:, None] if s.numel() == n and n > 1 else s
        w = values * s
    else:
        g = qweight.group_size
        if fmt == "mxfp4":
            values = (E2M1.double()[codes & 7]) * torch.where(codes >= 8, -1.0, 1.0).double()
            s = e8m0_value(qweight.scales.cpu()).double()
        else:
            z = 8 if qweight.zeros is None else qweight.zeros.cpu().long().repeat_interleave(g, 1)
            values = (codes - z).double()
            s = qweight.scales.cpu().double()
        w = values * s.repeat_interleave(g, 1)
    return w.to(dtype) if dtype == torch.float64 else w.float().to(dtype)


def matmul(x: torch.Tensor, qweight, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``x @ dequantize(W)^T (+ bias)`` in float64."""
    out = x.double() @ dequantize(qweight).T
    return out if bias is None else out + bias.double()


def matmul_int8(x_q, x_scale, qweight, bias=None) -> torch.Tensor:
    """W1.58A8 in integers: ``float32(sum(x_q (c - 1))) * x_scale * w_scale (+ bias)``."""
    n, k = qweight.shape
    w = unpack(qweight.packed.cpu(), "int2", k).long() - 1
    acc = (x_q.long().reshape(-1, k) @ w.T).float()
    s = qweight.scales.cpu()
    out = acc * x_scale.reshape(-1, 1) * (s if s.numel() == 1 else s[None, :])
    out = out if bias is None else out + bias
    return out.reshape(*x_q.shape[:-1], n)
