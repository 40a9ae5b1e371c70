"""``python -m pygen bench [family]``: the benchmark runner.

Each family has a script ``bench/bench_<family>.py`` in the source tree with a function
``cases(device, quick) -> list[Case]``. Every case times pygen's op and a named baseline
in the same process, reports medians and the ratio baseline/pygen (> 1: pygen is
faster), and the run is written to ``bench/results/<device>.json`` with a plot beside it.
"""

import ctypes
import ctypes.util
import datetime
import importlib.util
import json
import platform
import re
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

import pygen

BENCH_DIR = Path(__file__).resolve().parent.parent / "bench"


@dataclass
class Case:
    """One row: ``fn`` (pygen) against ``baseline_fn`` (named ``baseline``) on one input."""

    name: str
    fn: Callable[[], object]
    baseline: str
    baseline_fn: Callable[[], object]
    params: dict
    flops: float | None = None  # per call, for GFLOP/s beside the times
    bytes: float | None = None  # memory the op must read per call, for the bandwidth floor


def _timer(fn: Callable[[], object], device: str, min_time: float) -> Callable[[], float]:
    """Warms ``fn`` up and returns a sampler: the mean time of a batch of calls lasting
    about ``min_time``."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    fn()
    sync()
    start = time.perf_counter()
    fn()
    sync()
    inner = max(1, int(min_time / max(time.perf_counter() - start, 1e-7)))

    def sample() -> float:
        sync()
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        sync()
        return (time.perf_counter() - start) / inner

    return sample


def median_seconds(fn: Callable[[], object], device: str, repeats: int, min_time: float = 0.02) -> float:
    """Median over ``repeats`` of the mean time of a batch of calls lasting about ``min_time``."""
    sample = _timer(fn, device, min_time)
    return statistics.median(sample() for _ in range(repeats))


def paired_median_seconds(
    fn: Callable[[], object],
    baseline_fn: Callable[[], object],
    device: str,
    repeats: int,
    min_time: float = 0.02,
) -> tuple[float, float]:
    """Medians as :func:`median_seconds` of ``fn`` and ``baseline_fn``, their batches
    alternating (in alternating order), so that a machine whose speed drifts during the
    row (a shared CPU, clocks) slows both sides alike and the ratio stays put."""
    ours, base = _timer(fn, device, min_time), _timer(baseline_fn, device, min_time)
    a, b = [], []
    for r in range(repeats):
        for sample, out in ((ours, a), (base, b)) if r % 2 == 0 else ((base, b), (ours, a)):
            out.append(sample())
    return statistics.median(a), statistics.median(b)


def copy_bandwidth(device: str) -> float:
    """Bytes per second a large copy on ``device`` moves (read plus write): the
    bandwidth that the rows' floor (``bytes`` read at it) is measured against."""
    src = torch.empty(1 << 28, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    return 2 * src.numel() / median_seconds(lambda: dst.copy_(src), device, 5)


# glibc's malloc adapts its mmap and trim thresholds to the sizes freed so far, so a
# row's CPU time depended on the rows before it: eager baselines that allocate tensors of
# a few MB either reused the heap or page-faulted all of it in again on every call (the
# K=32 mixture forward's baseline: 9300 faults and 2x the time per call from a fresh
# process, none after a larger buffer had been freed). Fixed thresholds give every row
# the heap reuse a long-running process settles into.
MMAP_THRESHOLD = 32 << 20  # glibc's largest dynamic mmap threshold
TRIM_THRESHOLD = 1 << 30


def steady_allocator() -> str:
    """Pins glibc malloc's mmap and trim thresholds (see above); returns what was done."""
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt if name else None
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to pin
        mallopt = None
    if mallopt is None:
        return "default"
    m_trim_threshold, m_mmap_threshold = -1, -3
    if not (mallopt(m_mmap_threshold, MMAP_THRESHOLD) and mallopt(m_trim_threshold, TRIM_THRESHOLD)):
        return "default"
    return f"glibc mmap threshold {MMAP_THRESHOLD >> 20} MiB, trim threshold {TRIM_THRESHOLD >> 20} MiB"


def device_name(device: str) -> str:
    """A file-name-safe description of the machine: GPU name, or CPU model and cores."""
    if device.startswith("cuda"):
        name = torch.cuda.get_device_name(torch.device(device))
    else:
        model = platform.processor() or platform.machine()
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
        except OSError:
            pass
        name = f"cpu-{model}-{pygen.info()['cpu_isa']}-{torch.get_num_threads()}threads"
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name.strip()).strip("-").lower()


def families() -> list[str]:
    return sorted(p.stem.removeprefix("bench_") for p in BENCH_DIR.glob("bench_*.py"))


def load_family(family: str):
    path = BENCH_DIR / f"bench_{family}.py"
    if not path.exists():
        raise SystemExit(
            f"no benchmark '{family}' in {BENCH_DIR} (have: {', '.join(families()) or 'none'}); "
            "benchmarks run from a source checkout"
        )
    spec = importlib.util.spec_from_file_location(f"pygen_bench_{family}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(
    family: str | None = None,
    *,
    device: str = "cpu",
    quick: bool = False,
    save: bool = True,
    repeats: int | None = None,
) -> dict:
    """Runs the cases of ``family`` (default: all), prints the table, returns the report
    and, with ``save``, writes it to ``bench/results/<device>.json`` and ``.png``."""
    if device.startswith("cuda") and not pygen.info()["cuda_available"]:
        raise SystemExit("--device cuda needs a GPU and a pygen built with CUDA (see python -m pygen info)")
    repeats = repeats or (5 if quick else 15)
    allocator = steady_allocator()
    rows = []
    bandwidth = None  # measured at the first row that has a floor
    print(f"{'family':<9} {'case':<36} {'pygen':>9} {'baseline':>20} {'':>9} {'speedup':>8}")
    for fam in [family] if family else families():
        for case in load_family(fam).cases(device, quick):
            ours, base = paired_median_seconds(case.fn, case.baseline_fn, device, repeats)
            row = {
                "family": fam,
                "case": case.name,
                "params": case.params,
                "pygen_s": ours,
                "baseline": case.baseline,
                "baseline_s": base,
                "speedup": base / ours,
            }
            if case.flops:
                row["pygen_gflops"] = case.flops / ours / 1e9
                row["baseline_gflops"] = case.flops / base / 1e9
            if case.bytes:
                bandwidth = bandwidth or copy_bandwidth(device)
                row["floor_s"] = case.bytes / bandwidth
                row["over_floor"] = ours / row["floor_s"]
            rows.append(row)
            print(_format_row(row), flush=True)
    report = {
        "device": device_name(device),
        "date": datetime.date.today().isoformat(),
        "pygen": pygen.info(),
        "repeats": repeats,
        "copy_bandwidth_gbs": bandwidth and bandwidth / 1e9,
        "allocator": allocator,
        "rows": rows,
    }
    if save:
        out = BENCH_DIR / "results" / f"{report['device']}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.exists():  # keep the other families' rows of this machine
            ran = {r["family"] for r in rows}
            kept = [r for r in json.loads(out.read_text())["rows"] if r["family"] not in ran]
            report["rows"] = kept + rows
        out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {out}")
        try:
            plot(report, out.with_suffix(".png"))
            print(f"wrote {out.with_suffix('.png')}")
        except ImportError:  # machines with torch but no registry (GPU boxes) may lack it
            print(f"matplotlib is not installed: no plot (later: python -m pygen bench --plot {out})")
    return report


def _format_row(r: dict) -> str:
    line = (
        f"{r['family']:<9} {r['case']:<36} {_time(r['pygen_s']):>9} "
        f"{r['baseline']:>20} {_time(r['baseline_s']):>9} {r['speedup']:>7.2f}x"
    )
    if "pygen_gflops" in r:
        line += f"  ({r['pygen_gflops']:.0f} vs {r['baseline_gflops']:.0f} GFLOP/s)"
    if "floor_s" in r:
        line += f"  ({r['over_floor']:.1f}x the floor {_time(r['floor_s'])})"
    return line


def _time(seconds: float) -> str:
    return f"{seconds * 1e3:.2f}ms" if seconds >= 1e-2 else f"{seconds * 1e6:.1f}us"


def plot_file(result: Path) -> Path:
    """Draws the plot of a saved ``bench/results/<device>.json`` beside it."""
    path = Path(result).with_suffix(".png")
    plot(json.loads(Path(result).read_text()), path)
    return path


def plot(report: dict, path: Path) -> None:
    """Speedup of every row against its baseline, as horizontal bars on a log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["rows"]
    labels = [f"{r['case']} vs {r['baseline']}" for r in rows]
    speedups = [r["speedup"] for r in rows]
    fig, ax = plt.subplots(figsize=(8, 0.28 * len(rows) + 1.2))
    ax.barh(labels, speedups, color=["tab:green" if s >= 1 else "tab:red" for s in speedups])
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xscale("log")
    ax.invert_yaxis()
    ax.set_xlabel("speedup over baseline (median time ratio, > 1: pygen faster)")
    ax.set_title(f"pygen {report['pygen']['version']} on {report['device']} ({report['date']})", fontsize=9)
    ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
