"""Shared fixtures: devices (cuda only when present, skipped cleanly otherwise) and seeds."""

import pytest
import torch

from tests.helpers import DEVICES


def pytest_generate_tests(metafunc):
    if "device" in metafunc.fixturenames:
        params = [
            "cpu",
            pytest.param(
                "cuda",
                marks=pytest.mark.skipif(
                    "cuda" not in DEVICES, reason="no CUDA device, or pygen built without CUDA"
                ),
            ),
        ]
        metafunc.parametrize("device", params)


def pytest_collection_modifyitems(items):
    """Marks ``cuda`` every test that runs on a GPU: the cuda half of the device
    parametrization, and the tests skipped without a GPU (their skip reason names CUDA);
    a CPU test with a GPU part inside carries the mark itself. The GPU machines run just
    these: ``pytest -m cuda`` (``make gpu-test``)."""
    for item in items:
        spec = getattr(item, "callspec", None)
        on_cuda = spec is not None and spec.params.get("device") == "cuda"
        needs_cuda = any("CUDA" in str(m.kwargs.get("reason", "")) for m in item.iter_markers("skipif"))
        if on_cuda or needs_cuda:
            item.add_marker(pytest.mark.cuda)


@pytest.fixture(params=[0, 1, 0xDEADBEEF, (1 << 63) + 12345, (1 << 64) - 1], ids=lambda s: f"seed{s:x}")
def seed(request) -> int:
    """Seeds covering zero, small, 32-bit and both halves of the 64-bit key."""
    return request.param


@pytest.fixture
def torch_seed():
    """Fixed torch global seed for tests that draw random shapes or inputs."""
    torch.manual_seed(20261121)
