"""``restore bench regions``: region MSA vs the dense-mask reference, time and peak memory.

One attention call over the token grid of a ``--size`` input at ``1/--stride`` scale (512 px at
1/4 = 16,384 tokens), partitioned into ``--regions`` Voronoi cells of random seeds (unequal sizes,
like SAM regions). ``dense`` is SDPA with a boolean ``[L, L]`` same-region mask (the published
code's approach, but fused); ``bucketed``/``flex`` are ``models.rat.region_attention``. The
FLOP-ideal speedup is ``L^2 / sum(n_i^2)``. Peak memory is ``torch.cuda.max_memory_allocated`` on
CUDA and the growth of the process' peak RSS (``VmHWM``, reset through ``/proc/self/clear_refs``)
on CPU; both exclude the inputs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from . import median_time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size", type=int, default=512, help="input size in pixels (default: %(default)s)")
    parser.add_argument("--stride", type=int, default=4, help="attention scale 1/stride (default: %(default)s)")
    parser.add_argument("--regions", type=int, default=40, help="number of regions (default: %(default)s)")
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--head-dim", type=int, default=32)
    parser.add_argument("--backends", default="dense,bucketed,flex", help="comma-separated (default: %(default)s)")
    parser.add_argument("--device", default="auto", help="auto: cuda when available, else cpu")
    parser.add_argument("--precision", choices=("auto", "fp32", "fp16", "bf16"), default="auto",
                        help="auto: bf16 on CUDA, fp32 on CPU")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per backend (median)")
    parser.add_argument("--seed", type=int, default=0)


def voronoi_labels(side: int, regions: int, seed: int) -> torch.Tensor:
    """``(1, side*side)`` labels of the Voronoi cells of ``regions`` random seed points."""
    g = torch.Generator().manual_seed(seed)
    seeds = torch.rand(regions, 2, generator=g) * side
    yy, xx = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    points = torch.stack([yy, xx], -1).reshape(-1, 1, 2).float()
    return ((points - seeds) ** 2).sum(-1).argmin(-1)[None]


def _rss_peak_growth(fn) -> int | None:
    """Bytes by which ``fn()`` raises the process' peak RSS (Linux), or None."""
    status = Path("/proc/self/status")
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        base = _status_kb(status, "VmRSS")
        fn()
        return (_status_kb(status, "VmHWM") - base) * 1024
    except OSError:
        fn()
        return None


def _status_kb(status: Path, key: str) -> int:
    for line in status.read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise OSError(f"{key} not in {status}")


def _peak_bytes(fn, device: torch.device) -> int | None:
    if device.type != "cuda":
        return _rss_peak_growth(fn)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


def run(args: argparse.Namespace) -> dict:
    from models.rat.region_attention import RegionLayout, region_attention

    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    precision = args.precision if args.precision != "auto" else ("bf16" if device.type == "cuda" else "fp32")
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
    side = args.size // args.stride
    labels = voronoi_labels(side, args.regions, args.seed).to(device)
    g = torch.Generator(device=device).manual_seed(args.seed)
    shape = (3, 1, args.heads, side * side, args.head_dim)
    q, k, v = torch.randn(shape, generator=g, device=device, dtype=dtype).unbind(0)
    sync = device.type == "cuda"
    layout_s = median_time(lambda: RegionLayout.from_labels(labels), repeats=args.repeats, sync_cuda=sync)
    layout = RegionLayout.from_labels(labels)
    results: dict = {
        "tokens": side * side, "regions": layout.num_regions, "heads": args.heads, "head_dim": args.head_dim,
        "device": str(device), "precision": precision, "layout_ms": round(layout_s * 1e3, 2),
        "flop_ideal_speedup": round(1 / layout.ideal_fraction(), 2), "backends": {},
    }
    for backend in args.backends.split(","):
        if backend == "flex" and device.type != "cuda":
            continue  # uncompiled FlexAttention on CPU materialises the scores: not a fast path

        def call(backend=backend):
            return region_attention(q, k, v, layout, backend)

        seconds = median_time(call, repeats=args.repeats, sync_cuda=sync)
        peak = _peak_bytes(call, device)
        results["backends"][backend] = {"ms": round(seconds * 1e3, 2),
                                        "peak_mb": None if peak is None else round(peak / 2**20, 1)}
    dense = results["backends"].get("dense")
    if dense:
        for name, r in results["backends"].items():
            if name != "dense":
                r["speedup"] = round(dense["ms"] / r["ms"], 2)
                r["fraction_of_ideal"] = round(r["speedup"] / results["flop_ideal_speedup"], 2)
    return results
