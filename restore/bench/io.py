"""``restore bench io``: decode+encode throughput and peak memory, short vs six-times-longer clip.

Each measurement runs ``restore upscale`` with the ``bicubic`` model in a fresh process
(``restore.bench.upscale_process``), so peak RSS belongs to that run alone; the seconds are the
job's own, from its report (process start-up left out). Memory that does not grow with length shows as a
long/short peak ratio near 1.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from restore.bench import add_lr_size_arguments, lr_size
from restore.bench.upscale_process import run_upscale_process


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--frames", type=int, default=60, help="frames of the short clip")
    parser.add_argument("--factor", type=int, default=6, help="the long clip is this many times longer")
    add_lr_size_arguments(parser, "480x270")
    parser.add_argument("--codec", default="libx264")
    parser.add_argument("--preset", default="veryfast")
    parser.add_argument("--repeats", type=int, default=1, help="runs per clip; the median is reported")


def _run_upscale(src: Path, dst: Path, args: argparse.Namespace) -> dict:
    """One run: the seconds of the job itself (its report's, without the process start-up) and peak RSS."""
    run = run_upscale_process(src, dst, ["--scale", str(args.scale), "--model", "bicubic", "--codec", args.codec,
                                         "--preset", args.preset, "--overwrite"])
    return {"seconds": sum(row["seconds"] for row in run["report"]["inputs"]), "peak_rss_mb": run["peak_rss_mb"]}


def run(args: argparse.Namespace) -> dict:
    from restore.io.samples import make_sample_video

    width, height = lr_size(args.size)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, frames in (("short", args.frames), ("long", args.frames * args.factor)):
            src = make_sample_video(Path(tmp) / f"{label}.mp4", frames=frames, width=width, height=height)
            runs = sorted((_run_upscale(src, Path(tmp) / f"{label}_x{args.scale}.mp4", args) for _ in range(args.repeats)),
                          key=lambda r: r["seconds"])
            median = runs[len(runs) // 2]
            results[label] = {
                "frames": frames,
                "seconds": round(median["seconds"], 2),
                "frames_per_s": round(frames / median["seconds"], 2),
                "peak_rss_mb": round(max(r["peak_rss_mb"] for r in runs), 1),
            }
    results["peak_rss_ratio_long_over_short"] = round(results["long"]["peak_rss_mb"] / results["short"]["peak_rss_mb"], 3)
    results["settings"] = {"size": args.size, "scale": args.scale, "codec": args.codec, "preset": args.preset}
    return results
