"""The Sparse Transformer LM: causality, training lowers held-out bits per byte,
checkpoints round-trip, generation is seeded."""

import pytest
import torch

from pygen.data import python_text
from pygen.models.sparse_transformer import SparseTransformerConfig, SparseTransformerLM, fit
from pygen.train import TrainConfig

pytest.importorskip(
    "safetensors",
    reason="checkpoints need safetensors: installed by make test, absent on registry-less GPU machines",
)
pytest.importorskip(
    "tqdm", reason="the trainer needs tqdm: installed by make test, absent on registry-less GPU machines"
)

TINY = SparseTransformerConfig(context=256, dim=64, depth=2, heads=4, stride=16, block_size=16)


@pytest.mark.parametrize("pattern", ["strided", "fixed", "dense"])
def test_causal(torch_seed, pattern):
    config = SparseTransformerConfig(**{**TINY.__dict__, "pattern": pattern, "c": 16})
    model = SparseTransformerLM(config).eval()
    x = torch.randint(0, 256, (2, 100))
    y = x.clone()
    y[:, 60:] = torch.randint(0, 256, (2, 40))
    torch.testing.assert_close(model(x)[:, :60], model(y)[:, :60])
    assert not torch.allclose(model(x)[:, 60:], model(y)[:, 60:])


def test_training_learns_and_checkpoints_round_trip(tmp_path):
    held_out = python_text("val")
    untrained = SparseTransformerLM(TINY).bits_per_byte(held_out, 16)
    model, log = fit(
        TINY, TrainConfig(steps=40, lr=3e-3, warmup=5, progress=False), eval_windows=16, out=tmp_path
    )
    assert log[-1]["step"] == 40 and log[-1]["eval"] < untrained - 2.0
    loaded = SparseTransformerLM.load(tmp_path)
    assert loaded.bits_per_byte(held_out, 16) == pytest.approx(log[-1]["eval"], rel=1e-6)
    a = model.generate(b"import ", 20, seed=3)
    assert a == loaded.generate(b"import ", 20, seed=3) and len(a) == 20
    assert a != model.generate(b"import ", 20, seed=4)


def test_bad_config():
    with pytest.raises(ValueError, match="multiple of stride"):
        SparseTransformerLM(SparseTransformerConfig(context=100, stride=16, block_size=16))
    with pytest.raises(ValueError, match="longer than the context"):
        SparseTransformerLM(TINY)(torch.zeros(1, 257, dtype=torch.long))


def test_trainer_stops_after_max_seconds():
    config = TrainConfig(steps=10**6, max_seconds=1.0, progress=False)
    _, log = fit(TINY, config, eval_windows=2)
    assert 0 < log[-1]["step"] < 10**6
