"""pygen.ops.affine_coupling_layer (the whole coupling layer's map: active channels
transformed with shift / raw scale read inside the conditioner's output, the others
copied) against its float64 reference, gradients, opcheck, torch.compile and bad inputs."""

import pytest
import torch

import pygen
from pygen.ops import reference
from tests.helpers import assert_error_within, on_each_thread_count, opcheck

# (shape, active_begin, active): conv and MLP layouts, odd channel counts, the active
# block first, last and in the middle, one channel per position (inner 1), and a sample
# whose 4096-element chunks end inside a channel (inner 4900, 2 active channels).
GEOMETRIES = [
    ((2, 4, 3, 5), 2, 2),
    ((3, 5, 2, 3), 0, 3),
    ((2, 5, 7), 1, 3),
    ((3, 7), 4, 3),
    ((1, 1, 9), 0, 1),
    ((2, 3, 70, 70), 1, 2),
]
MAPS = [("exp", None), ("exp", 2.0), ("sigmoid", None)]


def _inputs(shape, active, dtype, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float64)
    params = torch.randn((shape[0], 2 * active, *shape[2:]), generator=g, dtype=torch.float64) * 1.5
    return x.to(device, dtype), params.to(device, dtype)


def _layer(x, params, begin, active, **kw):
    return pygen.ops.affine_coupling_layer(x, params, begin, active, **kw)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape,begin,active", GEOMETRIES)
@pytest.mark.parametrize("interleaved", [True, False])
@pytest.mark.parametrize("inverse", [False, True])
def test_matches_reference(device, dtype, shape, begin, active, interleaved, inverse):
    x, params = _inputs(shape, active, dtype, device)
    kw = dict(interleaved=interleaved, clamp=2.0, inverse=inverse)
    y, logdet = _layer(x, params, begin, active, **kw)
    y64, ld64 = reference.affine_coupling_layer(x.cpu(), params.cpu(), begin, active, **kw)
    assert y.shape == x.shape and y.dtype == dtype and logdet.shape == (shape[0],)
    passive = torch.ones(shape[1], dtype=torch.bool)
    passive[begin : begin + active] = False
    assert torch.equal(y[:, passive], x[:, passive])  # copied bit for bit
    if dtype == torch.float64:
        torch.testing.assert_close(y.cpu(), y64, rtol=1e-13, atol=1e-13)
        torch.testing.assert_close(logdet.cpu(), ld64, rtol=1e-13, atol=1e-12)
        return
    same = reference.affine_coupling_layer(x, params, begin, active, **kw)[0]
    if dtype == torch.float32:
        torch.testing.assert_close(y.cpu().double(), y64, rtol=4e-7, atol=1e-6)
    else:
        x16, p16 = x.cpu(), params.cpu()
        sh, raw = (p16[:, 0::2], p16[:, 1::2]) if interleaved else (p16[:, :active], p16[:, active:])
        log_s = 2.0 * torch.tanh(raw / 2.0)
        mid = x16[:, begin : begin + active]
        same = (mid - sh) * torch.exp(-log_s) if inverse else mid * torch.exp(log_s) + sh
        assert_error_within(y[:, begin : begin + active], y64[:, begin : begin + active], same)
    n = active * x[0, 0].numel()
    torch.testing.assert_close(logdet.cpu().double(), ld64, rtol=1e-6, atol=1e-6 * n**0.5)


@pytest.mark.parametrize("scale_fn,clamp", MAPS)
def test_same_as_affine_coupling(device, scale_fn, clamp):
    # The split / map / concatenate it replaces, with the same kernels: equal outputs,
    # and the same log-det where one chunk covers a sample.
    x, params = _inputs((3, 5, 4, 4), 2, torch.float32, device, seed=1)
    y, ld = _layer(x, params, 3, 2, scale_fn=scale_fn, clamp=clamp)
    y_ref, ld_ref = pygen.ops.affine_coupling(
        x[:, 3:].contiguous(),
        params[:, 0::2].contiguous(),
        params[:, 1::2].contiguous(),
        scale_fn=scale_fn,
        clamp=clamp,
    )
    assert torch.equal(y[:, 3:], y_ref) and torch.equal(y[:, :3], x[:, :3])
    torch.testing.assert_close(ld, ld_ref, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("scale_fn,clamp", MAPS)
@pytest.mark.parametrize("inverse", [False, True])
@pytest.mark.parametrize("interleaved", [True, False])
def test_gradcheck(device, scale_fn, clamp, inverse, interleaved):
    x, params = (t.requires_grad_() for t in _inputs((2, 5, 2, 3), 2, torch.float64, device, seed=2))

    def f(x, params):
        return _layer(
            x, params, 1, 2, interleaved=interleaved, scale_fn=scale_fn, clamp=clamp, inverse=inverse
        )

    assert torch.autograd.gradcheck(f, (x, params))


def test_gradients_match_reference(device):
    # Multi-chunk samples with the chunk boundary inside a channel; fp64 autograd of the
    # reference is the oracle.
    x, params = _inputs((2, 3, 70, 70), 2, torch.float64, device, seed=3)
    gy, gl = torch.randn_like(x), torch.randn(2, dtype=torch.float64, device=device)
    ours = [t.clone().requires_grad_() for t in (x, params)]
    theirs = [t.cpu().clone().requires_grad_() for t in (x, params)]
    y, ld = _layer(*ours, 0, 2, clamp=3.0)
    torch.autograd.backward((y, ld), (gy, gl))
    y64, ld64 = reference.affine_coupling_layer(*theirs, 0, 2, clamp=3.0)
    torch.autograd.backward((y64, ld64), (gy.cpu(), gl.cpu()))
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a.grad.cpu(), b.grad, rtol=1e-12, atol=1e-12)


def test_gradient_of_logdet_alone(device):
    x, params = (t.requires_grad_() for t in _inputs((2, 4, 3), 2, torch.float64, device, seed=4))
    _layer(x, params, 2, 2, clamp=3.0)[1].sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(x))  # passive channels too: no grad_y
    assert torch.equal(params.grad[:, 0::2], torch.zeros_like(params[:, 0::2]))
    expected = 1 - torch.tanh(params.detach()[:, 1::2] / 3.0) ** 2
    torch.testing.assert_close(params.grad[:, 1::2], expected, rtol=1e-14, atol=1e-14)


def _layer_backward(gy, gl, x, params, inverse=False):
    return torch.ops.pygen.affine_coupling_layer_backward(gy, gl, x, params, 1, 2, True, "exp", 2.0, inverse)


def _grad_layouts(shape, dtype, device):
    """grad_y / grad_logdet pairs in the layouts the backward reads in place (broadcasts,
    batch strides) or copies (other strides); grad_y in ``dtype``, grad_logdet in the
    log-det's dtype."""
    g = torch.Generator().manual_seed(9)
    full = torch.randn(shape, generator=g).to(device, dtype)
    per_sample = torch.randn(shape[0], generator=g).to(device, dtype)
    one = torch.tensor(1.5, dtype=dtype, device=device)
    wide = torch.randn(2 * shape[0], *shape[1:], generator=g).to(device, dtype)
    ld_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    per_sample_ld = per_sample.to(ld_dtype)
    layouts = {
        "scalar broadcast (sum's gradient)": one.expand(shape),
        "one value per sample": per_sample.view(-1, *[1] * (len(shape) - 1)).expand(shape),
        "one sample for all": full[:1].expand(shape),
        "every other sample": wide[::2],
        "channels last": full.to(memory_format=torch.channels_last),
        "transposed": full.transpose(2, 3).contiguous().transpose(2, 3),
    }
    gls = [
        torch.tensor(0.5, dtype=ld_dtype, device=device).expand(shape[0]),
        per_sample_ld,
        torch.randn(2 * shape[0], generator=g).to(device, ld_dtype)[::2],
    ]
    return [(name, gy, gls[i % len(gls)]) for i, (name, gy) in enumerate(layouts.items())]


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
@pytest.mark.parametrize("inverse", [False, True])
def test_backward_reads_grads_in_any_layout(device, dtype, inverse):
    # Each layout gives the same gradients, bit for bit, as its contiguous copy; the
    # passive channels' gradient is grad_y's values there (a broadcast filled in).
    shape = (3, 4, 5, 6)
    x, params = _inputs(shape, 2, dtype, device, seed=10)
    for name, gy, gl in _grad_layouts(shape, dtype, device):
        gx, gp = _layer_backward(gy, gl, x, params, inverse)
        ex, ep = _layer_backward(gy.contiguous(), gl.contiguous(), x, params, inverse)
        assert torch.equal(gx, ex) and torch.equal(gp, ep), name
        assert torch.equal(gx[:, [0, 3]], gy[:, [0, 3]]), name
        gy_only = _layer_backward(gy, None, x, params, inverse)
        assert torch.equal(gy_only[0], _layer_backward(gy.contiguous(), None, x, params, inverse)[0]), name


def test_affine_coupling_backward_reads_broadcast_grads(device):
    x, shift, raw = (torch.randn(3, 4, 5, dtype=torch.float64, device=device) for _ in range(3))
    op = torch.ops.pygen.affine_coupling_backward
    for gy in (torch.ones((), dtype=torch.float64, device=device).expand(3, 4, 5), torch.randn(6, 4, 5)[::2]):
        gy = gy.to(device, torch.float64)
        gl = torch.full((1,), 0.5, dtype=torch.float64, device=device).expand(3)
        ours = op(gy, gl, x, shift, raw, "exp", None, False)
        expected = op(gy.contiguous(), gl.contiguous(), x, shift, raw, "exp", None, False)
        assert all(torch.equal(a, b) for a, b in zip(ours, expected, strict=True))


def test_loss_sum_gradients_match_reference(device):
    # The benchmark's loss: y.sum() + logdet.sum() hands the backward broadcasts.
    x, params = _inputs((4, 4, 6, 6), 2, torch.float32, device, seed=11)
    ours = [t.clone().requires_grad_() for t in (x, params)]
    theirs = [t.cpu().double().requires_grad_() for t in (x, params)]
    y, ld = _layer(*ours, 2, 2, clamp=3.0)
    (y.sum() + ld.sum()).backward()
    y64, ld64 = reference.affine_coupling_layer(*theirs, 2, 2, clamp=3.0)
    (y64.sum() + ld64.sum()).backward()
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a.grad.cpu().double(), b.grad, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "gy,gl,error,match",
    [
        (torch.zeros(2, 3, 4), None, ValueError, "grad_y must have shape"),
        (torch.zeros(2, 3, 5, dtype=torch.float64), None, TypeError, "grad_y must have x's dtype"),
        (None, torch.zeros(3), ValueError, "grad_logdet must have shape"),
    ],
)
def test_backward_bad_grads(gy, gl, error, match):
    x, params = torch.zeros(2, 3, 5), torch.zeros(2, 4, 5)
    with pytest.raises(error, match=match):
        torch.ops.pygen.affine_coupling_layer_backward(gy, gl, x, params, 1, 2, True, "exp", None, False)


def test_strided_inputs(device):
    # Non-contiguous x and params (channels-last) are read as their values.
    x, params = _inputs((2, 4, 3, 5), 2, torch.float32, device, seed=5)
    xs, ps = (t.to(memory_format=torch.channels_last) for t in (x, params))
    for a, b in zip(_layer(xs, ps, 0, 2), _layer(x, params, 0, 2), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("shape", [(2, 3, 100, 100), (64, 4, 16, 16)])
def test_deterministic_across_threads(shape):
    # Multi-chunk samples, and many one-chunk samples split over the threads; forward
    # and backward.
    x, params = _inputs(shape, 2, torch.float32, "cpu", seed=6)

    def forward_backward():
        xs, ps = x.clone().requires_grad_(), params.clone().requires_grad_()
        y, ld = _layer(xs, ps, 1, 2, clamp=2.0)
        (y.sum() + (ld * torch.arange(shape[0])).sum()).backward()
        return y, ld, xs.grad, ps.grad

    results = on_each_thread_count(forward_backward)
    for other in results[1:]:
        assert all(torch.equal(a, b) for a, b in zip(results[0], other, strict=True))


@pytest.mark.parametrize("inverse", [False, True])
def test_opcheck(device, inverse):
    x, params = _inputs((2, 3, 2, 2), 2, torch.float32, device, seed=7)
    op = torch.ops.pygen.affine_coupling_layer
    opcheck(op, (x.requires_grad_(), params, 1, 2, True, "exp", 2.0, inverse))
    opcheck(op, (x, params.requires_grad_(), 0, 2, False, "sigmoid", None, inverse))


def test_compiles():
    x, params = _inputs((2, 3, 4), 1, torch.float32, "cpu", seed=8)

    def f(x, params):
        y, ld = pygen.ops.affine_coupling_layer(x * 2, params, 2, 1, scale_fn="sigmoid")
        return y.sum() + ld.sum()

    torch.testing.assert_close(torch.compile(f, fullgraph=True)(x, params), f(x, params))


def test_empty_batch(device):
    x, params = _inputs((0, 4, 3), 2, torch.float32, device)
    y, ld = _layer(x, params, 2, 2)
    assert y.shape == x.shape and ld.shape == (0,)


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(params=torch.zeros(2, 3, 5)), ValueError, "params must have shape"),
        (dict(params=torch.zeros(2, 4, 6)), ValueError, "params must have shape"),
        (dict(params=torch.zeros(2, 4, 5, dtype=torch.float64)), TypeError, "params must have x's dtype"),
        (dict(x=torch.zeros(2)), ValueError, "x must have shape"),
        (dict(x=torch.zeros(2, 3, 5, dtype=torch.int32)), TypeError, "x must be float32"),
        (dict(active_begin=2), ValueError, "active_begin and active must pick"),
        (dict(active_begin=-1), ValueError, "active_begin and active must pick"),
        (dict(active=0, params=torch.zeros(2, 0, 5)), ValueError, "active_begin and active must pick"),
        (dict(active_begin=1.0), TypeError, "active_begin must be an int"),
        (dict(scale_fn="softplus"), ValueError, "scale_fn must be"),
        (dict(clamp=-1.0), ValueError, "clamp must be"),
        (dict(params=[0.0]), TypeError, "params must be a tensor"),
    ],
)
def test_bad_input(kwargs, error, match):
    args = dict(x=torch.zeros(2, 3, 5), params=torch.zeros(2, 4, 5), active_begin=1, active=2)
    args.update(kwargs)
    x, params, begin, active = (args.pop(n) for n in ("x", "params", "active_begin", "active"))
    with pytest.raises(error, match=match):
        pygen.ops.affine_coupling_layer(x, params, begin, active, **args)
