"""pytest-benchmark microbenchmarks of every family: `pytest bench --benchmark-enable`.

Under the default `--benchmark-disable` each case runs once, as a smoke test.
"""

import math

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


def test_solvers_accuracy_quick():
    """The analytic solver benchmark (bench/accuracy_solvers.py) end to end, small."""
    pytest.importorskip("diffusers", reason="a test dependency (make test installs it)")
    pytest.importorskip("torchdiffeq", reason="a test dependency (make test installs it)")
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "accuracy_solvers", Path(__file__).parent / "accuracy_solvers.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    report = module.run(quick=True)
    assert {r["family"] for r in report["rows"]} == {"pygen", "diffusers", "torchdiffeq"}
    assert all(math.isfinite(r["error"]) and math.isfinite(r["swd"]) for r in report["rows"])
    assert "NFE <= 10" in module.summary(report)
