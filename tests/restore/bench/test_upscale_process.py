"""The fresh-process `restore upscale` runner of restore bench io and scale
(restore/bench/upscale_process.py), and the LR size options every video benchmark takes
(restore/bench/__init__.py)."""

from __future__ import annotations

import argparse

import pytest

from restore.bench import add_lr_size_arguments, io, lr_size
from restore.bench.upscale_process import run_upscale_process
from restore.io.samples import make_sample_video


def test_lr_size_options_parse_wxh_and_name_the_option_when_wrong():
    parser = argparse.ArgumentParser()
    add_lr_size_arguments(parser, "160x90")
    args = parser.parse_args([])
    assert (args.size, args.scale, lr_size(args.size)) == ("160x90", 4, (160, 90))
    for bad in ("48", "48xA", "0x10"):
        with pytest.raises(SystemExit, match="--size"):
            lr_size(bad)


def test_a_run_reports_its_time_memory_and_report_and_a_failure_its_stderr(tmp_path):
    clip = make_sample_video(tmp_path / "clip.mp4", frames=4, width=32, height=18)
    run = run_upscale_process(clip, tmp_path / "out.mp4", ["--model", "bicubic"])
    assert (tmp_path / "out.mp4").is_file() and run["seconds"] > 0 and run["peak_rss_mb"] > 10
    assert [r["status"] for r in run["report"]["inputs"]] == ["ok"]
    with pytest.raises(RuntimeError, match="missing.mp4"):
        run_upscale_process(tmp_path / "missing.mp4", tmp_path / "out2.mp4", ["--model", "bicubic"])


def test_bench_io_times_the_job_and_compares_peak_memory_of_short_and_long_clips():
    parser = argparse.ArgumentParser()
    io.add_arguments(parser)
    results = io.run(parser.parse_args(["--frames", "4", "--factor", "2", "--size", "32x18"]))
    assert results["short"]["frames"] == 4 and results["long"]["frames"] == 8
    assert 0.5 < results["peak_rss_ratio_long_over_short"] < 2
    # the job's own seconds (from its report), not the process start-up: a few frames take well under it
    assert results["short"]["seconds"] < 5
