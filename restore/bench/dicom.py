"""``restore bench dicom``: slices per second of ``restore dicom`` on 512 x 512 CT.

Builds a synthetic CT series (a water cylinder with bone and air inserts plus Gaussian noise,
int16 with intercept -1024, like scanner output) in a temporary folder and times the whole job
(decode, model, encode, write, verify) with the task's default model, in a fresh output folder
per repeat: wall-clock seconds, and the CPU seconds of this process (``time.process_time``, all
its threads), which other work on a busy machine does not inflate.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--slices", type=int, default=8, help="slices in the synthetic series")
    parser.add_argument("--size", type=int, default=512, help="slice side in pixels")
    parser.add_argument("--task", default="ct-denoise", choices=("ct-denoise", "sr-x2"))
    parser.add_argument("--model", help="model (default: the task's default)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=4, help="slices (and windows) per model call")
    parser.add_argument("--repeats", type=int, default=2)


def write_phantom_series(folder: Path, slices: int, size: int, seed: int = 0) -> None:
    """``slices`` CT files of ``size`` x ``size`` (HU: air -1000, water 0, bone 1000, noise 20)."""
    import numpy as np
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size - 0.5
    hu = np.full((size, size), -1000.0)
    hu[xx**2 + yy**2 < 0.4**2] = 0.0
    hu[(xx - 0.15) ** 2 + yy**2 < 0.05**2] = 1000.0
    hu[(xx + 0.15) ** 2 + yy**2 < 0.05**2] = -1000.0
    series = generate_uid()
    for n in range(slices):
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        noisy = hu + rng.normal(0, 20, hu.shape)
        ds.set_pixel_data(np.clip(np.rint(noisy + 1024), -32768, 32767).astype(np.int16), "MONOCHROME2", 16)
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
        ds.SeriesInstanceUID = series
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.ImagePositionPatient = [-250.0, -250.0, float(n)]
        ds.InstanceNumber = n + 1
        ds.save_as(folder / f"{n:04d}", enforce_file_format=True)


def run(args: argparse.Namespace) -> dict:
    from restore.dicom.job import DicomJobConfig, run_dicom_job

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "in").mkdir()
        write_phantom_series(root / "in", args.slices, args.size)
        times, cpu_times = [], []
        for r in range(args.repeats):
            config = DicomJobConfig(inputs=[root / "in"], outdir=root / f"out{r}", task=args.task, model=args.model,
                                    device=args.device, batch_size=args.batch_size, quiet=True)
            t0, c0 = time.perf_counter(), time.process_time()
            report = run_dicom_job(config)
            times.append(time.perf_counter() - t0)
            cpu_times.append(time.process_time() - c0)
    best, best_cpu = min(times), min(cpu_times)
    return {
        "task": args.task, "model": report.model, "model_description": report.model_description,
        "slices": args.slices, "size": args.size, "batch_size": args.batch_size, "seconds": round(best, 3),
        "slices_per_s": round(args.slices / best, 3), "cpu_seconds": round(best_cpu, 3),
        "slices_per_cpu_s": round(args.slices / best_cpu, 3), "exit_code": report.exit_code,
    }
