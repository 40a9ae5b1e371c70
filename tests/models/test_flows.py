"""The flow families on 8x8 digits: Glow and TarFlow invert their forward maps, learn
(held-out bits per dimension fall), round-trip checkpoints, sample reproducibly, and
TarFlow's GS-Jacobi decoding converges to its sequential inverse."""

import pytest
import torch

from pygen.data import digits
from pygen.models.glow import Glow, GlowConfig, fit
from pygen.models.tarflow import TarFlow, TarFlowConfig
from pygen.models.tarflow import fit as fit_tarflow
from pygen.train import TrainConfig
from tests.helpers import one_thread  # noqa: F401 (the fixture, by name)

pytest.importorskip("sklearn", reason="the digits come with scikit-learn: installed by make test")
pytest.importorskip("safetensors", reason="checkpoints need safetensors: installed by make test")
pytest.importorskip("tqdm", reason="the trainer needs tqdm: installed by make test")

TINY_GLOW = dict(scales=2, depth=2, hidden=16)
TINY_TARFLOW = dict(blocks=2, layers=1, dim=32, heads=2)


# These tensors are tiny: intra-op threads cost more than they save, so every test runs on one.
pytestmark = pytest.mark.usefixtures("one_thread")


def _randomize(model):
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def test_digits_data():
    train, val = digits("train"), digits("val")
    assert train.shape[1:] == (1, 8, 8) and val.shape[1:] == (1, 8, 8) and len(val) > 100
    assert train.dtype == torch.int64 and train.min() == 0 and train.max() == 16


@pytest.mark.parametrize(
    "config",
    [
        GlowConfig(**TINY_GLOW),
        GlowConfig(scales=3, depth=1, hidden=8, coupling="spline", dequantization="variational"),
        GlowConfig(scales=1, depth=2, hidden=8, coupling="mixlogistic", learned_prior=False),
    ],
    ids=["affine", "spline-variational", "mixlogistic"],
)
def test_glow_inverts(torch_seed, config):
    model = Glow(config)
    x = digits("val")[:8]
    model.loss(x)  # data-dependent init
    _randomize(model)
    with torch.no_grad():
        z, _ = model.flow(x)
        assert z.shape == x.shape
        assert torch.equal(model.flow.inverse(z).long(), x)


def test_tarflow_inverts_and_gs_jacobi_converges(torch_seed):
    model = _randomize(TarFlow(TarFlowConfig(**TINY_TARFLOW))).double()
    x = digits("val")[:6]
    torch.manual_seed(0)
    with torch.no_grad():
        z, _ = model.flow(x.double())
    assert z.shape == (6, 16, 4)
    exact, none = model.decode(z)
    assert none == [] and torch.equal(exact.long(), x)
    for groups, init in ((1, "z"), (3, "zeros"), ([1, 15], ["zeros", "z"]), ("auto", "z")):
        approx, stats = model.decode(z, method="gs_jacobi", groups=groups, init=init, tol=1e-9)
        assert torch.equal(approx, exact) and len(stats) == 2
        assert all(1 <= s.iterations <= 15 for s in stats)
    with pytest.raises(ValueError, match="method"):
        model.decode(z, method="newton")
    with pytest.raises(ValueError, match="one count per block"):
        model.decode(z, method="gs_jacobi", groups=[1, 2, 3])
    with pytest.raises(ValueError, match="init"):
        model.decode(z, method="gs_jacobi", groups=1, init=["z"])


def test_tarflow_auto_plan(torch_seed):
    """The auto plan: measured crm per block, kept per (tol, batch); a block whose
    Jacobi iteration is no faster than sequential decodes sequentially; a large batch
    on the CPU weighs the positions Jacobi re-evaluates; loading weights drops it."""
    model = TarFlow(TarFlowConfig(**TINY_TARFLOW)).double()
    blocks = model.flow_blocks()
    with torch.no_grad():
        blocks[0].out.weight.normal_(0, 0.01)  # easy: near the identity
        blocks[1].out.weight.normal_(0, 1.0)  # hard: Jacobi settles a position a sweep
    plans = model.plan_gs_jacobi(1e-6)
    assert [p.groups for p in plans] == [1, 15]
    assert plans[0].crm < 0.5 and plans[1].crm == 1.0 and all(p.init in ("z", "zeros") for p in plans)
    assert model.plan_gs_jacobi(1e-6, batch=4096)[0].groups > 1
    z = torch.randn(2, 16, 4, dtype=torch.float64)
    auto, stats = model.decode(z, method="gs_jacobi", tol=1e-6)
    assert (1e-6, 2) in model._plans and stats[1].iterations == stats[1].positions == 15
    torch.testing.assert_close(auto, model.decode(z)[0], atol=1e-4, rtol=0)
    model.load_state_dict(model.state_dict())
    assert model._plans == {}


@pytest.mark.parametrize("family", ["glow", "tarflow"])
def test_training_lowers_bits_per_dim(family):
    held_out = digits("val")
    train_config = TrainConfig(steps=25, lr=3e-3, warmup=5, progress=False)
    if family == "glow":
        untrained = Glow(GlowConfig(**TINY_GLOW))
        untrained.loss(digits("train")[:256])
        model, log = fit(GlowConfig(**TINY_GLOW), train_config, batch_size=64)
    else:
        untrained = TarFlow(TarFlowConfig(**TINY_TARFLOW))
        model, log = fit_tarflow(TarFlowConfig(**TINY_TARFLOW), train_config, batch_size=64)
    before, after = untrained.bits_per_dim(held_out), model.bits_per_dim(held_out)
    assert log[-1]["step"] == 25 and after == pytest.approx(log[-1]["eval"])
    assert after < before - 0.25, (before, after)


@pytest.mark.parametrize("family", ["glow", "tarflow"])
def test_checkpoint_round_trip_and_seeded_sampling(tmp_path, torch_seed, family):
    if family == "glow":
        model = Glow(GlowConfig(**TINY_GLOW, dequantization="variational"))
        model.loss(digits("train")[:64])
    else:
        model = TarFlow(TarFlowConfig(**TINY_TARFLOW))
    _randomize(model)
    model.save(tmp_path)
    loaded = type(model).load(tmp_path)
    assert loaded.config == model.config
    held_out = digits("val")[:64]
    assert loaded.bits_per_dim(held_out) == pytest.approx(model.bits_per_dim(held_out), abs=1e-5)
    a, b = model.sample(6, seed=3), loaded.sample(6, seed=3)
    assert a.shape == (6, 1, 8, 8) and a.dtype == torch.int64 and torch.equal(a, b)
    assert not torch.equal(a, model.sample(6, seed=4))


def test_cli_trains_glow(tmp_path):
    from pygen.__main__ import main

    out = tmp_path / "glow"
    args = [
        "train",
        "glow",
        "--steps",
        "3",
        "--depth",
        "1",
        "--hidden",
        "8",
        "--no-progress",
        "--out",
        str(out),
    ]
    assert main(args) == 0
    assert (out / "samples.png").stat().st_size > 0
    assert Glow.load(out).config.depth == 1


def test_bad_config():
    with pytest.raises(ValueError, match="scales"):
        Glow(GlowConfig(scales=4))
    with pytest.raises(ValueError, match="coupling"):
        Glow(GlowConfig(coupling="quadratic"))
    with pytest.raises(ValueError, match="dequantization"):
        TarFlow(TarFlowConfig(dequantization="none"))
    with pytest.raises(ValueError, match="multiple of 16"):
        TarFlow(TarFlowConfig(dim=48, heads=2))
