"""Exact categorical sampling (pygen.ops.sample_categorical) against what users write:
softmax + torch.multinomial, and Gumbel-max with float64 noise (as LLaDA does) or
float32 noise (fast, but it truncates the tail)."""

import torch

import pygen
from pygen.bench import Case


def multinomial(logits):
    return torch.multinomial(torch.softmax(logits, -1), 1)


def gumbel(logits, dtype):
    logits = logits.to(dtype)
    noise = torch.rand_like(logits)
    return (logits - torch.log(-torch.log(noise))).argmax(-1)


def cases(device: str, quick: bool = False) -> list[Case]:
    shapes = (
        [(1, 32768), (64, 32768)]
        if quick
        else [(1, 32768), (1, 131072), (64, 32768), (64, 131072), (256, 32768)]
    )
    out = []
    for batch, vocab in shapes:
        logits = torch.randn(batch, vocab, device=device) * 3
        for name, baseline in [
            ("multinomial", multinomial),
            ("gumbel f64", lambda x: gumbel(x, torch.float64)),
            ("gumbel f32", lambda x: gumbel(x, torch.float32)),
        ]:
            out.append(
                Case(
                    name=f"sample B={batch} V={vocab // 1024}k",
                    fn=lambda logits=logits: pygen.ops.sample_categorical(logits, seed=1),
                    baseline=name,
                    baseline_fn=lambda logits=logits, baseline=baseline: baseline(logits),
                    params={"batch": batch, "vocab": vocab, "device": device},
                )
            )
    return out
