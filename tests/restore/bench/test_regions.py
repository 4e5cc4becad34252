"""``restore bench regions`` (restore/bench/regions.py) on a tiny problem."""

from __future__ import annotations

import argparse

import torch

from restore.bench import regions


def test_voronoi_partition_has_every_region():
    labels = regions.voronoi_labels(16, 5, seed=0)
    assert labels.shape == (1, 256) and torch.equal(labels.unique(), torch.arange(5))


def test_run_reports_both_backends():
    parser = argparse.ArgumentParser()
    regions.add_arguments(parser)
    args = parser.parse_args(["--size", "64", "--regions", "6", "--heads", "2", "--head-dim", "8", "--repeats", "1",
                              "--device", "cpu"])
    result = regions.run(args)
    assert result["tokens"] == 256 and result["regions"] == 6 and result["flop_ideal_speedup"] > 1
    assert set(result["backends"]) == {"dense", "bucketed"}  # flex only on CUDA
    bucketed = result["backends"]["bucketed"]
    assert bucketed["ms"] > 0 and bucketed["speedup"] > 0 and "fraction_of_ideal" in bucketed
