"""pytest-benchmark microbenchmarks of every family: `pytest bench --benchmark-enable`.

Under the default `--benchmark-disable` each case runs once, as a smoke test.
"""

import pytest

from pygen.bench import families, load_family

pytest.importorskip(
    "pytest_benchmark",
    reason="needs pytest-benchmark: installed by make test, absent on registry-less GPU machines",
)

CASES = [(family, case) for family in families() for case in load_family(family).cases("cpu", quick=True)]
IDS = [f"{family}: {case.name}" for family, case in CASES]


@pytest.mark.parametrize("family,case", CASES, ids=IDS)
def test_pygen(benchmark, family, case):
    benchmark.group = f"{family}: {case.name}"
    benchmark(case.fn)


@pytest.mark.parametrize("family,case", CASES, ids=IDS)
def test_baseline(benchmark, family, case):
    benchmark.group = f"{family}: {case.name}"
    benchmark(case.baseline_fn)
