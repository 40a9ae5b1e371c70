"""The masked-diffusion language model (MDLM, Sahoo et al. 2024; RADD, Ou et al. 2024):
a bidirectional byte-level transformer on pygen attention that predicts masked bytes,
time-agnostic as RADD shows it can be, trained with the continuous-time MDLM objective
on CPython's bundled documentation and sources, and sampled with pygen's exact fused
masked-diffusion steps (ancestral, first-hitting, confidence remasking).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from pygen.data import python_text, random_windows
from pygen.nn.attention import SparseTransformerBlock
from pygen.ops import masked_diffusion as md
from pygen.train import Checkpointable, TrainConfig, train

SAMPLERS = ("ancestral", "first_hitting", "confidence")
MASK = 256  # the mask token: one past the bytes


@dataclass
class MaskedDiffusionConfig:
    """Hyperparameters of :class:`MaskedDiffusionLM` (each a flag of ``python -m pygen train
    masked-diffusion``)."""

    context: int = 256  # bytes per sequence
    dim: int = 256
    depth: int = 4
    heads: int = 4
    dropout: float = 0.0
    t_min: float = 1e-3  # the smallest masking rate drawn in training


class MaskedDiffusionLM(Checkpointable, nn.Module):
    """``forward(x [B, L] int64 in 0..256, 256 = mask) -> logits [B, L, 257]`` over the
    256 bytes, with the mask token's logit -inf (it is never predicted)."""

    family, config_class = "masked-diffusion", MaskedDiffusionConfig

    def __init__(self, config: MaskedDiffusionConfig):
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(MASK + 1, config.dim)
        self.pos = nn.Parameter(torch.randn(config.context, config.dim) * 0.02)
        self.blocks = nn.ModuleList(
            SparseTransformerBlock(
                config.dim, config.heads, depth=config.depth, dropout=config.dropout, causal=False
            )
            for _ in range(config.depth)
        )
        self.norm = nn.LayerNorm(config.dim)
        self.head = nn.Linear(config.dim, MASK, bias=False)
        nn.init.normal_(self.embed.weight, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        length = x.shape[1]
        if length > self.config.context:
            raise ValueError(f"sequence of {length} bytes is longer than the context ({self.config.context})")
        h = self.embed(x) + self.pos[:length]
        for block in self.blocks:
            h = block(h)
        logits = self.head(self.norm(h))
        return F.pad(logits, (0, 1), value=-math.inf)

    def nelbo(
        self, tokens: torch.Tensor, t: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """The continuous-time MDLM bound in nats per byte for ``tokens [B, L]``, one
        masking time ``t [B]`` each: mask every byte with probability ``t`` (linear
        schedule, alpha = 1 - t), and weigh the masked bytes' cross-entropy by
        ``-alpha' / (1 - alpha) = 1 / t``. Its mean over t ~ U(0, 1) is the NELBO."""
        u = torch.rand(tokens.shape, generator=generator, device="cpu").to(tokens.device)
        masked = u < t[:, None]
        logits = self(torch.where(masked, MASK, tokens))[..., :MASK]
        ce = F.cross_entropy(logits.transpose(1, 2), tokens, reduction="none")
        return ((ce * masked).sum(1) / t).mean() / tokens.shape[1]

    def loss(self, tokens: torch.Tensor) -> torch.Tensor:
        """Training loss: the NELBO with stratified times (MDLM's low-discrepancy sampler)."""
        b = tokens.shape[0]
        t = (torch.rand(()) + torch.arange(b) / b) % 1
        t = (self.config.t_min + (1 - self.config.t_min) * t).to(tokens.device)
        return self.nelbo(tokens, t)

    @torch.no_grad()
    def bits_per_char(
        self, data: torch.Tensor, max_windows: int | None = None, times: int = 8, batch: int = 8
    ) -> float:
        """Held-out NELBO in bits per byte over consecutive ``context``-byte windows of
        ``data`` (uint8, 1-D), with ``times`` stratified masking times per window (a
        fixed seed, so it is comparable across calls)."""
        n = self.config.context
        windows = data[: (len(data) // n) * n].view(-1, n).long()[:max_windows]
        g, device, total = torch.Generator().manual_seed(0), self.pos.device, 0.0
        for i in range(0, len(windows), batch):
            w = windows[i : i + batch].to(device)
            for j in range(times):
                t = torch.full((len(w),), (j + torch.rand((), generator=g).item()) / times, device=device)
                total += self.nelbo(w, t.clamp(min=1e-4), generator=g).item() * len(w)
        return total / (len(windows) * times) / math.log(2)

    @torch.no_grad()
    def generate(
        self,
        n: int = 1,
        *,
        length: int | None = None,
        prompt: bytes = b"",
        sampler: str = "ancestral",
        steps: int = 128,
        temperature: float | None = None,
        seed: int = 0,
    ) -> list[bytes]:
        """``n`` sequences of ``length`` bytes (default the context) starting with
        ``prompt``, from all-masked: ``"ancestral"`` (MDLM, ``steps`` steps),
        ``"first_hitting"`` (one byte per network call) or ``"confidence"`` (LLaDA's
        low-confidence remasking, ``steps`` rounds). ``temperature`` defaults to 1, and
        to 0 (greedy, as LLaDA) for ``"confidence"``."""
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
        length = length or self.config.context
        if len(prompt) > length:
            raise ValueError("the prompt is longer than the sequence")
        if temperature is None:
            temperature = 0.0 if sampler == "confidence" else 1.0
        self.eval()
        x = torch.full((n, length), MASK, dtype=torch.long, device=self.pos.device)
        x[:, : len(prompt)] = torch.tensor(list(prompt), dtype=torch.long)
        model = md.CachedDenoiser(lambda x: self(x).float())
        if sampler == "ancestral":
            x = md.sample_ancestral(model, x, MASK, steps, temperature=temperature, seed=seed)
        elif sampler == "first_hitting":
            x = md.sample_first_hitting(model, x, MASK, temperature=temperature, seed=seed)
        else:
            x = md.sample_by_confidence(model, x, MASK, steps, temperature=temperature, seed=seed)
        return [bytes(row.tolist()) for row in x.cpu()]


def fit(
    config: MaskedDiffusionConfig,
    train_config: TrainConfig,
    *,
    batch_size: int = 16,
    device: str = "cpu",
    eval_windows: int = 32,
    out: str | Path | None = None,
) -> tuple[MaskedDiffusionLM, list[dict]]:
    """Trains on :func:`pygen.data.python_text`, evaluating the held-out NELBO in bits
    per byte on ``eval_windows`` windows; saves to ``out`` (rank 0) when given."""
    torch.manual_seed(train_config.seed)
    model = MaskedDiffusionLM(config).to(device)
    data, held_out = python_text("train"), python_text("val")

    def batches(generator: torch.Generator) -> torch.Tensor:
        return random_windows(data, batch_size, config.context, generator).to(device)

    log = train(model, batches, train_config, lambda m: m.bits_per_char(held_out, eval_windows))
    if out is not None and int(os.environ.get("RANK", "0")) == 0:
        model.save(out)
    return model, log
