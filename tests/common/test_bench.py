"""The benchmark runner: timing, the report and its plot."""

import pytest

import pygen
from pygen import bench


def test_median_seconds_measures_work():
    assert 0 < bench.median_seconds(lambda: sum(range(1000)), "cpu", repeats=3, min_time=0.001) < 0.1


def test_paired_median_seconds_keeps_each_side_apart():
    ours, base = bench.paired_median_seconds(
        lambda: sum(range(20000)), lambda: sum(range(1000)), "cpu", repeats=4, min_time=0.002
    )
    assert ours > 4 * base > 0


def test_run_writes_nothing_without_save(capsys):
    report = bench.run("random", quick=True, save=False, repeats=1)
    rows = report["rows"]
    assert rows and all(r["pygen_s"] > 0 and r["baseline_s"] > 0 for r in rows)
    assert report["pygen"]["version"] == pygen.__version__
    assert "torch.randn" in capsys.readouterr().out


def test_plot(tmp_path):
    pytest.importorskip("matplotlib", reason="plots need matplotlib (in requirements.txt)")
    report = {
        "device": "cpu-test",
        "date": "2026-11-21",
        "pygen": {"version": pygen.__version__},
        "rows": [
            {"case": "a", "baseline": "b", "speedup": 2.0},
            {"case": "c", "baseline": "d", "speedup": 0.5},
        ],
    }
    bench.plot(report, tmp_path / "r.png")
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"
