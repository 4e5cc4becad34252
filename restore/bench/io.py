"""``restore bench io``: decode+encode throughput and peak memory, short vs six-times-longer clip.

Each measurement runs ``restore upscale`` with the ``bicubic`` model in a fresh process, so peak
RSS (``ru_maxrss``) belongs to that run alone. Memory that does not grow with length shows as a
long/short peak ratio near 1.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

_WORKER = """
import json, resource, sys, time
import cli
t0 = time.perf_counter()
rc = cli.main(sys.argv[1:])
print(json.dumps({"rc": rc, "seconds": time.perf_counter() - t0,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--frames", type=int, default=60, help="frames of the short clip")
    parser.add_argument("--factor", type=int, default=6, help="the long clip is this many times longer")
    parser.add_argument("--size", default="480x270", help="LR size WxH")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--codec", default="libx264")
    parser.add_argument("--preset", default="veryfast")
    parser.add_argument("--repeats", type=int, default=1, help="runs per clip; the median is reported")


def _run_upscale(src: Path, dst: Path, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, "-c", _WORKER, "upscale", str(src), "-o", str(dst), "--scale", str(args.scale),
           "--model", "bicubic", "--codec", args.codec, "--preset", args.preset, "--overwrite", "--quiet"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(args: argparse.Namespace) -> dict:
    from restore.io.samples import make_sample_video

    width, height = (int(v) for v in args.size.split("x"))
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
