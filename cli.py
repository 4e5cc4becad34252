"""The ``restore`` command. Each subcommand is one ``_add_<name>_command`` function below.

Subcommands import their heavy dependencies lazily, so ``restore --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence


def _add_models_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list available models")
    p.set_defaults(func=_run_models)


def _run_models(args: argparse.Namespace) -> int:
    from restore.registry import list_models

    rows = [("name", "task", "scale", "params", "source")]
    for e in list_models():
        rows.append((e.name, e.task, f"x{e.scale}" if e.scale > 1 else "x1", _param_count(e), e.source))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    return 0


def _param_count(entry) -> str:
    from restore.registry import build_model

    try:
        n = sum(p.numel() for p in build_model(entry.architecture, entry.config).parameters())
    except Exception:  # noqa: BLE001 - listing must not fail on one broken family
        return "?"
    return "0" if n == 0 else f"{n / 1e6:.2f}M" if n >= 1e5 else f"{n / 1e3:.1f}K"


def _add_bench_command(sub: argparse._SubParsersAction) -> None:
    import importlib

    from restore.bench import BENCHMARKS

    p = sub.add_parser("bench", help="run a benchmark (results go to docs/BENCHMARKS.md)")
    bench_sub = p.add_subparsers(dest="benchmark", required=True, metavar="BENCHMARK")
    for name, module_name in BENCHMARKS.items():
        bp = bench_sub.add_parser(name, help=f"benchmark {name}")
        bp.add_argument("--json", metavar="PATH", help="also write the results as JSON")
        bp.set_defaults(func=_run_bench, bench_module=module_name)
        # each benchmark module defines its own arguments; keep their top-level imports light
        importlib.import_module(module_name).add_arguments(bp)


def _run_bench(args: argparse.Namespace) -> int:
    import importlib
    import json

    from restore.bench import machine_summary

    results = importlib.import_module(args.bench_module).run(args)
    results = {"machine": machine_summary(), "command": "restore " + " ".join(sys.argv[1:]), **results}
    print(json.dumps(results, indent=2, default=str))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2, default=str)
    return 0


# Registered subcommands, in help order. Add a new one by writing `_add_<name>_command` above and
# appending it here.
COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_models_command,
    _add_bench_command,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="restore", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
