"""Test helpers: the low-precision tolerance rule, opcheck and statistical bounds."""

import contextlib
import math
import os
import subprocess
import sys

import pytest
import torch

import pygen

# Devices with pygen kernels that can run here: cuda only with a GPU and a CUDA build.
DEVICES = ["cpu"] + (["cuda"] if pygen.info()["cuda_available"] else [])


def assert_error_within(
    out: torch.Tensor, ref64: torch.Tensor, same_dtype: torch.Tensor, factor: float = 2.0
):
    """flash-attention's rule: the kernel's max error against a float64 reference must be
    at most ``factor`` times the error of the same computation done by PyTorch in the
    kernel's dtype (``same_dtype``)."""
    ref64 = ref64.double().cpu()
    err = (out.double().cpu() - ref64).abs().max().item()
    base = (same_dtype.double().cpu() - ref64).abs().max().item()
    assert err <= factor * base + 1e-12, f"kernel error {err:.3e} > {factor} x PyTorch's {base:.3e}"


def opcheck(op, args, kwargs=None):
    """torch.library.opcheck with every check; fails the test with the first problem."""
    result = torch.library.opcheck(op, args, kwargs or {})
    bad = {k: v for k, v in result.items() if v != "SUCCESS"}
    assert not bad, bad


def chi2_threshold(dof: int, p: float = 1e-6) -> float:
    """x with P(chi-square with ``dof`` degrees of freedom > x) = p, by bisection on the
    regularized upper incomplete gamma function (mpmath comes with torch)."""
    import mpmath

    lo, hi = 0.0, dof + 40.0 * (dof**0.5 + 1)
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if mpmath.gammainc(dof / 2, mid / 2, regularized=True) > p else (lo, mid)
    return hi


def binomial_interval(n: int, p: float, alpha: float = 1e-6) -> tuple[int, int]:
    """[lo, hi] holding a Binomial(n, p) count but with probability < ``alpha`` (at most
    alpha / 2 on each side), from the exact pmf in float64."""
    cdf = binomial_pmf(n, p).cumsum(0)
    sf = binomial_pmf(n, p).flip(0).cumsum(0).flip(0)  # sf[k] = P(X >= k)
    lo = int((cdf <= alpha / 2).sum())  # P(X < lo) <= alpha / 2
    hi = n - int((sf <= alpha / 2).sum())  # P(X > hi) <= alpha / 2
    return lo, hi


def binomial_pmf(n: int, p: float) -> torch.Tensor:
    """P(X = k) for k = 0..n, X ~ Binomial(n, p), float64."""
    k = torch.arange(n + 1, dtype=torch.float64)
    log_pmf = (
        math.lgamma(n + 1)
        - torch.lgamma(k + 1)
        - torch.lgamma(n - k + 1)
        + k * math.log(p)
        + (n - k) * math.log1p(-p)
    )
    return log_pmf.exp()


@pytest.fixture
def one_thread():
    """For tests of tiny tensors, where intra-op threads cost more than they save (far
    more on a loaded machine): the test runs on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def on_each_thread_count(fn, counts=(1, 2, 3)) -> list:
    """fn()'s result with torch.set_num_threads(n) for each n in counts (the setting before
    is restored): the kernels promise the same bits for any thread count."""
    before = torch.get_num_threads()
    try:
        results = []
        for n in counts:
            torch.set_num_threads(n)
            results.append(fn())
        return results
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def debug_checks(enabled: bool = True):
    """pygen.set_debug_checks(enabled) for the block, then the setting before it. The
    tests of bad inputs on a GPU use it: without debug checks a bad row fails a
    device-side assertion, which ends the process's CUDA context."""
    before = pygen.debug_checks()
    pygen.set_debug_checks(enabled)
    try:
        yield
    finally:
        pygen.set_debug_checks(before)


def run_on_each_isa(script: str, **env: str) -> dict[str, list[str]]:
    """Runs ``script`` in a fresh interpreter once per SIMD path this CPU can take
    (``PYGEN_CPU_ISA``). The script prints ``pygen.info()["cpu_isa"]`` first, checked to be
    the path asked for; returns the rest of its output's words by path."""
    detected = pygen.info()["cpu_isa_detected"]
    paths = ["scalar", "avx2", "avx512"][: ["scalar", "avx2", "avx512"].index(detected) + 1]
    out = {}
    for isa in paths:
        run = subprocess.run(
            [sys.executable, "-c", script],
            env=dict(os.environ, PYGEN_CPU_ISA=isa, **env),
            capture_output=True,
            text=True,
        )
        assert run.returncode == 0, run.stderr
        words = run.stdout.split()
        assert words[0] == isa, (isa, words)
        out[isa] = words[1:]
    return out
