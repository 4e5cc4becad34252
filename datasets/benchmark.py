"""``restore bench degradations``: throughput of the training degradation pipeline, in clips/s.

It lives in ``datasets`` rather than ``restore.bench`` because the engine layer may not import
``datasets``; ``restore.bench.BENCHMARKS`` only names it.

Runs ``datasets.degradations.Degradation`` on random smooth HR clips for each temporal mode, with
and without video-codec compression (the one operator that always runs on the CPU, through PyAV).
"""

from __future__ import annotations

import argparse

import torch


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch", type=int, default=8, help="clips per call (default: %(default)s)")
    parser.add_argument("--frames", type=int, default=5, help="frames per clip (default: %(default)s)")
    parser.add_argument("--size", type=int, default=256, help="HR crop side in pixels (default: %(default)s)")
    parser.add_argument("--scale", type=int, default=4, choices=(2, 4))
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per setting (median reported)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")


def run(args: argparse.Namespace) -> dict:
    from restore.bench import median_time

    from .degradations import Degradation, DegradationConfig
    from restore.devices import resolve_device

    device = resolve_device(args.device)
    torch.manual_seed(0)
    coarse = torch.rand(args.batch * args.frames, 3, args.size // 8, args.size // 8, device=device)
    hr = torch.nn.functional.interpolate(coarse, size=(args.size, args.size), mode="bicubic").clamp(0, 1)
    hr = hr.view(args.batch, args.frames, 3, args.size, args.size)
    results = []
    for codec_prob in (0.0, 1.0):
        for mode, prob in (("consistent", 0.0), ("inconsistent", 1.0)):
            config = DegradationConfig()
            config.codec.prob = codec_prob
            degradation = Degradation(config, scale=args.scale)
            degradation.inconsistent_prob = prob
            generator = torch.Generator().manual_seed(0)
            seconds = median_time(
                lambda: degradation(hr, generator), repeats=args.repeats, warmup=1, sync_cuda=device.type == "cuda"
            )
            results.append({
                "mode": mode, "video_codec": codec_prob > 0, "seconds_per_call": round(seconds, 4),
                "clips_per_s": round(args.batch / seconds, 2), "frames_per_s": round(args.batch * args.frames / seconds, 1),
            })  # fmt: skip
    return {
        "device": str(device),
        "clip": f"{args.batch} x {args.frames} x 3 x {args.size} x {args.size} -> x{args.scale}",
        "results": results,
    }
