"""``restore bench speed``: frames/s of video SR models at one LR size, all timed in the same run.

Default: ``oasis-s`` against the SRVGG compact reference (realesr-general-x4v3 architecture) and
bicubic, x4 from 480x270 to 1920x1080, one chunk of ``--frames`` frames per call. Weights do not
change speed, so untrained presets are timed with random weights. Also reports parameters and
multiply-accumulates per frame (``torch.utils.flop_counter``; attention counted as its dense
kernel calls, so routed heads show their real work).
"""

from __future__ import annotations

import argparse
import os

from restore.bench import add_lr_size_arguments, lr_size


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", default="oasis-s,srvgg-compact,bicubic", help="comma-separated registry names")
    add_lr_size_arguments(parser, "480x270")
    parser.add_argument("--frames", type=int, default=8, help="frames per model call")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "fp16", "bf16"))
    parser.add_argument("--repeats", type=int, default=3)


def run(args: argparse.Namespace) -> dict:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from restore.bench import median_time
    from restore.devices import resolve_device, resolve_precision
    from restore.registry import build_model, get_entry

    device = resolve_device(args.device)
    dtype = resolve_precision(args.precision, device)
    width, height = lr_size(args.size)
    clip = torch.rand(1, args.frames, 3, height, width, generator=torch.Generator().manual_seed(0))
    clip = clip.to(device=device, dtype=dtype)
    models = {}
    for name in args.models.split(","):
        entry = get_entry(name)
        config = dict(entry.config)
        if "scale" in config:
            config["scale"] = args.scale
        models[name] = build_model(entry.architecture, config).eval().to(device=device, dtype=dtype)
    results: dict[str, dict] = {}
    with torch.inference_mode():
        for name, model in models.items():
            with FlopCounterMode(display=False) as counter:
                model(clip[:, :1] if getattr(model, "temporal_window", 1) == 1 else clip)
            frames_counted = 1 if getattr(model, "temporal_window", 1) == 1 else args.frames
            seconds = median_time(lambda m=model: m(clip), repeats=args.repeats, sync_cuda=device.type == "cuda")
            results[name] = {
                "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 3),
                "gmac_per_frame": round(counter.get_total_flops() / 2 / frames_counted / 1e9, 1),
                "seconds_per_frame": round(seconds / args.frames, 4),
                "frames_per_s": round(args.frames / seconds, 3),
            }
    reference = "srvgg-compact" if "srvgg-compact" in results else next(iter(results))
    for row in results.values():
        row[f"speed_vs_{reference}"] = round(results[reference]["seconds_per_frame"] / row["seconds_per_frame"], 2)
    return {
        "settings": {"lr_size": args.size, "scale": args.scale, "frames": args.frames, "device": str(device),
                     "dtype": str(dtype), "threads": torch.get_num_threads(), "load_avg": os.getloadavg()[0]},
        "models": results,
    }
