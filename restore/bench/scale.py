"""``restore bench scale``: frames/s of ``restore upscale`` on 1 process vs N DDP ranks, on the same
clips, in one run.

Makes ``--clips`` synthetic clips with audio (``restore.io.samples``) in a temporary folder and
times the whole command (start-up, decode, model, encode, join) once per rank count, each into a
fresh output folder, as a subprocess: DDP ranks start by running the same command line again.
Reports the wall-clock frames/s of each run, the speed-up, and for the DDP run the frames/s of
each rank (from its report). On CPU the ranks split the cores (``--device cpu --devices 2`` on a
2-core machine: 2 ranks of 1 thread, against 1 process of 2 threads).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from restore.bench import add_lr_size_arguments, lr_size
from restore.bench.upscale_process import run_upscale_process


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--devices", type=int, default=2, help="ranks of the DDP run (against 1 process)")
    parser.add_argument("--clips", type=int, default=2, help="synthetic clips")
    parser.add_argument("--frames", type=int, default=48, help="frames per clip")
    add_lr_size_arguments(parser, "160x90")
    parser.add_argument("--model", help="model (default: the registry's default for video SR at --scale)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--segment-frames", type=int, default=24, help="frames per segment (the unit of work)")


def run(args: argparse.Namespace) -> dict:
    from restore.io.samples import make_sample_video

    width, height = lr_size(args.size)
    frames = args.clips * args.frames
    options = ["--scale", str(args.scale), "--device", args.device, "--segment-frames", str(args.segment_frames),
               *(["--model", args.model] if args.model else [])]
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}  # the ranks split the cores themselves
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "in").mkdir()
        for n in range(args.clips):
            make_sample_video(root / "in" / f"clip{n}.mp4", frames=args.frames, width=width, height=height)
        for devices in (1, args.devices):
            result = run_upscale_process(root / "in", root / f"out{devices}", [*options, "--devices", str(devices)], env=env)
            runs[devices] = {
                "seconds": round(result["seconds"], 2),
                "frames_per_s": round(frames / result["seconds"], 3),
                "ranks": result["report"]["ranks"],
                "model": result["report"]["model"],
            }
    one, many = runs[1], runs[args.devices]
    return {
        "clips": args.clips, "frames": frames, "lr_size": args.size, "scale": args.scale, "device": args.device,
        "segment_frames": args.segment_frames, "model": one["model"],
        "processes_1": {k: v for k, v in one.items() if k not in ("ranks", "model")},
        f"ranks_{args.devices}": {k: v for k, v in many.items() if k != "model"},
        "speedup": round(one["seconds"] / many["seconds"], 2),
    }
