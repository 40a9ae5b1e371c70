"""Exact categorical sampling (pygen.ops.sample_categorical) against what users write:
softmax + torch.multinomial, Gumbel-max with float64 noise (as LLaDA does) or float32
noise (fast, but it truncates the tail), and top-k / sort-based top-p (as in HF's
logits warpers) followed by torch.multinomial."""

import torch

import pygen
from pygen.bench import Case


def multinomial(logits):
    return torch.multinomial(torch.softmax(logits, -1), 1)


def gumbel(logits, dtype):
    logits = logits.to(dtype)
    noise = torch.rand_like(logits)
    return (logits - torch.log(-torch.log(noise))).argmax(-1)


def top_k_multinomial(logits, k):
    values, index = torch.topk(logits, k)
    return index.gather(-1, torch.multinomial(torch.softmax(values, -1), 1))


def sort_top_p_multinomial(logits, p):
    sorted_logits, index = torch.sort(logits, descending=False)
    remove = torch.softmax(sorted_logits, -1).cumsum(-1) <= 1 - p
    remove[..., -1:] = False
    remove = remove.scatter(-1, index, remove)
    return torch.multinomial(torch.softmax(logits.masked_fill(remove, -torch.inf), -1), 1)


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
        for label, cut, baseline, baseline_fn in [
            ("top-k 50", {"top_k": 50}, "topk+multinomial", lambda x: top_k_multinomial(x, 50)),
            ("top-p 0.9", {"top_p": 0.9}, "sort top-p+multinom", lambda x: sort_top_p_multinomial(x, 0.9)),
        ]:
            out.append(
                Case(
                    name=f"{label} B={batch} V={vocab // 1024}k",
                    fn=lambda logits=logits, cut=cut: pygen.ops.sample_categorical(logits, seed=1, **cut),
                    baseline=baseline,
                    baseline_fn=lambda logits=logits, f=baseline_fn: f(logits),
                    params={"batch": batch, "vocab": vocab, "device": device, **cut},
                )
            )
    return out
