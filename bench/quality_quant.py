"""Quality of quantized models: each model family is trained briefly (its ``fit``, fixed
seeds), then its linear layers are quantized and the model evaluated again:

- fp32: the trained model;
- int4 RTN / int4 GPTQ: group 64, symmetric, float16 scales; GPTQ calibrated on training
  batches through ``model.loss`` (sequential, damp 0.01);
- mxfp4: OCP MX E2M1 with an E8M0 scale per 32;
- ternary PTQ: round-to-nearest ternary (BitNet's absmean, per channel), weight only;
- ternary QAT: BitLinear (W1.58A8) fine-tuned from the fp32 model for a few hundred
  steps, then packed (the W1.58A8 kernel gives the same outputs as the fake-quantized
  training forward).

Every ``nn.Linear`` whose ``in_features`` fits the format is quantized, the output heads
included, and every ``nn.Conv2d`` as the linear layer over its patches it is
(:class:`pygen.nn.LinearConv2d`, ``in_features = C_in * kh * kw``); the rest stay float32
(the DiT's 4-pixel patch embedding, TarFlow's 4-value patch embedding, the first 3x3
convolution of Glow's conditioners, whose 2-4 input channels give 18-36 features).
Embeddings, position tables, norms and a flow's own layers (ActNorm, the invertible 1x1
convolution, whose log-det must stay exact) are not linear layers and stay float32.
Quality numbers:

- SparseTransformerLM: held-out bits per byte (CPython docs and sources);
- MaskedDiffusionLM: held-out NELBO in bits per byte;
- DiffusionModel (DiT, EDM, 8x8 digits): the held-out denoising loss (EDM weighting, a
  fixed noise draw) and the sliced Wasserstein distance between 512 samples (DPM-Solver++
  2M, 10 steps, a fixed seed) and 512 digits;
- TarFlow, Glow (8x8 digits as 17 gray levels): held-out bits per dimension (one fixed
  draw of the dequantization noise per image). A quantized flow is still a flow (its
  conditioners change, its invertibility and exact log-det do not), so its bits/dim is
  still an upper bound on the discrete negative log-likelihood.

Memory is the bytes of the linear (and convolution) layers' weights (packed: codes,
scales, zero points) and of all parameters and buffers of the model.

    python bench/quality_quant.py [--quick] [--threads N] [--families tarflow glow]

writes bench/results/quant-quality.json (``--families``: only those families' entries
replaced) and prints the markdown table of the README.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from types import ModuleType

import torch

import pygen
from pygen.data import digits, python_text, random_windows
from pygen.models import diffusion, glow, masked_diffusion, sparse_transformer, tarflow
from pygen.solvers.analytic import sliced_wasserstein
from pygen.train import TrainConfig, train

RESULTS = Path(__file__).resolve().parent / "results"
INT4 = dict(group_size=64)
CONVS = dict(convs=True)  # Glow's conditioners are convolutions; the other families have none
FLOWS = ("tarflow", "glow")
VARIANTS = ("fp32", "int4 RTN", "int4 GPTQ", "mxfp4", "ternary PTQ", "ternary QAT (BitLinear)")


def model_bytes(model: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])


@dataclass
class Family:
    """A model family's training, batches and evaluation for this benchmark."""

    name: str
    module: ModuleType  # with fit()
    config: object
    batch_size: int
    metric: str  # the headline quality number (lower is better)
    steps: int
    qat_steps: int
    eval_kwargs: dict

    @cached_property
    def data(self) -> dict[str, torch.Tensor]:
        if self.name == "diffusion":
            return {split: diffusion.load_data(self.config.data, split) for split in ("train", "val")}
        if self.name in FLOWS:
            return {split: digits(split) for split in ("train", "val")}
        return {split: python_text(split) for split in ("train", "val")}

    def batches(self, generator: torch.Generator) -> torch.Tensor:
        data = self.data["train"]
        if self.name == "diffusion" or self.name in FLOWS:
            return data[torch.randint(len(data), (self.batch_size,), generator=generator)]
        length = self.config.context + (1 if self.name == "sparse-transformer" else 0)
        return random_windows(data, self.batch_size, length, generator)

    def evaluate(self, model) -> dict[str, float]:
        model.eval()
        with torch.no_grad():
            if self.name == "sparse-transformer":
                return {"bits/byte": model.bits_per_byte(self.data["val"], **self.eval_kwargs)}
            if self.name == "masked-diffusion":
                return {"NELBO bits/byte": model.bits_per_char(self.data["val"], **self.eval_kwargs)}
            if self.name in FLOWS:
                return {"bits/dim": model.bits_per_dim(self.data["val"])}
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)  # the same noise for every variant
                loss = model.loss(self.data["val"]).item()
            samples = model.sample(self.eval_kwargs["samples"], steps=10, seed=0)
            train_data = self.data["train"]
            reference = train_data[
                torch.randperm(len(train_data), generator=torch.Generator().manual_seed(0))
            ]
            return {"denoising loss": loss, "SWD": sliced_wasserstein(samples, reference)}


def families(quick: bool, names: list[str] | None = None) -> list[Family]:
    def steps(n: int) -> int:
        return 10 if quick else n

    lm = dict(dim=128, depth=2, heads=4)
    all_families = [
        Family(
            "sparse-transformer",
            sparse_transformer,
            sparse_transformer.SparseTransformerConfig(context=128, stride=8, block_size=16, **lm),
            16,
            "bits/byte",
            steps(300),
            steps(100),
            dict(max_windows=8 if quick else 32),
        ),
        Family(
            "masked-diffusion",
            masked_diffusion,
            masked_diffusion.MaskedDiffusionConfig(context=128, **lm),
            16,
            "NELBO bits/byte",
            steps(300),
            steps(100),
            dict(max_windows=4 if quick else 16, times=4),
        ),
        Family(
            "diffusion",
            diffusion,
            diffusion.DiffusionConfig(data="digits", objective="edm", **lm),
            128,
            "SWD",
            steps(400),
            steps(200),
            dict(samples=64 if quick else 512),
        ),
        # The flows' configs are the README's (uniform dequantization), trained for about
        # the steps of the families above; QAT as long as the DiT's (100 steps left
        # TarFlow 0.07 and Glow 0.06 bits/dim above fp32, 200 steps 0.00 and 0.03).
        Family(
            "tarflow",
            tarflow,
            tarflow.TarFlowConfig(patch=2, blocks=4, layers=2, dim=64, heads=4),
            64,
            "bits/dim",
            steps(300),
            steps(200),
            {},
        ),
        Family(
            "glow",
            glow,
            glow.GlowConfig(scales=2, depth=4, hidden=64, coupling="affine"),
            64,
            "bits/dim",
            steps(400),
            steps(200),
            {},
        ),
    ]
    return [f for f in all_families if names is None or f.name in names]


def quantized(family: Family, model, variant: str, log: list[str]):
    """A quantized copy of the trained ``model``."""
    m = copy.deepcopy(model)
    if variant == "fp32":
        return m
    if variant == "int4 RTN":
        return pygen.quantize_model(m, "int4", **INT4, **CONVS)
    if variant == "int4 GPTQ":
        g = torch.Generator().manual_seed(1)
        calibration = [family.batches(g) for _ in range(4)]
        return pygen.quantize_model(
            m, "int4", method="gptq", calibration=calibration, forward=lambda m, b: m.loss(b), **INT4, **CONVS
        )
    if variant == "mxfp4":
        return pygen.quantize_model(m, "mxfp4", **CONVS)
    if variant == "ternary PTQ":
        return pygen.quantize_model(m, "ternary", **CONVS)
    pygen.quant.to_bitlinear(m, per_channel=True, **CONVS)
    config = TrainConfig(steps=family.qat_steps, lr=1e-3, warmup=10, seed=1, progress=False)
    train(m, family.batches, config)
    log.append(f"{family.name}: BitLinear fine-tuned {family.qat_steps} steps")
    return pygen.quant.pack_bitlinear(m)


def run(quick: bool = False, names: list[str] | None = None) -> dict:
    report = {
        "date": time.strftime("%Y-%m-%d"),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "quick": quick,
        "int4": INT4,
        "families": {},
        "log": [],
    }
    for family in families(quick, names):
        start = time.monotonic()
        model, _ = family.module.fit(
            family.config,
            TrainConfig(steps=family.steps, lr=2e-3, warmup=20, seed=0, progress=False),
            batch_size=family.batch_size,
        )
        rows = []
        for variant in VARIANTS:
            m = quantized(family, model, variant, report["log"])
            q = getattr(m, "quantization", None) or {}
            rows.append(
                {
                    "variant": variant,
                    **family.evaluate(m),
                    "linear_weight_bytes": pygen.quant.weight_nbytes(m),
                    "model_bytes": model_bytes(m),
                    "float_layers": q.get("kept", []),
                }
            )
        report["families"][family.name] = {
            "config": vars(family.config),
            "train_steps": family.steps,
            "qat_steps": family.qat_steps,
            "metric": family.metric,
            "rows": rows,
            "seconds": round(time.monotonic() - start, 1),
            "date": report["date"],  # per family: a --families run merges into older results
            "threads": report["threads"],
        }
    return report


def table(report: dict) -> str:
    lines = []
    for name, fam in report["families"].items():
        metrics = [
            k
            for k in fam["rows"][0]
            if k not in ("variant", "linear_weight_bytes", "model_bytes", "float_layers")
        ]
        lines += [
            f"**{name}** ({fam['train_steps']} training steps; QAT: {fam['qat_steps']} more with BitLinear)",
            "",
            "| variant | " + " | ".join(metrics) + " | linear weights | whole model |",
            "|---|" + "---:|" * (len(metrics) + 2),
        ]
        base = fam["rows"][0]
        for r in fam["rows"]:
            vals = " | ".join(f"{r[m]:.4f}" for m in metrics)
            ratio = base["linear_weight_bytes"] / r["linear_weight_bytes"]
            lw = f"{r['linear_weight_bytes'] / 1024:.0f} KiB ({ratio:.1f}x)"
            lines.append(f"| {r['variant']} | {vals} | {lw} | {r['model_bytes'] / 1024:.0f} KiB |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few steps, for a smoke test")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (1 is best on a shared machine)")
    names = [f.name for f in families(quick=True)]
    parser.add_argument("--families", nargs="+", choices=names, help="run only these (default: all)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    report = run(quick=args.quick, names=args.families)
    if not args.quick:
        RESULTS.mkdir(exist_ok=True)
        path = RESULTS / "quant-quality.json"
        if args.families and path.exists():  # the other families' entries stay
            previous = json.loads(path.read_text())
            report["families"] = {**previous["families"], **report["families"]}
            rerun = tuple(f"{name}:" for name in args.families)
            report["log"] = [line for line in previous["log"] if not line.startswith(rerun)] + report["log"]
        path.write_text(json.dumps(report, indent=2) + "\n")
    print(table(report))


if __name__ == "__main__":
    main()
