"""Flow layers and ops: round trips x -> z -> x, log-dets against autograd Jacobians,
ActNorm's data-dependent init, a 2-D flow's density integrating to 1, dequantization,
GS-Jacobi against the sequential inverse, and bad inputs."""

import math

import pytest
import torch

from pygen.nn.flows import (
    ActNorm,
    AffineCoupling,
    Flow,
    Invertible1x1Conv,
    LogitTransform,
    MixLogisticCoupling,
    Patchify,
    SplineCoupling,
    Split,
    Squeeze,
    TarFlowBlock,
    UniformDequantization,
    Unsqueeze,
    VariationalDequantization,
)
from pygen.ops import affine_coupling, mix_logistic_cdf, rq_spline
from tests.helpers import one_thread  # noqa: F401 (the fixture, by name)

# These tensors are tiny: intra-op threads cost more than they save, so every test runs on one.
pytestmark = pytest.mark.usefixtures("one_thread")


def _perturb(layer: torch.nn.Module, scale: float = 0.1) -> torch.nn.Module:
    """Random weights everywhere (zero-initialized heads included), so no layer is the
    identity; small enough that the inverses stay well conditioned in float32."""
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(torch.randn_like(p) * scale)
    for m in layer.modules():
        if isinstance(m, ActNorm):
            m.initialized.fill_(True)
    return layer


# name -> (layer factory, input shape); inputs are standard normal unless the layer needs (0, 1).
LAYERS = {
    "affine-exp": (lambda: AffineCoupling(4, 8), (2, 4, 3, 3)),
    "affine-sigmoid-odd": (lambda: AffineCoupling(3, 8, parity=1, scale_fn="sigmoid"), (2, 3, 2, 3)),
    "affine-mlp": (lambda: AffineCoupling(5, 8, conv=False, parity=1), (3, 5)),
    "spline": (lambda: SplineCoupling(4, 8, bins=5), (2, 4, 2, 2)),
    "spline-mlp": (lambda: SplineCoupling(3, 8, conv=False, parity=1, tail_bound=2.0), (3, 3)),
    "mixlogistic": (lambda: MixLogisticCoupling(4, 8, components=3), (2, 4, 2, 2)),
    "mixlogistic-mlp": (lambda: MixLogisticCoupling(2, 8, conv=False, parity=1), (3, 2)),
    "actnorm": (lambda: ActNorm(3), (2, 3, 2, 2)),
    "conv1x1": (lambda: Invertible1x1Conv(4), (2, 4, 2, 3)),
    "conv1x1-vector": (lambda: Invertible1x1Conv(3), (3, 3)),
    "squeeze": (lambda: Squeeze(), (2, 2, 4, 2)),
    "unsqueeze": (lambda: Unsqueeze(), (2, 8, 2, 1)),
    "split": (lambda: Split(4, Flow([ActNorm(2), AffineCoupling(2, 8)]), hidden=8), (2, 4, 2, 2)),
    "split-plain": (lambda: Split(3, Flow([Invertible1x1Conv(2)]), learned_prior=False), (2, 3, 2, 2)),
    "logit": (lambda: LogitTransform(0.05), (2, 2, 3)),
    "patchify": (lambda: Patchify((2, 4, 4), 2), (2, 2, 4, 4)),
    "tarflow-block": (lambda: TarFlowBlock(5, 3, dim=32, layers=2, heads=2), (2, 5, 3)),
    "tarflow-block-flip": (lambda: TarFlowBlock(4, 2, dim=32, layers=1, heads=2, flip=True), (2, 4, 2)),
    "flow": (
        lambda: Flow(
            [Squeeze(), ActNorm(4), Invertible1x1Conv(4), SplineCoupling(4, 8, parity=1), Unsqueeze()]
        ),
        (2, 1, 4, 4),
    ),
}


def _make(name, dtype):
    factory, shape = LAYERS[name]
    layer = _perturb(factory()).to(dtype)
    x = torch.rand(shape, dtype=dtype) * 0.9 + 0.05 if name == "logit" else torch.randn(shape, dtype=dtype)
    return layer, x


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-10)], ids=["fp32", "fp64"])
@pytest.mark.parametrize("name", list(LAYERS))
def test_round_trip(torch_seed, name, dtype, tol):
    layer, x = _make(name, dtype)
    with torch.no_grad():
        z, logdet = layer(x)
        back = layer.inverse(z)
    assert z.dtype == dtype and logdet.shape == (x.shape[0],)
    assert logdet.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    assert not torch.equal(z, x) or name in ("squeeze", "unsqueeze", "patchify")
    torch.testing.assert_close(back, x, atol=tol, rtol=tol)


@pytest.mark.parametrize(
    "name", ["affine-exp", "spline", "mixlogistic", "conv1x1", "logit", "tarflow-block", "flow"]
)
def test_logdet_dtype_bfloat16(torch_seed, name):
    """The one log-det dtype rule: 16-bit inputs sum their log-dets in float32."""
    layer, x = _make(name, torch.bfloat16)
    with torch.no_grad():
        z, logdet = layer(x)
    assert z.dtype == torch.bfloat16 and logdet.dtype == torch.float32
    with torch.no_grad():
        _, exact = layer.float()(x.float())
    torch.testing.assert_close(logdet, exact, atol=0.2, rtol=0.05)


def test_variational_dequantization_logdet_dtype(torch_seed):
    layer = _perturb(VariationalDequantization(17, 1, hidden=8)).to(torch.bfloat16)
    y, logdet = layer(torch.randint(0, 17, (2, 1, 3, 3)).to(torch.bfloat16))
    assert y.dtype == torch.bfloat16 and logdet.dtype == torch.float32


def test_debug_checks_switch():
    from pygen.nn.flows import base, set_debug_checks

    x = torch.zeros(2, 3)
    assert base.checks_input(x)  # the CPU checks without a synchronization
    assert not base.checks_input(torch.zeros(2, 3, device="meta"))
    set_debug_checks(True)
    try:
        assert base.checks_input(torch.zeros(2, 3, device="meta"))
    finally:
        set_debug_checks(False)
    assert torch.compile(lambda t: t + base.checks_input(t), backend="eager")(x).eq(0).all()


@pytest.mark.parametrize("name", list(LAYERS))
def test_logdet_matches_jacobian(torch_seed, name):
    layer, x = _make(name, torch.float64)
    x = x[:1]

    def f(flat):
        return layer(flat.view_as(x))[0].flatten()

    jac = torch.autograd.functional.jacobian(f, x.flatten())
    sign, logabsdet = torch.linalg.slogdet(jac)
    assert sign != 0
    torch.testing.assert_close(layer(x)[1], logabsdet.reshape(1), atol=1e-9, rtol=1e-9)


def test_actnorm_data_dependent_init(torch_seed):
    layer = ActNorm(3)
    x = torch.randn(64, 3, 5, 5) * torch.tensor([0.5, 2.0, 7.0]).view(1, 3, 1, 1) + torch.tensor(
        [1.0, -3.0, 0.2]
    ).view(1, 3, 1, 1)
    y, _ = layer(x)
    assert bool(layer.initialized)
    torch.testing.assert_close(y.mean((0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.var((0, 2, 3), correction=0), torch.ones(3), atol=1e-4, rtol=0)
    # Later batches use the learned parameters, not their own statistics.
    y2, _ = layer(x * 2)
    assert y2.std() > 1.5


def test_actnorm_init_survives_checkpoint(torch_seed):
    a = ActNorm(2)
    a(torch.randn(16, 2) * 3 + 1)
    b = ActNorm(2)
    b.load_state_dict(a.state_dict())
    x = torch.randn(4, 2)
    torch.testing.assert_close(b(x)[0], a(x)[0])


def test_2d_flow_density_integrates_to_one(torch_seed):
    flow = Flow(
        [
            ActNorm(2),
            AffineCoupling(2, 16, conv=False),
            Invertible1x1Conv(2),
            SplineCoupling(2, 16, conv=False, parity=1),
            MixLogisticCoupling(2, 16, conv=False),
        ]
    ).double()
    _perturb(flow, 0.2)
    n, lim = 351, 9.0
    axis = torch.linspace(-lim, lim, n, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)
    with torch.no_grad():
        mass = flow.log_prob(grid).exp().sum().item() * (axis[1] - axis[0]).item() ** 2
    assert abs(mass - 1) < 1e-2, mass


def test_flow_sample_seeded():
    flow = _perturb(Flow([AffineCoupling(2, 8, conv=False)], event_shape=(2,)))
    assert torch.equal(flow.sample(5, seed=1), flow.sample(5, seed=1))
    assert not torch.equal(flow.sample(5, seed=1), flow.sample(5, seed=2))
    with pytest.raises(ValueError, match="event_shape"):
        Flow([ActNorm(2)]).sample(3, seed=0)


@pytest.mark.parametrize("kind", ["uniform", "variational"])
def test_dequantization(torch_seed, kind):
    levels = 5
    layer = (
        UniformDequantization(levels)
        if kind == "uniform"
        else _perturb(VariationalDequantization(levels, 2, 8))
    )
    x = torch.randint(0, levels, (4, 2, 3, 3))
    y, term = layer(x)
    assert y.dtype == torch.float32 and ((y * levels).floor() == x).all()
    assert torch.equal(layer.inverse(y), x.float())
    if kind == "uniform":
        torch.testing.assert_close(term, torch.full((4,), -18 * math.log(levels)))
    else:  # -D log(levels) - log q(u|x) <= -D log(levels) + (entropy of q) on average; finite here
        assert term.isfinite().all()
    with pytest.raises(ValueError, match="integer levels"):
        layer(x.float() + 0.5)
    with pytest.raises(ValueError, match="integer levels"):
        layer(x + levels)


def test_variational_noise_logdet(torch_seed):
    layer = _perturb(VariationalDequantization(7, 1, 8)).double()
    x = torch.randint(0, 7, (1, 1, 2, 2)).double()
    eps = torch.randn(1, 1, 2, 2, dtype=torch.float64)
    u, logdet = layer.noise(x, eps)
    assert ((u > 0) & (u < 1)).all()
    jac = torch.autograd.functional.jacobian(
        lambda e: layer.noise(x, e.view_as(eps))[0].flatten(), eps.flatten()
    )
    torch.testing.assert_close(logdet, torch.linalg.slogdet(jac)[1].reshape(1), atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("init", ["z", "zeros"])
@pytest.mark.parametrize("groups", [1, 2, 5])
def test_gs_jacobi_matches_sequential(torch_seed, groups, init):
    block = _perturb(TarFlowBlock(6, 3, dim=32, layers=2, heads=2, flip=True), 0.2).double()
    z = torch.randn(3, 6, 3, dtype=torch.float64)
    exact = block.inverse(z)
    x, stats = block.inverse_gs_jacobi(z, groups=groups, tol=1e-12, init=init)
    torch.testing.assert_close(x, exact, atol=1e-10, rtol=1e-10)
    # The front settles at least one position a sweep: a group of n takes at most n.
    assert groups <= stats.iterations <= 5
    assert stats.iterations <= stats.positions <= 5 * stats.iterations
    # A loose tolerance stops no later, and lands near the exact inverse.
    loose, few = block.inverse_gs_jacobi(z, groups=groups, tol=1e-3, init=init)
    assert few.iterations <= stats.iterations
    assert (loose - exact).abs().max() < 1e-2


def test_gs_jacobi_front_skips_settled_positions(torch_seed):
    """A block near the identity settles most positions in the first sweeps: later
    sweeps evaluate fewer positions than the whole group, and a cap on the sweeps
    stops early."""
    block = _perturb(TarFlowBlock(12, 2, dim=32, layers=1, heads=2), 0.02).double()
    z = torch.randn(2, 12, 2, dtype=torch.float64)
    x, stats = block.inverse_gs_jacobi(z, tol=1e-8)
    torch.testing.assert_close(x, block.inverse(z), atol=1e-7, rtol=0)
    assert stats.iterations < 11 and stats.positions < 11 * stats.iterations
    capped, one = block.inverse_gs_jacobi(z, tol=0.0, max_iterations=1)
    assert one.iterations == 1 and one.positions == 11
    sequential, seq = block.inverse_gs_jacobi(z, groups=11)
    assert torch.equal(sequential, block.inverse(z)) and seq.iterations == seq.positions == 11


def test_kv_cache_preallocated_matches_concatenation(torch_seed):
    from pygen.nn.attention import KVCache

    k, v = torch.randn(2, 2, 2, 5, 16).unbind(0)
    grown, fixed = KVCache(), KVCache(capacity=3)
    for cache in (grown, fixed):
        cache.append(k[:, :, :2], v[:, :, :2])
        cache.pending = (k[:, :, 2:], v[:, :, 2:])
        cache.commit(3)  # past the capacity: the buffer grows
    assert torch.equal(grown.k, k) and torch.equal(fixed.v, v) and len(fixed) == 5
    with pytest.raises(ValueError, match="commit"):
        fixed.commit(4)


def test_ops_affine_coupling():
    x, shift, raw = torch.randn(3, 3, 5).unbind(0)
    y, ld = affine_coupling(x, shift, raw, clamp=2.0)
    log_s = 2.0 * torch.tanh(raw / 2.0)
    torch.testing.assert_close(y, x * log_s.exp() + shift)
    torch.testing.assert_close(ld, log_s.sum(1))
    y, ld = affine_coupling(x, shift, raw, scale_fn="sigmoid", inverse=True)
    torch.testing.assert_close(y, (x - shift) / torch.sigmoid(raw + 2))
    torch.testing.assert_close(ld, -torch.log(torch.sigmoid(raw + 2)).sum(1))
    with pytest.raises(ValueError, match="shift"):
        affine_coupling(x, shift[:, :2], raw)
    with pytest.raises(ValueError, match="scale_fn"):
        affine_coupling(x, shift, raw, scale_fn="softplus")
    with pytest.raises(ValueError, match="clamp"):
        affine_coupling(x, shift, raw, scale_fn="sigmoid", clamp=1.0)


def test_ops_rq_spline(torch_seed):
    x = torch.linspace(-4, 4, 101, dtype=torch.float64).requires_grad_()
    # One spline for every element (expanded), so y must increase along x.
    w, h, d = (torch.randn(k, dtype=torch.float64).expand(101, k) for k in (6, 6, 5))
    y, ld = rq_spline(x, w, h, d)
    (grad,) = torch.autograd.grad(y.sum(), x)
    torch.testing.assert_close(ld, grad.log())
    outside = x.abs() > 3
    assert torch.equal(y[outside], x[outside]) and (ld[outside] == 0).all()
    assert (y[1:] > y[:-1]).all() and (y[~outside].abs() <= 3).all()
    back, ld_inv = rq_spline(y.detach(), w, h, d, inverse=True)
    torch.testing.assert_close(back, x.detach(), atol=1e-10, rtol=0)
    torch.testing.assert_close(ld_inv, -ld.detach())
    with pytest.raises(ValueError, match="derivatives"):
        rq_spline(x, w, h, d[:, :4])
    with pytest.raises(ValueError, match="tail_bound"):
        rq_spline(x, w, h, d, tail_bound=0.0)


def test_ops_mix_logistic_cdf(torch_seed):
    x = torch.linspace(-30, 30, 61, dtype=torch.float64).requires_grad_()
    logits, means, log_scales = (torch.randn(3, dtype=torch.float64).expand(61, 3) for _ in range(3))
    y, ld = mix_logistic_cdf(x, logits, means, log_scales)
    cdf = (torch.softmax(logits, -1) * torch.sigmoid((x[:, None] - means) * torch.exp(-log_scales))).sum(-1)
    middle = x.abs() < 10  # where the plain formula has the precision to compare
    torch.testing.assert_close(y[middle], torch.logit(cdf)[middle])
    (grad,) = torch.autograd.grad(y.sum(), x)
    torch.testing.assert_close(ld, grad.log())
    assert y.isfinite().all() and (y[1:] > y[:-1]).all()
    back, ld_inv = mix_logistic_cdf(y.detach(), logits, means, log_scales, inverse=True)
    torch.testing.assert_close(back, x.detach(), atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(ld_inv, -ld.detach())
    with pytest.raises(ValueError, match="means"):
        mix_logistic_cdf(x, logits, means[:, :2], log_scales)


def test_bad_layer_inputs():
    with pytest.raises(ValueError, match="channels >= 2"):
        AffineCoupling(1)
    with pytest.raises(ValueError, match=r"\[B, C, H, W\] with C = 4"):
        AffineCoupling(4)(torch.randn(2, 3, 2, 2))
    with pytest.raises(ValueError, match="divisible by 2"):
        Squeeze()(torch.randn(1, 1, 3, 4))
    with pytest.raises(ValueError, match="patch"):
        Patchify((1, 8, 8), 3)
    with pytest.raises(ValueError, match=r"\[B, 5, 3\]"):
        TarFlowBlock(5, 3, dim=32, heads=2)(torch.randn(2, 4, 3))
    with pytest.raises(ValueError, match="groups"):
        TarFlowBlock(5, 3, dim=32, heads=2).inverse_gs_jacobi(torch.randn(2, 5, 3), groups=5)
    with pytest.raises(ValueError, match="init"):
        TarFlowBlock(5, 3, dim=32, heads=2).inverse_gs_jacobi(torch.randn(2, 5, 3), init="noise")
    with pytest.raises(ValueError, match="alpha"):
        LogitTransform(0.5)
