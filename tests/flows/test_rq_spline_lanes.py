"""The CPU kernels of rq_spline run 16 elements at a time (SIMD lanes): lengths around
the tile size, K = 2..16, elements in the tails, on the bounds and exactly on knots,
forward, inverse and backward against the reference; parameters read and gradients
written in a conv output's layout; and the same bits from every SIMD path this CPU has."""

import pytest
import torch

import pygen
from pygen.ops import reference
from tests.helpers import run_on_each_isa

B = 3.0


def _inputs(n, K, dtype, seed, spread=2.0):
    """x [n] and parameters [n, K | K | K - 1]: lanes inside, in both tails, on both
    bounds, and (every third one) exactly on an interior width knot as float64 computes
    it; and the mask of those on a knot."""
    g = torch.Generator().manual_seed(seed)
    w, h, d = (torch.randn(n, m, generator=g, dtype=torch.float64) * spread for m in (K, K, K - 1))
    x = torch.randn(n, generator=g, dtype=torch.float64) * 2.5
    x[::7] = B * 1.5
    x[3::7] = -B
    x[5::7] = B
    knots = reference._rq_knots(w, 1e-3, B)[0][:, 1:-1]  # interior knots [n, K - 1]
    on = torch.zeros(n, dtype=torch.bool)
    if K > 1:
        on[1::3] = True
        i = on.nonzero()[:, 0]
        x[i] = knots[i, i % (K - 1)]
    return [t.to(dtype) for t in (x, w, h, d)], on


def _fwd_bwd(fn, x, w, h, d, inverse):
    leaves = [t.detach().requires_grad_() for t in (x, w, h, d)]
    y, lad = fn(*leaves, inverse=inverse, tail_bound=B)
    g = torch.Generator().manual_seed(5)
    gy, gl = (torch.randn(x.shape, generator=g, dtype=torch.float64).to(x.dtype) for _ in range(2))
    grads = torch.autograd.grad((y * gy).sum() + (lad * gl).sum(), leaves)
    return [y.detach(), lad.detach(), *grads]


@pytest.mark.parametrize("inverse", [False, True])
@pytest.mark.parametrize("K", [2, 3, 8, 16])
@pytest.mark.parametrize("n", [1, 15, 16, 17, 50])
def test_tiles_match_reference_fp64(n, K, inverse):
    (x, w, h, d), on = _inputs(n, K, torch.float64, seed=n * 31 + K)
    if inverse:  # the images of the width knots are the height knots
        x = pygen.ops.rq_spline(x, w, h, d, tail_bound=B)[0]
    ours = _fwd_bwd(pygen.ops.rq_spline, x, w, h, d, inverse)
    want = _fwd_bwd(reference.rq_spline, x, w, h, d, inverse)
    names = ("y", "logabsdet", "grad_x", "grad_widths", "grad_heights", "grad_derivatives")
    for name, a, b in zip(names, ours, want, strict=True):
        # The spline and its slope are continuous at a knot; their gradients are not, and
        # a knot rounded an ulp differently (the kernels round a knot once from float64
        # sums, the reference in nflows' order) puts the element in the other bin, where
        # the inverse's log-slope comes from the other end of a bin as narrow as 1e-3.
        keep = ~on if name.startswith("grad") or (inverse and name == "logabsdet") else slice(None)
        torch.testing.assert_close(a[keep], b[keep], rtol=1e-9, atol=1e-9, msg=name)
        if inverse and name == "logabsdet":
            torch.testing.assert_close(a[on], b[on], rtol=1e-6, atol=1e-9, msg=name)
        assert a.isfinite().all(), name
    outside = x.abs() > B
    assert torch.equal(ours[0][outside], x[outside]) and (ours[1][outside] == 0).all()
    for grad in ours[3:]:
        assert (grad[outside] == 0).all()


@pytest.mark.parametrize("inverse", [False, True])
@pytest.mark.parametrize("K", [2, 5, 16])
@pytest.mark.parametrize("n", [47, 201])
def test_tiles_fp32_error(n, K, inverse):
    # Parameters of a network's scale (spread 1), and test_matches_normflows' float32
    # tolerances: wider parameters make bins of 1e-3 whose log-slope varies by orders of
    # magnitude, where float32's error is luck (the scalar kernel's was the same there,
    # bit for bit, and up to 3x PyTorch's on some draws).
    (x, w, h, d), on = _inputs(n, K, torch.float32, seed=n * 17 + K, spread=1.0)
    y, lad = pygen.ops.rq_spline(x, w, h, d, inverse=inverse, tail_bound=B)
    y64, lad64 = reference.rq_spline(*(t.double() for t in (x, w, h, d)), inverse=inverse, tail_bound=B)
    # On a knot, float32's knots an ulp off put an element in either bin, and a narrow
    # bin's log-slope changes fast there, so those lanes are left out.
    torch.testing.assert_close(y[~on].double(), y64[~on], rtol=2e-5, atol=2e-5)
    torch.testing.assert_close(lad[~on].double(), lad64[~on], rtol=2e-4, atol=2e-4)


def _conv_params(b, c, K, hw, seed):
    P = 3 * K - 1
    g = torch.Generator().manual_seed(seed)
    net_out = torch.randn(b, c * P, *hw, generator=g) * 1.5  # a conv conditioner's output
    x = torch.randn(b, c, *hw, generator=g) * 2
    return x, net_out.view(b, c, P, *hw).movedim(2, -1)


# H W = 32: whole tiles inside one (b, c) plane, read with vector loads; 15: tiles
# straddle the planes, read lane by lane.
@pytest.mark.parametrize("hw", [(4, 8), (5, 3)])
@pytest.mark.parametrize("inverse", [False, True])
def test_conv_layout_in_place(hw, inverse):
    x, params = _conv_params(3, 2, 6, hw, seed=hw[1])
    leaves = [t.detach().requires_grad_() for t in (x, params)]
    y, lad = pygen.ops.rq_spline_packed(*leaves, inverse=inverse, tail_bound=B)
    gx, gp = torch.autograd.grad(y.sum() + lad.sum(), leaves)
    assert gp.stride() == params.stride()  # the conditioner's layout: no transposing copy
    rows = [x.detach().requires_grad_(), params.contiguous().detach().requires_grad_()]
    y2, lad2 = pygen.ops.rq_spline_packed(*rows, inverse=inverse, tail_bound=B)
    gx2, gp2 = torch.autograd.grad(y2.sum() + lad2.sum(), rows)
    for a, b in ((y, y2), (lad, lad2), (gx, gx2), (gp, gp2)):
        assert torch.equal(a, b)


ISA_SCRIPT = """
import hashlib, sys, torch, pygen
print(pygen.info()["cpu_isa"])
h = hashlib.sha256()
for dtype in (torch.float32, torch.float64, torch.bfloat16):
    for K in (1, 2, 7, 16):
        for inverse in (False, True):
            g = torch.Generator().manual_seed(K)
            n = 37
            w, hh, d = (torch.randn(n, m, generator=g).to(dtype) * 2 for m in (K, K, K - 1))
            x = (torch.randn(n, generator=g) * 2.5).to(dtype)
            leaves = [t.requires_grad_() for t in (x, w, hh, d)]
            y, lad = pygen.ops.rq_spline(*leaves, inverse=inverse)
            grads = torch.autograd.grad(y.sum() + 0.5 * lad.sum(), leaves)
            for t in (y, lad, *grads):
                h.update(t.detach().float().numpy().tobytes())
print(h.hexdigest())
"""


def test_simd_paths_agree_bit_for_bit():
    digests = run_on_each_isa(ISA_SCRIPT)
    assert len({tuple(d) for d in digests.values()}) == 1, digests
