"""pygen.ops.mix_logistic_cdf against its float64 reference (forward in log space,
inverse by bisection), tails, round trips, Jacobians, gradients, opcheck,
torch.compile and bad inputs."""

import pytest
import torch

import pygen
from pygen.ops import reference
from tests.helpers import assert_error_within, opcheck


def _params(shape, k, dtype, device, seed=0, spread=1.0):
    g = torch.Generator().manual_seed(seed)

    def r(*s):
        return torch.randn(*s, generator=g, dtype=torch.float64)

    x = r(*shape) * 3
    logits, means, log_scales = r(*shape, k), r(*shape, k) * 2, r(*shape, k) * 0.7 * spread
    return [t.to(device, dtype) for t in (x, logits, means, log_scales)]


def _rel_tol(x, tol):
    return tol * x.abs().clamp_min(1.0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape,k", [((7,), 1), ((3, 5), 4), ((2, 3, 33), 32)])
def test_forward_matches_reference(device, dtype, shape, k):
    x, logits, means, log_scales = _params(shape, k, dtype, device)
    y, logdet = pygen.ops.mix_logistic_cdf(x, logits, means, log_scales)
    y64, ld64 = reference.mix_logistic_cdf(x.cpu(), logits.cpu(), means.cpu(), log_scales.cpu())
    assert y.shape == x.shape and y.dtype == dtype and logdet.shape == x.shape
    assert logdet.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    if dtype == torch.float64:
        torch.testing.assert_close(y.cpu(), y64, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(logdet.cpu(), ld64, rtol=1e-12, atol=1e-12)
        return
    # PyTorch's own log-space computation in float32 is the yardstick for every low dtype
    # (the kernel computes in float32; y is then rounded to the data's dtype).
    y32, ld32 = reference.mix_logistic_cdf(x, logits, means, log_scales, dtype=torch.float32)
    assert_error_within(y.float(), y64, y32.to(dtype).float(), factor=4.0)
    assert_error_within(logdet, ld64, ld32, factor=4.0)


def test_tails_stay_finite_and_accurate(device):
    # F(x) and 1 - F(x) far below float32's resolution around 1 (and below its
    # smallest normal number at |x| = 100).
    x = torch.tensor([-100.0, -60.0, -20.0, 0.0, 20.0, 60.0, 100.0], device=device)
    k = 3
    logits = torch.tensor([0.0, 1.0, -1.0], device=device).expand(7, k).contiguous()
    means = torch.tensor([-1.0, 0.5, 2.0], device=device).expand(7, k).contiguous()
    log_scales = torch.tensor([0.0, -0.5, 0.3], device=device).expand(7, k).contiguous()
    y, logdet = pygen.ops.mix_logistic_cdf(x, logits, means, log_scales)
    y64, ld64 = reference.mix_logistic_cdf(x.cpu(), logits.cpu(), means.cpu(), log_scales.cpu())
    assert torch.isfinite(y).all() and torch.isfinite(logdet).all()
    # log f - log F - log(1 - F) cancels terms of size |x| in the tails: float32's own
    # log-space computation is the yardstick.
    y32, ld32 = reference.mix_logistic_cdf(x, logits, means, log_scales, dtype=torch.float32)
    assert_error_within(y, y64, y32, factor=4.0)
    assert_error_within(logdet, ld64, ld32, factor=4.0)
    torch.testing.assert_close(logdet.cpu().double(), ld64, rtol=0, atol=1e-5)
    x_back, _ = pygen.ops.mix_logistic_cdf(y, logits, means, log_scales, inverse=True)
    torch.testing.assert_close(x_back, x, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-6), (torch.float64, 1e-12)])
@pytest.mark.parametrize("k", [1, 4, 32])
def test_round_trip(device, dtype, tol, k):
    x, logits, means, log_scales = _params((5, 41), k, dtype, device, seed=1)
    y, ld = pygen.ops.mix_logistic_cdf(x, logits, means, log_scales)
    x_back, ld_inv = pygen.ops.mix_logistic_cdf(y, logits, means, log_scales, inverse=True)
    # The solver's tolerance, plus y's own rounding mapped back through dx/dy.
    slack = _rel_tol(y.double(), torch.finfo(dtype).eps) * torch.exp(-ld.double()) * 4
    err = (x_back.double() - x.double()).abs()
    assert (err <= 1.01 * _rel_tol(x.double(), tol) + slack).all(), err.max()
    assert (err <= (1e-5 if dtype == torch.float32 else 1e-10) * x.double().abs().clamp_min(1.0)).all()
    torch.testing.assert_close(ld_inv, -ld, rtol=tol * 10, atol=tol * 10 + 1e-5 * (dtype == torch.float32))


def test_inverse_matches_bisection_reference(device):
    x, logits, means, log_scales = _params((4, 9), 5, torch.float64, device, seed=2, spread=3.0)
    y = x * 4  # far into both tails too
    x_new, _ = pygen.ops.mix_logistic_cdf(y, logits, means, log_scales, inverse=True)
    x_ref = reference.mix_logistic_cdf_inverse(y.cpu(), logits.cpu(), means.cpu(), log_scales.cpu())
    assert ((x_new.cpu() - x_ref).abs() <= _rel_tol(x_ref, 1e-12)).all()


def test_inverse_tolerance_is_respected():
    x, logits, means, log_scales = _params((300,), 6, torch.float64, "cpu", seed=3, spread=2.0)
    y, _ = pygen.ops.mix_logistic_cdf(x, logits, means, log_scales)
    for tol in (1e-3, 1e-8):
        x_back, _ = pygen.ops.mix_logistic_cdf(y, logits, means, log_scales, inverse=True, tol=tol)
        assert ((x_back - x).abs() <= _rel_tol(x, tol) * 1.01).all()


@pytest.mark.parametrize("inverse", [False, True])
def test_logdet_is_the_jacobian(device, inverse):
    x, logits, means, log_scales = _params((2, 3), 4, torch.float64, device, seed=4)
    _, logdet = pygen.ops.mix_logistic_cdf(x, logits, means, log_scales, inverse=inverse)

    def f(v):
        return pygen.ops.mix_logistic_cdf(v, logits, means, log_scales, inverse=inverse)[0].flatten()

    jac = torch.autograd.functional.jacobian(f, x).reshape(x.numel(), x.numel())
    sign, logabs = torch.linalg.slogdet(jac)
    assert sign.item() == 1.0
    torch.testing.assert_close(logabs, logdet.sum(), rtol=1e-9, atol=1e-9)
    # The independent reference's Jacobian gives the same (forward) log-determinant.
    if not inverse:
        ref = torch.autograd.functional.jacobian(
            lambda v: reference.mix_logistic_cdf(v, logits, means, log_scales)[0].flatten(), x
        )
        torch.testing.assert_close(
            torch.linalg.slogdet(ref.reshape(6, 6))[1], logdet.sum(), rtol=1e-12, atol=1e-12
        )


@pytest.mark.parametrize("inverse", [False, True])
def test_gradcheck(device, inverse):
    x, logits, means, log_scales = (
        t.requires_grad_() for t in _params((2, 3), 3, torch.float64, device, seed=5)
    )

    def f(x, logits, means, log_scales):
        return pygen.ops.mix_logistic_cdf(x, logits, means, log_scales, inverse=inverse, tol=1e-14)

    assert torch.autograd.gradcheck(f, (x, logits, means, log_scales))


def test_gradients_match_reference(device):
    x, logits, means, log_scales = (
        t.requires_grad_() for t in _params((4, 6), 5, torch.float64, device, seed=6)
    )
    inputs = (x, logits, means, log_scales)
    wy, wl = (
        torch.randn(4, 6, dtype=torch.float64, device=device),
        torch.randn(4, 6, dtype=torch.float64, device=device),
    )
    y, ld = pygen.ops.mix_logistic_cdf(*inputs)
    ours = torch.autograd.grad((y * wy).sum() + (ld * wl).sum(), inputs)
    y, ld = reference.mix_logistic_cdf(*inputs)
    ref = torch.autograd.grad((y * wy).sum() + (ld * wl).sum(), inputs)
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_infinities(device):
    k = 2
    logits = torch.zeros(4, k, device=device)
    means = torch.zeros(4, k, device=device)
    log_scales = torch.tensor([[0.0, 0.7]], device=device).expand(4, k).contiguous()
    v = torch.tensor([float("-inf"), float("inf"), float("nan"), 0.0], device=device)
    y, ld = pygen.ops.mix_logistic_cdf(v, logits, means, log_scales)
    assert y[0] == -float("inf") and y[1] == float("inf") and y[2].isnan() and y[3] == 0
    torch.testing.assert_close(ld[:2].cpu(), torch.tensor([-0.7, -0.7]))
    x, ld_inv = pygen.ops.mix_logistic_cdf(v, logits, means, log_scales, inverse=True)
    assert x[0] == -float("inf") and x[1] == float("inf") and x[2].isnan() and x[3].abs() < 1e-6
    torch.testing.assert_close(ld_inv[:2].cpu(), torch.tensor([0.7, 0.7]))


@pytest.mark.parametrize("inverse", [False, True])
@pytest.mark.parametrize("validate", [True, False])
def test_opcheck(device, inverse, validate):
    x, logits, means, log_scales = _params((2, 5), 3, torch.float32, device, seed=7)
    opcheck(
        torch.ops.pygen.mix_logistic_cdf,
        (x.requires_grad_(), logits.requires_grad_(), means, log_scales, inverse, 1e-6, 100, validate),
    )


@pytest.mark.parametrize("inverse", [False, True])
def test_unvalidated_bad_parameters_give_nan(device, inverse):
    # validate=False (the flow layers on GPU without debug checks): no flag read back,
    # no error; the elements whose parameters are not finite come out NaN, the others
    # as with validation.
    x, logits, means, log_scales = _params((3, 4), 3, torch.float32, device, seed=11)
    bad_means = means.clone()
    bad_means[1, 2, 0] = float("nan")
    bad_scales = log_scales.clone()
    bad_scales[2, 0, 1] = float("inf")
    y, ld = pygen.ops.mix_logistic_cdf(x, logits, bad_means, bad_scales, inverse=inverse, validate=False)
    y_ok, ld_ok = pygen.ops.mix_logistic_cdf(x, logits, means, log_scales, inverse=inverse)
    bad = torch.zeros(3, 4, dtype=torch.bool, device=device)
    bad[1, 2] = bad[2, 0] = True
    assert y[bad].isnan().all() and ld[bad].isnan().all()
    torch.testing.assert_close(y[~bad], y_ok[~bad], rtol=0, atol=0)
    torch.testing.assert_close(ld[~bad], ld_ok[~bad], rtol=0, atol=0)
    with pytest.raises(ValueError, match="must be finite"):
        pygen.ops.mix_logistic_cdf(x, logits, bad_means, log_scales, inverse=inverse)


def test_compiles():
    x, logits, means, log_scales = _params((3, 4), 4, torch.float32, "cpu", seed=8)

    def f(x, logits, means, log_scales):
        y, ld = pygen.ops.mix_logistic_cdf(x, logits, means, log_scales)
        x_back, _ = pygen.ops.mix_logistic_cdf(y, logits, means, log_scales, inverse=True)
        return x_back + ld

    torch.testing.assert_close(
        torch.compile(f, fullgraph=True)(x, logits, means, log_scales), f(x, logits, means, log_scales)
    )


def _nan_at(t, index):
    t = t.clone()
    t[index] = float("nan")
    return t


@pytest.mark.parametrize(
    "change,error,match",
    [
        (dict(means=torch.zeros(2, 3, 5)), ValueError, "means must have shape"),
        (dict(logits=torch.zeros(2, 3)), ValueError, "logits must have shape"),
        (dict(logits=torch.zeros(3, 3, 4)), ValueError, "logits must have shape"),
        (dict(logits=torch.zeros(2, 3, 0)), ValueError, "K >= 1"),
        (
            dict(log_scales=torch.zeros(2, 3, 4, dtype=torch.float64)),
            TypeError,
            "log_scales must have x's dtype",
        ),
        (dict(means=_nan_at(torch.zeros(2, 3, 4), (1, 2, 3))), ValueError, "must be finite"),
        (dict(logits=torch.full((2, 3, 4), float("inf"))), ValueError, "must be finite"),
        (
            dict(log_scales=_nan_at(torch.zeros(2, 3, 4), (0, 0, 0)), inverse=True),
            ValueError,
            "must be finite",
        ),
        (dict(tol=0.0, inverse=True), ValueError, "tol must be"),
        (dict(max_iters=0, inverse=True), ValueError, "max_iters must be"),
        (dict(x=torch.zeros(2, 3, dtype=torch.int64)), TypeError, "x must be float32"),
    ],
)
def test_bad_input(change, error, match):
    args = dict(
        x=torch.zeros(2, 3),
        logits=torch.zeros(2, 3, 4),
        means=torch.zeros(2, 3, 4),
        log_scales=torch.zeros(2, 3, 4),
    )
    args.update(change)
    tensors = [args.pop(n) for n in ("x", "logits", "means", "log_scales")]
    with pytest.raises(error, match=match):
        pygen.ops.mix_logistic_cdf(*tensors, **args)
