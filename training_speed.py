"""``restore bench train``: optimizer steps per second of training recipes, per precision and thread count.

A top-level module beside ``training`` (the layer that runs recipes); ``restore.bench.BENCHMARKS``
only names it. Each setting trains in its own process (``restore train fit``, so the thread count
is set before torch starts) with the recipe's model, data and degradations, validation, logging and
checkpoints off, and ``training.StepClock`` timing the steps after a warm-up. Settings run one after the
other in the same invocation: compare their ratios, the machine is shared.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", action="append", required=True,
                        help="recipe to time (repeatable), e.g. configs/oasis_s_x4.yaml; A.yaml,B.yaml composes "
                             "B over A as `restore train fit --config A.yaml --config B.yaml` does")
    parser.add_argument("--precision", default="32-true,bf16-mixed", help="comma-separated Lightning precisions")
    parser.add_argument("--threads", default="1,2", help="comma-separated torch thread counts")
    parser.add_argument("--steps", type=int, default=12, help="timed steps per setting (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (default: %(default)s)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="extra LightningCLI override for every run, e.g. data.init_args.batch_size=4")


def _time_one(config: str, precision: str, threads: int, args: argparse.Namespace, workdir: Path) -> dict:
    out = workdir / f"{Path(config.split(',')[0]).stem}-{precision}-{threads}.json"
    recipe = [arg for path in config.split(",") for arg in ("--config", path)]
    clock = {"class_path": "training.StepClock", "init_args": {"path": str(out), "warmup": args.warmup}}
    callbacks = workdir / "callbacks.json"
    callbacks.write_text(json.dumps({"trainer": {"callbacks": [clock]}}))
    cmd = [sys.executable, "-m", "cli", "train", "fit", *recipe, "--config", str(callbacks),
           f"--trainer.max_steps={args.warmup + args.steps + 1}", f"--trainer.precision={precision}",
           "--trainer.accelerator=cpu", "--trainer.devices=1", "--trainer.limit_val_batches=0",
           "--trainer.num_sanity_val_steps=0", "--trainer.logger=false", "--trainer.enable_checkpointing=false",
           "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
           f"--trainer.default_root_dir={workdir}", *(f"--{kv}" for kv in args.set)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    row = {"config": config, "precision": precision, "threads": threads}
    if done.returncode != 0 or not out.is_file():
        return {**row, "error": (done.stderr.strip().splitlines() or ["no output"])[-1]}
    timing = json.loads(out.read_text())
    return {**row, "s_per_step": round(timing["median_s_per_step"], 3),
            "steps_per_s": round(1 / timing["median_s_per_step"], 3), "timed_steps": timing["timed_steps"]}


def run(args: argparse.Namespace) -> dict:
    precisions = [p.strip() for p in args.precision.split(",") if p.strip()]
    threads = [int(t) for t in args.threads.split(",")]
    with tempfile.TemporaryDirectory(prefix="restore-bench-train-") as tmp:
        rows = [_time_one(c, p, t, args, Path(tmp)) for c in args.config for p in precisions for t in threads]
    return {"results": rows}
