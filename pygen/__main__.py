"""Command line: ``python -m pygen {info,demo,bench,train}``."""

import argparse
import dataclasses
import importlib
import json
import sys

# name -> (module with fit() and the config, config class, default batch size, help, metric)
TRAIN_FAMILIES = {
    "sparse-transformer": (
        "pygen.models.sparse_transformer",
        "SparseTransformerConfig",
        16,
        "byte-level Sparse Transformer LM on Python text",
        "held-out bits per byte",
    ),
    "diffusion": (
        "pygen.models.diffusion",
        "DiffusionConfig",
        128,
        "DiT diffusion / flow-matching model on 8x8 digits or 2-D toys (writes samples.png)",
        "held-out loss",
    ),
    "masked-diffusion": (
        "pygen.models.masked_diffusion",
        "MaskedDiffusionConfig",
        16,
        "byte-level masked-diffusion LM on Python text",
        "held-out NELBO in bits per byte",
    ),
    "glow": (
        "pygen.models.glow",
        "GlowConfig",
        64,
        "Glow / RealNVP multiscale flow on 8x8 digits (writes samples.png)",
        "held-out bits per dimension",
    ),
    "tarflow": (
        "pygen.models.tarflow",
        "TarFlowConfig",
        64,
        "TarFlow transformer autoregressive flow on 8x8 digits (writes samples.png)",
        "held-out bits per dimension",
    ),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pygen", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="print the build report (pygen.info())")
    info.add_argument("--json", action="store_true", help="as JSON")
    demo = sub.add_parser("demo", help="run the demo of every family built in")
    demo.add_argument("--seconds", type=float, default=60.0, help="training time of each model family")
    demo.add_argument("--out", default="pygen-demo", help="directory for the files the demo writes")
    bench = sub.add_parser("bench", help="run the benchmarks in bench/ against their baselines")
    bench.add_argument("family", nargs="?", help="one family (e.g. random); default: all")
    bench.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    bench.add_argument("--quick", action="store_true", help="fewer repeats and smaller shapes")
    bench.add_argument("--threads", type=int, help="torch.set_num_threads for the run (CPU)")
    bench.add_argument("--plot", metavar="RESULT_JSON", help="only draw the plot of a saved result")
    bench.add_argument("--no-save", action="store_true", help="do not write bench/results/<device>.json")
    train = sub.add_parser("train", help="train a model family (under torchrun for several processes)")
    families = train.add_subparsers(dest="family", required=True)
    from pygen.train import TrainConfig

    for name, (module, config_name, batch, text, _) in TRAIN_FAMILIES.items():
        family = families.add_parser(name, help=text)
        _add_fields(family, getattr(importlib.import_module(module), config_name))
        _add_fields(family, TrainConfig)
        family.add_argument("--batch-size", type=int, default=batch)
        family.add_argument("--device", default="cuda" if _cuda() else "cpu")
        family.add_argument("--out", default=f"checkpoints/{name}", help="checkpoint directory")
    args = parser.parse_args(argv)

    if args.command == "info":
        import pygen

        report = pygen.info()
        if args.json:
            print(json.dumps(report, indent=2))
        else:
            width = max(map(len, report))
            for key, value in report.items():
                print(f"{key:<{width}}  {value}")
    elif args.command == "train":
        module, config_name, _, _, metric = TRAIN_FAMILIES[args.family]
        module = importlib.import_module(module)
        config = _pick(args, getattr(module, config_name))
        _, log = module.fit(
            config, _pick(args, TrainConfig), batch_size=args.batch_size, device=args.device, out=args.out
        )
        if log:
            print(f"{metric}: {log[-1]['eval']:.4f} (checkpoint in {args.out})")
    elif args.command == "demo":
        from pathlib import Path

        from pygen.demo import DemoOptions, run

        run(DemoOptions(args.seconds, Path(args.out)))
    else:
        import torch

        from pygen.bench import plot_file, run

        if args.plot:
            print(f"wrote {plot_file(args.plot)}")
            return 0
        if args.threads:
            torch.set_num_threads(args.threads)
        run(args.family, device=args.device, quick=args.quick, save=not args.no_save)
    return 0


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _add_fields(parser: argparse.ArgumentParser, cls) -> None:
    """One --flag per field of a config dataclass, defaulting to the field's default."""
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        if isinstance(f.default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default)
        else:
            kind = {"int": int, "float": float, "str": str}.get(str(f.type).split(" ")[0], float)
            parser.add_argument(flag, type=kind, default=f.default)


def _pick(args: argparse.Namespace, cls):
    return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})


if __name__ == "__main__":
    sys.exit(main())
