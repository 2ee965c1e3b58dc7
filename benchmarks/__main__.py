"""Run the benchmarks and print a Markdown table of the results.

python -m benchmarks            # everything, full size, three runs each
python -m benchmarks --smoke    # tiny sizes, no thresholds: checks they still run
python -m benchmarks startup wait
"""

from __future__ import annotations

import argparse
import importlib
import platform
import sys

from benchmarks.common import Result

NAMES = (
    "startup",
    "wait",
    "downloads",
    "video",
    "references",
    "batch",
    "upload",
    "history",
    "gallery",
)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("names", nargs="*", choices=[*NAMES, []], help="which (default: all)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, a few rounds")
    parser.add_argument(
        "--runs", type=int, help="runs of each, for the spread (default 3; 1 with --smoke)"
    )
    args = parser.parse_args()
    runs = max(1, args.runs or (1 if args.smoke else 3))
    _compile_bytecode()
    print(f"Python {platform.python_version()} on {platform.platform()}, {_cpus()} CPUs\n")
    print("| benchmark | measured (s) | baseline (s) | ratio | target | met | notes |")
    print("|---|---|---|---|---|---|---|")
    for name in args.names or NAMES:
        module = importlib.import_module(f"benchmarks.bench_{name}")
        rounds = [module.run(smoke=args.smoke) for _ in range(runs)]
        for results in zip(*rounds, strict=True):
            print(Result.combine(results).row(), flush=True)
    return 0


def _compile_bytecode() -> None:
    """Write the package's .pyc files, as `pip install` does: an editable install under
    PYTHONDONTWRITEBYTECODE=1 would otherwise compile every module on every run."""
    import compileall
    from pathlib import Path

    import apimart_cli

    compileall.compile_dir(Path(apimart_cli.__file__).parent, quiet=1)


def _cpus() -> int:
    import os

    return os.cpu_count() or 1


if __name__ == "__main__":
    sys.exit(main())
