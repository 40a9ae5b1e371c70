"""pytest-benchmark microbenchmarks of attention: `pytest bench --benchmark-enable`."""

import pytest

from pygen.bench import load_family

pytest.importorskip("pytest_benchmark", reason="needs pytest-benchmark (in requirements.txt)")

CASES = load_family("attention").cases("cpu", quick=True)


@pytest.mark.parametrize("case", CASES, ids=[f"{c.name} vs {c.baseline}" for c in CASES])
def test_pygen_and_baseline(benchmark, case):
    benchmark.group = case.name
    benchmark(case.fn)
    case.baseline_fn()
