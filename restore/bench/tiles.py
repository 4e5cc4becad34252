"""``restore bench tiles``: seconds per frame of one chunk through the engine, by tile policy.

``default`` is the pixel budget alone (``--max-pixels``: whole frames up to 8 x 1920 x 1080 LR
pixels a call), the choice before tiles were timed; ``auto`` is :func:`restore.autotile.choose_tiles`
(its calibration timed apart, as it is paid once per frame size and run); a number forces that
tile (``--tile N``). Every policy runs the same real model and weights (default: the shipped
default at ``--scale``) on the same synthetic chunk in one process, so their ratio holds on a
busy machine; ``bench speed`` times bare model calls instead, with no tiling.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import replace

from restore.bench import add_lr_size_arguments, lr_size


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, help="registry name (default: the shipped default at --scale)")
    add_lr_size_arguments(parser, "1280x720")
    parser.add_argument("--frames", type=int, default=None, help="frames of the chunk (default: the model's chunk)")
    parser.add_argument("--policies", default="default,auto", help="comma-separated: default, auto, or a tile side")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "fp16", "bf16"))


def run(args: argparse.Namespace) -> dict:
    import torch

    from restore.autotile import choose_tiles
    from restore.engine import TilePlan
    from restore.io.samples import sample_frame
    from restore.jobs import UpscaleOptions, prepare_model

    loaded = prepare_model(UpscaleOptions(scale=args.scale, model=args.model, device=args.device, precision=args.precision))
    width, height = lr_size(args.size)
    frames = args.frames or loaded.plan.chunk
    clip = [torch.from_numpy(sample_frame(i, width, height)) for i in range(frames)]
    sync = torch.cuda.synchronize if loaded.runner.device.type == "cuda" else lambda: None
    results: dict[str, dict] = {}
    for policy in args.policies.split(","):
        runner, row = loaded.runner, {}
        if policy == "auto":
            start = time.perf_counter()
            plan = choose_tiles(runner, frames, height, width, overlap=16)
            row["calibration_s"] = round(time.perf_counter() - start, 2)
            runner = replace(runner, tiles=plan)
        elif policy != "default":
            runner = replace(runner, tiles=TilePlan(int(policy)))
        shown = runner.tiles or TilePlan.auto(frames, height, width, runner.max_pixels)
        sync()
        start = time.perf_counter()
        runner(clip)
        sync()
        seconds = time.perf_counter() - start
        results[policy] = {"tile": shown.tile or "whole", "seconds_per_frame": round(seconds / frames, 3), **row}
    reference = results.get("default") or next(iter(results.values()))
    for row in results.values():
        row["speed_vs_default"] = round(reference["seconds_per_frame"] / row["seconds_per_frame"], 2)
    return {
        "settings": {"model": loaded.name, "lr_size": args.size, "scale": args.scale, "frames": frames,
                     "device": str(loaded.runner.device), "dtype": str(loaded.runner.dtype),
                     "threads": torch.get_num_threads(), "load_avg": os.getloadavg()[0]},
        "policies": results,
    }
