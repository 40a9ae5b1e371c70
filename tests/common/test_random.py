"""pygen.ops.rand / randn against the reference, across devices, threads and SIMD paths."""

import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import pygen
from pygen.ops import reference
from tests.helpers import DEVICES, assert_error_within, opcheck, run_on_each_isa

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
SHAPES = [(), (0,), (1,), (7,), (3, 5), (2, 3, 17), (4099,)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_rand_matches_reference_exactly(device, seed, dtype, shape):
    out = pygen.ops.rand(shape, seed=seed, offset=3, dtype=dtype, device=device)
    assert out.shape == shape and out.dtype == dtype and out.device.type == device
    ref = reference.rand(math.prod(shape), seed, 3, dtype).reshape(shape)
    assert torch.equal(out.cpu(), ref)


@pytest.mark.parametrize("shape", SHAPES)
def test_randn_float32_within_tolerance(device, seed, shape):
    n = math.prod(shape)
    out = pygen.ops.randn(shape, seed=seed, dtype=torch.float32, device=device)
    ref64 = reference.randn(n, seed, 0, torch.float64, compute=torch.float64)
    same_dtype = reference.randn(n, seed, 0, torch.float32, compute=torch.float32)
    if n:
        assert_error_within(out.reshape(-1), ref64, same_dtype)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_randn_low_precision_is_rounded_float32(device, seed, dtype):
    out = pygen.ops.randn((1001,), seed=seed, dtype=dtype, device=device)
    f32 = pygen.ops.randn((1001,), seed=seed, dtype=torch.float32, device=device)
    assert torch.equal(out, f32.to(dtype))  # round to nearest even, like torch's cast


def test_randn_float64_close_to_reference(device, seed):
    out = pygen.ops.randn((999,), seed=seed, dtype=torch.float64, device=device)
    ref = reference.randn(999, seed, 0, torch.float64)
    torch.testing.assert_close(out.cpu(), ref, rtol=1e-13, atol=1e-13)


def test_uniform_grid_edges():
    for p in (8, 11, 24, 53):
        lo, hi = reference.uniform_grid(torch.tensor([0, (1 << p) - 1]), p).tolist()
        assert lo == 2.0 ** -(p + 1) and hi == 1 - 2.0**-p


@pytest.mark.parametrize("dtype", DTYPES)
def test_rand_open_interval_and_full_significand(dtype):
    u = pygen.ops.rand((1 << 20,), seed=5, dtype=dtype).double()
    assert 0 < u.min() and u.max() < 1
    p = reference.SIGNIFICAND_BITS[dtype]
    # Values below 1/2 are bin midpoints: odd multiples of 2^-(p+1), so all p bits vary.
    low = u[u < 0.5] * 2.0 ** (p + 1)
    assert torch.equal(low, low.round()) and bool((low.long() % 2 == 1).all())
    if dtype == torch.float64:  # the 53rd bit really varies
        high = (u[u >= 0.5] * 2.0**53).long()
        assert 0.4 < (high % 2).double().mean() < 0.6


def test_offset_continues_the_stream():
    full = pygen.ops.rand((100,), seed=9)
    blocks = pygen.ops.philox_blocks(40)
    assert torch.equal(full[40:], pygen.ops.rand((60,), seed=9, offset=blocks))
    full64 = pygen.ops.randn((100,), seed=9, dtype=torch.float64)
    assert torch.equal(full64[40:], pygen.ops.randn((60,), seed=9, offset=20, dtype=torch.float64))


def test_numpy_integer_seed():
    assert torch.equal(pygen.ops.rand((5,), seed=np.uint64(2**64 - 1)), pygen.ops.rand((5,), seed=2**64 - 1))


def test_seeds_and_offsets_differ():
    a = pygen.ops.rand((64,), seed=1)
    assert not torch.equal(a, pygen.ops.rand((64,), seed=2))
    assert not torch.equal(a, pygen.ops.rand((64,), seed=1, offset=1))
    assert not torch.equal(a, pygen.ops.rand((64,), seed=1 + (1 << 32)))


def test_same_output_for_any_thread_count():
    before = torch.get_num_threads()
    try:
        results = []
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            results.append(pygen.ops.randn((1 << 18) + 3, seed=11))
    finally:
        torch.set_num_threads(before)
    assert all(torch.equal(results[0], r) for r in results[1:])


SCRIPT = """
import torch, pygen, sys
out = [pygen.ops.{fn}((50003,), seed=77, dtype=torch.{dtype}) for _ in range(1)]
sys.stdout.write(pygen.info()["cpu_isa"] + " " + str(hash(out[0].view(torch.uint8).numpy().tobytes())))
"""


@pytest.mark.parametrize(
    "fn,dtype",
    [
        ("rand", "float32"),
        ("randn", "float32"),
        ("randn", "float16"),
        ("randn", "bfloat16"),
        ("rand", "float64"),
        ("randn", "float64"),
    ],
)
def test_simd_paths_agree_bit_for_bit(fn, dtype):
    digests = run_on_each_isa(SCRIPT.format(fn=fn, dtype=dtype), PYTHONHASHSEED="0")
    assert len({tuple(d) for d in digests.values()}) == 1, digests


def test_bad_isa_override_is_reported():
    env = dict(os.environ, PYGEN_CPU_ISA="sse9")
    run = subprocess.run(
        [sys.executable, "-c", "import pygen; pygen.ops.rand(3, seed=1)"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert run.returncode != 0 and "PYGEN_CPU_ISA must be scalar, avx2 or avx512" in run.stderr


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_uniform_chi_square(dtype):
    # 1024 equal bins, 4M draws: chi-square with 1023 dof; 1023 + 5.5 * sqrt(2046) is
    # exceeded with probability < 1e-6 (Wilson-Hilferty).
    u = pygen.ops.rand((1 << 22,), seed=2026, dtype=dtype)
    counts = torch.bincount((u * 1024).long(), minlength=1024).double()
    expected = u.numel() / 1024
    chi2 = ((counts - expected) ** 2 / expected).sum().item()
    assert chi2 < 1023 + 5.5 * math.sqrt(2 * 1023)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_normal_moments_and_tails(dtype):
    n = 1 << 22
    z = pygen.ops.randn((n,), seed=31337, dtype=dtype).double()
    # Each statistic within 5.3 standard errors: failure probability < 1e-6 per check.
    assert abs(z.mean().item()) < 5.3 / math.sqrt(n)
    assert abs(z.var().item() - 1) < 5.3 * math.sqrt(2 / n)
    assert abs((z**3).mean().item()) < 5.3 * math.sqrt(15 / n)
    assert abs((z**4).mean().item() - 3) < 5.3 * math.sqrt(96 / n)
    # P(|z| > 3) = 0.0026998; a binomial count within 5.3 sigma.
    p3 = math.erfc(3 / math.sqrt(2))
    tail = (z.abs() > 3).double().sum().item()
    assert abs(tail - n * p3) < 5.3 * math.sqrt(n * p3 * (1 - p3))


def test_generator_reproducible_and_advancing():
    g = torch.Generator().manual_seed(123)
    a = pygen.ops.randn((10,), generator=g)
    b = pygen.ops.randn((10,), generator=g)
    assert not torch.equal(a, b)
    g.manual_seed(123)
    assert torch.equal(a, pygen.ops.randn((10,), generator=g))


@pytest.mark.parametrize("fn", [pygen.ops.rand, pygen.ops.randn])
def test_opcheck(device, fn):
    op = torch.ops.pygen.rand.default if fn is pygen.ops.rand else torch.ops.pygen.randn.default
    opcheck(op, ([3, 5], 42, 7, torch.float32, torch.device(device)))


def test_compile_fullgraph(device):
    def f(x):
        return x + pygen.ops.randn(x.shape, seed=3, device=x.device) * pygen.ops.rand(
            x.shape, seed=4, device=x.device
        )

    x = torch.zeros(6, 7, device=device)
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    assert torch.equal(compiled(x), f(x))


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(shape=(3,), seed=-1), ValueError, r"seed must be in \[0, 2\*\*64\)"),
        (dict(shape=(3,), seed=1 << 64), ValueError, r"seed must be in \[0, 2\*\*64\)"),
        (dict(shape=(3,), seed=1.5), TypeError, "seed must be an int"),
        (dict(shape=(3,)), ValueError, "pass exactly one of seed="),
        (dict(shape=(3,), seed=1, generator=torch.Generator()), ValueError, "pass exactly one of seed="),
        (dict(shape=(3,), generator=1), TypeError, "generator must be a torch.Generator"),
        (dict(shape=(3, -2), seed=1), ValueError, "size must be non-negative, got -2 at dim 1"),
        (dict(shape=(3,), seed=1, offset=-1), ValueError, r"offset must be an int in \[0, 2\*\*63\)"),
        (dict(shape=(3,), seed=1, offset=1 << 63), ValueError, r"offset must be an int in \[0, 2\*\*63\)"),
        (dict(shape=(3,), seed=True), TypeError, "seed must be an int"),
        (dict(shape=(3,), seed=1, dtype=torch.int32), TypeError, "dtype must be one of float32"),
        (dict(shape="abc", seed=1), TypeError, "shape must be an int or a sequence"),
    ],
)
@pytest.mark.parametrize("fn", [pygen.ops.rand, pygen.ops.randn])
def test_bad_inputs(fn, kwargs, error, match):
    with pytest.raises(error, match=match):
        fn(**kwargs)


def test_op_level_checks():
    with pytest.raises(ValueError, match="offset must be non-negative"):
        torch.ops.pygen.rand([2], 1, -5, torch.float32, torch.device("cpu"))
    with pytest.raises(TypeError, match="dtype must be float32, float64, float16 or bfloat16"):
        torch.ops.pygen.randn([2], 1, 0, torch.int64, torch.device("cpu"))


@pytest.mark.skipif("cuda" in pygen.info()["devices"], reason="checks the error of a CPU-only build")
def test_cuda_request_without_cuda_build():
    with pytest.raises(RuntimeError, match="this pygen build has no CUDA kernels"):
        pygen.ops.rand((3,), seed=1, device="cuda")


@pytest.mark.skipif("cuda" not in DEVICES, reason="needs a GPU and a CUDA build")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("fn", [pygen.ops.rand, pygen.ops.randn])
def test_cpu_and_cuda_bit_identical(fn, dtype):
    cpu = fn((3, 100003), seed=99, offset=5, dtype=dtype)
    gpu = fn((3, 100003), seed=99, offset=5, dtype=dtype, device="cuda").cpu()
    assert torch.equal(gpu, cpu)
