"""``restore bench attention``: dense vs ASR-routed attention time, and the FLOP-ideal speedup.

Presets: ``wan`` is Wan2.1-1.3B attention on 33 frames of 720p (token grid (9, 45, 80) = 32,400
tokens, 12 heads x 128), run on CUDA; ``cpu`` is a CPU-sized layer (grid (9, 12, 20) = 2,160 tokens,
12 heads x 64). For each preset it times one attention layer with every head global (dense SDPA),
each ``global/intra/window`` split, and every group on its own (its cost per head as a fraction of
a dense head; the target for ``window`` heads is <= 5%).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from functools import partial

import torch

from ..errors import OptionError
from . import median_time

PRESETS: dict[str, dict] = {
    "wan": {"grid": (9, 45, 80), "heads": 12, "head_dim": 128, "device": "cuda"},
    "cpu": {"grid": (9, 12, 20), "heads": 12, "head_dim": 64, "device": "cpu"},
}


def _triple(text: str) -> tuple[int, int, int]:
    values = tuple(int(x) for x in text.replace("x", ",").split(","))
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"expected T,H,W, got {text!r}")
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", nargs="+", choices=sorted(PRESETS),
                        help="configs to run (default: wan and cpu with a GPU, cpu without)")
    parser.add_argument("--splits", default="4/4/4,2/5/5,1/3/8",
                        help="comma-separated global/intra/window head counts (default: %(default)s)")
    parser.add_argument("--grid", type=_triple, help="override the token grid T,H,W of the presets")
    parser.add_argument("--window", type=_triple, default=(3, 5, 5), help="window T,H,W (default: 3,5,5)")
    parser.add_argument("--tile", type=_triple, help="query tile T,H,W of the window path (default: per device)")
    parser.add_argument("--precision", choices=("auto", "fp32", "fp16", "bf16"), default="auto",
                        help="auto: bf16 on CUDA, fp32 on CPU")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per measurement (median)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")


def _split(text: str, heads: int) -> list[str]:
    """``"4/4/4"`` -> the routing of ``heads`` heads: that many global, intra-frame and window heads."""
    counts = [int(x) for x in text.split("/") if x.strip().isdigit()]
    if len(counts) != 3 or sum(counts) != heads:
        raise OptionError(None, f"--splits {text}: need global/intra/window counts summing to {heads} heads")
    return ["global"] * counts[0] + ["intra"] * counts[1] + ["window"] * counts[2]


def bench_preset(name: str, args: argparse.Namespace) -> dict:
    """Timings (ms) and speedups of one preset."""
    from models.oasis.attention import HEAD_GROUPS, routed_attention
    from models.oasis.calibration import RoutingTable, flop_fraction
    from restore.devices import resolve_device, resolve_precision

    preset = PRESETS[name]
    grid = args.grid or preset["grid"]
    heads, d = preset["heads"], preset["head_dim"]
    device = resolve_device(preset["device"])
    dtype = resolve_precision(args.precision, device)
    L = math.prod(grid)
    q, k, v = (torch.randn(1, heads, L, d, device=device, dtype=dtype) for _ in range(3))

    routings = {"dense": ["global"] * heads}
    # one group on all heads: its cost per head as a fraction of a dense head
    routings.update({g: [g] * heads for g in HEAD_GROUPS[1:]})
    routings.update({split: _split(split, heads) for split in args.splits.split(",")})
    fns = {key: partial(routed_attention, q, k, v, grid, r, args.window, tile=args.tile)
           for key, r in routings.items()}
    ms = _interleaved_ms(fns, args.repeats, device)
    dense = ms["dense"]
    return {
        "grid": list(grid), "tokens": L, "heads": heads, "head_dim": d, "window": list(args.window),
        "device": str(device), "dtype": str(dtype).removeprefix("torch."), "dense_ms": round(dense, 3),
        "head_cost_vs_dense": {g: round(ms[g] / dense, 4) for g in HEAD_GROUPS[1:]},
        "splits": {
            split: {
                "routed_ms": round(ms[split], 3),
                "speedup": round(dense / ms[split], 2),
                "flop_ideal_speedup": round(1 / flop_fraction(RoutingTable([routings[split]], args.window), grid), 2),
            }
            for split in args.splits.split(",")
        },
    }


def _interleaved_ms(fns: dict[str, Callable[[], object]], repeats: int, device: torch.device) -> dict[str, float]:
    """Median ms of each function, timed round-robin so that load drifting on a shared machine
    hits every candidate alike (one warm-up run each)."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    with torch.no_grad():
        for fn in fns.values():
            fn()
        for _ in range(repeats):
            for name, fn in fns.items():
                times[name].append(median_time(fn, repeats=1, warmup=0, sync_cuda=device.type == "cuda"))
    return {name: 1e3 * sorted(t)[len(t) // 2] for name, t in times.items()}


def run(args: argparse.Namespace) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    presets = args.preset or (["wan", "cpu"] if torch.cuda.is_available() else ["cpu"])
    return {"attention": {name: bench_preset(name, args) for name in presets}}
