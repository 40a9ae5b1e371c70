"""Command line: ``python -m pygen {info,demo,bench}``."""

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pygen", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="print the build report (pygen.info())")
    info.add_argument("--json", action="store_true", help="as JSON")
    sub.add_parser("demo", help="run the demo of every family built in")
    bench = sub.add_parser("bench", help="run the benchmarks in bench/ against their baselines")
    bench.add_argument("family", nargs="?", help="one family (e.g. random); default: all")
    bench.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    bench.add_argument("--quick", action="store_true", help="fewer repeats and smaller shapes")
    bench.add_argument("--threads", type=int, help="torch.set_num_threads for the run (CPU)")
    bench.add_argument("--plot", metavar="RESULT_JSON", help="only draw the plot of a saved result")
    bench.add_argument("--no-save", action="store_true", help="do not write bench/results/<device>.json")
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
    elif args.command == "demo":
        from pygen.demo import run

        run()
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


if __name__ == "__main__":
    sys.exit(main())
