"""pygen.ops.solver_update against its float64 reference, noise stream, bad inputs."""

import pytest
import torch

import pygen
from pygen.ops import reference
from tests.helpers import DEVICES, assert_error_within, on_each_thread_count, opcheck

SHAPES = [(1, 1), (3, 5, 7), (4, 1000), (2, 3, 17, 9)]


def _inputs(shape, n_hist, dtype, device, generator):
    def r(*s):
        return torch.randn(*s, generator=generator, dtype=torch.float64)

    x, out, uncond = (r(*shape) for _ in range(3))
    hist = [r(*shape) for _ in range(n_hist)]
    coef = r(shape[0], 6 + n_hist)
    low = [t.to(device, dtype) for t in (x, out, uncond, *hist)]
    return low[0], low[1], low[2], low[3:], coef.to(device)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(
    "n_hist,guided,noise", [(0, False, False), (1, True, False), (2, False, True), (3, True, True)]
)
def test_matches_reference(device, dtype, shape, n_hist, guided, noise):
    g = torch.Generator().manual_seed(hash((shape, n_hist)) % 1000)
    x, out, uncond, hist, coef = _inputs(shape, n_hist, dtype, device, g)
    y, pred = pygen.ops.solver_update(
        x, coef, out=out, uncond=uncond if guided else None, history=hist, noise=noise, seed=7, offset=3
    )
    z = pygen.ops.randn(
        shape, seed=7, offset=3, dtype=torch.float64 if dtype == torch.float64 else torch.float32
    )
    args = dict(out=out, uncond=uncond if guided else None, history=hist, noise=z if noise else None)
    y64, p64 = reference.solver_update(x.cpu(), coef.cpu(), **{k: v for k, v in args.items()})
    assert y.dtype == dtype and y.shape == x.shape and pred.shape == x.shape
    if dtype == torch.float64:
        torch.testing.assert_close(y.cpu(), y64, rtol=1e-13, atol=1e-13)
        torch.testing.assert_close(pred.cpu(), p64, rtol=1e-13, atol=1e-13)
        return
    # PyTorch doing the same arithmetic in the data's dtype, for the 2x error rule.
    c = [coef[:, j].to(dtype).reshape((-1,) + (1,) * (x.dim() - 1)) for j in range(coef.shape[1])]
    gg = uncond + c[0] * (out - uncond) if guided else out
    p_same = c[1] * x + c[2] * gg
    y_same = c[3] * x + c[4] * p_same + sum(c[6 + j] * h for j, h in enumerate(hist))
    if noise:
        y_same = y_same + c[5] * z.to(device, dtype)
    assert_error_within(pred, p64, p_same)
    assert_error_within(y, y64, y_same)


def test_noise_is_the_randn_stream(device):
    x = torch.zeros(3, 101, device=device)
    coef = torch.zeros(3, 6, dtype=torch.float64, device=device)
    coef[:, 5] = 1.0
    y, pred = pygen.ops.solver_update(x, coef, noise=True, seed=2**64 - 5, offset=11)
    assert pred.numel() == 0
    assert torch.equal(y.cpu(), pygen.ops.randn((3, 101), seed=2**64 - 5, offset=11))


def test_per_sample_coefficients_straddle_tiles(device):
    # 3 samples of 37 values: tiles of 64 hold parts of two samples.
    x = torch.ones(3, 37, dtype=torch.float64, device=device)
    coef = torch.zeros(3, 6, dtype=torch.float64, device=device)
    coef[:, 3] = torch.tensor([1.0, 2.0, 3.0])
    y, _ = pygen.ops.solver_update(x, coef)
    assert torch.equal(y.cpu(), torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)[:, None].expand(3, 37))


def test_thresholding(device):
    g = torch.Generator().manual_seed(0)
    x, out, _, hist, coef = _inputs((4, 300), 1, torch.float64, device, g)
    out = out * 3
    y, pred = pygen.ops.solver_update(x, coef, out=out, history=hist, threshold_ratio=0.9, threshold_max=2.5)
    y64, p64 = reference.solver_update(
        x.cpu(),
        coef.cpu(),
        out=out.cpu(),
        history=[h.cpu() for h in hist],
        threshold_ratio=0.9,
        threshold_max=2.5,
    )
    torch.testing.assert_close(pred.cpu(), p64, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(y.cpu(), y64, rtol=1e-12, atol=1e-12)
    assert pred.abs().max() <= 1.0


def test_thresholding_keeps_nan(device):
    # A NaN prediction stays NaN (as torch.clamp), on every device: CUDA's fmax / fmin
    # would have clamped it to -1 silently. The row's threshold, an order statistic
    # below the NaN, stays finite.
    g = torch.Generator().manual_seed(1)
    x, out, _, hist, coef = _inputs((4, 300), 1, torch.float64, device, g)
    out = out * 3
    out[1, 7] = float("nan")
    y, pred = pygen.ops.solver_update(x, coef, out=out, history=hist, threshold_ratio=0.9, threshold_max=2.5)
    assert pred[1, 7].isnan() and y[1, 7].isnan()
    finite = torch.ones_like(pred, dtype=torch.bool)
    finite[1, 7] = False
    assert pred[finite].isfinite().all() and pred[finite].abs().max() <= 1.0
    rows = [0, 2, 3]  # the reference's quantile is NaN for row 1 as a whole
    y64, p64 = reference.solver_update(
        x[rows].cpu(),
        coef[rows].cpu(),
        out=out[rows].cpu(),
        history=[h[rows].cpu() for h in hist],
        threshold_ratio=0.9,
        threshold_max=2.5,
    )
    torch.testing.assert_close(pred[rows].cpu(), p64, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(y[rows].cpu(), y64, rtol=1e-12, atol=1e-12)


@pytest.mark.skipif("cuda" not in DEVICES, reason="needs a GPU and a CUDA build")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("threshold", [0.0, 0.8])
def test_cpu_and_cuda_bit_identical(dtype, threshold):
    # The CUDA kernel rounds every product and sum as the CPU kernel does (no FMA), and
    # the noise is the same stream: a seeded step is the same on both devices.
    g = torch.Generator().manual_seed(5)
    x, out, uncond, hist, coef = _inputs((3, 1001), 2, dtype, "cpu", g)
    kw = dict(out=out * 3, uncond=None if threshold else uncond, history=hist, noise=True, seed=11, offset=4)
    cpu = pygen.ops.solver_update(x, coef, threshold_ratio=threshold, threshold_max=2.0, **kw)
    kw = {k: (v.cuda() if isinstance(v, torch.Tensor) else v) for k, v in kw.items()}
    kw["history"] = [h.cuda() for h in hist]
    gpu = pygen.ops.solver_update(x.cuda(), coef.cuda(), threshold_ratio=threshold, threshold_max=2.0, **kw)
    for a, b in zip(cpu, gpu, strict=True):
        assert torch.equal(a, b.cpu())


def test_deterministic_across_threads():
    x = torch.randn(5, 10007)
    coef = torch.randn(5, 7, dtype=torch.float64)
    h = torch.randn_like(x)
    results = on_each_thread_count(
        lambda: pygen.ops.solver_update(x, coef, out=x, history=[h], noise=True, seed=1)[0], (1, 2)
    )
    assert torch.equal(results[0], results[1])


def test_opcheck(device):
    x = torch.randn(2, 9, device=device)
    coef = torch.randn(2, 7, dtype=torch.float64, device=device)
    opcheck(torch.ops.pygen.solver_update, (x, x.clone(), None, [x.clone()], coef, True, 3, 0, 0.0, 1.0))


def test_compiles():
    x = torch.randn(2, 9)
    coef = torch.randn(2, 6, dtype=torch.float64)

    def f(x, coef):
        return pygen.ops.solver_update(x, coef, out=x * 2)[0]

    torch.testing.assert_close(torch.compile(f, fullgraph=True)(x, coef), f(x, coef))


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(coef=torch.zeros(2, 5, dtype=torch.float64)), ValueError, "coef must have shape"),
        (dict(coef=torch.zeros(2, 6)), TypeError, "coef must be float64"),
        (dict(out=torch.zeros(2, 4)), ValueError, "out must have x's shape"),
        (dict(out=torch.zeros(2, 3, dtype=torch.float64)), TypeError, "out must have x's dtype"),
        (dict(uncond=torch.zeros(2, 3)), ValueError, "uncond needs out"),
        (dict(history=[torch.zeros(2, 3)] * 9), ValueError, "at most 8"),
        (dict(out=torch.zeros(2, 3), threshold_ratio=1.5), ValueError, "threshold_ratio"),
        (dict(offset=-1), ValueError, "offset"),
        (dict(x=torch.zeros(2, 3, dtype=torch.int32)), TypeError, "x must be float32"),
    ],
)
def test_bad_input(kwargs, error, match):
    args = dict(x=torch.zeros(2, 3), coef=torch.zeros(2, 6, dtype=torch.float64))
    args.update(kwargs)
    x, coef = args.pop("x"), args.pop("coef")
    with pytest.raises(error, match=match):
        pygen.ops.solver_update(x, coef, **args)
