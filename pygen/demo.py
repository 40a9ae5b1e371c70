"""``python -m pygen demo``: the build report, then each family's part.

Families add their part to PARTS: the foundation's reproducible Philox random numbers
on every available device, then a Sparse Transformer LM, a diffusion model on 8x8
digits, a masked-diffusion LM and two normalizing flows on the digits (Glow, TarFlow),
each trained for ``seconds`` (a minute by default).
Files go to ``out``.
"""

import time
from dataclasses import dataclass
from pathlib import Path

import torch

import pygen


@dataclass
class DemoOptions:
    seconds: float = 60.0  # training time of each model family
    out: Path = Path("pygen-demo")  # where parts write files (sample grids)


def build_report(options: DemoOptions) -> None:
    print("== pygen build ==")
    for key, value in pygen.info().items():
        print(f"  {key}: {value}")


def random_numbers(options: DemoOptions) -> None:
    print("\n== reproducible random numbers (Philox4x32-10) ==")
    devices = ["cpu"] + (["cuda"] if pygen.info()["cuda_available"] else [])
    first = {}
    for device in devices:
        u = pygen.ops.rand((2, 4), seed=2026, device=device)
        z = pygen.ops.randn((2, 4), seed=2026, device=device)
        again = pygen.ops.randn((2, 4), seed=2026, device=device)
        print(f"  {device}: rand(seed=2026)  = {u.flatten().tolist()[:4]} ...")
        print(f"  {device}: randn(seed=2026) = {z.flatten().tolist()[:4]} ...")
        print(f"  {device}: same seed again is bit-identical: {torch.equal(z, again)}")
        first[device] = z.cpu()
    if "cuda" in first:
        print(f"  cpu and cuda bit-identical: {torch.equal(first['cpu'], first['cuda'])}")
    n = 1 << 22
    for name, ours, theirs in [("rand", pygen.ops.rand, torch.rand), ("randn", pygen.ops.randn, torch.randn)]:
        t_ours = _median_time(lambda ours=ours: ours((n,), seed=1))
        t_theirs = _median_time(lambda theirs=theirs: theirs(n))
        print(
            f"  cpu {name} of {n} floats: pygen {t_ours * 1e3:.2f} ms, torch {t_theirs * 1e3:.2f} ms "
            f"({t_theirs / t_ours:.2f}x)"
        )


def _median_time(fn, repeats: int = 7) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def sparse_transformer(options: DemoOptions) -> None:
    print(f"\n== Sparse Transformer LM (strided attention), trained for {options.seconds:g} s ==")
    from pygen.models.sparse_transformer import SparseTransformerConfig, fit
    from pygen.train import TrainConfig

    config = SparseTransformerConfig(context=256, dim=128, depth=2, heads=4, stride=16, block_size=16)
    train_config = TrainConfig(steps=100_000, lr=2e-3, warmup=20, max_seconds=options.seconds, progress=False)
    model, log = fit(config, train_config, batch_size=16, eval_windows=64)
    print(f"  {log[-1]['step']} steps; held-out bits per byte: {log[-1]['eval']:.3f} (uniform bytes: 8)")
    text = model.generate(b"def ", 160, temperature=0.8, seed=2026)
    print("  sample (temperature 0.8, seed 2026):")
    print("    " + ("def " + text.decode("utf-8", "replace")).replace("\n", "\n    "))


def diffusion(options: DemoOptions) -> None:
    print(f"\n== Diffusion model (DiT, EDM objective) on 8x8 digits, trained for {options.seconds:g} s ==")
    from pygen.models.diffusion import DiffusionConfig, fit, load_data, save_grid
    from pygen.solvers.analytic import sliced_wasserstein
    from pygen.train import TrainConfig

    config = DiffusionConfig(data="digits", objective="edm", dim=96, depth=3, heads=6)
    train_config = TrainConfig(steps=100_000, lr=2e-3, warmup=20, max_seconds=options.seconds, progress=False)
    model, log = fit(config, train_config, batch_size=128)
    held_out = load_data("digits", "val")
    samples = model.sample(len(held_out), solver="dpmpp_2m", steps=10, seed=2026)
    noise = torch.randn(held_out.shape, generator=torch.Generator().manual_seed(0)) * held_out.std()
    print(f"  {log[-1]['step']} steps; held-out EDM loss {log[-1]['eval']:.3f}")
    swd, swd_noise = sliced_wasserstein(samples, held_out), sliced_wasserstein(noise, held_out)
    print(
        f"  sliced Wasserstein to held-out digits (10 NFE, DPM-Solver++ 2M): {swd:.3f}, noise {swd_noise:.3f}"
    )
    print(f"  sample grid: {save_grid(samples[:64], options.out / 'diffusion-digits.png')}")


def _ancestral_gumbel_fp32(model, x, steps: int, generator: torch.Generator) -> torch.Tensor:
    """MDLM's original ancestral sampler (linear schedule): the categorical over the bytes
    and "stay masked" drawn by Gumbel-max with float32 uniforms, whose noise is truncated
    (Zheng et al., 2024)."""
    from pygen.models.masked_diffusion import MASK

    for i in range(steps):
        t, s = 1 - i / steps, 1 - (i + 1) / steps
        probs = torch.softmax(model(x)[..., :MASK].float(), -1) * (t - s) / t
        probs = torch.cat([probs, torch.full_like(probs[..., :1], s / t)], -1)
        gumbel = 1e-10 - (torch.rand(probs.shape, generator=generator) + 1e-10).log()
        draw = (probs / gumbel).argmax(-1)
        x = torch.where(x == MASK, draw, x)
    return x


def _unigram_entropy(x: torch.Tensor) -> float:
    """Mean over sequences of the entropy (nats) of each sequence's byte histogram, the
    diversity measure of Zheng et al."""
    counts = torch.stack([torch.bincount(row, minlength=257).double() for row in x])
    p = counts / counts.sum(1, keepdim=True)
    return float(-(p * p.clamp(min=1e-300).log()).sum(1).mean())


def masked_diffusion(options: DemoOptions) -> None:
    print(f"\n== Masked-diffusion LM (MDLM objective, bidirectional), trained for {options.seconds:g} s ==")
    from pygen.models.masked_diffusion import MASK, MaskedDiffusionConfig, fit
    from pygen.ops.masked_diffusion import sample_ancestral
    from pygen.train import TrainConfig

    config = MaskedDiffusionConfig(context=128, dim=128, depth=2, heads=4)
    train_config = TrainConfig(steps=100_000, lr=2e-3, warmup=20, max_seconds=options.seconds, progress=False)
    model, log = fit(config, train_config, batch_size=16, eval_windows=32)
    print(
        f"  {log[-1]['step']} steps; held-out NELBO: {log[-1]['eval']:.3f} bits per byte (uniform bytes: 8)"
    )
    model.eval()
    steps, n = 512, 16
    start = torch.full((n, config.context), MASK)
    with torch.no_grad():
        exact = sample_ancestral(lambda x: model(x).float(), start, MASK, steps, seed=2026)
        truncated = _ancestral_gumbel_fp32(model, start, steps, torch.Generator().manual_seed(2026))
    print(
        f"  sample entropy, {steps} ancestral steps: exact (pygen) {_unigram_entropy(exact):.3f} nats, "
        f"float32 Gumbel {_unigram_entropy(truncated):.3f} nats"
    )
    text = bytes(exact[0].tolist()).decode("utf-8", "replace")
    print("  sample (exact):\n    " + text.replace("\n", "\n    "))


def glow(options: DemoOptions) -> None:
    print(f"\n== Glow (multiscale affine-coupling flow) on 8x8 digits, trained for {options.seconds:g} s ==")
    from pygen.models.diffusion import save_grid
    from pygen.models.flows import to_images
    from pygen.models.glow import GlowConfig, fit
    from pygen.train import TrainConfig

    config = GlowConfig(scales=2, depth=4, hidden=64)
    train_config = TrainConfig(steps=100_000, lr=2e-3, warmup=20, max_seconds=options.seconds, progress=False)
    model, log = fit(config, train_config, batch_size=64)
    print(f"  {log[-1]['step']} steps; held-out bits/dim: {log[-1]['eval']:.3f} (uniform levels: 4.087)")
    samples = to_images(model.sample(64, seed=2026, temperature=0.8))
    print(f"  sample grid (temperature 0.8): {save_grid(samples, options.out / 'glow-digits.png')}")


def tarflow(options: DemoOptions) -> None:
    print(
        f"\n== TarFlow (transformer autoregressive flow) on 8x8 digits, trained for {options.seconds:g} s =="
    )
    from pygen.models.diffusion import save_grid
    from pygen.models.flows import to_images
    from pygen.models.tarflow import TarFlowConfig, fit
    from pygen.train import TrainConfig

    config = TarFlowConfig(patch=2, blocks=4, layers=2, dim=64, heads=4)
    train_config = TrainConfig(steps=100_000, lr=2e-3, warmup=20, max_seconds=options.seconds, progress=False)
    model, log = fit(config, train_config, batch_size=64)
    print(f"  {log[-1]['step']} steps; held-out bits/dim: {log[-1]['eval']:.3f} (uniform levels: 4.087)")
    z = torch.randn((32, *model.flow.event_shape), generator=torch.Generator().manual_seed(2026))
    start = time.perf_counter()
    exact, _ = model.decode(z, method="sequential")
    t_seq = time.perf_counter() - start
    tokens = model.flow.event_shape[0]
    print(f"  sequential inverse (KV cache): {tokens - 1} steps per block, {t_seq * 1e3:.0f} ms")
    for groups in (1, 4):
        start = time.perf_counter()
        approx, stats = model.decode(z, method="gs_jacobi", groups=groups, tol=1e-4)
        elapsed = time.perf_counter() - start
        print(
            f"  GS-Jacobi, {groups} group(s), tol 1e-4: sweeps per block {[s.iterations for s in stats]}, "
            f"{elapsed * 1e3:.0f} ms, pixels unlike the sequential inverse's: "
            f"{int((approx != exact).sum())} of {exact.numel()}"
        )
    samples = to_images(model._levels(exact))
    print(f"  sample grid: {save_grid(samples, options.out / 'tarflow-digits.png')}")


PARTS = [build_report, random_numbers, sparse_transformer, diffusion, masked_diffusion, glow, tarflow]


def run(options: DemoOptions | None = None) -> None:
    for part in PARTS:
        part(options or DemoOptions())
