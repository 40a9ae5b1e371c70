"""pygen.ops.affine_coupling against its float64 reference, round trips, Jacobians,
gradients, opcheck, torch.compile and bad inputs."""

import math

import pytest
import torch

import pygen
from pygen.ops import reference
from tests.helpers import DEVICES, assert_error_within, on_each_thread_count, opcheck

# (4, 5000) and (2, 9001) span several 4096-element chunks per sample.
SHAPES = [(1, 1), (3, 5, 7), (2, 3, 17, 9), (4, 5000), (2, 9001)]
MAPS = [("exp", None), ("exp", 2.0), ("sigmoid", None)]


def _inputs(shape, dtype, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    x, shift, raw = (torch.randn(shape, generator=g, dtype=torch.float64) for _ in range(3))
    return [t.to(device, dtype) for t in (x, shift, raw * 1.5)]


def _same_dtype(x, shift, raw, scale_fn, clamp, inverse):
    """The same map computed by PyTorch in the inputs' dtype (the tolerance yardstick)."""
    if scale_fn == "sigmoid":
        log_s = torch.nn.functional.logsigmoid(raw + 2)
    else:
        log_s = raw if clamp is None else clamp * torch.tanh(raw / clamp)
    return (x - shift) * torch.exp(-log_s) if inverse else x * torch.exp(log_s) + shift


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("scale_fn,clamp", MAPS)
@pytest.mark.parametrize("inverse", [False, True])
def test_matches_reference(device, dtype, shape, scale_fn, clamp, inverse):
    x, shift, raw = _inputs(shape, dtype, device)
    y, logdet = pygen.ops.affine_coupling(x, shift, raw, scale_fn=scale_fn, clamp=clamp, inverse=inverse)
    y64, ld64 = reference.affine_coupling(x.cpu(), shift.cpu(), raw.cpu(), scale_fn, clamp, inverse)
    assert y.dtype == dtype and y.shape == x.shape
    assert logdet.shape == (shape[0],)
    assert logdet.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    if dtype == torch.float64:
        torch.testing.assert_close(y.cpu(), y64, rtol=1e-13, atol=1e-13)
        torch.testing.assert_close(logdet.cpu(), ld64, rtol=1e-13, atol=1e-12)
        return
    if dtype == torch.float32:  # both this and PyTorch's own are within an ulp or two
        torch.testing.assert_close(y.cpu().double(), y64, rtol=4e-7, atol=1e-6)
    else:
        assert_error_within(y, y64, _same_dtype(x, shift, raw, scale_fn, clamp, inverse))
    # Summed in float32 whatever the input dtype: float32 rounding over numel terms.
    n = x[0].numel()
    torch.testing.assert_close(logdet.cpu().double(), ld64, rtol=1e-6, atol=1e-6 * n**0.5)


@pytest.mark.parametrize("scale_fn,clamp", MAPS)
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
def test_round_trip(device, scale_fn, clamp, dtype, tol):
    x, shift, raw = _inputs((3, 4, 33), dtype, device, seed=1)
    y, ld = pygen.ops.affine_coupling(x, shift, raw, scale_fn=scale_fn, clamp=clamp)
    x_back, ld_inv = pygen.ops.affine_coupling(y, shift, raw, scale_fn=scale_fn, clamp=clamp, inverse=True)
    torch.testing.assert_close(x_back, x, rtol=tol, atol=tol)
    torch.testing.assert_close(ld_inv, -ld, rtol=tol, atol=tol)


@pytest.mark.parametrize("scale_fn,clamp", MAPS)
@pytest.mark.parametrize("inverse", [False, True])
def test_logdet_is_the_jacobian(device, scale_fn, clamp, inverse):
    x, shift, raw = _inputs((3, 2, 3), torch.float64, device, seed=2)
    _, logdet = pygen.ops.affine_coupling(x, shift, raw, scale_fn=scale_fn, clamp=clamp, inverse=inverse)
    for b in range(x.shape[0]):

        def f(xb, b=b):
            return pygen.ops.affine_coupling(
                xb[None], shift[b : b + 1], raw[b : b + 1], scale_fn=scale_fn, clamp=clamp, inverse=inverse
            )[0].flatten()

        jac = torch.autograd.functional.jacobian(f, x[b])
        sign, logabs = torch.linalg.slogdet(jac.reshape(x[b].numel(), -1))
        assert sign.item() == 1.0
        torch.testing.assert_close(logabs, logdet[b], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("scale_fn,clamp", MAPS)
@pytest.mark.parametrize("inverse", [False, True])
def test_gradcheck(device, scale_fn, clamp, inverse):
    x, shift, raw = (t.requires_grad_() for t in _inputs((2, 3, 5), torch.float64, device, seed=3))

    def f(x, shift, raw):
        return pygen.ops.affine_coupling(x, shift, raw, scale_fn=scale_fn, clamp=clamp, inverse=inverse)

    assert torch.autograd.gradcheck(f, (x, shift, raw))


def test_gradient_of_logdet_alone(device):
    x, shift, raw = (t.requires_grad_() for t in _inputs((2, 7), torch.float64, device, seed=4))
    pygen.ops.affine_coupling(x, shift, raw, clamp=3.0)[1].sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(x)) and torch.equal(shift.grad, torch.zeros_like(x))
    torch.testing.assert_close(raw.grad, 1 - torch.tanh(raw.detach() / 3.0) ** 2, rtol=1e-14, atol=1e-14)


def test_sigmoid_extremes(device):
    raw = torch.tensor([[-80.0, -30.0, 0.0, 30.0, 100.0]], device=device)  # scale 1e-34 .. 1
    x, shift = torch.ones_like(raw), torch.zeros_like(raw)
    y, logdet = pygen.ops.affine_coupling(x, shift, raw, scale_fn="sigmoid")
    y64, ld64 = reference.affine_coupling(x.cpu(), shift.cpu(), raw.cpu(), "sigmoid")
    torch.testing.assert_close(y.cpu().double(), y64, rtol=1e-6, atol=0)
    torch.testing.assert_close(logdet.cpu().double(), ld64, rtol=1e-6, atol=0)
    x_back, _ = pygen.ops.affine_coupling(y, shift, raw, scale_fn="sigmoid", inverse=True)
    torch.testing.assert_close(x_back, x, rtol=1e-6, atol=0)


def test_deterministic_across_threads():
    x, shift, raw = _inputs((3, 20000), torch.float32, "cpu", seed=5)
    results = on_each_thread_count(lambda: pygen.ops.affine_coupling(x, shift, raw, clamp=2.0)[1], (1, 2))
    assert torch.equal(results[0], results[1])


@pytest.mark.parametrize("inverse", [False, True])
def test_opcheck(device, inverse):
    x, shift, raw = _inputs((2, 3, 5), torch.float32, device, seed=6)
    opcheck(torch.ops.pygen.affine_coupling, (x.requires_grad_(), shift, raw, "exp", 2.0, inverse))
    opcheck(torch.ops.pygen.affine_coupling, (x, shift.requires_grad_(), raw, "sigmoid", None, inverse))


def test_compiles():
    x, shift, raw = _inputs((2, 9), torch.float32, "cpu", seed=7)

    def f(x, shift, raw):
        y, ld = pygen.ops.affine_coupling(x * 2, shift, raw, scale_fn="sigmoid")
        return y.sum() + ld.sum()

    torch.testing.assert_close(torch.compile(f, fullgraph=True)(x, shift, raw), f(x, shift, raw))


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(shift=torch.zeros(2, 1)), ValueError, "shift must have shape"),
        (dict(raw_scale=torch.zeros(2, 4)), ValueError, "raw_scale must have shape"),
        (dict(shift=torch.zeros(2, 3, dtype=torch.float64)), TypeError, "shift must have x's dtype"),
        (dict(x=torch.zeros(2, 3, dtype=torch.int32)), TypeError, "x must be float32"),
        (dict(x=torch.zeros(())), ValueError, "x must have shape"),
        (dict(scale_fn="softplus"), ValueError, "scale_fn must be"),
        (dict(clamp=0.0), ValueError, "clamp must be"),
        (dict(clamp=-1.0), ValueError, "clamp must be"),
        (dict(clamp=float("inf")), ValueError, "clamp must be"),
        (dict(scale_fn="sigmoid", clamp=1.0), ValueError, "clamp applies"),
        (dict(raw_scale=[1.0]), TypeError, "raw_scale must be a tensor"),
    ],
)
def test_bad_input(kwargs, error, match):
    args = dict(x=torch.zeros(2, 3), shift=torch.zeros(2, 3), raw_scale=torch.zeros(2, 3))
    args.update(kwargs)
    x, shift, raw = args.pop("x"), args.pop("shift"), args.pop("raw_scale")
    with pytest.raises(error, match=match):
        pygen.ops.affine_coupling(x, shift, raw, **args)


@pytest.mark.skipif("cuda" not in DEVICES, reason="needs a GPU and a CUDA build")
def test_more_samples_than_a_grid_holds():
    # 2^31 one-element samples: one (sample, chunk) task each, past gridDim.x's 2^31 - 1
    # (a grid of one block per task failed to launch). About 20 GB of device memory.
    if torch.cuda.get_device_properties(0).total_memory < 40 << 30:
        pytest.skip("needs a GPU with 40 GB")
    n = 1 << 31
    x = torch.zeros(n, 1, dtype=torch.bfloat16, device="cuda")
    params = torch.zeros_like(x)
    x[-1], params[-1] = 1.0, 0.5
    y, logdet = pygen.ops.affine_coupling(x, params, params)
    assert y[-1].item() == torch.tensor(1.0 * math.exp(0.5) + 0.5).bfloat16().item()
    assert logdet[-1].item() == 0.5 and logdet[-2].item() == 0.0 and y[-2].item() == 0.0
    del x, params, y, logdet
    torch.cuda.empty_cache()  # give the 20 GB back to the tests after this one
