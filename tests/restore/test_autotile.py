"""The automatic tile: timed candidates on the model itself, cached, recorded with the segments."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from torch import nn

import cli
from restore import autotile
from restore.autotile import TileTrial, candidate_tiles, choose_tiles, tiles_per_frame
from restore.engine import FrameRunner, TilePlan, run_tiled
from restore.io.samples import make_sample_video
from restore.segments import SegmentSink


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class AttentionLikeModel(nn.Module):
    """x2 nearest upscaling whose "cost" grows with the square of the pixels of a call, plus a
    fixed cost per call: the U-shape of a model with clip-wide attention, on a fake clock."""

    scale = 2

    def __init__(self, clock: FakeClock):
        super().__init__()
        self.clock = clock
        self.calls: list[tuple[int, ...]] = []

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        self.calls.append(tuple(clip.shape))
        self.clock.now += 0.05 + (clip[0].numel() / 3) ** 2 * 1e-11
        return clip.repeat_interleave(2, dim=-1).repeat_interleave(2, dim=-2)


def _runner(model: nn.Module, max_pixels: int = 1 << 30) -> FrameRunner:
    return FrameRunner(model, torch.device("cpu"), torch.float32, None, max_pixels)


def test_the_count_of_tiles_is_the_sliding_windows():
    calls = []

    def model(clip: torch.Tensor) -> torch.Tensor:
        calls.append(clip.shape)
        return clip.repeat_interleave(2, dim=-1).repeat_interleave(2, dim=-2)

    for tile, (h, w) in [(128, (300, 500)), (64, (300, 500)), (256, (90, 700)), (0, (300, 500))]:
        calls.clear()
        run_tiled(model, torch.rand(1, 2, 3, h, w), 2, TilePlan(tile, 16))
        assert len(calls) == tiles_per_frame(h, w, tile, 16), (tile, h, w)


def test_candidates_stay_within_the_pixel_budget():
    assert candidate_tiles(8, 32, 48, 8 * 1920 * 1080, 16) == [0], "a small frame is never tiled"
    assert candidate_tiles(8, 720, 1280, 8 * 1920 * 1080, 16) == [64, 128, 256, 512, 1024, 0]
    # whole frames over the budget are no candidate; the budget's own side is
    budget = 8 * 300 * 300
    sides = candidate_tiles(8, 720, 1280, budget, 16)
    assert 0 not in sides and TilePlan.auto(8, 720, 1280, budget).tile in sides
    assert all(8 * min(s, 720) * min(s, 1280) <= budget for s in sides)


def test_the_fastest_tile_is_chosen_and_larger_ones_are_not_tried():
    clock = FakeClock()
    model = AttentionLikeModel(clock)
    plan = choose_tiles(_runner(model), 2, 300, 500, overlap=16, clock=clock)
    expected = {t: (0.05 + (2 * min(t, 300) * t) ** 2 * 1e-11) * tiles_per_frame(300, 500, t, 16) / 2 for t in (64, 128, 256)}
    assert plan == TilePlan(min(expected, key=expected.get), 16) == TilePlan(128, 16)
    tried = {shape[-1] for shape in model.calls}
    assert tried == {64, 128, 256}, "stops at the first slower candidate: 512 and the whole frame never run"


def test_the_choice_is_timed_once_per_model_and_frame_size():
    clock = FakeClock()
    model = AttentionLikeModel(clock)
    runner = _runner(model)
    first = choose_tiles(runner, 2, 300, 500, clock=clock)
    calls = len(model.calls)
    assert choose_tiles(runner, 2, 300, 500, clock=clock) == first
    assert len(model.calls) == calls, "cached"
    choose_tiles(runner, 2, 200, 500, clock=clock)
    assert len(model.calls) > calls, "another frame size is timed"


def test_running_out_of_memory_in_a_trial_keeps_the_best_so_far(monkeypatch):
    clock = FakeClock()
    model = AttentionLikeModel(clock)
    forward = model.forward

    def limited(clip: torch.Tensor) -> torch.Tensor:
        if clip.shape[-1] > 64:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return forward(clip)

    monkeypatch.setattr(model, "forward", limited)
    assert choose_tiles(_runner(model), 2, 300, 500, clock=clock) == TilePlan(64, 16)


def _frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def test_the_chosen_tile_is_recorded_and_reused_on_resume(tmp_path, monkeypatch):
    # before: the tile came from the pixel budget for each chunk, and was recorded as `null`
    clip = make_sample_video(tmp_path / "clip.mp4", frames=24, width=160, height=96, audio=False)
    common = ["--scale", "2", "--codec", "ffv1", "--segment-frames", "8", "--tile-overlap", "8", "-q"]
    reference = tmp_path / "reference.mkv"
    assert cli.main(["upscale", str(clip), "-o", str(reference), *common, "--tile", "64"]) == 0

    out = tmp_path / "out.mkv"
    monkeypatch.setattr(autotile, "time_tiles", lambda *a, **k: [TileTrial(64, 1.0), TileTrial(0, 2.0)])
    commit = SegmentSink.commit

    def interrupted_after_one(self, index):
        commit(self, index)
        raise KeyboardInterrupt

    monkeypatch.setattr(SegmentSink, "commit", interrupted_after_one)
    assert cli.main(["upscale", str(clip), "-o", str(out), *common]) == 130
    state = json.loads((tmp_path / ".out.mkv.restore-partial" / "state.json").read_text())
    assert state["tile"] == 64

    monkeypatch.setattr(SegmentSink, "commit", commit)
    # timings of the resumed run would choose whole frames: the recorded tile wins
    monkeypatch.setattr(autotile, "time_tiles", lambda *a, **k: [TileTrial(0, 1.0), TileTrial(64, 2.0)])
    assert cli.main(["upscale", str(clip), "-o", str(out), *common, "--resume"]) == 0
    a, b = _frames(reference), _frames(out)
    assert len(a) == len(b) == 24
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


def test_a_given_tile_is_not_timed(tmp_path, monkeypatch):
    clip = make_sample_video(tmp_path / "clip.mp4", frames=4, width=160, height=96, audio=False)

    def never(*args, **kwargs):
        pytest.fail("--tile given: nothing to time")

    monkeypatch.setattr(autotile, "time_tiles", never)
    assert cli.main(["upscale", str(clip), "-o", str(tmp_path / "o.mp4"), "--scale", "2", "--tile", "96", "-q"]) == 0
