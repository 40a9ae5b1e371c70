"""pygen.ops.rq_spline_coupling_layer (the whole spline coupling layer's map: active
channels through the spline with the parameters read inside the conditioner's output,
the others copied, the log-det summed per sample) against the split / rq_spline_packed /
concatenate path it replaces and the float64 reference: values, gradients, gradcheck,
opcheck, torch.compile, thread-count determinism and bad inputs."""

import pytest
import torch

import pygen
from pygen.ops import reference
from tests.helpers import on_each_thread_count, opcheck

# (shape, active_begin, active, K): conv and MLP layouts, odd channel counts, the active
# block first, last and in the middle, one position per channel (inner 1), K = 1 (no
# interior knot), and samples of several 1024-element chunks whose chunk boundaries fall
# inside a channel (inner 1600, 2 active channels; inner 700, 3 active channels).
GEOMETRIES = [
    ((2, 4, 3, 5), 2, 2, 4),
    ((3, 5, 2, 3), 0, 3, 8),
    ((2, 5, 7), 1, 3, 1),
    ((3, 7), 4, 3, 16),
    ((1, 1, 9), 0, 1, 2),
    ((2, 3, 40, 40), 1, 2, 8),
    ((2, 5, 700), 2, 3, 3),
]


def _inputs(shape, active, K, dtype, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float64) * 2  # about a third outside [-3, 3]
    params = torch.randn((shape[0], active * (3 * K - 1), *shape[2:]), generator=g, dtype=torch.float64)
    return x.to(device, dtype), (params * 1.5).to(device, dtype)


def _layer(x, params, begin, active, **kw):
    return pygen.ops.rq_spline_coupling_layer(x, params, begin, active, **kw)


def _split_path(x, params, begin, active, inverse=False):
    """What SplineCoupling did before: the active channels and the parameters viewed
    [B, active, ..., 3K - 1] into rq_spline_packed, the log-det summed in float64."""
    P = params.shape[1] // active
    p = params.view(params.shape[0], active, P, *params.shape[2:]).movedim(2, -1)
    y, lad = pygen.ops.rq_spline_packed(x[:, begin : begin + active], p, inverse=inverse)
    return y, lad.double().flatten(1).sum(1)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape,begin,active,K", GEOMETRIES)
@pytest.mark.parametrize("inverse", [False, True])
def test_matches_split_path_and_reference(device, dtype, shape, begin, active, K, inverse):
    x, params = _inputs(shape, active, K, dtype, device)
    y, logdet = _layer(x, params, begin, active, inverse=inverse)
    assert y.shape == x.shape and y.dtype == dtype and logdet.shape == (shape[0],)
    assert logdet.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    passive = torch.ones(shape[1], dtype=torch.bool)
    passive[begin : begin + active] = False
    assert torch.equal(y[:, passive], x[:, passive])  # copied bit for bit
    # The same tiles compute each element: y bit for bit. The log-det sums the float32
    # (float64) per-element terms before any rounding to x's dtype, so its oracle is the
    # split path on x upcast, where those terms are the same numbers.
    assert torch.equal(y[:, begin : begin + active], _split_path(x, params, begin, active, inverse)[0])
    up = torch.float64 if dtype == torch.float64 else torch.float32
    ld_split = _split_path(x.to(up), params.to(up), begin, active, inverse)[1]
    n = active * x[0, 0].numel()
    torch.testing.assert_close(logdet.double(), ld_split, rtol=1e-6, atol=1e-6 * n**0.5)
    if dtype == torch.float64:
        y64, ld64 = reference.rq_spline_coupling_layer(x.cpu(), params.cpu(), begin, active, inverse)
        torch.testing.assert_close(y.cpu(), y64, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(logdet.cpu(), ld64, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("inverse", [False, True])
def test_gradcheck(device, inverse):
    x, params = _inputs((2, 5, 2, 3), 2, 4, torch.float64, device, seed=2)
    params = params / 1.5  # slopes where finite differences resolve the spline

    def f(x, params):
        return _layer(x, params, 1, 2, inverse=inverse)

    args = (x.requires_grad_(), params.requires_grad_())
    assert torch.autograd.gradcheck(f, args, eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("inverse", [False, True])
def test_gradients_match_split_path(device, inverse):
    # Samples of several chunks; fp64 autograd through rq_spline_packed is the oracle,
    # params' gradient in the conditioner's layout.
    x, params = _inputs((2, 3, 40, 40), 2, 8, torch.float64, device, seed=3)
    gy, gl = torch.randn_like(x), torch.randn(2, dtype=torch.float64, device=device)

    def grads(fn):
        leaves = [t.clone().requires_grad_() for t in (x, params)]
        y, ld = fn(*leaves, 0, 2, inverse=inverse)
        if fn is _split_path:
            y = torch.cat([leaves[0][:, :0], y, leaves[0][:, 2:]], 1)
        return torch.autograd.grad((y * gy).sum() + (ld * gl).sum(), leaves)

    for a, b in zip(grads(_layer), grads(_split_path), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_gradient_of_logdet_alone(device):
    x, params = (t.requires_grad_() for t in _inputs((2, 4, 3), 2, 3, torch.float64, device, seed=4))
    _layer(x, params, 2, 2)[1].sum().backward()
    assert torch.equal(x.grad[:, :2], torch.zeros_like(x[:, :2]))  # passive: no grad_y
    x2, p2 = (t.detach().clone().requires_grad_() for t in (x, params))
    _split_path(x2, p2, 2, 2)[1].sum().backward()
    torch.testing.assert_close(x.grad[:, 2:], x2.grad[:, 2:], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(params.grad, p2.grad, rtol=1e-12, atol=1e-12)


def test_strided_inputs(device):
    # Non-contiguous x and params (channels-last) are read as their values.
    x, params = _inputs((2, 4, 3, 5), 2, 4, torch.float32, device, seed=5)
    xs, ps = (t.to(memory_format=torch.channels_last) for t in (x, params))
    for a, b in zip(_layer(xs, ps, 0, 2), _layer(x, params, 0, 2), strict=True):
        assert torch.equal(a, b)


def test_deterministic_across_threads():
    x, params = _inputs((2, 3, 100, 100), 2, 8, torch.float32, "cpu", seed=6)
    gy = torch.randn_like(x)

    def forward_backward():
        leaves = [t.clone().requires_grad_() for t in (x, params)]
        y, ld = _layer(*leaves, 1, 2)
        return y, ld, *torch.autograd.grad((y * gy).sum() + ld.sum(), leaves)

    results = on_each_thread_count(forward_backward)
    for other in results[1:]:
        assert all(torch.equal(a, b) for a, b in zip(results[0], other, strict=True))


@pytest.mark.parametrize("inverse", [False, True])
def test_opcheck(device, inverse):
    x, params = _inputs((2, 3, 2, 2), 2, 4, torch.float32, device, seed=7)
    opcheck(torch.ops.pygen.rq_spline_coupling_layer, (x.requires_grad_(), params, 1, 2, inverse, 3.0, True))
    opcheck(torch.ops.pygen.rq_spline_coupling_layer, (x, params.requires_grad_(), 0, 2, inverse, 2.0, False))
    gy, gl = torch.randn_like(x), torch.randn(2, device=device)
    backward = torch.ops.pygen.rq_spline_coupling_layer_backward
    opcheck(backward, (gy, gl, x.detach(), params.detach(), 1, 2, inverse, 3.0))
    opcheck(backward, (None, gl, x.detach(), params.detach(), 0, 2, inverse, 3.0))


def test_compiles():
    x, params = _inputs((2, 3, 4), 1, 4, torch.float32, "cpu", seed=8)
    x.requires_grad_()

    def f(x, params):
        y, ld = pygen.ops.rq_spline_coupling_layer(x * 2, params, 2, 1, tail_bound=2.5)
        return y.sin().sum() + ld.sum()

    out = torch.compile(f, fullgraph=True)(x, params)
    out_eager = f(x, params)
    torch.testing.assert_close(out, out_eager)
    torch.testing.assert_close(torch.autograd.grad(out, x)[0], torch.autograd.grad(out_eager, x)[0])


def test_empty(device):
    x, params = _inputs((0, 4, 3), 2, 4, torch.float32, device)
    y, ld = _layer(x, params, 2, 2)
    assert y.shape == x.shape and ld.shape == (0,)
    x, params = _inputs((2, 4, 0), 2, 4, torch.float32, device)
    y, ld = _layer(x, params, 2, 2)
    assert y.shape == x.shape and ld.tolist() == [0.0, 0.0]


def test_non_finite_parameters(device):
    x, params = _inputs((2, 3, 4), 2, 3, torch.float32, device, seed=9)
    params[1, 12, 2] = float("nan")  # active channel 1's second height (channels 8 + [3, 6))
    x[1, 2, 2] = 0.0  # inside [-B, B]: the spline, not the identity tail
    with pytest.raises(ValueError, match="must be finite: heights hold"):
        _layer(x, params, 1, 2)
    y, ld = _layer(x, params, 1, 2, validate=False)
    assert y[1, 2, 2].isnan() and ld[1].isnan() and ld[0].isfinite() and y[0].isfinite().all()


def test_spline_coupling_uses_it():
    # The nn layer's forward, inverse and gradients through the op.
    # float64: random conditioner weights give steep bins, whose float32 inverse loses digits.
    g = torch.Generator().manual_seed(10)
    layer = pygen.nn.SplineCoupling(5, 8, bins=6, parity=1).double()
    with torch.no_grad():
        for w in layer.net.parameters():
            w.copy_(torch.randn(w.shape, generator=g, dtype=torch.float64) * 0.5)
    x = torch.randn(3, 5, 4, 4, generator=g, dtype=torch.float64).requires_grad_()
    y, logdet = layer(x)
    torch.testing.assert_close(layer.inverse(y), x, rtol=1e-9, atol=1e-9)
    want = reference.rq_spline_coupling_layer(x, layer.net(x[:, 3:]), 0, 3)
    torch.testing.assert_close(y, want[0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(logdet, want[1], rtol=1e-10, atol=1e-10)
    logdet.sum().backward()
    assert x.grad.isfinite().all() and all(w.grad.isfinite().all() for w in layer.net.parameters())


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(params=torch.zeros(2, 9, 4)), ValueError, "params must have shape"),  # not active * (3K - 1)
        (dict(params=torch.zeros(2, 12, 4)), ValueError, "params must have shape"),  # 3K - 1 = 6
        (dict(params=torch.zeros(2, 22, 5)), ValueError, "params must have shape"),  # x.shape[2:]
        (dict(params=torch.zeros(3, 22, 4)), ValueError, "params must have shape"),  # batch
        (dict(params=torch.zeros(2, 22)), ValueError, "params must have shape"),
        (dict(params=torch.zeros(2, 22, 4, dtype=torch.float64)), TypeError, "params must have x's dtype"),
        (dict(x=torch.zeros(2)), ValueError, "x must have shape"),
        (dict(x=torch.zeros(2, 3, 4, dtype=torch.int32)), TypeError, "x must be float32"),
        (dict(active_begin=2), ValueError, "active_begin and active must pick"),
        (dict(active_begin=-1), ValueError, "active_begin and active must pick"),
        (dict(active=0), ValueError, "active_begin and active must pick"),
        (dict(active_begin=1.0), TypeError, "active_begin must be an int"),
        (dict(tail_bound=0.0), ValueError, "tail_bound must be positive"),
        (dict(params=torch.zeros(2, 2 * 3002, 4)), ValueError, "K <= 1000"),
        (dict(params=[0.0]), TypeError, "params must be a tensor"),
    ],
)
def test_bad_input(kwargs, error, match):
    args = dict(x=torch.zeros(2, 3, 4), params=torch.zeros(2, 22, 4), active_begin=1, active=2)  # K = 4
    args.update(kwargs)
    x, params, begin, active = (args.pop(n) for n in ("x", "params", "active_begin", "active"))
    with pytest.raises(error, match=match):
        pygen.ops.rq_spline_coupling_layer(x, params, begin, active, **args)
