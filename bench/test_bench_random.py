"""pytest-benchmark microbenchmarks of the random ops: `pytest bench --benchmark-enable`.

Under the default `--benchmark-disable` each case runs once, as a smoke test.
"""

import pytest

from pygen.bench import load_family

pytest.importorskip("pytest_benchmark", reason="needs pytest-benchmark (in requirements.txt)")

CASES = load_family("random").cases("cpu", quick=True)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_pygen(benchmark, case):
    benchmark.group = case.name
    benchmark(case.fn)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_baseline(benchmark, case):
    benchmark.group = case.name
    benchmark(case.baseline_fn)
