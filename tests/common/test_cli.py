"""`python -m pygen info` and `demo`, as a user runs them."""

import json
import subprocess
import sys

import torch

import pygen


def run(*args: str) -> str:
    return subprocess.run(
        [sys.executable, "-m", "pygen", *args], check=True, capture_output=True, text=True
    ).stdout


def test_info_json_matches_pygen_info():
    report = json.loads(run("info", "--json"))
    assert report["version"] == pygen.__version__
    assert report["torch"] == torch.__version__
    assert "cpu" in report["devices"]
    assert report["cpu_isa"] in ("scalar", "avx2", "avx512")
    assert report["num_threads"] >= 1 and report["parallel_backend"] in ("OpenMP", "native")


def test_demo_draws_reproducible_numbers(tmp_path):
    out = run("demo", "--seconds", "5", "--out", str(tmp_path))
    assert "== pygen build ==" in out
    assert "cpu: same seed again is bit-identical: True" in out
    if pygen.info()["cuda_available"]:
        assert "cpu and cuda bit-identical: True" in out
    assert "held-out bits per byte" in out and "sliced Wasserstein to held-out digits" in out
    assert "held-out NELBO" in out and "float32 Gumbel" in out
    assert (tmp_path / "diffusion-digits.png").stat().st_size > 0
    assert out.count("held-out bits/dim") == 2 and "GS-Jacobi" in out
    assert (tmp_path / "glow-digits.png").stat().st_size > 0
    assert (tmp_path / "tarflow-digits.png").stat().st_size > 0
