"""How the sampling ops report bad rows: the CPU raises a Python error always; a GPU by
default never synchronizes (a bad row fails a device-side assertion that names the op,
row and cause, so a call can be captured in a CUDA graph), and with
pygen.set_debug_checks raises the CPU's Python error. Also the one debug switch pygen
shares with the flow layers."""

import math
import os
import subprocess
import sys

import pytest
import torch

import pygen
from pygen.nn import flows
from pygen.nn.flows import base
from pygen.ops.sampling import _cuda_split
from tests.helpers import DEVICES, debug_checks

needs_cuda = pytest.mark.skipif("cuda" not in DEVICES, reason="needs a GPU and a CUDA build")


def test_one_switch_for_pygen_and_the_flows():
    assert flows.set_debug_checks is pygen.set_debug_checks
    meta = torch.zeros(2, device="meta")
    with debug_checks(True):
        assert pygen.debug_checks() and base.checks_input(meta)
    with debug_checks(False):
        assert not pygen.debug_checks() and not base.checks_input(meta)


def test_switch_from_the_environment():
    code = "import pygen; print(pygen.debug_checks())"
    env = {**os.environ, "PYGEN_DEBUG_CHECKS": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "True"


@pytest.mark.parametrize("enabled", [False, True])
def test_cpu_raises_either_way(enabled):
    logits = torch.zeros(3, 5)
    logits[2, 1] = math.nan
    x = torch.full((2, 3), 4)
    with debug_checks(enabled):
        with pytest.raises(ValueError, match=r"NaN or \+inf \(row 2\)"):
            pygen.ops.sample_categorical(logits, seed=0)
        with pytest.raises(ValueError, match="top_p must be in"):
            pygen.ops.sample_categorical(torch.zeros(3, 5), top_p=torch.tensor([1.0, 0.0, 1.0]), seed=0)
        with pytest.raises(ValueError, match="alpha_s must be >= alpha_t"):
            pygen.ops.unmask_ancestral(torch.zeros(2, 3, 5), x, 4, 0.6, 0.5, seed=0)


def _calls(device):
    """One call of every op, with per-row tensor parameters and the cuts on; and
    sample_categorical on few long rows without top-k / top-p, which a GPU splits."""
    logits = torch.randn(8, 4096, device=device) * 3
    long_logits = torch.randn(3, 131073, device=device) * 3
    step_logits = torch.randn(2, 16, 600, device=device) * 3
    x = torch.full((2, 16), 599, device=device)
    x[:, ::3] = 7
    temperature = torch.tensor([0.7, 1.3], device=device)
    # Made here, not in the lambdas: torch.tensor(..., device="cuda") copies from the host
    # and synchronizes, which the no-sync test forbids and a graph capture cannot hold.
    alpha_s = torch.tensor([0.5, 0.9], device=device)
    return [
        lambda: pygen.ops.sample_categorical(
            logits,
            temperature=temperature.repeat(4),
            top_k=torch.full((8,), 50, device=device),
            top_p=0.9,
            min_p=0.01,
            seed=3,
            return_logprob=True,
        ),
        lambda: pygen.ops.unmask_ancestral(step_logits, x, 599, 0.2, alpha_s, seed=3),
        lambda: pygen.ops.unmask_by_confidence(step_logits, x, 599, 4, confidence="margin", seed=3),
        lambda: pygen.ops.unmask_first_hitting(step_logits, x, 599, temperature=temperature, seed=3),
        lambda: pygen.ops.sample_categorical(
            long_logits,
            temperature=torch.tensor([0.7, 0.0, 1.3], device=device),
            min_p=0.01,
            seed=3,
            return_logprob=True,
        ),
    ]


@needs_cuda
@pytest.mark.parametrize("blocks", [0, 1, 4], ids=lambda b: f"{b} blocks per row")
def test_default_path_does_not_synchronize(blocks):
    calls = _calls("cuda")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        with debug_checks(False), _cuda_split(blocks):
            for call in calls:
                call()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()


@needs_cuda
def test_debug_checks_synchronize():
    """The sync detection above can fail: the debug path reads the status back."""
    calls = _calls("cuda")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        with debug_checks(True), pytest.raises(RuntimeError, match="synchroniz"):
            calls[0]()
    finally:
        torch.cuda.set_sync_debug_mode("default")


def _outputs(out) -> tuple:
    return out if isinstance(out, tuple) else (out,)


@needs_cuda
@pytest.mark.parametrize(
    ("index", "blocks"),
    # sample_categorical's calls (0 and 4) also with each row forced to one or 4 blocks.
    [(0, 0), (0, 1), (0, 4), (1, 0), (2, 0), (3, 0), (4, 0), (4, 1), (4, 4)],
)
def test_captured_in_a_cuda_graph(index, blocks):
    call = _calls("cuda")[index]
    with debug_checks(False), _cuda_split(blocks):
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):  # warm-up off the capture stream, as torch advises
            eager = call()
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            captured = call()
        graph.replay()
    torch.cuda.synchronize()
    for a, b in zip(_outputs(captured), _outputs(eager), strict=True):
        assert torch.equal(a, b)


# Scripts that make one bad call on a GPU without debug checks, and the message the
# device-side assertion must print. In a subprocess: the assertion ends the CUDA context.
BAD_CALLS = [
    (
        "logits = torch.zeros(5, 7, device='cuda'); logits[3, 2] = math.nan\n"
        "pygen.ops.sample_categorical(logits, seed=0)",
        "pygen.ops.sample_categorical: logits must not contain NaN or +inf (row 3)",
    ),
    (
        "pygen.ops.sample_categorical(torch.zeros(3, 7, device='cuda'), seed=0,"
        " temperature=torch.tensor([1.0, -1.0, 1.0], device='cuda'))",
        "pygen.ops.sample_categorical: temperature must be finite and >= 0 (0 is greedy) (row 1)",
    ),
    # Rows split over 4 blocks: the bad value in the last part, the bad parameter of a row.
    (
        "logits = torch.zeros(3, 5000, device='cuda'); logits[2, 4900] = math.nan\n"
        "with _cuda_split(4): pygen.ops.sample_categorical(logits, seed=0)",
        "pygen.ops.sample_categorical: logits must not contain NaN or +inf (row 2)",
    ),
    (
        "with _cuda_split(4): pygen.ops.sample_categorical(torch.zeros(3, 5000, device='cuda'), seed=0,"
        " min_p=torch.tensor([0.1, 0.1, 2.0], device='cuda'))",
        "pygen.ops.sample_categorical: min_p must be in [0, 1] (row 2)",
    ),
    (
        "logits = torch.full((2, 5000), -math.inf, device='cuda')\n"
        "with _cuda_split(4): pygen.ops.sample_categorical(logits, seed=0)",
        "pygen.ops.sample_categorical: logits are all -inf: no category can be drawn (row 0)",
    ),
    (
        "logits = torch.zeros(2, 3, 5, device='cuda'); logits[1, 2, 0] = math.inf\n"
        "pygen.ops.unmask_ancestral(logits, torch.full((2, 3), 4, device='cuda'), 4, 0.2, 0.5, seed=0)",
        "pygen.ops.unmask_ancestral: logits must not contain NaN or +inf (row 1, position 2)",
    ),
    (
        "x = torch.full((2, 3), 4, device='cuda')\n"
        "pygen.ops.unmask_ancestral(torch.zeros(2, 3, 5, device='cuda'), x, 4, 0.6, 0.5, seed=0)",
        "pygen.ops.unmask_ancestral: alpha_t and alpha_s must be in [0, 1] with alpha_s >= alpha_t (row 0,",
    ),
    (
        "x = torch.full((2, 3), 4, device='cuda')\n"
        "pygen.ops.unmask_by_confidence(torch.zeros(2, 3, 5, device='cuda'), x, 4, 4, seed=0)",
        "pygen.ops.unmask_by_confidence: k must be in [0, length]",
    ),
    (
        "x = torch.full((2, 3), 4, device='cuda'); x[1, 2] = 9\n"
        "pygen.ops.unmask_first_hitting(torch.zeros(2, 3, 5, device='cuda'), x, 4, seed=0)",
        "pygen.ops.unmask_first_hitting: x must hold token ids in [0, vocab) (row 1, position 2)",
    ),
]


@needs_cuda
@pytest.mark.parametrize(("call", "message"), BAD_CALLS)
def test_default_path_asserts_on_the_device(call, message):
    code = (
        "import math, torch, pygen\nfrom pygen.ops.sampling import _cuda_split\n"
        f"pygen.set_debug_checks(False)\n{call}\ntorch.cuda.synchronize()\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode != 0
    printed = out.stdout + out.stderr  # device printf goes to stdout, the assertion to stderr
    assert message in printed, printed
    assert "device-side assert" in out.stderr, out.stderr
