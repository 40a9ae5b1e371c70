"""pygen.quantize_model on every model family and on plain PyTorch models (round to
nearest and GPTQ), GPTQ against round to nearest, the BitLinear training path,
checkpoint round trips of quantized models, and bad input."""

import copy
import math

import pytest
import torch
from torch import nn

import pygen
from pygen.models import (
    DiffusionConfig,
    DiffusionModel,
    MaskedDiffusionConfig,
    MaskedDiffusionLM,
    SparseTransformerConfig,
    SparseTransformerLM,
)
from pygen.nn import BitLinear, Int4Linear, MXFP4Linear, TernaryLinear
from pygen.quant.gptq import Hessian


def _sparse_transformer():
    return SparseTransformerLM(
        SparseTransformerConfig(context=64, dim=64, depth=2, heads=2, stride=4, block_size=16)
    )


def _masked_diffusion():
    return MaskedDiffusionLM(MaskedDiffusionConfig(context=32, dim=64, depth=2, heads=2))


def _diffusion():
    model = DiffusionModel(DiffusionConfig(dim=64, depth=2, heads=2))
    for m in model.modules():  # adaLN-Zero starts at the identity: give every layer work to do
        if isinstance(m, nn.Linear):
            m.reset_parameters()
    return model


def _tokens(model, b=2):
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 256, (b, model.config.context), generator=g)


# family -> (builder, a deterministic output, calibration batches for model.loss)
FAMILIES = {
    "sparse_transformer": (_sparse_transformer, lambda m: m(_tokens(m)), lambda m: [_tokens(m, 4)]),
    "masked_diffusion": (_masked_diffusion, lambda m: m(_tokens(m))[..., :256], lambda m: [_tokens(m, 4)]),
    "diffusion": (
        _diffusion,
        lambda m: m.denoiser(
            torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(2)), torch.ones(4)
        ),
        lambda m: [torch.randn(32, 1, 8, 8, generator=torch.Generator().manual_seed(3)).clamp(-1, 1)],
    ),
}


def rel_error(out, ref):
    return ((out - ref).norm() / ref.norm()).item()


def built(family):
    torch.manual_seed(0)
    model = FAMILIES[family][0]().eval()
    return model, FAMILIES[family][1], FAMILIES[family][2](model)


@pytest.mark.parametrize("family", FAMILIES)
def test_families_int4_rtn_and_gptq(family):
    model, output, calibration = built(family)
    with torch.no_grad():
        ref = output(model)
        rtn = pygen.quantize_model(copy.deepcopy(model), "int4", group_size=32)
        gptq = pygen.quantize_model(
            model,
            "int4",
            method="gptq",
            calibration=calibration,
            forward=lambda m, b: m.loss(b),
            group_size=32,
        )
        errors = {"rtn": rel_error(output(rtn), ref), "gptq": rel_error(output(gptq), ref)}
    for m, method in [(rtn, "rtn"), (gptq, "gptq")]:
        assert m.quantization["method"] == method
        assert all(isinstance(m.get_submodule(n), Int4Linear) for n in m.quantization["layers"])
        # DiT: the 4-pixel patch embedding stays in float (in_features 4); the rest is int4.
        assert [n for n, x in m.named_modules() if isinstance(x, nn.Linear)] == m.quantization["kept"]
    # Random weights at 4 bits, groups of 32: about 10 % error per layer, a few layers deep.
    assert errors["rtn"] < 0.25, errors
    assert errors["gptq"] < 0.6 * errors["rtn"], errors


@pytest.mark.parametrize("format,layer", [("mxfp4", MXFP4Linear), ("ternary", TernaryLinear)])
def test_other_formats_run(format, layer):
    model, output, _ = built("sparse_transformer")
    pygen.quantize_model(model, format)
    assert sum(isinstance(m, layer) for m in model.modules()) == 2 * 5 + 1
    assert torch.isfinite(output(model)).all()


def correlated_inputs(n, k, seed=0):
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(k, k, generator=g) / math.sqrt(k) + torch.eye(k)
    return torch.randn(n, k, generator=g) * torch.linspace(0.2, 2.0, k) @ mix


@pytest.mark.parametrize("act_order", [False, True])
@pytest.mark.parametrize("symmetric", [True, False])
def test_gptq_beats_round_to_nearest(act_order, symmetric):
    w = torch.randn(64, 256, generator=torch.Generator().manual_seed(1))
    x = correlated_inputs(1024, 256)
    h = Hessian(256)
    h.add(x)
    opts = dict(group_size=64, symmetric=symmetric)
    gptq = pygen.quant.gptq_quantize(w, h.matrix(), act_order=act_order, block_size=32, **opts)
    rtn = pygen.quant.quantize(w, "int4", **opts)
    err = {name: (x @ (w - pygen.quant.dequantize(q)).T).norm() for name, q in [("gptq", gptq), ("rtn", rtn)]}
    assert err["gptq"] < 0.8 * err["rtn"], err


@pytest.mark.parametrize("symmetric", [True, False])
def test_gptq_without_correlations_is_round_to_nearest(symmetric):
    # A diagonal Hessian propagates no error: GPTQ's codes, scales and zero points are
    # then those of pygen.quant.quantize, bit for bit (the same format, the same rounding).
    w = torch.randn(40, 128, generator=torch.Generator().manual_seed(2))
    for scale_dtype in (torch.float16, torch.bfloat16, torch.float32):
        opts = dict(group_size=32, symmetric=symmetric, scale_dtype=scale_dtype)
        gptq = pygen.quant.gptq_quantize(w, torch.diag(torch.rand(128) + 0.5), **opts)
        rtn = pygen.quant.quantize(w, "int4", **opts)
        assert torch.equal(gptq.packed, rtn.packed) and torch.equal(gptq.scales, rtn.scales)
        assert (gptq.zeros is None and rtn.zeros is None) or torch.equal(gptq.zeros, rtn.zeros)


def test_gptq_model_beats_rtn_on_calibration_data():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(128, 256), nn.GELU(), nn.Linear(256, 64))
    x = correlated_inputs(512, 128, seed=3)
    ref = model(x).detach()
    errors = {}
    for method in ("rtn", pygen.quant.GPTQ(act_order=True), pygen.quant.GPTQ(sequential=False)):
        q = pygen.quantize_model(
            copy.deepcopy(model), "int4", method=method, calibration=x.split(128), group_size=32
        )
        errors[str(method)] = rel_error(q(x), ref)
    assert max(v for k, v in errors.items() if k != "rtn") < errors["rtn"], errors


def test_skip_and_strict():
    model, _, _ = built("sparse_transformer")
    pygen.quantize_model(model, "int4", skip=["head", "blocks.1.*"], group_size=32)
    assert type(model.head) is nn.Linear and type(model.blocks[1].fc1) is nn.Linear
    assert isinstance(model.blocks[0].fc1, Int4Linear)
    model, _, _ = built("sparse_transformer")
    pygen.quantize_model(model, "int4", skip=lambda name, m: m.in_features == 256, group_size=32)
    assert type(model.blocks[0].fc2) is nn.Linear and type(model.blocks[0].fc1) is Int4Linear
    with pytest.raises(ValueError, match="'embed'.*multiple of 128"):
        pygen.quantize_model(_diffusion(), "int4", strict=True)
    mha = nn.Sequential(nn.MultiheadAttention(64, 2, batch_first=True))
    with pytest.warns(UserWarning, match="no layer of Sequential"):  # reads out_proj.weight itself
        pygen.quantize_model(mha, "int4", group_size=32)
    assert type(mha[0].out_proj) is nn.modules.linear.NonDynamicallyQuantizableLinear


@pytest.mark.parametrize("family", FAMILIES)
def test_checkpoint_round_trip(tmp_path, family):
    model, output, _ = built(family)
    heads = ["head", "out"]  # the output layers in mxfp4, the rest in int4
    pygen.quantize_model(
        model, "int4", skip=heads, group_size=32, symmetric=False, scale_dtype=torch.bfloat16
    )
    pygen.quantize_model(model, "mxfp4", skip=lambda name, m: name not in heads)
    model.save(tmp_path)
    loaded = type(model).load(tmp_path).eval()
    assert loaded.quantization == model.quantization
    assert [type(m) for m in loaded.modules()] == [type(m) for m in model.modules()]
    with torch.no_grad():
        assert torch.equal(output(loaded), output(model))


def test_plain_model_round_trip_and_bitlinear_path(tmp_path):
    from safetensors.torch import load_file, save_file

    def make():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.Linear(64, 10))

    model = pygen.quant.to_bitlinear(make(), skip="2", per_channel=True)
    assert isinstance(model[0], BitLinear) and type(model[2]) is nn.Linear
    x, y = torch.randn(128, 64), torch.randint(0, 10, (128,))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(20):  # quantization-aware training runs through the straight-through estimator
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    fake = model(x).detach()
    pygen.quant.pack_bitlinear(model)
    assert isinstance(model[0], TernaryLinear) and model.quantization["method"] == "bitlinear"
    assert torch.equal(model(x), fake)
    save_file(model.state_dict(), tmp_path / "m.safetensors")
    fresh = pygen.quant.restore_quantized(make(), model.quantization)
    fresh.load_state_dict(load_file(tmp_path / "m.safetensors"))
    assert torch.equal(fresh(x), fake)
    assert model[0].weight_nbytes == 128 * 64 // 4 + 128 * 4  # 2-bit codes, a float32 scale per row
    float_bytes = pygen.quant.weight_nbytes(make())
    assert pygen.quant.weight_nbytes(model) == float_bytes - (128 + 10) * 64 * 4 + (128 + 10) * (16 + 4)


def test_bad_input():
    model = nn.Sequential(nn.Linear(64, 32))
    with pytest.raises(ValueError, match="format"):
        pygen.quantize_model(model, "int3")
    with pytest.raises(ValueError, match="method"):
        pygen.quantize_model(model, "int4", method="awq")
    with pytest.raises(ValueError, match="calibration"):
        pygen.quantize_model(model, "int4", method="gptq")
    with pytest.raises(ValueError, match="'int4'"):
        pygen.quantize_model(model, "mxfp4", method="gptq", calibration=[torch.randn(2, 64)])
    with pytest.raises(ValueError, match="not called"):
        pygen.quantize_model(
            model,
            "int4",
            method="gptq",
            calibration=[torch.randn(2, 64)],
            forward=lambda m, b: None,
            group_size=32,
        )
    with pytest.raises(ValueError, match="group_size"):
        pygen.quantize_model(model, "int4", group_size=16)
    with pytest.raises(TypeError, match="skip"):
        pygen.quantize_model(model, "int4", skip=[0])
    with pytest.raises(TypeError, match="model"):
        pygen.quantize_model(torch.randn(3), "int4")
    with pytest.raises(ValueError, match="damp"):
        pygen.quant.GPTQ(damp=0.0)
    with pytest.raises(ValueError, match="hessian"):
        pygen.quant.gptq_quantize(torch.randn(8, 64), torch.eye(32), group_size=32)
    with pytest.raises(ValueError, match="BitLinear"):
        pygen.quant.pack_bitlinear(model)
    with pytest.raises(ValueError, match="layers"):
        pygen.quant.restore_quantized(model, {"format": "int4"})
