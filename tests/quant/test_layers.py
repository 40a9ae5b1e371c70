"""pygen.nn quantized linear layers: Int4Linear, MXFP4Linear, TernaryLinear against
dequantize-then-linear; BitLinear's straight-through gradients and its packed export;
state_dict / safetensors round trips; PyTorch's int4pack interop; bad input."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import pygen
from pygen.nn import BitLinear, Int4Linear, MXFP4Linear, TernaryLinear
from pygen.nn.quant import layer_from_config

LAYERS = [
    (Int4Linear, dict(group_size=32)),
    (Int4Linear, dict(group_size=64, symmetric=False, scale_dtype=torch.bfloat16)),
    (Int4Linear, dict(group_size=128, scale_dtype=torch.float32)),
    (MXFP4Linear, {}),
    (TernaryLinear, {}),
    (TernaryLinear, dict(per_channel=False)),
]
IDS = [f"{c.__name__}-{'-'.join(f'{k}={v}' for k, v in o.items())}" for c, o in LAYERS]


def linear(k=256, n=48, bias=True, seed=0):
    torch.manual_seed(seed)
    return nn.Linear(k, n, bias=bias)


@pytest.mark.parametrize("cls,opts", LAYERS, ids=IDS)
@pytest.mark.parametrize("bias", [True, False])
def test_matches_dequantize_then_linear(torch_seed, cls, opts, bias):
    lin = linear(bias=bias)
    layer = cls.from_linear(lin, **opts)
    w = pygen.quant.dequantize(layer.qweight)
    assert w.shape == lin.weight.shape
    x = torch.randn(2, 5, 256)
    torch.testing.assert_close(layer(x), F.linear(x, w, lin.bias), rtol=1e-5, atol=1e-5)
    # bfloat16 x: the bias follows x's dtype.
    out = layer(x.bfloat16())
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), F.linear(x, w, lin.bias), rtol=0.05, atol=0.1)


@pytest.mark.parametrize("cls,opts", LAYERS, ids=IDS)
def test_state_dict_round_trip(tmp_path, cls, opts):
    from safetensors.torch import load_file, save_file

    layer = cls.from_linear(linear(), **opts)
    save_file(layer.state_dict(), tmp_path / "layer.safetensors")
    empty = layer_from_config(layer.config())
    empty.load_state_dict(load_file(tmp_path / "layer.safetensors"))
    x = torch.randn(3, 256)
    assert torch.equal(empty(x), layer(x))
    assert cls.format in repr(layer) and "bits_per_weight" in repr(layer)


def test_scales_keep_their_dtype_under_module_casts():
    layer = Int4Linear.from_linear(linear(), group_size=64)
    ternary = TernaryLinear.from_linear(linear())
    for m in (layer, ternary):
        dtype = m.scales.dtype
        m.bfloat16()
        assert m.scales.dtype == dtype and m.bias.dtype == torch.bfloat16
        assert m(torch.randn(2, 256, dtype=torch.bfloat16)).dtype == torch.bfloat16


def test_weight_memory():
    lin = linear(k=256, n=64)
    int4 = Int4Linear.from_linear(lin, group_size=128)  # 4 bits + a float16 scale per 128
    assert int4.weight_nbytes == 64 * 256 // 2 + 64 * 2 * 2
    assert TernaryLinear.from_linear(lin).weight_nbytes == 64 * 256 // 4 + 64 * 4


def test_ternary_int8_activations_is_w158a8():
    lin = linear()
    layer = TernaryLinear.from_linear(lin, activations="int8")
    x = torch.randn(4, 256)
    x_q, x_scale = pygen.quant.quantize_activations(x)
    ref = pygen.quant.matmul(x_q, layer.qweight, lin.bias.detach(), x_scale=x_scale)
    assert torch.equal(layer(x), ref)


def test_bitlinear_forward_is_fake_quantization():
    torch.manual_seed(0)
    layer = BitLinear(128, 32, per_channel=True)
    x = torch.randn(6, 128)
    s = layer.weight.detach().abs().mean(1, keepdim=True)
    w_q = torch.round(layer.weight.detach() / (s + 1e-5)).clamp(-1, 1) * s
    x_s = x.abs().amax(-1, keepdim=True) / 127
    x_q = torch.round(x / x_s).clamp(-127, 127) * x_s
    torch.testing.assert_close(layer(x), F.linear(x_q, w_q, layer.bias), rtol=1e-5, atol=1e-5)


def test_bitlinear_straight_through_gradients():
    torch.manual_seed(0)
    layer = BitLinear(64, 16, norm=True)
    x = torch.randn(5, 64, requires_grad=True)
    grad_out = torch.randn(5, 16)
    layer(x).backward(grad_out)
    # The rounding passes the gradient unchanged and the scales are constants, so the
    # weight's gradient is that of a float linear layer fed the fake-quantized input.
    assert x.grad is not None and layer.norm.weight.grad is not None
    xn = layer.norm(x.detach())
    x_s = xn.abs().amax(-1, keepdim=True) / 127
    x_q = torch.round(xn / x_s).clamp(-127, 127) * x_s
    s = layer.weight_scale()
    torch.testing.assert_close(layer.weight.grad, grad_out.T @ x_q * (s / (s + 1e-5)), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(layer.bias.grad, grad_out.sum(0))
    # A training step changes the latent weights, and the loss goes down on a toy fit.
    target = torch.randn(64, 16)
    opt = torch.optim.Adam(layer.parameters(), lr=1e-2)
    losses = []
    for _ in range(60):
        inp = torch.randn(32, 64)
        loss = (layer(inp) - inp @ target).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-10:]) < 0.7 * sum(losses[:10])


@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("norm", [False, True])
@pytest.mark.parametrize("bias", [False, True])
def test_bitlinear_packed_equals_fake_quant_exactly(per_channel, norm, bias):
    torch.manual_seed(1)
    layer = BitLinear.from_linear(linear(k=192, n=40, bias=bias), per_channel=per_channel, norm=norm)
    if norm:
        with torch.no_grad():
            layer.norm.weight.uniform_(0.5, 1.5)
    packed = layer.to_packed()
    assert isinstance(packed, TernaryLinear) and packed.activations == "int8"
    for shape in [(1, 192), (3, 7, 192), (33, 192)]:
        x = torch.randn(shape)
        assert torch.equal(packed(x), layer(x))  # integer sums: bit for bit
    x = torch.zeros(2, 192)  # an all-zero token (scale 1) stays exact too
    assert torch.equal(packed(x), layer(x))


def test_torch_int4pack_round_trip(torch_seed):
    for symmetric in (True, False):
        qw = pygen.quant.quantize(torch.randn(64, 256), "int4", group_size=64, symmetric=symmetric)
        packed, sz = pygen.quant.to_torch_int4pack(qw)
        x = torch.randn(5, 256)
        out = torch.ops.aten._weight_int4pack_mm_for_cpu(x, packed, 64, sz)
        torch.testing.assert_close(out, pygen.quant.matmul(x, qw), rtol=1e-4, atol=1e-4)
        back = pygen.quant.from_torch_int4pack(packed, sz, 64)
        assert torch.equal(back.packed, qw.packed) and torch.equal(back.scales.float(), qw.scales.float())
        assert (back.zeros is None) == symmetric
        if not symmetric:
            assert torch.equal(back.zeros, qw.zeros)


def test_bad_input():
    with pytest.raises(ValueError, match="in_features"):
        Int4Linear(100, 8)
    with pytest.raises(ValueError, match="group_size"):
        Int4Linear(256, 8, group_size=48)
    with pytest.raises(ValueError, match="scale_dtype"):
        Int4Linear(256, 8, scale_dtype=torch.int8)
    with pytest.raises(ValueError, match="in_features"):
        MXFP4Linear(48, 8)
    with pytest.raises(ValueError, match="in_features"):
        BitLinear(96, 8)
    with pytest.raises(ValueError, match="activations"):
        TernaryLinear(128, 8, activations="int4")
    with pytest.raises(TypeError, match="linear"):
        Int4Linear.from_linear(nn.Conv1d(4, 4, 1))
    with pytest.raises(ValueError, match="holds int4"):
        Int4Linear.from_quantized(pygen.quant.quantize(torch.randn(8, 64), "mxfp4"))
    with pytest.raises(ValueError, match="class"):
        layer_from_config({"class": "Linear", "in_features": 64, "out_features": 8, "bias": True})
    layer = Int4Linear.from_linear(linear(), group_size=32)
    with pytest.raises(ValueError, match="in_features"):
        layer(torch.randn(2, 128))
    with pytest.raises(TypeError, match="x must be float32"):
        layer(torch.randn(2, 256, dtype=torch.float64))
    with pytest.raises(ValueError, match="multiple of 16"):
        pygen.quant.to_torch_int4pack(pygen.quant.quantize(torch.randn(8, 64), "int4", group_size=32))
    with pytest.raises(ValueError, match="int4"):
        pygen.quant.to_torch_int4pack(pygen.quant.quantize(torch.randn(16, 64), "mxfp4"))
    packed, sz = pygen.quant.to_torch_int4pack(
        pygen.quant.quantize(torch.randn(16, 64), "int4", group_size=32)
    )
    with pytest.raises(ValueError, match="scales_and_zeros"):
        pygen.quant.from_torch_int4pack(packed, sz[:1], 32)
    with pytest.raises(ValueError, match="zero offsets"):
        pygen.quant.from_torch_int4pack(packed, sz + torch.tensor([0.0, 0.3]), 32)
