"""pygen.ops.rq_spline_packed (the spline with widths | heights | derivatives in one tensor)
against pygen.ops.rq_spline on the three slices: values and gradients bit for bit, in
every layout a coupling passes; gradcheck, opcheck, torch.compile and bad inputs."""

import pytest
import torch

import pygen
from tests.helpers import opcheck


def _packed(lead, K, dtype, device, layout, seed):
    """Parameters [*lead, 3K - 1]: contiguous, a conv output [B, C, 3K - 1, H, W] with the
    parameter dim moved last (read in place), the same with the parameter dim first,
    a slice of a wider row (row stride, read in place), or rows under transposed leading
    dims."""
    g = torch.Generator().manual_seed(seed)
    P = 3 * K - 1
    if layout == "conv":
        b, c, *hw = lead
        raw = torch.randn(b, c, P, *hw, generator=g, dtype=torch.float64).movedim(2, -1)
    elif layout == "moved0":
        raw = torch.randn(P, *lead, generator=g, dtype=torch.float64).movedim(0, -1)
    elif layout == "transposed":
        raw = torch.randn(lead[1], lead[0], *lead[2:], P, generator=g, dtype=torch.float64).transpose(0, 1)
    elif layout == "wide":
        raw = torch.randn(*lead, P + 2, generator=g, dtype=torch.float64)[..., :P]
    else:
        raw = torch.randn(*lead, P, generator=g, dtype=torch.float64)
    x = torch.randn(lead, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64) * 2
    return x.to(device, dtype), (raw * 1.5).to(device, dtype)


def _fwd_bwd(fn, x, params, inverse, gy, gl):
    x = x.detach().requires_grad_()
    params = params.detach().requires_grad_()
    y, lad = fn(x, params, inverse)
    return (y, lad, *torch.autograd.grad((y * gy).sum() + (lad * gl).sum(), (x, params)))


def _separate(x, p, inverse):
    K = (p.shape[-1] + 1) // 3
    return pygen.ops.rq_spline(x, p[..., :K], p[..., K : 2 * K], p[..., 2 * K :], inverse=inverse)


@pytest.mark.parametrize("inverse", [False, True])
@pytest.mark.parametrize(
    "lead,K,layout",
    [
        ((7,), 1, "contiguous"),
        ((5, 9), 8, "wide"),
        ((3, 2, 5, 3), 4, "conv"),
        ((2, 3, 4, 4), 8, "conv"),
        ((4, 5), 3, "moved0"),
        ((4, 5, 2), 3, "transposed"),
    ],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_separate_slices(device, lead, K, layout, inverse, dtype):
    x, p = _packed(lead, K, dtype, device, layout, seed=K)
    gy, gl = torch.randn_like(x), torch.randn_like(x)
    ours = _fwd_bwd(lambda *a: pygen.ops.rq_spline_packed(*a[:2], inverse=a[2]), x, p, inverse, gy, gl)
    want = _fwd_bwd(_separate, x, p, inverse, gy, gl)
    for name, a, b in zip(("y", "logabsdet", "grad_x", "grad_params"), ours, want, strict=True):
        assert a.shape == b.shape, name
        assert torch.equal(a, b), name


@pytest.mark.parametrize("inverse", [False, True])
def test_gradcheck(device, inverse):
    x, p = _packed((3, 4), 5, torch.float64, device, "contiguous", seed=3)
    p = p / 1.5
    args = [x.requires_grad_(), p.requires_grad_()]
    assert torch.autograd.gradcheck(
        lambda *a: pygen.ops.rq_spline_packed(*a, inverse=inverse), args, eps=1e-6, atol=1e-7, rtol=1e-5
    )


def test_one_output_used(device):
    x, p = _packed((4, 6), 3, torch.float64, device, "contiguous", seed=4)
    for out in (0, 1):
        a = [t.clone().requires_grad_() for t in (x, p)]
        b = [t.clone().requires_grad_() for t in (x, p)]
        ga = torch.autograd.grad(pygen.ops.rq_spline_packed(*a)[out].sum(), a)
        gb = torch.autograd.grad(_separate(*b, False)[out].sum(), b)
        for u, v in zip(ga, gb, strict=True):
            assert torch.equal(u, v)


def test_opcheck(device):
    x, p = _packed((3, 7), 4, torch.float32, device, "contiguous", seed=7)
    for inverse in (False, True):
        opcheck(torch.ops.pygen.rq_spline_packed, (x, p, inverse, 3.0, True))
    gy, gl = torch.randn_like(x), torch.randn_like(x)
    opcheck(torch.ops.pygen.rq_spline_packed_backward, (gy, gl, x, p, False, 3.0))
    opcheck(torch.ops.pygen.rq_spline_packed_backward, (None, gl, x, p, True, 2.0))


def test_compiles():
    x, p = _packed((5, 6), 4, torch.float32, "cpu", "contiguous", seed=8)
    x.requires_grad_()
    p.requires_grad_()

    def f(x, p):
        y, lad = pygen.ops.rq_spline_packed(x * 0.5, p, tail_bound=2.0)
        return (y.sin() + lad).sum()

    out = torch.compile(f, fullgraph=True)(x, p)
    grads = torch.autograd.grad(out, (x, p))
    out_eager = f(x, p)
    grads_eager = torch.autograd.grad(out_eager, (x, p))
    torch.testing.assert_close(out, out_eager)
    for a, b in zip(grads, grads_eager, strict=True):
        torch.testing.assert_close(a, b)


X = torch.zeros(2, 3)


@pytest.mark.parametrize(
    "x,params,error,match",
    [
        (X, torch.zeros(2, 3, 10), ValueError, r"params must have shape \[\*x.shape, 3K - 1\]"),
        (X, torch.zeros(2, 3, 1), ValueError, "params must have shape"),
        (X, torch.zeros(3, 3, 11), ValueError, "params must have shape"),
        (X, torch.zeros(2, 3), ValueError, "params must have shape"),
        (X, torch.zeros(()), ValueError, "params must have shape"),
        (X, torch.zeros(2, 3, 11, dtype=torch.float64), TypeError, "params must have x's dtype"),
        (X, [0.0] * 11, TypeError, "params must be a tensor"),
        (X.int(), torch.zeros(2, 3, 11, dtype=torch.int32), TypeError, "x must be"),
    ],
)
def test_bad_input(x, params, error, match):
    with pytest.raises(error, match=match):
        pygen.ops.rq_spline_packed(x, params)
    if isinstance(params, torch.Tensor):  # the same through autograd
        with pytest.raises(error, match=match):
            pygen.ops.rq_spline_packed(x, params.requires_grad_() if params.is_floating_point() else params)


def test_nonfinite_params_name_the_slice():
    x, p = _packed((2, 3), 4, torch.float32, "cpu", "contiguous", seed=9)
    p[1, 2, 5] = float("nan")  # a height
    with pytest.raises(ValueError, match="must be finite: heights hold"):
        pygen.ops.rq_spline_packed(x, p)
