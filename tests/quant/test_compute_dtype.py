"""pygen.quant.matmul's compute_dtype: float32 x multiplied in bfloat16 (float16 on CUDA),
x rounded inside the kernel. Against the 16-bit x kernels (bit for bit), dequantize-then-
matmul in float64 on the rounded x (tight), the float32 path (the rounding's error), every
M from the GEMV to a few hundred rows, odd N, every format; layers, quantize_model,
opcheck, torch.compile and bad input."""

import pytest
import torch
from torch import nn

import pygen
from pygen.nn import Int4Linear, MXFP4Linear, TernaryLinear
from pygen.nn.quant import layer_from_config
from tests.helpers import DEVICES, opcheck
from tests.quant.test_matmul import FORMATS, FP32_TOL, IDS, quantized, ref_matmul, rel_mean_error

# (device, compute dtype): float16 only on CUDA. Not named "device", which
# tests/conftest.py parametrizes.
CASES = [
    pytest.param("cpu", torch.bfloat16, id="cpu-bf16"),
    *[
        pytest.param(
            "cuda",
            dtype,
            id=f"cuda-{name}",
            marks=pytest.mark.skipif(
                "cuda" not in DEVICES, reason="no CUDA device, or pygen built without CUDA"
            ),
        )
        for name, dtype in [("bf16", torch.bfloat16), ("fp16", torch.float16)]
    ],
]
# Mean relative error of computing in the 16-bit dtype against float32 compute, in
# float64 on the rounded operands for these shapes and K = 4096: bfloat16 1.6e-3 (x
# rounded, the GEMV) to 2.4e-3 (x and W, the 16-bit GEMMs); float16 2.0e-4 to 2.7e-4.
# A float16 rounding in place of bfloat16's would pass the bfloat16 bound: the
# bit-for-bit check against 16-bit x excludes it.
LOOSE = {torch.bfloat16: 4e-3, torch.float16: 6e-4}


def check_against_16bit_x(x, qw, bias, dtype, rows):
    """For every M in ``rows``: fp32 x computed in ``dtype`` against x.to(dtype)'s kernels
    (the same sums, so equal once rounded to 16 bits), float64 on the rounded x (tight: W
    exact on the GEMV paths, rounded to ``dtype`` on the 16-bit GEMMs, as for 16-bit x),
    and float32 compute (loose)."""
    device = x.device.type
    x16, bias16 = x.to(dtype), bias.to(dtype)
    assert torch.equal(bias16.float(), bias), "the bias must be exact in the 16-bit dtype"
    ref_exact_w = ref_matmul(x16, qw, bias16)
    w16 = pygen.quant.dequantize(qw, dtype).double()
    ref_w16 = x16.double().cpu() @ w16.cpu().T + bias.double().cpu()
    ref_fp32 = ref_matmul(x, qw, bias)
    for m in rows:
        out = pygen.quant.matmul(x[:m], qw, bias, compute_dtype=dtype)
        assert out.dtype == torch.float32 and out.shape == (m, qw.shape[0])
        assert torch.equal(out.to(dtype), pygen.quant.matmul(x16[:m], qw, bias16)), m
        tight = min(rel_mean_error(out, ref_exact_w[:m]), rel_mean_error(out, ref_w16[:m]))
        assert tight < FP32_TOL[device], (m, tight)
        assert rel_mean_error(out, ref_fp32[:m]) < LOOSE[dtype], m


@pytest.mark.parametrize("fmt,opts", FORMATS, ids=IDS)
@pytest.mark.parametrize("dev,dtype", CASES)
def test_every_format(torch_seed, dev, dtype, fmt, opts):
    # K = 640: a block of 512 columns and a narrower one on the CPU's bfloat16 GEMM; odd N
    # ends on partial panels and tiles; M covers the GEMV and every 4-row remainder.
    n, k = 45, 640
    qw = quantized(fmt, opts, n, k, device=dev)
    x = torch.randn(40, k, device=dev)
    bias = torch.randn(n, device=dev).to(dtype).float()
    check_against_16bit_x(x, qw, bias, dtype, [*range(1, 19), 23, 40])


@pytest.mark.parametrize("dev,dtype", CASES)
def test_every_m_up_to_300(torch_seed, dev, dtype):
    for fmt, opts in [("int4", dict(group_size=64, symmetric=False)), ("ternary", {})]:
        qw = quantized(fmt, opts, 77, 384, device=dev)
        x = torch.randn(300, 384, device=dev)
        bias = torch.randn(77, device=dev).to(dtype).float()
        check_against_16bit_x(x, qw, bias, dtype, range(1, 301))


@pytest.mark.parametrize(
    "fmt,opts,k",
    [
        ("int4", dict(group_size=32, symmetric=False), 672),  # 512 + one chunk of 128 + 32
        ("int4", dict(group_size=64), 704),  # 512 + 128 + 64
        ("mxfp4", {}, 608),  # 512 + 96, no whole chunk
        ("ternary", dict(per_channel=False), 64),  # element order, less than a block
    ],
)
def test_chunk_order_tails(torch_seed, fmt, opts, k):
    # float32 x is rounded where the CPU GEMM copies it into chunk order and where it
    # copies the tail columns element by element: every kind of tail here.
    qw = quantized(fmt, opts, 37, k)
    x = torch.randn(23, k)
    ties = torch.tensor([1.0 + 2.0**-8, 1.0 + 3 * 2.0**-8, -(1.0 + 2.0**-8), 2.0**-130, 3e38])
    x[3, :5], x[4, -5:] = ties, ties
    bias = torch.randn(37).bfloat16().float()
    out = pygen.quant.matmul(x, qw, bias, compute_dtype=torch.bfloat16)
    assert torch.equal(out.bfloat16(), pygen.quant.matmul(x.bfloat16(), qw, bias.bfloat16()))


def test_rounding_is_round_to_nearest_even():
    # W = I / 64 (ternary, exact in bfloat16): out = x rounded / 64, through the GEMV
    # (M = 1) and the bfloat16 GEMM (M = 8). Ties go to even, the rest to nearest.
    qw = pygen.quant.quantize(torch.eye(64)[:8], "ternary")
    assert torch.equal(pygen.quant.dequantize(qw), torch.eye(64)[:8] / 64)
    x = torch.zeros(8, 64)
    x[:, :4] = torch.tensor([1.0 + 2.0**-8, 1.0 + 3 * 2.0**-8, -1.0 - 2.0**-8 - 2.0**-20, 2.0**-100])
    want = torch.tensor([1.0, 1.0 + 2.0**-6, -1.0 - 2.0**-7, 2.0**-100])
    for m in (1, 8):
        out = pygen.quant.matmul(x[:m], qw, compute_dtype=torch.bfloat16)
        assert torch.equal(out[:, :4] * 64, want.expand(m, 4)), m


def test_opcheck(torch_seed, device):
    qw = quantized("int4", dict(group_size=32, symmetric=False), 20, 128, device=device)
    for x in (torch.randn(3, 128, device=device), torch.randn(2, 5, 128, device=device)):
        args = (x, qw.packed, qw.scales, qw.zeros, qw.format, qw.group_size, torch.randn(20, device=device))
        opcheck(torch.ops.pygen.quant_matmul.default, args, {"compute_dtype": torch.bfloat16})


@pytest.mark.parametrize(
    "x,compute_dtype,error,match",
    [
        (torch.randn(2, 128), torch.float16, ValueError, "compute_dtype float16 is CUDA only"),
        (torch.randn(2, 128), torch.float64, ValueError, "compute_dtype must be None, float32, bfloat16 for"),
        (torch.randn(2, 128).half(), torch.bfloat16, ValueError, "compute_dtype must be None or x's dtype"),
        (
            torch.randn(2, 128).bfloat16(),
            torch.float32,
            ValueError,
            "compute_dtype must be None or x's dtype",
        ),
        (
            torch.ones(2, 128, dtype=torch.int8),
            torch.bfloat16,
            ValueError,
            "compute_dtype is for float x only",
        ),
        (torch.randn(2, 128), "bfloat16", TypeError, "compute_dtype must be a torch.dtype or None"),
    ],
)
def test_bad_compute_dtype(x, compute_dtype, error, match):
    qw = quantized("ternary", {}, 8, 128)
    x_scale = torch.ones(2) if x.dtype == torch.int8 else None
    with pytest.raises(error, match=match):
        pygen.quant.matmul(x, qw, x_scale=x_scale, compute_dtype=compute_dtype)


def test_same_dtype_is_the_default(torch_seed):
    qw = quantized("mxfp4", {}, 16, 128)
    for x in (torch.randn(7, 128), torch.randn(7, 128).bfloat16()):
        assert torch.equal(pygen.quant.matmul(x, qw, compute_dtype=x.dtype), pygen.quant.matmul(x, qw))


@pytest.mark.parametrize(
    "cls,opts", [(Int4Linear, dict(group_size=64)), (MXFP4Linear, {}), (TernaryLinear, {})], ids=str
)
def test_layers(torch_seed, cls, opts):
    lin = nn.Linear(128, 24)
    layer = cls.from_linear(lin, compute_dtype=torch.bfloat16, **opts)
    assert layer.compute_dtype == torch.bfloat16 and "compute_dtype=bfloat16" in repr(layer)
    x = torch.randn(3, 6, 128)
    bias = layer.bias
    assert torch.equal(layer(x), pygen.quant.matmul(x, layer.qweight, bias, compute_dtype=torch.bfloat16))
    # 16-bit x computes in its own dtype; the config rebuilds the option.
    assert torch.equal(layer(x.half()), pygen.quant.matmul(x.half(), layer.qweight, bias.half()))
    empty = layer_from_config(layer.config())
    empty.load_state_dict(layer.state_dict())
    assert empty.compute_dtype == torch.bfloat16 and torch.equal(empty(x), layer(x))
    assert cls.from_linear(lin, **opts).compute_dtype is None


def test_layer_bad_compute_dtype():
    with pytest.raises(ValueError, match="compute_dtype must be None, torch.bfloat16 or torch.float16"):
        Int4Linear(128, 8, compute_dtype=torch.float64)
    with pytest.raises(ValueError, match="compute_dtype is for activations='float'"):
        TernaryLinear(128, 8, activations="int8", compute_dtype=torch.bfloat16)


@pytest.mark.parametrize("method", ["rtn", "gptq"])
def test_quantize_model(torch_seed, method):
    model = nn.Sequential(nn.Linear(128, 64), nn.GELU(), nn.Linear(64, 32))
    batches = [torch.randn(16, 128) for _ in range(2)]
    calibration = batches if method == "gptq" else None
    pygen.quantize_model(
        model, "int4", method=method, calibration=calibration, group_size=64, compute_dtype=torch.bfloat16
    )
    assert all(model[i].compute_dtype == torch.bfloat16 for i in (0, 2))
    assert all(c["compute_dtype"] == "bfloat16" for c in model.quantization["layers"].values())
    x = batches[0]
    bf16 = torch.bfloat16
    h = torch.nn.functional.gelu(pygen.quant.matmul(x, model[0].qweight, model[0].bias, compute_dtype=bf16))
    want = pygen.quant.matmul(h, model[2].qweight, model[2].bias, compute_dtype=bf16)
    assert torch.equal(model(x), want)
    with pytest.raises(ValueError, match="compute_dtype must be None"):
        pygen.quantize_model(nn.Linear(128, 8), "int4", compute_dtype=torch.float64)
