"""Embedded datasets, so demos and tests run offline."""

import pydoc_data.topics
import sysconfig
from pathlib import Path

import torch


def python_text(split: str = "train", held_out: float = 0.05) -> torch.Tensor:
    """CPython's bundled documentation (``pydoc_data.topics``) and standard-library
    sources (``Lib/*.py``), as one uint8 tensor of bytes (about 5 MB).

    ``split`` ``"train"`` is the first ``1 - held_out`` of it, ``"val"`` the rest; the
    order is fixed (sorted topics, then sorted file names), so splits are reproducible.
    """
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    topics = pydoc_data.topics.topics
    parts = [topics[name].encode() for name in sorted(topics)]
    lib = Path(sysconfig.get_paths()["stdlib"])
    parts += [path.read_bytes() for path in sorted(lib.glob("*.py"))]
    data = torch.frombuffer(bytearray(b"\n".join(parts)), dtype=torch.uint8)
    cut = int(len(data) * (1 - held_out))
    return data[:cut] if split == "train" else data[cut:]


def random_windows(data: torch.Tensor, batch: int, length: int, generator: torch.Generator) -> torch.Tensor:
    """``batch`` random windows of ``length`` from a 1-D tensor, int64 ``[batch, length]``."""
    start = torch.randint(0, len(data) - length, (batch,), generator=generator)
    return torch.stack([data[s : s + length] for s in start.tolist()]).long()


def digits(split: str = "train", held_out: float = 0.1) -> torch.Tensor:
    """scikit-learn's bundled 8x8 digits as their integer gray levels, int64
    ``[N, 1, 8, 8]`` in 0..16 (17 levels); the last ``held_out`` fraction is ``"val"``
    (the split of :func:`pygen.models.diffusion.load_data`)."""
    from sklearn.datasets import load_digits

    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    x = torch.from_numpy(load_digits().images).round().long().unsqueeze(1)
    cut = int(len(x) * (1 - held_out))
    return x[:cut] if split == "train" else x[cut:]
