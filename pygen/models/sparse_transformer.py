"""The Sparse Transformer language model (Child et al., 2019): a byte-level causal
transformer whose attention follows the strided or fixed sparse pattern, trained on
CPython's bundled documentation and sources."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from pygen.data import python_text, random_windows
from pygen.nn.attention import SparseTransformerBlock, sparse_transformer_layout
from pygen.ops.sampling import sample_categorical
from pygen.train import Checkpointable, TrainConfig, train


@dataclass
class SparseTransformerConfig:
    """Hyperparameters of :class:`SparseTransformerLM` (each a flag of ``python -m pygen train
    sparse-transformer``)."""

    context: int = 1024  # bytes per sequence; the strided pattern needs context % stride == 0
    dim: int = 256
    depth: int = 4
    heads: int = 4
    pattern: str = "strided"  # "strided", "fixed" or "dense"
    stride: int = 32
    c: int = 32  # summary positions per stride block (fixed pattern)
    block_size: int = 32
    dropout: float = 0.0
    recompute: bool = False
    vocab: int = 256


class SparseTransformerLM(Checkpointable, nn.Module):
    """Byte-level autoregressive LM: ``forward(tokens [B, L] int64) -> logits [B, L, 256]``
    with ``L <= context`` (shorter inputs are padded to ``context`` inside)."""

    family, config_class = "sparse-transformer", SparseTransformerConfig

    def __init__(self, config: SparseTransformerConfig):
        super().__init__()
        self.config = config
        layout = sparse_transformer_layout(config.pattern, config.stride, config.c, config.block_size)
        layout(config.context, config.context)  # fail now, not at the first batch
        self.embed = nn.Embedding(config.vocab, config.dim)
        self.pos = nn.Parameter(torch.randn(config.context, config.dim) * 0.02)
        self.blocks = nn.ModuleList(
            SparseTransformerBlock(
                config.dim,
                config.heads,
                depth=config.depth,
                layout=layout,
                dropout=config.dropout,
                recompute=config.recompute,
            )
            for _ in range(config.depth)
        )
        self.norm = nn.LayerNorm(config.dim)
        self.head = nn.Linear(config.dim, config.vocab, bias=False)
        nn.init.normal_(self.embed.weight, std=0.02)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        b, length = tokens.shape
        ctx = self.config.context
        if length > ctx:
            raise ValueError(f"sequence of {length} bytes is longer than the context ({ctx})")
        # The layouts are built for the whole context; causal attention makes the padding inert.
        x = F.pad(tokens, (0, ctx - length))
        x = self.embed(x) + self.pos
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x[:, :length]))

    def loss(self, tokens: torch.Tensor) -> torch.Tensor:
        """Mean next-byte cross-entropy in nats over ``tokens [B, L]`` (L <= context + 1)."""
        logits = self(tokens[:, :-1])
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1))

    @torch.no_grad()
    def bits_per_byte(self, data: torch.Tensor, max_windows: int | None = None, batch: int = 8) -> float:
        """Held-out bits per byte over consecutive windows of ``context + 1`` bytes of
        ``data`` (uint8, 1-D), each predicting its last ``context`` bytes."""
        n = self.config.context + 1
        windows = data[: (len(data) // n) * n].view(-1, n).long()
        if max_windows is not None:
            windows = windows[:max_windows]
        device = self.pos.device
        total = 0.0
        for i in range(0, len(windows), batch):
            total += self.loss(windows[i : i + batch].to(device)).item() * len(windows[i : i + batch])
        return total / len(windows) / math.log(2)

    @torch.no_grad()
    def generate(
        self,
        prompt: bytes,
        length: int,
        *,
        temperature: float = 1.0,
        top_k: int | None = None,
        seed: int = 0,
    ) -> bytes:
        """``length`` bytes continuing ``prompt``, drawn with pygen.ops.sample_categorical
        (exact, seeded: the same seed gives the same text)."""
        device = self.pos.device
        tokens = torch.tensor(list(prompt) or [10], dtype=torch.long, device=device)[None]
        out = []
        for step in range(length):
            window = tokens[:, -self.config.context :]
            logits = self(window)[:, -1].float()
            nxt = sample_categorical(logits, temperature=temperature, top_k=top_k, seed=seed, offset=step)
            tokens = torch.cat([tokens, nxt[:, None]], 1)
            out.append(int(nxt))
        return bytes(out)


def fit(
    config: SparseTransformerConfig,
    train_config: TrainConfig,
    *,
    batch_size: int = 16,
    device: str = "cpu",
    eval_windows: int = 64,
    out: str | Path | None = None,
) -> tuple[SparseTransformerLM, list[dict]]:
    """Trains a model on :func:`pygen.data.python_text`, evaluating held-out bits per
    byte on ``eval_windows`` windows; saves it to ``out`` (rank 0) when given."""
    torch.manual_seed(train_config.seed)
    model = SparseTransformerLM(config).to(device)
    data, held_out = python_text("train"), python_text("val")

    def batches(generator: torch.Generator) -> torch.Tensor:
        return random_windows(data, batch_size, config.context + 1, generator).to(device)

    log = train(model, batches, train_config, lambda m: m.bits_per_byte(held_out, eval_windows))
    if out is not None and int(os.environ.get("RANK", "0")) == 0:
        model.save(out)
    return model, log
