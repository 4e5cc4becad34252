"""The ``restore`` command. Each subcommand is one ``_add_<name>_command`` function below.

Subcommands import their heavy dependencies lazily, so ``restore --help`` stays fast. The settings
of ``upscale`` are the fields of ``restore.api.UpscaleOptions`` (defaults and help included), read
back into it by ``restore.options``; those of ``dicom`` are stored under the names of
``DicomJobConfig``'s fields and read back the same way.

Failures: a ``RestoreError`` (a bad file, model or setting, which the user can fix) prints one
line and exits 1; argparse prints usage errors and exits 2; anything else is a bug in restore, which
prints its traceback, asks to be reported and exits ``EXIT_BUG``. Otherwise a command returns its
own code (``dicom``'s 2: some image data skipped; 130: interrupted by Ctrl-C; 143: by ``SIGTERM``,
which ``upscale`` takes as Ctrl-C). ``upscale`` goes on after a file that meets a bug and then
exits ``EXIT_BUG``.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

# sysexits.h's EX_SOFTWARE: an internal error, apart from every code a user's mistake gives
EXIT_BUG = 70


def _add_upscale_command(sub: argparse._SubParsersAction) -> None:
    from restore.api import UpscaleOptions
    from restore.options import add_arguments

    p = sub.add_parser(
        "upscale",
        help="upscale videos, images and folders",
        description="Upscale videos (audio and subtitles kept), images and folders (recursive). "
        "Bad files are reported and the batch goes on; interrupted runs continue with --resume.",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="video (GIF and animated WebP too) or image files, folders, or - for stdin")
    p.add_argument("-o", "--output", required=True, help="output file (one input; .gif or .webp for an animation) or folder; - for stdout (Matroska)")
    add_arguments(p, UpscaleOptions)
    p.add_argument("--report", metavar="PATH", help="write a JSON report of every input")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars or summary")
    p.set_defaults(func=_run_upscale)


def _run_upscale(args: argparse.Namespace) -> int:
    from restore.api import UpscaleOptions
    from restore.batch import run_batch
    from restore.options import from_arguments

    opts = from_arguments(UpscaleOptions, args)
    with _sigterm_as_interrupt():
        report = run_batch(args.inputs, args.output, opts, report_path=args.report, quiet=args.quiet)
    # a file that met a bug in restore makes the run one, once the other files are done
    return EXIT_BUG if report.bugs and not report.interrupted else report.exit_code()


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Within the block ``SIGTERM`` (``kill``, a scheduler, ``docker stop``) raises
    :class:`restore.errors.Interrupted`, so that the batch stops as it does on Ctrl-C: report
    written, partial work kept, resume hint, exit code 143. Python's default would end the process
    on the spot, without any of them."""
    from restore.errors import Interrupted

    def stop(signum: int, frame: object) -> None:
        raise Interrupted(signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _add_models_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list available models")
    p.set_defaults(func=_run_models)


def _run_models(args: argparse.Namespace) -> int:
    from restore.registry import list_models

    rows = [("name", "task", "scale", "params", "source")]
    for e in (e for e in list_models() if not e.test_only):
        source = f"{e.source}, default of its task" if e.card.get("default") else e.source
        rows.append((e.name, e.task, f"x{e.scale}" if e.scale > 1 else "x1", _param_count(e), source))
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


def _add_dicom_command(sub: argparse._SubParsersAction) -> None:
    from restore.dicom.plan import DicomJobConfig
    from restore.options import add_arguments

    p = sub.add_parser(
        "dicom",
        help="restore DICOM folders into derived series",
        description="Restore every image series under the inputs (folders, files, .zip) into a derived DICOM "
        "series per input series under OUTDIR/<series-id>/, with a report of every input file. Exit code 0: all "
        "image series processed; 2: some image data skipped; 1: fatal error.",
    )
    # each argument is stored under the name of its DicomJobConfig field (`-o` under `outdir`)
    p.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help="folders (recursive), DICOM files or .zip archives")
    p.add_argument("-o", "--output", required=True, dest="outdir", type=Path, metavar="OUTDIR",
                   help="folder for the derived series")
    add_arguments(p, DicomJobConfig)
    p.set_defaults(func=_run_dicom)


def _run_dicom(args: argparse.Namespace) -> int:
    from restore.dicom.job import DicomJobConfig, run_dicom_job
    from restore.options import from_arguments

    return run_dicom_job(from_arguments(DicomJobConfig, args)).exit_code


def _add_calibrate_heads_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "calibrate-heads",
        help="assign OASIS attention heads to global / intra-frame / window groups (ASR)",
        description="Run an OASIS network with every head global on calibration clips, measure how much of each "
        "head's attention stays in its 3D window and in its own frame (KL divergence), and write routing.json, "
        "a per-head CSV and a PNG heat map beside it.",
    )
    p.add_argument("--config", required=True,
                   help="OASIS model name (`restore models`), model card (weights/NAME.json), OASIS config file "
                        "(JSON/YAML) or the training recipe (configs/oasis_*.yaml, or a run's config.yaml)")
    p.add_argument("--weights", help="network weights (.safetensors, or a torch or Lightning checkpoint such as last.ckpt)")
    p.add_argument("--clips", required=True, help="folder of videos, or 'synthetic'")
    p.add_argument("--out", required=True, help="routing.json to write (.csv and .png go beside it)")
    p.add_argument("--global-budget", type=int, metavar="K", help="exactly K global heads per layer (default: thresholds)")
    p.add_argument("--kl-window", type=float, default=0.2, help="max KL (nats) for a window head (default: %(default)s)")
    p.add_argument("--kl-intra", type=float, default=0.2, help="max KL (nats) for an intra-frame head (default: %(default)s)")
    p.add_argument("--num-clips", type=int, default=4, help="clips to use (default: %(default)s)")
    p.add_argument("--frames", type=int, default=9, help="frames per clip (default: %(default)s)")
    p.add_argument("--size", type=_size, default="64x64",
                   help="LR crop WxH of each clip; smaller video frames are cropped to what fits (default: %(default)s)")
    p.add_argument("--queries", type=int, default=256, help="query tokens sampled per layer and clip (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "fp16", "bf16"))
    p.set_defaults(func=_run_calibrate_heads)


def _size(text: str) -> tuple[int, int]:
    """``WxH`` -> ``(width, height)``; anything else is a usage error, reported by argparse."""
    try:
        width, height = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WxH in pixels, e.g. 64x64, got {text!r}") from None
    return width, height


def _run_calibrate_heads(args: argparse.Namespace) -> int:
    from restore.calibrate import ClipOptions, calibrate_heads, load_clips, load_network
    from restore.devices import resolve_device, resolve_precision

    width, height = args.size
    device = resolve_device(args.device)
    model = load_network(args.config, args.weights).to(device=device, dtype=resolve_precision(args.precision, device))
    clips = load_clips(args.clips, ClipOptions(args.frames, height, width, args.num_clips, args.seed,
                                               multiple=model.config.pad_multiple))
    outputs = calibrate_heads(
        model, clips, args.out, queries_per_clip=args.queries, global_budget=args.global_budget,
        thresholds={"window": args.kl_window, "intra": args.kl_intra}, seed=args.seed,
    )
    totals = {g: sum(c[g] for c in outputs.counts) for g in ("global", "intra", "window")}
    print(f"{outputs.routing}: {len(outputs.counts)} layers, heads " + ", ".join(f"{n} {g}" for g, n in totals.items()))
    print(f"per-head statistics: {outputs.csv}; heat map: {outputs.heatmap}")
    print(f"attention changes the output by {outputs.attention_effect:.3f} grey levels RMS (zeroing every head)")
    if outputs.effect_negligible:
        print("warning: the network barely uses its attention, so its heads' statistics say nothing about "
              "locality (untrained heads look global); the routing above is not evidence", file=sys.stderr)
    return 0


def _add_train_command(sub: argparse._SubParsersAction) -> None:
    # everything after `train` goes to LightningCLI (its own --help, --config, --section.key=value)
    p = sub.add_parser(
        "train", add_help=False, prefix_chars="\0",
        help="train with a recipe: train fit|validate|test|predict --config configs/X.yaml; train export --ckpt ... --out ...",
    )
    p.add_argument("args", nargs=argparse.REMAINDER)
    p.set_defaults(func=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from training import main as train_main

    return train_main(args.args)


def _add_ui_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ui", help="start the web demo (same as `python app.py`)",
                       description="Start the Gradio web demo, on localhost unless --host says otherwise.")
    # app.py defines the options; importing it is cheap (gradio is imported when the demo starts)
    from app import add_arguments

    add_arguments(p)
    p.set_defaults(func=_run_ui)


def _run_ui(args: argparse.Namespace) -> int:
    from app import run

    return run(args)


# Registered subcommands, in help order. Add a new one by writing `_add_<name>_command` above and
# appending it here.
COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_upscale_command,
    _add_models_command,
    _add_bench_command,
    _add_dicom_command,
    _add_calibrate_heads_command,
    _add_train_command,
    _add_ui_command,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="restore",
        description="Video super-resolution and medical image restoration. "
        "Run `restore COMMAND --help` for the options of a command.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``restore ARGV`` and return its exit code (see the module docstring).

    A ``RestoreError`` (a bad file, model or setting) is printed as one line; argparse reports
    usage errors itself. Any other exception is a bug, however much it looks like bad input (a
    stray ``ValueError`` included): its traceback is printed with a request to report it.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    from restore.errors import RestoreError

    try:
        return int(args.func(args) or 0)
    except RestoreError as exc:  # the user can fix it: one line, no traceback
        print(f"restore: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:  # before a command could stop cleanly (e.g. while a model loads)
        print("restore: interrupted", file=sys.stderr)
        return 128 + getattr(exc, "signum", signal.SIGINT)
    except Exception:  # noqa: BLE001 - a bug: shown in full, never passed off as the user's mistake
        traceback.print_exc()
        print("restore: internal error: this is a bug in restore, not in your input or settings; please report "
              "it with the command you ran and the traceback above", file=sys.stderr)
        return EXIT_BUG


if __name__ == "__main__":
    sys.exit(main())
