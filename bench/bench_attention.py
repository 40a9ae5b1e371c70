"""Fused attention (pygen.ops.attention) against torch's scaled_dot_product_attention
(its CPU flash kernel; on CUDA its flash backend where available): dense causal, forward
and forward+backward (also with grouped-query attention, one kv head for 8 query heads,
where the backward has fewer (batch, kv head) pairs than threads), and the Sparse
Transformer layouts against dense causal SDPA at long lengths (forward on CPU, and
forward+backward of the fixed pattern at 8k; both on CUDA).

On CPU the layout rows also record peak memory: each call (ours and SDPA's) runs once
more in a fresh process (``python bench/bench_attention.py --peak ...``), which resets
its peak resident set (``/proc/self/clear_refs``) after building the inputs and reports
how far the call raised it (``peak_mib`` and ``baseline_peak_mib`` in the row's params).
Rows at 8k and 16k then show whether memory grows linearly with the length.
"""

import argparse
import contextlib
import json
import subprocess
import sys
from pathlib import Path

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


LAYOUTS = ("strided", "fixed")


def layout_fn(name, length):
    """A layout row's callable ``(q, k, v) -> out``, and the layout parameters it records."""
    if name == "strided":
        layouts = [sparse.local(length, 128), sparse.strided(length, 128)]  # half the heads each
        return (lambda q, k, v: attend(q, k, v, layout=layouts)), {"stride": 128, "block": 64}
    layout = sparse.fixed(length, 256, 32, block_size=32)
    params = {"stride": 256, "c": 32, "block": 32}
    return (lambda q, k, v: pygen.ops.attention(q, k, v, layout=layout)), params


def _status_kib(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def _peak_child(pattern, length, backward, threads):
    """In a fresh process: MiB by which one call raises the peak resident set."""
    torch.set_num_threads(threads)
    q, k, v = inputs(length, "cpu", torch.float32, grad=backward)
    fn = flash_sdpa if pattern == "sdpa" else layout_fn(pattern, length)[0]
    run = (lambda: forward_backward(fn, q, k, v)) if backward else (lambda: fn(q, k, v))
    resident = _status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # peak (VmHWM) := current resident set
    result = run()
    peak = _status_kib("VmHWM")
    del result
    print(json.dumps((peak - resident) / 1024))


def peak_mib(pattern, length, backward=False):
    """Peak memory (MiB) of one call of ``pattern`` ("sdpa" or a layout name), measured in a
    fresh process so that nothing allocated before (other cases, torch's caches) hides it."""
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--peak",
            pattern,
            str(length),
            str(int(backward)),
            str(torch.get_num_threads()),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return round(json.loads(out.stdout.strip().splitlines()[-1]), 1)


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
    out.append(gqa_case(256 if quick else 2048, device, dtype))
    if quick:
        return out
    cuda = device.startswith("cuda")
    for length in [4096, 16384] if cuda else [8192, 16384]:
        q, k, v = inputs(length, device, dtype)
        for name in LAYOUTS:
            fn, layout_params = layout_fn(name, length)
            params = {"len": length, "heads": HEADS, "head_dim": HEAD_DIM, "device": device, **layout_params}
            if not cuda:
                params.update(peak_mib=peak_mib(name, length), baseline_peak_mib=peak_mib("sdpa", length))
            out.append(
                Case(
                    f"{name} fwd L={length // 1024}k",
                    lambda q=q, k=k, v=v, f=fn: f(q, k, v),
                    "sdpa causal",
                    lambda q=q, k=k, v=v: sdpa(q, k, v),
                    params,
                )
            )
            if cuda or (name == "fixed" and length == 8192):
                g = inputs(length, device, dtype, grad=True)
                params = dict(params)
                if not cuda:
                    params.update(
                        peak_mib=peak_mib(name, length, backward=True),
                        baseline_peak_mib=peak_mib("sdpa", length, backward=True),
                    )
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


def gqa_case(length, device, dtype):
    """Causal forward+backward with one kv head for all query heads, batch 1."""
    q = torch.randn(1, HEADS, length, HEAD_DIM, device=device, dtype=dtype, requires_grad=True)
    k, v = (
        torch.randn(1, 1, length, HEAD_DIM, device=device, dtype=dtype, requires_grad=True) for _ in range(2)
    )
    ours = lambda q, k, v: pygen.ops.attention(q, k, v, causal=True)  # noqa: E731
    sdpa = lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)  # noqa: E731
    params = {
        "len": length,
        "heads": HEADS,
        "kv_heads": 1,
        "head_dim": HEAD_DIM,
        "dtype": str(dtype),
        "device": device,
    }
    return Case(
        f"causal GQA fwd+bwd L={length}",
        lambda: forward_backward(ours, q, k, v),
        "sdpa",
        lambda: forward_backward(sdpa, q, k, v),
        params,
        causal_flops(length, True),
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description="peak memory of one call, for the layout rows (see the docstring)"
    )
    parser.add_argument(
        "--peak", nargs=4, metavar=("PATTERN", "LENGTH", "BACKWARD", "THREADS"), required=True
    )
    pattern, length, backward, threads = parser.parse_args().peak
    _peak_child(pattern, int(length), bool(int(backward)), int(threads))
