"""Exact categorical sampling (pygen.ops.sample_categorical) against what users write:
softmax + torch.multinomial, Gumbel-max with float64 noise (as LLaDA does) or float32
noise (fast, but it truncates the tail), and top-k / sort-based top-p (as in HF's
logits warpers) followed by torch.multinomial. The masked-diffusion steps against the
eager steps of MDLM and LLaDA, with float64 Gumbel noise (Zheng et al.'s fix). Every
row also reports its time over the bandwidth floor: the logits read once at the speed of a
large device copy (on an H100 the goal is within 3x of it at B = 64, V = 128k). On a GPU,
rows of up to 64 long rows also compare against pygen's own kernel run with one thread
block per row, which the split of each row over several blocks replaces there."""

import torch

import pygen
from pygen.bench import Case
from pygen.ops.sampling import _cuda_split


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


def mdlm_step(logits, x, mask_id, move_t, move_s):
    """MDLM's _ddpm_update (subs parameterization) in float64: the unmask coin is folded
    into the categorical as the mask token's mass move_s, drawn by Gumbel-max."""
    logits = logits.double()
    logits[:, :, mask_id] = -torch.inf
    log_p_x0 = logits - torch.logsumexp(logits, dim=-1, keepdim=True)
    q_xs = log_p_x0.exp() * (move_t - move_s)
    q_xs[:, :, mask_id] = move_s
    gumbel_norm = 1e-10 - (torch.rand_like(q_xs) + 1e-10).log()
    _x = (q_xs / gumbel_norm).argmax(dim=-1)
    copy_flag = (x != mask_id).to(x.dtype)
    return copy_flag * x + (1 - copy_flag) * _x


def llada_step(logits, x, mask_id, k, temperature=1.0):
    """LLaDA's generate() step with low-confidence remasking: float64 Gumbel noise,
    softmax, the drawn token's probability, per-row topk over positions."""
    logits64 = logits.to(torch.float64)
    noise = torch.rand_like(logits64)
    x0 = torch.argmax(logits64.exp() / (-torch.log(noise)) ** temperature, dim=-1)
    p = torch.softmax(logits64, dim=-1)
    x0_p = torch.gather(p, dim=-1, index=x0.unsqueeze(-1)).squeeze(-1)
    mask_index = x == mask_id
    x0 = torch.where(mask_index, x0, x)
    confidence = torch.where(mask_index, x0_p, -torch.inf)
    transfer_index = torch.zeros_like(x0, dtype=torch.bool)
    for j in range(confidence.shape[0]):
        _, select_index = torch.topk(confidence[j], k=k)
        transfer_index[j, select_index] = True
    x = x.clone()
    x[transfer_index] = x0[transfer_index]
    return x


def _bytes(logits):
    """The floor's bytes: every logit read once (all positions are masked)."""
    return logits.numel() * logits.element_size()


def masked_diffusion_cases(device: str, quick: bool) -> list[Case]:
    """One step at B x L x V = 8 x 1024 x 32k, every position masked (the first step of
    128): MDLM's ancestral update and LLaDA's remasking (8 positions a row)."""
    batch, length, vocab = (2, 128, 32768) if quick else (8, 1024, 32768)
    mask_id = vocab - 1
    logits = torch.randn(batch, length, vocab, device=device) * 3
    x = torch.full((batch, length), mask_id, device=device)
    params = {"batch": batch, "length": length, "vocab": vocab, "device": device}
    alpha_s, k = 1 / 128, length // 128
    return [
        Case(
            name=f"mdlm step {batch}x{length}x{vocab // 1024}k",
            fn=lambda: pygen.ops.unmask_ancestral(logits, x, mask_id, 0.0, alpha_s, seed=1),
            baseline="mdlm eager f64",
            baseline_fn=lambda: mdlm_step(logits, x, mask_id, 1.0, 1.0 - alpha_s),
            params={**params, "alpha_t": 0.0, "alpha_s": alpha_s},
            bytes=_bytes(logits),
        ),
        Case(
            name=f"remask step {batch}x{length}x{vocab // 1024}k",
            fn=lambda: pygen.ops.unmask_by_confidence(logits, x, mask_id, k, seed=1),
            baseline="llada eager f64",
            baseline_fn=lambda: llada_step(logits, x, mask_id, k),
            params={**params, "k": k},
            bytes=_bytes(logits),
        ),
    ]


def one_block_per_row(logits, **params):
    """pygen's CUDA kernel without the split of few long rows over several blocks."""
    with _cuda_split(1):
        return pygen.ops.sample_categorical(logits, **params)


def cases(device: str, quick: bool = False) -> list[Case]:
    shapes = (
        [(1, 32768), (64, 32768)]
        if quick
        else [(1, 32768), (1, 131072), (1, 262144), (4, 131072), (64, 32768), (64, 131072), (256, 32768)]
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
                    bytes=_bytes(logits),
                )
            )
        if device.startswith("cuda") and batch <= 64:  # where the kernels split rows
            out.append(
                Case(
                    name=f"sample B={batch} V={vocab // 1024}k",
                    fn=lambda logits=logits: pygen.ops.sample_categorical(logits, seed=1, min_p=0.01),
                    baseline="one block per row",
                    baseline_fn=lambda logits=logits: one_block_per_row(logits, seed=1, min_p=0.01),
                    params={"batch": batch, "vocab": vocab, "device": device, "min_p": 0.01},
                    bytes=_bytes(logits),
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
                    bytes=_bytes(logits),
                )
            )
    return out + masked_diffusion_cases(device, quick)
