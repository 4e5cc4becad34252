"""``restore bench train``: each setting trains in its own process and reports its median step time."""

from __future__ import annotations

import argparse
from pathlib import Path

import training_speed

ROOT = Path(__file__).resolve().parents[1]


def test_bench_times_each_setting_and_reports_a_failed_one(monkeypatch):
    monkeypatch.chdir(ROOT)
    parser = argparse.ArgumentParser()
    training_speed.add_arguments(parser)
    args = parser.parse_args(["--config", "configs/oasis_t_x4.yaml", "--precision", "32-true,no-such-precision",
                              "--threads", "1", "--steps", "3", "--warmup", "1"])
    ok, failed = training_speed.run(args)["results"]
    assert ok["precision"] == "32-true" and ok["timed_steps"] == 3 and ok["s_per_step"] > 0
    assert failed["precision"] == "no-such-precision" and "error" in failed and "s_per_step" not in failed
