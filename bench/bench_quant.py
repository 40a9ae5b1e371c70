"""Low-bit matmul (pygen.quant.matmul, dequantization fused) against torch.matmul on the
unquantized weight in float32 and bfloat16, at decode-time batch sizes, for float32 x
("ternary x int8": W1.58A8, the per-token int8 quantization of x timed with it), and
for every float-activation format bfloat16 x against bfloat16 (the ``(bf16 x)`` rows, on the
CPU also at M = 8 and 32, where the GEMM is compute bound). On the CPU, float32 x with
``compute_dtype=torch.bfloat16`` (the ``(fp32 x, bf16 compute)`` rows: what a float32
model quantized with ``quantize_model(..., compute_dtype=torch.bfloat16)`` runs) against
float32 and bfloat16 at M = 1, 4, 16. Each
row's params carry the packed weight's bytes against float16 (``bytes``, ``fp16_bytes``).

On CUDA: float16 x against cuBLAS float16 (torch.matmul on the unquantized weight),
bfloat16 x against cuBLAS bfloat16, from M = 1 (GEMV: the goal is to beat cuBLAS, which
reads 4x the bytes) to M = 256 (tensor-core tiles: the goal is cuBLAS's time plus the
dequantization, which the ``dequantize + cuBLAS fp16`` rows time as their baseline:
pygen.quant.dequantize to float16, then torch.matmul)."""

import torch

import pygen
from pygen.bench import Case

FORMATS = [
    ("int4 g128", "int4", dict(group_size=128)),
    ("int4 g32 asym", "int4", dict(group_size=32, symmetric=False)),
    ("mxfp4", "mxfp4", {}),
    ("ternary", "ternary", {}),
    ("ternary x int8", "ternary", {}),
]
# Also timed with bfloat16 x, against bfloat16 only.
BF16_X = ("int4 g128", "int4 g32 asym", "mxfp4", "ternary")
BF16_ONLY_BATCHES = (8, 32)  # CPU: bfloat16 x only, where the GEMM is compute bound
BF16_COMPUTE_BATCHES = (1, 4, 16)  # CPU: float32 x computed in bfloat16


def _int8_matmul(x, qw):
    x_q, x_scale = pygen.quant.quantize_activations(x)
    return pygen.quant.matmul(x_q, qw, x_scale=x_scale)


def _bf16_compute_matmul(x, qw):
    return pygen.quant.matmul(x, qw, compute_dtype=torch.bfloat16)


def _case(label, fn, x, qw, baseline, baseline_fn, m, n, k, device):
    return Case(
        name=f"{label} {n}x{k} M={m}",
        fn=lambda: fn(x, qw),
        baseline=baseline,
        baseline_fn=baseline_fn,
        params={
            "n": n,
            "k": k,
            "m": m,
            "format": label,
            "device": device,
            "bytes": qw.nbytes,
            "fp16_bytes": n * k * 2,
        },
        flops=2.0 * m * n * k,
    )


def _cuda_cases(device: str, quick: bool) -> list[Case]:
    shapes = [(4096, 4096)] if quick else [(4096, 4096), (11008, 4096)]
    batches = [1, 16] if quick else [1, 4, 16, 64, 256]
    out = []
    for n, k in shapes:
        w = torch.randn(n, k, device=device)
        w16, wb16 = w.half(), w.bfloat16()
        packed = {label: pygen.quant.quantize(w, fmt, **opts) for label, fmt, opts in FORMATS}
        for m in batches:
            x16 = torch.randn(m, k, device=device).half()
            xb16 = x16.bfloat16()
            for label, qw in packed.items():
                fn = _int8_matmul if label.endswith("int8") else pygen.quant.matmul
                cublas = lambda x=x16, w=w16: torch.matmul(x, w.T)  # noqa: E731
                out.append(_case(label, fn, x16, qw, "cuBLAS fp16", cublas, m, n, k, device))
                if m >= 16 and not label.endswith("int8"):
                    both = lambda x=x16, qw=qw: torch.matmul(x, pygen.quant.dequantize(qw, torch.float16).T)  # noqa: E731
                    out.append(_case(label, fn, x16, qw, "dequantize + cuBLAS fp16", both, m, n, k, device))
            for label in BF16_X:
                cublas = lambda x=xb16, w=wb16: torch.matmul(x, w.T)  # noqa: E731
                qw = packed[label]
                name = f"{label} (bf16 x)"
                out.append(_case(name, pygen.quant.matmul, xb16, qw, "cuBLAS bf16", cublas, m, n, k, device))
    return out


def cases(device: str, quick: bool = False) -> list[Case]:
    if device.startswith("cuda"):
        return _cuda_cases(device, quick)
    shapes = [(1024, 1024)] if quick else [(4096, 4096), (11008, 4096)]
    batches = [1, 16] if quick else sorted([1, 4, 16, *BF16_ONLY_BATCHES])
    out = []
    for n, k in shapes:
        w = torch.randn(n, k, device=device)
        baselines = {
            "torch.matmul fp32": (w, torch.float32),
            "torch.matmul bf16": (w.bfloat16(), torch.bfloat16),
        }
        packed = {label: pygen.quant.quantize(w, fmt, **opts) for label, fmt, opts in FORMATS}
        for m in batches:
            x = torch.randn(m, k, device=device)
            bf16_only = m in BF16_ONLY_BATCHES
            runs = [] if bf16_only else [(label, qw, x, baselines) for label, qw in packed.items()]
            runs += [
                (
                    f"{label} (bf16 x)",
                    packed[label],
                    x.bfloat16(),
                    {"torch.matmul bf16": baselines["torch.matmul bf16"]},
                )
                for label in BF16_X
            ]
            runs += [
                (f"{label} (fp32 x, bf16 compute)", packed[label], x, baselines)
                for label in BF16_X
                if m in BF16_COMPUTE_BATCHES
            ]
            for label, qw, x_ours, bases in runs:
                if label.endswith("int8"):
                    fn = _int8_matmul
                elif label.endswith("bf16 compute)"):
                    fn = _bf16_compute_matmul
                else:
                    fn = pygen.quant.matmul
                for name, (weight, dtype) in bases.items():
                    xb = x.to(dtype)
                    baseline_fn = lambda xb=xb, weight=weight: torch.matmul(xb, weight.T)  # noqa: E731
                    out.append(_case(label, fn, x_ours, qw, name, baseline_fn, m, n, k, device))
    return out
