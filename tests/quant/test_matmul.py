"""pygen.quant.matmul against dequantize-then-matmul in float64, the W1.58A8 path against
integers, every SIMD path, torch.compile and bad input; on CUDA too when present (GEMV at
M <= 4, tiles beyond, K split across blocks when tiles are few)."""

import pytest
import torch

import pygen
from pygen.quant import reference
from tests.helpers import DEVICES, assert_error_within, opcheck, run_on_each_isa

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
# float32 x: float32 rounding only on both devices (the CUDA tiles sum K in one running
# float32 sum a thread, a little less accurate than the CPU's blocked sums).
FP32_TOL = {"cpu": 1e-6, "cuda": 1e-5}
needs_cuda = pytest.mark.skipif("cuda" not in DEVICES, reason="no CUDA device, or pygen built without CUDA")


def quantized(fmt, opts, n, k, seed=0, device="cpu"):
    w = torch.randn(n, k, generator=torch.Generator().manual_seed(seed))
    return pygen.quant.quantize(w.to(device), fmt, **opts)


def rel_mean_error(out, ref):
    return ((out.double().cpu() - ref).abs().mean() / ref.abs().mean()).item()


def ref_matmul(x, qw, bias=None):
    """reference.matmul (float64, on the CPU) for inputs on any device."""
    return reference.matmul(x.cpu(), qw, None if bias is None else bias.cpu())


def ref_matmul_int8(x_q, x_scale, qw, bias=None):
    return reference.matmul_int8(x_q.cpu(), x_scale.cpu(), qw, None if bias is None else bias.cpu())


@pytest.mark.parametrize("fmt,opts", FORMATS, ids=IDS)
@pytest.mark.parametrize("m", [1, 2, 3, 4, 5, 7, 16, 33])
def test_fp32_against_float64(torch_seed, device, fmt, opts, m):
    qw = quantized(fmt, opts, 77, 384, device=device)
    x = torch.randn(m, 384, device=device)
    bias = torch.randn(77, device=device)
    assert rel_mean_error(pygen.quant.matmul(x, qw), ref_matmul(x, qw)) < FP32_TOL[device]
    assert rel_mean_error(pygen.quant.matmul(x, qw, bias), ref_matmul(x, qw, bias)) < FP32_TOL[device]


def test_every_m_up_to_300(torch_seed, device):
    # M = 1..4 run the GEMV path, more the panel GEMM (CUDA: tiles of 64, K split across
    # blocks for M <= 16 here); odd N leaves tile remainders.
    for fmt, opts in [("int4", dict(group_size=64, symmetric=False)), ("ternary", {})]:
        qw = quantized(fmt, opts, 45, 128, device=device)
        x = torch.randn(300, 128, device=device)
        for m in range(1, 301):
            out = pygen.quant.matmul(x[:m], qw)
            assert rel_mean_error(out, ref_matmul(x[:m], qw)) < 1e-3, (fmt, m)


@pytest.mark.parametrize("fmt,opts", FORMATS, ids=IDS)
def test_bf16_every_m_every_format(torch_seed, device, fmt, opts):
    # bfloat16 x: every group size and scale dtype; on the CPU (AVX512-BF16) M > 4 runs
    # the bfloat16 GEMM: K = 640 is a block of 512 columns and a narrower one (groups of
    # 32 read 16 then 4 scales), odd N ends on a partial panel of 16 and tile of 4 (13
    # rows: the 16-row blocks of x run it as 8, 4 and 1 weight rows), and M covers 1 to 18
    # blocks of 16 rows of x and every remainder of them and of the 4-row tiles after them.
    n, k = 45, 640
    qw = quantized(fmt, opts, n, k, device=device)
    x = torch.randn(300, k, device=device).bfloat16()
    bias = torch.randn(n, device=device).bfloat16()
    ref = ref_matmul(x, qw, bias)
    same = x @ pygen.quant.dequantize(qw, torch.bfloat16).T + bias  # PyTorch in bfloat16
    for m in [*range(1, 40), 64, 127, 300]:
        out = pygen.quant.matmul(x[:m], qw, bias)
        assert out.dtype == torch.bfloat16 and out.shape == (m, n)
        assert_error_within(out, ref[:m], same[:m])


@pytest.mark.parametrize(
    "fmt,opts,k",
    [
        ("int4", dict(group_size=32, symmetric=False), 672),  # 512 + one chunk of 128 + 32
        ("int4", dict(group_size=64), 704),  # 512 + 128 + 64
        ("mxfp4", {}, 608),  # 512 + 96, no whole chunk
        ("int4", dict(group_size=128, symmetric=False), 1152),  # element order
        ("ternary", dict(per_channel=False), 64),  # element order, less than a block of 512
    ],
)
def test_bf16_chunk_order_and_tails(torch_seed, device, fmt, opts, k):
    # The CPU bfloat16 GEMM decodes groups of 32 and 64 in whole 64-byte chunks of a packed
    # row (128 codes) in its own column order, x copied to match, and the columns after a
    # block's last whole chunk in element order: K here leaves every kind of tail, beside
    # the formats that keep element order throughout.
    n = 37
    qw = quantized(fmt, opts, n, k, device=device)
    x = torch.randn(40, k, device=device).bfloat16()
    bias = torch.randn(n, device=device).bfloat16()
    ref = ref_matmul(x, qw, bias)
    same = x @ pygen.quant.dequantize(qw, torch.bfloat16).T + bias
    for m in (5, 16, 23, 40):
        assert_error_within(pygen.quant.matmul(x[:m], qw, bias), ref[:m], same[:m])


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("fmt,opts", FORMATS, ids=IDS)
def test_cuda_every_m_every_format(torch_seed, fmt, opts, dtype):
    # Every M from GEMV to a few tiles of 64, every group size and scale dtype, odd N over
    # two tiles of 64; K = 352 (group 32 only) ends on half a step of 64.
    shapes = [(77, 384)] + ([(45, 352)] if opts.get("group_size", 32) == 32 and fmt != "ternary" else [])
    for n, k in shapes:
        qw = quantized(fmt, opts, n, k, device="cuda")
        x = torch.randn(300, k, device="cuda").to(dtype)
        bias = torch.randn(n, device="cuda").to(dtype)
        ref = ref_matmul(x, qw, bias)
        same = x @ pygen.quant.dequantize(qw, dtype).T + bias  # PyTorch (cuBLAS) in x's dtype
        for m in range(1, 301):
            out = pygen.quant.matmul(x[:m], qw, bias)
            assert out.dtype == dtype and out.shape == (m, n)
            if dtype == torch.float32:
                assert rel_mean_error(out, ref[:m]) < FP32_TOL["cuda"], (n, k, m)
            else:
                assert_error_within(out, ref[:m], same[:m])


@pytest.mark.parametrize("n,k", [(1, 64), (3, 4160), (129, 1088), (16, 8192)])
def test_shapes(torch_seed, device, n, k):
    for fmt, opts in [("int4", dict(group_size=32)), ("mxfp4", {}), ("ternary", {})]:
        qw = quantized(fmt, opts, n, k, device=device)
        for m in (1, 4, 9, 70):
            x = torch.randn(m, k, device=device)
            assert rel_mean_error(pygen.quant.matmul(x, qw), ref_matmul(x, qw)) < 1e-3


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("m", [1, 4, 24])
def test_low_precision(torch_seed, device, dtype, m):
    for fmt, opts in FORMATS[::2]:
        qw = quantized(fmt, opts, 70, 256, device=device)
        x = torch.randn(2, m, 256, device=device).to(dtype)
        bias = torch.randn(70, device=device).to(dtype)
        out = pygen.quant.matmul(x, qw, bias)
        assert out.dtype == dtype and out.shape == (2, m, 70)
        # At most twice the error of PyTorch in the same dtype on the dequantized weight.
        same = x @ pygen.quant.dequantize(qw, dtype).T + bias
        assert_error_within(out, ref_matmul(x, qw, bias), same)


def test_batch_dims_and_strides(torch_seed, device):
    qw = quantized("int4", dict(group_size=64), 40, 128, device=device)
    x = torch.randn(3, 128, 5, device=device).transpose(1, 2)  # [3, 5, 128], not contiguous
    out = pygen.quant.matmul(x, qw)
    assert out.shape == (3, 5, 40)
    torch.testing.assert_close(out, pygen.quant.matmul(x.contiguous(), qw))
    assert rel_mean_error(out, ref_matmul(x, qw)) < FP32_TOL[device]
    assert pygen.quant.matmul(torch.randn(0, 128, device=device), qw).shape == (0, 40)
    # A contiguous view 4 bytes past an allocation: the kernels' 16-byte loads need a copy.
    for m in (1, 9):
        x = torch.randn(m * 128 + 1, device=device)[1:].view(m, 128)
        assert rel_mean_error(pygen.quant.matmul(x, qw), ref_matmul(x, qw)) < FP32_TOL[device]


@pytest.mark.parametrize("per_channel", [True, False])
@pytest.mark.parametrize("m", [1, 3, 4, 5, 17, 64])
def test_int8_exact(torch_seed, device, per_channel, m):
    qw = quantized("ternary", dict(per_channel=per_channel), 23, 320, device=device)
    x = torch.randn(m, 320, device=device) * 4
    x_q, x_scale = pygen.quant.quantize_activations(x)
    assert x_q.dtype == torch.int8 and x_q.abs().max() == 127
    bias = torch.randn(23, device=device)
    out = pygen.quant.matmul(x_q, qw, bias, x_scale=x_scale)
    assert torch.equal(out.cpu(), ref_matmul_int8(x_q, x_scale, qw, bias))
    out = pygen.quant.matmul(x_q, qw, x_scale=x_scale)
    assert torch.equal(out.cpu(), ref_matmul_int8(x_q, x_scale, qw))


@needs_cuda
def test_cuda_int8_every_m(torch_seed):
    qw = quantized("ternary", {}, 77, 384, device="cuda")
    x_q, x_scale = pygen.quant.quantize_activations(torch.randn(300, 384, device="cuda"))
    bias = torch.randn(77, device="cuda")
    ref = ref_matmul_int8(x_q, x_scale, qw, bias)
    for m in range(1, 301):
        assert torch.equal(pygen.quant.matmul(x_q[:m], qw, bias, x_scale=x_scale[:m]).cpu(), ref[:m]), m


@pytest.mark.parametrize("m", [1, 5, 80])
def test_int8_extremes_exact(device, m):
    # All +-127 activations against all-+-1 weights: the largest sums, still exact in int32.
    k = 8192
    w = torch.ones(6, k)
    w[1] = -1
    w[2, ::2] = -1
    qw = pygen.quant.quantize(w.to(device), "ternary")
    x_q = torch.full((m, k), 127, dtype=torch.int8)
    x_q[1 % m] = -127
    x_q[2 % m, 1::2] = -128
    x_scale = torch.ones(m)
    out = pygen.quant.matmul(x_q.to(device), qw, x_scale=x_scale.to(device))
    assert torch.equal(out.cpu(), ref_matmul_int8(x_q, x_scale, qw))


def test_opcheck(torch_seed, device):
    for fmt, opts in FORMATS:
        qw = quantized(fmt, opts, 20, 128, device=device)
        for x in (torch.randn(3, 128), torch.randn(2, 5, 128).bfloat16(), torch.randn(9, 128)):
            x = x.to(device)
            bias = torch.randn(20, dtype=x.dtype, device=device)
            opcheck(
                torch.ops.pygen.quant_matmul.default,
                (x, qw.packed, qw.scales, qw.zeros, qw.format, qw.group_size, bias),
            )
    qw = quantized("ternary", {}, 20, 128, device=device)
    for shape in ((2, 3, 128), (9, 128)):
        x_q, x_scale = pygen.quant.quantize_activations(torch.randn(shape, device=device))
        opcheck(torch.ops.pygen.quant_matmul_int8.default, (x_q, x_scale, qw.packed, qw.scales, None))


def test_torch_compile(torch_seed, device):
    qw = quantized("int4", dict(group_size=32, symmetric=False), 48, 256, device=device)
    x = torch.randn(9, 256, device=device)

    def f(x):  # compute_dtype too (test_compute_dtype.py): one compile for both
        bf16 = pygen.quant.matmul(x, qw, compute_dtype=torch.bfloat16)
        return torch.relu(pygen.quant.matmul(x, qw)) * 2 + bf16

    torch.testing.assert_close(torch.compile(f, fullgraph=True)(x), f(x))


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
        # float32 x computed in bfloat16: the bfloat16 x kernels' sums (test_compute_dtype.py)
        y = pygen.quant.matmul(x.float(), qw, compute_dtype=torch.bfloat16)
        assert torch.equal(y.bfloat16(), pygen.quant.matmul(x.bfloat16(), qw)), (fmt, m)
    if fmt == "ternary":
        x_q, x_scale = pygen.quant.quantize_activations(torch.randn(6, 256))
        assert torch.equal(pygen.quant.matmul(x_q, qw, x_scale=x_scale),
                           reference.matmul_int8(x_q, x_scale, qw))
sys.stdout.write(f"{pygen.info()['cpu_isa']} {worst[torch.float32]!r} {worst[torch.bfloat16]!r}")
"""


def test_every_simd_path():
    for isa, (fp32, bf16) in run_on_each_isa(SCRIPT).items():
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


@needs_cuda
def test_cuda_device_mismatch():
    qw = quantized("int4", dict(group_size=64), 8, 128, device="cuda")
    with pytest.raises(RuntimeError, match="x must be on packed's device"):
        pygen.quant.matmul(torch.randn(2, 128), qw)
    with pytest.raises(RuntimeError, match="bias must be on x's device"):
        pygen.quant.matmul(torch.randn(2, 128, device="cuda"), qw, torch.randn(8))
    cpu_scales = pygen.quant.QuantizedWeight("int4", qw.packed, qw.scales.cpu(), None, 64)
    with pytest.raises(RuntimeError, match="scales must be on packed's device"):
        pygen.quant.matmul(torch.randn(2, 128, device="cuda"), cpu_scales)
