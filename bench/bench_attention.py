"""Fused attention (pygen.ops.attention) against torch's scaled_dot_product_attention
(its CPU flash kernel; on CUDA its flash backend where available): dense causal, forward
and forward+backward, and the Sparse Transformer layouts against dense causal SDPA at
long lengths (forward only on CPU; forward and forward+backward on CUDA)."""

import contextlib

import torch
import torch.nn.functional as F

import pygen
from pygen import sparse
from pygen.bench import Case
from pygen.nn.attention import attend

HEADS, HEAD_DIM = 8, 64


def inputs(length, device, dtype, grad=False):
    return [
        torch.randn(1, HEADS, length, HEAD_DIM, device=device, dtype=dtype, requires_grad=grad)
        for _ in range(3)
    ]


def forward_backward(fn, q, k, v):
    out = fn(q, k, v)
    return torch.autograd.grad(out, (q, k, v), torch.ones_like(out))


def causal_flops(length, backward=False):
    # Two matrix products of 2 * L * L * D flops per head, half of them under the causal mask;
    # the backward does 2.5x the forward's (five products, one of them recomputed).
    fwd = 4 * length * length * HEAD_DIM * HEADS / 2
    return fwd * (3.5 if backward else 1.0)


def flash_sdpa(q, k, v):
    """Causal SDPA, pinned to the flash backend on CUDA when this torch has it."""
    ctx = contextlib.nullcontext()
    if q.is_cuda and torch.backends.cuda.is_flash_attention_available():
        from torch.nn.attention import SDPBackend, sdpa_kernel

        ctx = sdpa_kernel(SDPBackend.FLASH_ATTENTION)
    with ctx:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)


def cases(device: str, quick: bool = False) -> list[Case]:
    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    sdpa = flash_sdpa
    ours = lambda q, k, v: pygen.ops.attention(q, k, v, causal=True)  # noqa: E731
    out = []
    for length in [1024] if quick else [1024, 4096, 8192]:
        q, k, v = inputs(length, device, dtype)
        params = {"len": length, "heads": HEADS, "head_dim": HEAD_DIM, "dtype": str(dtype), "device": device}
        out.append(
            Case(
                f"causal fwd L={length}",
                lambda q=q, k=k, v=v: ours(q, k, v),
                "sdpa",
                lambda q=q, k=k, v=v: sdpa(q, k, v),
                params,
                causal_flops(length),
            )
        )
        if length <= 4096:
            g = inputs(length, device, dtype, grad=True)
            out.append(
                Case(
                    f"causal fwd+bwd L={length}",
                    lambda g=g: forward_backward(ours, *g),
                    "sdpa",
                    lambda g=g: forward_backward(sdpa, *g),
                    params,
                    causal_flops(length, True),
                )
            )
    if quick:
        return out
    cuda = device.startswith("cuda")
    for length in [4096, 16384] if cuda else [8192, 16384]:
        q, k, v = inputs(length, device, dtype)
        strided = [sparse.local(length, 128), sparse.strided(length, 128)]  # half the heads each
        fixed = sparse.fixed(length, 256, 32, block_size=32)
        patterns = {
            "strided": (
                lambda q, k, v, layout=strided: attend(q, k, v, layout=layout),
                {"stride": 128, "block": 64},
            ),
            "fixed": (
                lambda q, k, v, layout=fixed: pygen.ops.attention(q, k, v, layout=layout),
                {"stride": 256, "c": 32, "block": 32},
            ),
        }
        for name, (fn, layout_params) in patterns.items():
            params = {"len": length, "heads": HEADS, "head_dim": HEAD_DIM, "device": device, **layout_params}
            out.append(
                Case(
                    f"{name} fwd L={length // 1024}k",
                    lambda q=q, k=k, v=v, f=fn: f(q, k, v),
                    "sdpa causal",
                    lambda q=q, k=k, v=v: sdpa(q, k, v),
                    params,
                )
            )
            if cuda:
                g = inputs(length, device, dtype, grad=True)
                out.append(
                    Case(
                        f"{name} fwd+bwd L={length // 1024}k",
                        lambda g=g, f=fn: forward_backward(f, *g),
                        "sdpa causal",
                        lambda g=g: forward_backward(sdpa, *g),
                        params,
                    )
                )
    return out
