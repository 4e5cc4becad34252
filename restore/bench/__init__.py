"""Benchmarks behind ``restore bench NAME``.

Each benchmark is a module here with ``add_arguments(parser)`` and ``run(args) -> dict``; the
returned dict is printed as a table and, with ``--json PATH``, saved. Results that matter go to
``docs/BENCHMARKS.md`` with the command line, machine and date (``machine_summary()``).
"""

from __future__ import annotations

import argparse
import platform
import time
from datetime import date

import torch

# benchmark name -> module (imported only when that benchmark runs)
BENCHMARKS: dict[str, str] = {
    "io": "restore.bench.io",
    "speed": "restore.bench.speed",
    "tiles": "restore.bench.tiles",
    "degradations": "datasets.benchmark",  # in datasets/: restore/ may not import datasets
    "dicom": "restore.bench.dicom",
    "scale": "restore.bench.scale",
    "attention": "restore.bench.attention",
    "regions": "restore.bench.regions",
    "quality": "restore.bench.quality",
    "train": "training_speed",  # top level beside `training`: it runs recipes through `restore train`
}


def add_lr_size_arguments(parser: argparse.ArgumentParser, size: str) -> None:
    """``--size WxH`` (the LR frames, default ``size``) and ``--scale``: what every video benchmark sizes."""
    parser.add_argument("--size", default=size, help="LR size WxH")
    parser.add_argument("--scale", type=int, default=4)


def lr_size(text: str) -> tuple[int, int]:
    """``"480x270"`` -> ``(480, 270)`` (width, height); SystemExit naming the option otherwise."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise SystemExit(f"--size: expected WxH, e.g. 480x270, got {text!r}") from None
    if width < 1 or height < 1:
        raise SystemExit(f"--size: width and height must be positive, got {text!r}")
    return width, height


def machine_summary() -> dict:
    """CPU/GPU, core count, torch version and today's date, for the record in BENCHMARKS.md."""
    import os

    info = {
        "date": date.today().isoformat(),
        "cpu": _cpu_name(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    return info


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def median_time(fn, *, repeats: int = 5, warmup: int = 1, sync_cuda: bool = False) -> float:
    """Median wall time of ``fn()`` in seconds over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if sync_cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if sync_cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]
