"""`pip wheel --no-build-isolation .` gives a wheel that installs into a fresh venv that
already has torch, and works there."""

import subprocess
import sys
import venv
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]

CHECK = """
import pathlib, sys, torch, pygen
assert pathlib.Path(pygen.__file__).is_relative_to(sys.prefix), pygen.__file__
u = pygen.ops.rand((4,), seed=1)
assert 0 < u.min() and u.max() < 1
print(pygen.info()["version"], pygen.ops.philox4x32_10(torch.zeros(1, 4, dtype=torch.int32),
                                                       torch.zeros(1, 2, dtype=torch.int32)).tolist())
"""


@pytest.mark.slow
def test_wheel_installs_into_fresh_venv(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-build-isolation",
            "--no-deps",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            str(ROOT),
        ],
        check=True,
        cwd=ROOT,
    )
    (wheel,) = (tmp_path / "dist").glob("pygen-*.whl")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    # "Already has torch": make this interpreter's torch (and numpy) importable there.
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    Path(site, "torch_from_host.pth").write_text(str(Path(torch.__file__).parents[1]) + "\n")
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", str(wheel)], check=True)
    out = subprocess.run([python, "-c", CHECK], check=True, capture_output=True, text=True, cwd=tmp_path)
    assert out.stdout.split()[0] == "0.1.0"
    assert str(0x6627E8D5) in out.stdout  # the first known-answer word
