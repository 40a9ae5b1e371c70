"""The trainer every model family shares: AdamW with warmup and cosine decay, gradient
clipping, progress bars, periodic held-out evaluation, safetensors checkpoints with a
JSON config, and DistributedDataParallel when launched by ``torchrun`` (gloo on CPU,
nccl on CUDA; each rank draws its own batches).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn


@dataclass
class TrainConfig:
    steps: int = 1000
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: int = 100
    grad_clip: float = 1.0
    seed: int = 0
    eval_every: int = 0  # 0: only at the end
    max_seconds: float | None = None  # stop early after this much wall time (one process only: demos)
    progress: bool = True


def save_checkpoint(model: nn.Module, config: dict, path: str | Path) -> None:
    """Writes ``path/model.safetensors`` (weights) and ``path/config.json``."""
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path / "model.safetensors"))
    (path / "config.json").write_text(json.dumps(config, indent=2) + "\n")


def load_checkpoint(path: str | Path) -> tuple[dict, dict]:
    """``(config, state_dict)`` from a directory written by :func:`save_checkpoint`."""
    from safetensors.torch import load_file

    path = Path(path)
    return json.loads((path / "config.json").read_text()), load_file(str(path / "model.safetensors"))


class Checkpointable:
    """``save``/``load`` for an ``nn.Module`` built from a config dataclass
    (``self.config``): the subclass names its ``family`` and ``config_class``."""

    family: str
    config_class: type

    def save(self, path: str | Path) -> None:
        """Writes ``path/model.safetensors`` (weights) and ``path/config.json`` (with the
        ``quantization`` record of a model from :func:`pygen.quantize_model`)."""
        config = {"family": self.family, **dataclasses.asdict(self.config)}
        if getattr(self, "quantization", None):
            config["quantization"] = self.quantization
        save_checkpoint(self, config, path)

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu"):
        """The model saved at ``path``, on ``device`` (quantized layers rebuilt)."""
        config, state = load_checkpoint(path)
        family = config.pop("family", cls.family)
        if family != cls.family:
            raise ValueError(f"{path} holds a {family!r} checkpoint, not {cls.family!r}")
        quantization = config.pop("quantization", None)
        model = cls(cls.config_class(**config))
        if quantization is not None:
            from pygen.quant.model import restore_quantized

            restore_quantized(model, quantization)
        model.load_state_dict(state)
        return model.to(device)


def _distributed() -> tuple[int, int]:
    """Joins the process group when launched by torchrun; returns (rank, world size)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


class _Loss(nn.Module):
    """``model.loss`` as a forward, so DistributedDataParallel sees (and syncs) it."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batch):
        return self.model.loss(batch)


def train(
    model: nn.Module,
    batches: Callable[[torch.Generator], object],
    config: TrainConfig,
    evaluate: Callable[[nn.Module], float] | None = None,
) -> list[dict]:
    """Trains ``model`` in place for ``config.steps`` steps, minimizing ``model.loss(batch)``.

    ``batches(generator)`` draws one batch with ``generator`` (seeded per rank);
    ``evaluate(model)`` returns a held-out metric, logged every ``eval_every`` steps and
    at the end (rank 0 only). Returns the log: one dict per evaluation.
    """
    from tqdm import tqdm

    rank, world = _distributed()
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed * 1000 + rank)
    trained = nn.parallel.DistributedDataParallel(_Loss(model)) if world > 1 else _Loss(model)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr,
    )

    def lr_at(step: int) -> float:
        if step < config.warmup:
            return (step + 1) / config.warmup
        t = (step - config.warmup) / max(1, config.steps - config.warmup)
        return 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    log: list[dict] = []
    bar = tqdm(range(config.steps), disable=not config.progress or rank != 0, desc="train", unit="step")
    start = time.monotonic()
    for step in bar:
        trained.train()
        loss = trained(batches(generator))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        opt.step()
        sched.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
        last = step == config.steps - 1
        elapsed = time.monotonic() - start
        out_of_time = world == 1 and config.max_seconds is not None and elapsed > config.max_seconds
        periodic = config.eval_every and (step + 1) % config.eval_every == 0
        if evaluate and rank == 0 and (last or out_of_time or periodic):
            model.eval()
            with torch.no_grad():
                log.append({"step": step + 1, "loss": loss.item(), "eval": evaluate(model)})
            bar.write(f"step {step + 1}: train loss {loss.item():.4f}, eval {log[-1]['eval']:.4f}")
        if out_of_time:
            break
    bar.close()
    return log
