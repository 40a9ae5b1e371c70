"""Quantize, pack/unpack and dequantize against pygen/quant/reference.py, bit for bit."""

import pytest
import torch

import pygen
from pygen.quant import reference
from tests.helpers import DEVICES, opcheck

INT4_CASES = [
    dict(group_size=g, symmetric=sym, scale_dtype=dt)
    for g in (32, 64, 128)
    for sym in (True, False)
    for dt in (torch.float16, torch.bfloat16, torch.float32)
]


def weight(n=37, k=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, k, generator=g) * torch.rand(n, 1, generator=g) * 3
    w[0, :32] = 0.0  # an all-zero group
    w[1, :64] = 0.5  # a constant group
    return w


@pytest.mark.parametrize("opts", INT4_CASES, ids=str)
def test_int4_matches_reference(opts):
    w = weight()
    qw = pygen.quant.quantize(w, "int4", **opts)
    codes, scales, zeros = reference.quantize_int4(
        w, opts["group_size"], opts["symmetric"], opts["scale_dtype"]
    )
    assert torch.equal(qw.packed, reference.pack(codes, "int4"))
    assert torch.equal(qw.scales, scales)
    assert (qw.zeros is None) == opts["symmetric"]
    if zeros is not None:
        assert torch.equal(qw.zeros, zeros)
    dq = pygen.quant.dequantize(qw)
    assert torch.equal(dq, reference.dequantize(qw, torch.float32))
    assert torch.equal(pygen.quant.dequantize(qw, torch.float64), reference.dequantize(qw))
    # Round to nearest: half a step, plus the zero point's rounding (asymmetric) or the
    # clamp at -8 / +7 (symmetric), plus the scale's own rounding to scale_dtype.
    step = qw.scales.float().repeat_interleave(opts["group_size"], 1)
    assert ((dq - w).abs() <= step * 1.1 + 1e-6).all()


def test_mxfp4_matches_reference():
    w = weight()
    w[2, :32] = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 6.0] * 4)  # every E2M1 tie
    w[3, :32] = 1e-40  # subnormal block
    qw = pygen.quant.quantize(w, "mxfp4")
    codes, scales = reference.quantize_mxfp4(w)
    assert torch.equal(qw.packed, reference.pack(codes, "int4"))
    assert torch.equal(qw.scales, scales)
    assert torch.equal(pygen.quant.dequantize(qw), reference.dequantize(qw, torch.float32))
    # Ties to even: 0.25 -> 0, 0.75 -> 1, 1.25 -> 1, 1.75 -> 2, 2.5 -> 2, 3.5 -> 4, 5 -> 4.
    e = 2.0 ** (int(scales[2, 0]) - 127)
    assert pygen.quant.dequantize(qw)[2, :8].tolist() == [v * e for v in [0, 1, 1, 2, 2, 4, 4, 6]]


def test_e2m1_every_code():
    # A block whose max is 6 has scale 2^0, so each E2M1 value must come back as its code
    # (-0, code 8, is written as +0).
    values = torch.tensor([reference.E2M1[c & 7] * (-1 if c & 8 else 1) for c in range(16)] * 2)
    qw = pygen.quant.quantize(values[None], "mxfp4")
    assert qw.scales.item() == 127
    expected = torch.tensor([0 if c == 8 else c for c in range(16)] * 2, dtype=torch.uint8)
    assert torch.equal(torch.ops.pygen.unpack_codes(qw.packed, "int4", 32)[0], expected)
    assert torch.equal(reference.e2m1_encode(values), expected)


@pytest.mark.parametrize("per_channel", [True, False])
def test_ternary_matches_reference(per_channel):
    w = weight(k=320)
    qw = pygen.quant.quantize(w, "ternary", per_channel=per_channel)
    codes, scale = reference.quantize_ternary(w, per_channel)
    assert torch.equal(qw.packed, reference.pack(codes, "int2"))
    assert torch.equal(qw.scales, scale)
    assert torch.equal(pygen.quant.dequantize(qw), reference.dequantize(qw, torch.float32))
    s = scale[5 if per_channel else 0].item()
    assert set(pygen.quant.dequantize(qw)[5].unique().tolist()) == {-s, 0.0, s}


@pytest.mark.parametrize(
    "layout,cols,limit",
    [("int4", 96, 16), ("int2", 192, 3), ("base3", 193, 3), ("base3", 5, 3), ("base3", 1, 3)],
)
def test_pack_unpack_round_trip(layout, cols, limit):
    codes = torch.randint(0, limit, (11, cols), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    packed = torch.ops.pygen.pack_codes(codes, layout)
    assert torch.equal(packed, reference.pack(codes, layout))
    assert torch.equal(torch.ops.pygen.unpack_codes(packed, layout, cols), codes)
    assert torch.equal(reference.unpack(packed, layout, cols), codes)
    opcheck(torch.ops.pygen.pack_codes.default, (codes, layout))
    opcheck(torch.ops.pygen.unpack_codes.default, (packed, layout, cols))


def test_layout_bit_order():
    # int4: byte i of a 32-block holds element i (low nibble) and i + 16 (high nibble).
    codes = torch.arange(32, dtype=torch.uint8)[None] % 16
    packed = torch.ops.pygen.pack_codes(codes, "int4")
    assert packed[0, 3].item() == 3 | (19 % 16) << 4
    # int2: byte i of a 64-block holds elements i, i + 16, i + 32, i + 48 from bit 0 up.
    codes = torch.zeros(1, 64, dtype=torch.uint8)
    codes[0, [5, 21, 37, 53]] = torch.tensor([1, 2, 0, 1], dtype=torch.uint8)
    assert torch.ops.pygen.pack_codes(codes, "int2")[0, 5].item() == 1 | 2 << 2 | 0 << 4 | 1 << 6
    # base3: 5 codes a byte, first code least significant.
    codes = torch.tensor([[2, 0, 1, 2, 1, 2]], dtype=torch.uint8)
    assert torch.ops.pygen.pack_codes(codes, "base3").tolist() == [[2 + 9 + 54 + 81, 2 + 3 + 9 + 27 + 81]]


@pytest.mark.parametrize(
    "fmt,opts", [("int4", dict(group_size=64, symmetric=False)), ("mxfp4", {}), ("ternary", {})]
)
def test_save_load_safetensors(tmp_path, fmt, opts):
    from safetensors.torch import load_file, save_file

    qw = pygen.quant.quantize(weight(k=320 if fmt == "ternary" else 256), fmt, **opts)
    save_file(qw.state_dict(), str(tmp_path / "w.safetensors"))
    back = pygen.quant.QuantizedWeight.from_state_dict(load_file(str(tmp_path / "w.safetensors")))
    assert back.format == qw.format and back.shape == qw.shape and back.group_size == qw.group_size
    assert torch.equal(pygen.quant.dequantize(back), pygen.quant.dequantize(qw))
    if fmt == "ternary":  # stored at 1.6 bits a weight
        assert qw.state_dict()["trits"].numel() == qw.shape[0] * qw.shape[1] // 5


def test_memory():
    n, k = 64, 4096
    w = torch.randn(n, k)
    fp16 = n * k * 2
    assert pygen.quant.quantize(w, "int4", group_size=128).nbytes == fp16 // 4 + n * k // 128 * 2
    assert pygen.quant.quantize(w, "mxfp4").nbytes == fp16 // 4 + n * k // 32
    assert pygen.quant.quantize(w, "ternary").nbytes == fp16 // 8 + n * 4


def test_quantize_opcheck():
    w = weight()
    for args in [
        (w, "int4", 64, False, torch.float16, True),
        (w, "mxfp4", 32, True, torch.float16, True),
        (w, "ternary", 0, True, torch.float32, False),
    ]:
        opcheck(torch.ops.pygen.quantize_weight.default, args)
    qw = pygen.quant.quantize(w, "int4", group_size=32, symmetric=False)
    opcheck(
        torch.ops.pygen.dequantize_weight.default, (qw.packed, qw.scales, qw.zeros, "int4", 32, torch.float32)
    )


@pytest.mark.parametrize(
    "w,fmt,opts,error,match",
    [
        (torch.randn(4, 100), "int4", dict(group_size=32), ValueError, "multiple of group_size 32"),
        (torch.randn(4, 128), "int4", dict(group_size=48), ValueError, "group_size must be 32, 64 or 128"),
        (torch.randn(4, 96), "ternary", {}, ValueError, "multiple of 64"),
        (torch.randn(4, 48), "mxfp4", {}, ValueError, "multiple of group_size 32"),
        (torch.randn(128), "int4", {}, ValueError, "weight must be 2-D"),
        (torch.randint(0, 3, (4, 128)), "int4", {}, TypeError, "weight must be float32"),
        (torch.randn(4, 128), "int3", {}, ValueError, "format must be one of"),
        (torch.randn(4, 128), "int4", dict(scale_dtype=torch.int8), TypeError, "scale_dtype must be float32"),
        (torch.full((4, 128), 1e6), "int4", {}, ValueError, "scale overflows"),
    ],
)
def test_quantize_bad_input(w, fmt, opts, error, match):
    with pytest.raises(error, match=match):
        pygen.quant.quantize(w, fmt, **opts)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_quantize_rejects_non_finite(bad):
    w = torch.randn(4, 128)
    w[2, 7] = bad
    with pytest.raises(ValueError, match="weight must be finite"):
        pygen.quant.quantize(w, "int4")


def test_unpack_bad_input():
    with pytest.raises(ValueError, match="byte above 242"):
        torch.ops.pygen.unpack_codes(torch.tensor([[243]], dtype=torch.uint8), "base3", 5)
    with pytest.raises(ValueError, match="codes must be below 3"):
        torch.ops.pygen.pack_codes(torch.full((1, 64), 3, dtype=torch.uint8), "int2")
    with pytest.raises(ValueError, match="layout must be"):
        torch.ops.pygen.pack_codes(torch.zeros(1, 64, dtype=torch.uint8), "int3")


@pytest.mark.skipif("cuda" not in DEVICES, reason="no CUDA device, or pygen built without CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_dequantize_cuda_matches_cpu(dtype):
    w = weight(k=384)
    others = [("mxfp4", {}), ("ternary", {}), ("ternary", dict(per_channel=False))]
    cases = [("int4", o) for o in INT4_CASES] + others
    for fmt, opts in cases:
        qw = pygen.quant.quantize(w, fmt, **opts)
        out = pygen.quant.dequantize(qw.to("cuda"), dtype)
        assert out.device.type == "cuda" and out.dtype == dtype
        assert torch.equal(out.cpu(), pygen.quant.dequantize(qw, dtype)), (fmt, opts)
