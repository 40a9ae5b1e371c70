"""Whole-model quantization of convolutions (pygen.nn.LinearConv2d) and of the flow
families: a quantized TarFlow or Glow is the float flow with rounded conditioner weights,
still exactly invertible, its ActNorm and invertible 1x1 convolutions untouched."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import pygen
from pygen.models.glow import Glow, GlowConfig
from pygen.models.tarflow import TarFlow, TarFlowConfig
from pygen.nn import ActNorm, BitLinear, Int4Linear, Invertible1x1Conv, LinearConv2d, TernaryLinear
from pygen.nn.flows import Flow
from pygen.quant import dequantize


def rel_error(out, ref):
    return ((out - ref).norm() / ref.norm()).item()


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(kernel_size=3, padding=1),
        dict(kernel_size=1),
        dict(kernel_size=(3, 2), stride=2, padding=(1, 0), dilation=(2, 1), bias=False),
    ],
)
def test_linear_conv2d_is_the_convolution(kwargs):
    torch.manual_seed(0)
    conv = nn.Conv2d(5, 7, **kwargs).double()
    x = torch.randn(3, 5, 9, 8, dtype=torch.float64)
    wrapped = LinearConv2d.from_conv(conv)
    out = wrapped(x)
    assert out.is_contiguous()
    torch.testing.assert_close(out, conv(x), rtol=1e-12, atol=1e-12)


def test_linear_conv2d_bad_input():
    with pytest.raises(ValueError, match="groups"):
        LinearConv2d.from_conv(nn.Conv2d(4, 4, 3, groups=2))
    with pytest.raises(ValueError, match="padding_mode"):
        LinearConv2d.from_conv(nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect"))
    with pytest.raises(ValueError, match="padding='same'"):
        LinearConv2d.from_conv(nn.Conv2d(4, 4, 3, padding="same"))
    with pytest.raises(TypeError, match="Conv2d"):
        LinearConv2d.from_conv(nn.Linear(4, 4))
    with pytest.raises(ValueError, match="in_features"):
        LinearConv2d(nn.Linear(10, 4), 3)
    wrapped = LinearConv2d.from_conv(nn.Conv2d(4, 4, 3))
    with pytest.raises(ValueError, match=r"x must be \[B, 4, H, W\]"):
        wrapped(torch.randn(2, 3, 8, 8))
    with pytest.raises(ValueError, match="smaller than the kernel"):
        wrapped(torch.randn(2, 4, 2, 2))


def _conv_model():
    torch.manual_seed(0)
    # in_features 64 * 9 and 32: both fit int4 groups of 32; 3 * 9 = 27 fits nothing.
    layers = [nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 32, 3, padding=1), nn.ReLU()]
    return nn.Sequential(*layers, nn.Conv2d(32, 8, 1))


def _images(n, seed):
    g = torch.Generator().manual_seed(seed)
    # Spatially smooth images: neighbouring patch elements correlate, as in real images.
    return F.avg_pool2d(torch.randn(n, 3, 10, 10, generator=g), 3, stride=1)


def test_quantize_model_convolutions_rtn_and_gptq():
    model = _conv_model()
    x = _images(16, 1)
    ref = model(x).detach()
    rtn = pygen.quantize_model(copy.deepcopy(model), "int4", group_size=32, convs=True)
    assert rtn.quantization["kept"] == ["0"]
    assert sorted(rtn.quantization["layers"]) == ["2", "4"]
    for i in (2, 4):
        assert isinstance(rtn[i], LinearConv2d) and isinstance(rtn[i].linear, Int4Linear)
        assert rtn.quantization["layers"][str(i)]["class"] == "LinearConv2d"
    # The quantized layer is the convolution with the dequantized weight.
    w = dequantize(rtn[2].linear.qweight).view_as(model[2].weight)
    h = model[1](model[0](x))
    torch.testing.assert_close(rtn[2](h), F.conv2d(h, w, model[2].bias, padding=1), rtol=1e-5, atol=1e-5)
    assert pygen.quant.weight_nbytes(model) == 4 * (64 * 27 + 32 * 576 + 8 * 32)
    assert pygen.quant.weight_nbytes(rtn) == 4 * 64 * 27 + 32 * 576 // 2 + 8 * 32 // 2 + 2 * (32 * 18 + 8)

    gptq = pygen.quantize_model(
        copy.deepcopy(model),
        "int4",
        method="gptq",
        calibration=_images(64, 2).split(16),
        group_size=32,
        convs=True,
    )
    errors = {"rtn": rel_error(rtn(x).detach(), ref), "gptq": rel_error(gptq(x).detach(), ref)}
    assert errors["gptq"] < errors["rtn"], errors


def test_bitlinear_convolutions_and_restore():
    model = pygen.quant.to_bitlinear(_conv_model(), per_channel=True, convs=True)
    assert isinstance(model[2].linear, BitLinear) and type(model[0]) is nn.Conv2d
    x = _images(4, 3)
    fake = model(x).detach()
    pygen.quant.pack_bitlinear(model)
    assert isinstance(model[2].linear, TernaryLinear) and model[2].linear.activations == "int8"
    assert model.quantization["layers"]["2"]["linear"]["class"] == "TernaryLinear"
    assert torch.equal(model(x), fake)
    fresh = pygen.quant.restore_quantized(_conv_model(), model.quantization)
    fresh.load_state_dict(model.state_dict())
    assert torch.equal(fresh(x), fake)


def test_no_layer_to_quantize_warns_or_raises():
    flow = Flow([ActNorm(4), Invertible1x1Conv(4)])
    state = copy.deepcopy(flow.state_dict())
    with pytest.warns(UserWarning, match="no layer of Flow .*no nn.Linear layer"):
        pygen.quantize_model(flow, "int4")
    with pytest.warns(UserWarning, match="no nn.Linear or nn.Conv2d layer"):
        pygen.quantize_model(flow, "int4", convs=True)
    # Convolutions are opt-in: left alone by default, and the warning says how to include them.
    convs = _conv_model()
    with pytest.warns(UserWarning, match="convs=True would quantize its 3 nn.Conv2d layers"):
        pygen.quantize_model(convs, "int4", group_size=32)
    assert all(type(m) is nn.Conv2d for m in convs[::2])
    assert all(torch.equal(v, state[k]) for k, v in flow.state_dict().items())
    with pytest.raises(ValueError, match="no layer of Flow"):
        pygen.quantize_model(flow, "mxfp4", strict=True)
    with pytest.warns(UserWarning, match=r"kept in float: \['0'\]"):
        pygen.quantize_model(nn.Sequential(nn.Linear(20, 4)), "int4")
    with pytest.raises(ValueError, match="no layer of Sequential"):
        pygen.quant.to_bitlinear(nn.Sequential(nn.Linear(20, 4)), skip="0", strict=True)
    grouped = nn.Sequential(nn.Conv2d(64, 64, 1, groups=2))
    with pytest.raises(ValueError, match="layer '0': a Conv2d with groups=2"):
        pygen.quantize_model(grouped, "int4", strict=True, convs=True)


def _glow():
    torch.manual_seed(0)
    model = Glow(GlowConfig(scales=2, depth=1, hidden=64))
    for m in model.modules():  # the conditioners start at zero: give every layer work to do
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, std=0.05)
    with torch.no_grad():
        model.loss(torch.randint(0, 17, (32, 1, 8, 8), generator=torch.Generator().manual_seed(1)))
    return model.eval()


def _tarflow():
    torch.manual_seed(0)
    model = TarFlow(TarFlowConfig(blocks=2, layers=1, dim=64, heads=4))
    for block in model.flow_blocks():  # the output layers start at zero
        nn.init.normal_(block.out.weight, std=0.05)
    return model.eval()


def _dequantized(float_model, quantized):
    """``float_model`` with each quantized layer's weight replaced by its dequantized value."""
    model = copy.deepcopy(float_model)
    for name, config in quantized.quantization["layers"].items():
        layer = quantized.get_submodule(name)
        linear = layer.linear if config["class"] == "LinearConv2d" else layer
        target = model.get_submodule(name)
        with torch.no_grad():
            target.weight.copy_(dequantize(linear.qweight).view_as(target.weight))
    return model


def _flow_layers(model):
    """The continuous part of the flow (after the dequantization layer): exactly invertible."""
    return Flow(model.flow.layers[1:])


@pytest.mark.parametrize("family", ["glow", "tarflow"])
@pytest.mark.parametrize("format", ["int4", "mxfp4", "ternary"])
def test_quantized_flow_is_the_flow_of_its_rounded_weights(family, format):
    model = {"glow": _glow, "tarflow": _tarflow}[family]()
    options = dict(group_size=32) if format == "int4" else {}
    q = pygen.quantize_model(copy.deepcopy(model), format, convs=True, **options)
    layers = q.quantization["layers"]
    if family == "glow":
        # Glow's conditioners: 3x3 (in 2 * 9 or 4 * 9: kept), 1x1 (64), 3x3 (64 * 9).
        assert all(c["class"] == "LinearConv2d" for c in layers.values()) and len(layers) == 6
        assert [n for n, m in q.named_modules() if isinstance(m, nn.Conv2d)] == q.quantization["kept"]
    else:
        assert q.quantization["kept"] == ["flow.layers.3.embed", "flow.layers.4.embed"]  # 4 inputs
        # Per block: the attention's q, kv and output projections, fc1, fc2, and the head.
        assert len(layers) == 2 * 6
    # ActNorm and the invertible 1x1 convolutions are the float model's, bit for bit.
    for name, m in model.named_modules():
        if isinstance(m, ActNorm | Invertible1x1Conv):
            qm = q.get_submodule(name)
            assert type(qm) is type(m)
            assert all(torch.equal(v, qm.state_dict()[k]) for k, v in m.state_dict().items())

    y = torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(4)) * 0.98 + 0.01
    flow = _flow_layers(q)
    with torch.no_grad():
        z, logdet = flow(y)
        z_ref, logdet_ref = _flow_layers(_dequantized(model, q))(y)
        z_float, _ = _flow_layers(model)(y)
        back = flow.inverse(z)
    torch.testing.assert_close(z, z_ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(logdet, logdet_ref, rtol=1e-5, atol=1e-3)
    assert 1e-5 < rel_error(z, z_float) < 0.5  # changed, by a quantization-sized amount
    torch.testing.assert_close(back, y, rtol=0, atol=1e-4)


def test_quantized_tarflow_jacobi_inverse_matches_sequential():
    q = pygen.quantize_model(_tarflow(), "int4", group_size=32)
    z = torch.randn(2, *q.flow.event_shape, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        for block in q.flow_blocks():
            jacobi, _ = block.inverse_gs_jacobi(z, groups=1, tol=1e-5)
            torch.testing.assert_close(jacobi, block.inverse(z), rtol=0, atol=1e-4)


@pytest.mark.parametrize("family", ["glow", "tarflow"])
def test_flow_gptq_and_checkpoint(tmp_path, family):
    model = {"glow": _glow, "tarflow": _tarflow}[family]()
    data = torch.randint(0, 17, (16, 1, 8, 8), generator=torch.Generator().manual_seed(6))
    q = pygen.quantize_model(
        model,
        "int4",
        method="gptq",
        calibration=[data],
        forward=lambda m, b: m.loss(b),
        group_size=32,
        convs=True,
    )
    q.save(tmp_path)
    loaded = type(q).load(tmp_path).eval()
    assert loaded.quantization == q.quantization
    assert [type(m) for m in loaded.modules()] == [type(m) for m in q.modules()]
    assert loaded.bits_per_dim(data) == q.bits_per_dim(data)
