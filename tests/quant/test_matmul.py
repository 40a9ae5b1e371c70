"""pygen.quant.matmul against dequantize-then-matmul in float64, the W1.58A8 path against
integers, every SIMD path, torch.compile and bad input."""

import os
import subprocess
import sys

import pytest
import torch

import pygen
from pygen.quant import reference
from tests.helpers import assert_error_within, opcheck

FORMATS = [
    ("int4", dict(group_size=32)),
    ("int4", dict(group_size=64, symmetric=False)),
    ("int4", dict(group_size=128, scale_dtype=torch.bfloat16)),
    ("int4", dict(group_size=128, symmetric=False, scale_dtype=torch.float32)),
    ("mxfp4", {}),
    ("ternary", {}),
    ("ternary", dict(per_channel=False)),
]
IDS = [f"{f}-{'-'.join(f'{k}={v}' for k, v in o.items())}" for f, o in FORMATS]


def quantized(fmt, opts, n, k, seed=0):
    w = torch.randn(n, k, generator=torch.Generator().manual_seed(seed))
    return pygen.quant.quantize(w, fmt, **opts)


def rel_mean_error(out, ref):
    return ((out.double() - ref).abs().mean() / ref.abs().mean()).item()


@pytest.mark.parametrize("fmt,opts", FORMATS, ids=IDS)
@pytest.mark.parametrize("m", [1, 2, 3, 4, 5, 7, 16, 33])
def test_fp32_against_float64(torch_seed, fmt, opts, m):
    qw = quantized(fmt, opts, 77, 384)
    x = torch.randn(m, 384)
    bias = torch.randn(77)
    assert rel_mean_error(pygen.quant.matmul(x, qw), reference.matmul(x, qw)) < 1e-6
    assert rel_mean_error(pygen.quant.matmul(x, qw, bias), reference.matmul(x, qw, bias)) < 1e-6


def test_every_m_up_to_300(torch_seed):
    # M = 1..4 run the GEMV path, more the panel GEMM; odd N leaves tile remainders.
    for fmt, opts in [("int4", dict(group_size=64, symmetric=False)), ("ternary", {})]:
        qw = quantized(fmt, opts, 45, 128)
        x = torch.randn(300, 128)
        for m in range(1, 301):
            out = pygen.quant.matmul(x[:m], qw)
            assert rel_mean_error(out, reference.matmul(x[:m], qw)) < 1e-3, (fmt, m)


@pytest.mark.parametrize("n,k", [(1, 64), (3, 4160), (129, 1088), (16, 8192)])
def test_shapes(torch_seed, n, k):
    for fmt, opts in [("int4", dict(group_size=32)), ("mxfp4", {}), ("ternary", {})]:
        qw = quantized(fmt, opts, n, k)
        for m in (1, 4, 9):
            x = torch.randn(m, k)
            assert rel_mean_error(pygen.quant.matmul(x, qw), reference.matmul(x, qw)) < 1e-3


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("m", [1, 4, 24])
def test_low_precision(torch_seed, dtype, m):
    for fmt, opts in FORMATS[::2]:
        qw = quantized(fmt, opts, 70, 256)
        x = torch.randn(2, m, 256).to(dtype)
        bias = torch.randn(70).to(dtype)
        out = pygen.quant.matmul(x, qw, bias)
        assert out.dtype == dtype and out.shape == (2, m, 70)
        # At most twice the error of PyTorch in the same dtype on the dequantized weight.
        same = x @ pygen.quant.dequantize(qw, dtype).T + bias
        assert_error_within(out, reference.matmul(x, qw, bias), same)


def test_batch_dims_and_strides(torch_seed):
    qw = quantized("int4", dict(group_size=64), 40, 128)
    x = torch.randn(3, 128, 5).transpose(1, 2)  # [3, 5, 128], not contiguous
    out = pygen.quant.matmul(x, qw)
    assert out.shape == (3, 5, 40)
    torch.testing.assert_close(out, pygen.quant.matmul(x.contiguous(), qw))
    assert rel_mean_error(out, reference.matmul(x, qw)) < 1e-6
    assert pygen.quant.matmul(torch.randn(0, 128), qw).shape == (0, 40)


@pytest.mark.parametrize("per_channel", [True, False])
@pytest.mark.parametrize("m", [1, 3, 4, 5, 17, 64])
def test_int8_exact(torch_seed, per_channel, m):
    qw = quantized("ternary", dict(per_channel=per_channel), 23, 320)
    x = torch.randn(m, 320) * 4
    x_q, x_scale = pygen.quant.quantize_activations(x)
    assert x_q.dtype == torch.int8 and x_q.abs().max() == 127
    bias = torch.randn(23)
    out = pygen.quant.matmul(x_q, qw, bias, x_scale=x_scale)
    assert torch.equal(out, reference.matmul_int8(x_q, x_scale, qw, bias))
    assert torch.equal(pygen.quant.matmul(x_q, qw, x_scale=x_scale), reference.matmul_int8(x_q, x_scale, qw))


def test_int8_extremes_exact():
    # All +-127 activations against all-+-1 weights: the largest sums, still exact in int32.
    k = 8192
    w = torch.ones(6, k)
    w[1] = -1
    w[2, ::2] = -1
    qw = pygen.quant.quantize(w, "ternary")
    x_q = torch.full((5, k), 127, dtype=torch.int8)
    x_q[1] = -127
    x_q[2, 1::2] = -128
    x_scale = torch.ones(5)
    assert torch.equal(pygen.quant.matmul(x_q, qw, x_scale=x_scale), reference.matmul_int8(x_q, x_scale, qw))


def test_opcheck(torch_seed):
    for fmt, opts in FORMATS:
        qw = quantized(fmt, opts, 20, 128)
        for x in (torch.randn(3, 128), torch.randn(2, 5, 128).bfloat16()):
            bias = torch.randn(20, dtype=x.dtype)
            opcheck(
                torch.ops.pygen.quant_matmul.default,
                (x, qw.packed, qw.scales, qw.zeros, qw.format, qw.group_size, bias),
            )
    qw = quantized("ternary", {}, 20, 128)
    x_q, x_scale = pygen.quant.quantize_activations(torch.randn(2, 3, 128))
    opcheck(torch.ops.pygen.quant_matmul_int8.default, (x_q, x_scale, qw.packed, qw.scales, None))


def test_torch_compile(torch_seed):
    qw = quantized("int4", dict(group_size=32, symmetric=False), 48, 256)
    x = torch.randn(4, 256)

    @torch.compile(fullgraph=True)
    def f(x):
        return torch.relu(pygen.quant.matmul(x, qw)) * 2

    torch.testing.assert_close(f(x), torch.relu(pygen.quant.matmul(x, qw)) * 2)


SCRIPT = """
import torch, pygen, sys
from pygen.quant import reference
torch.manual_seed(0)
worst = {torch.float32: 0.0, torch.bfloat16: 0.0}
for fmt, opts in [("int4", dict(group_size=32)), ("int4", dict(group_size=128, symmetric=False)),
                  ("mxfp4", {}), ("ternary", {})]:
    qw = pygen.quant.quantize(torch.randn(37, 256), fmt, **opts)
    for m in (1, 2, 4, 5, 13):
        for dtype in (torch.float32, torch.bfloat16):
            x = torch.randn(m, 256).to(dtype)
            ref = reference.matmul(x, qw)
            out = pygen.quant.matmul(x, qw).double()
            err = ((out - ref).abs().mean() / ref.abs().mean()).item()
            worst[dtype] = max(worst[dtype], err)
    if fmt == "ternary":
        x_q, x_scale = pygen.quant.quantize_activations(torch.randn(6, 256))
        assert torch.equal(pygen.quant.matmul(x_q, qw, x_scale=x_scale),
                           reference.matmul_int8(x_q, x_scale, qw))
sys.stdout.write(f"{pygen.info()['cpu_isa']} {worst[torch.float32]!r} {worst[torch.bfloat16]!r}")
"""


def test_every_simd_path():
    detected = pygen.info()["cpu_isa_detected"]
    paths = ["scalar", "avx2", "avx512"][: ["scalar", "avx2", "avx512"].index(detected) + 1]
    for isa in paths:
        env = dict(os.environ, PYGEN_CPU_ISA=isa)
        run = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        chosen, fp32, bf16 = run.stdout.split()
        assert chosen == isa
        # float32 sums only round; bfloat16 outputs round to 8 bits (relative 2^-9).
        assert float(fp32) < 1e-6 and float(bf16) < 4e-3, (isa, fp32, bf16)


@pytest.mark.parametrize(
    "make,error,match",
    [
        (lambda qw: (torch.randn(2, 100), qw), ValueError, r"x must be \[\.\.\., in_features=128\]"),
        (lambda qw: (torch.randn(2, 128).double(), qw), TypeError, "x must be float32, bfloat16 or float16"),
        (
            lambda qw: (torch.randn(2, 128), qw, torch.randn(5)),
            ValueError,
            r"bias must be \[out_features=40\]",
        ),
        (lambda qw: (torch.randn(2, 128), qw, torch.randn(40).half()), TypeError, "bias must have x's dtype"),
        (lambda qw: (torch.randn(2, 128), "qw"), TypeError, "qweight must be a pygen.quant.QuantizedWeight"),
        (lambda qw: (torch.ones(2, 128, dtype=torch.int8), qw), ValueError, "int8 x needs a ternary weight"),
    ],
)
def test_matmul_bad_input(make, error, match):
    qw = quantized("int4", dict(group_size=64), 40, 128)
    with pytest.raises(error, match=match):
        pygen.quant.matmul(*make(qw))


def test_int8_bad_input():
    qw = quantized("ternary", {}, 8, 128)
    x_q, x_scale = pygen.quant.quantize_activations(torch.randn(3, 128))
    with pytest.raises(ValueError, match="needs x_scale"):
        pygen.quant.matmul(x_q, qw)
    with pytest.raises(ValueError, match="x_scale must be x's shape"):
        pygen.quant.matmul(x_q, qw, x_scale=x_scale[:2])
    with pytest.raises(ValueError, match="x_scale is for int8 x only"):
        pygen.quant.matmul(torch.randn(3, 128), qw, x_scale=x_scale)


def test_tampered_weight_is_rejected():
    qw = quantized("int4", dict(group_size=64, symmetric=False), 8, 128)
    bad = pygen.quant.QuantizedWeight("int4", qw.packed, qw.scales[:, :1].contiguous(), None, 64)
    with pytest.raises(ValueError, match=r"scales must be \[8, 2\]"):
        pygen.quant.matmul(torch.randn(1, 128), bad)
    bad = pygen.quant.QuantizedWeight("int4", qw.packed, qw.scales, qw.zeros[:, :1].contiguous(), 64)
    with pytest.raises(ValueError, match="zeros must be contiguous and shaped as scales"):
        pygen.quant.matmul(torch.randn(1, 128), bad)
    bad = pygen.quant.QuantizedWeight("mxfp4", qw.packed, qw.scales, None, 32)
    with pytest.raises(ValueError, match=r"scales must be \[8, 4\]"):
        pygen.quant.matmul(torch.randn(1, 128), bad)
