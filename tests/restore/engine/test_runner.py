"""restore.engine.runner: integer frames in, the same integer type out, whole or streamed in chunks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from restore.engine import ChunkPlan, FrameRunner


class _Nearest(nn.Module):
    """x2 nearest-neighbour upscaling: its exact output is known for any input."""

    scale = 2

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        b, t, c, h, w = clip.shape
        return F.interpolate(clip.reshape(b * t, c, h, w), scale_factor=2, mode="nearest").reshape(b, t, c, 2 * h, 2 * w)


def _runner() -> FrameRunner:
    return FrameRunner(_Nearest(), torch.device("cpu"), torch.float32)


def _frames(n: int, dtype: torch.dtype, channels: int = 3) -> list[torch.Tensor]:
    peak = 255 if dtype == torch.uint8 else 65535
    g = torch.Generator().manual_seed(0)
    return [torch.randint(0, peak + 1, (5, 7, channels), generator=g, dtype=torch.int32).to(dtype) for _ in range(n)]


def _nearest(frame: torch.Tensor) -> torch.Tensor:
    return frame.repeat_interleave(2, dim=0).repeat_interleave(2, dim=1)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.uint16])
@pytest.mark.parametrize("channels", [1, 3])
def test_frames_come_back_in_the_type_they_went_in(dtype, channels):
    frames = _frames(3, dtype, channels)
    out = _runner()(frames)
    assert out.dtype == dtype and out.shape == (3, 10, 14, channels)
    assert all(torch.equal(o, _nearest(f)) for o, f in zip(out, frames))


def test_alpha_skips_the_model_and_is_kept():
    frame = _frames(1, torch.uint8, 4)[0]
    frame[..., 3] = 200  # a uniform alpha stays uniform through bicubic interpolation
    out = _runner()([frame])[0]
    assert out.shape == (10, 14, 4) and torch.equal(out[..., :3], _nearest(frame[..., :3])) and (out[..., 3] == 200).all()


def test_stream_gives_every_chunk_in_the_input_type_and_skips_what_is_not_needed():
    frames = _frames(10, torch.uint16)
    chunks = list(_runner().stream([(f, 3 * i) for i, f in enumerate(frames)], ChunkPlan(4, 1), needs=lambda c: c != 1))
    assert [c.index for c in chunks] == [0, 1, 2] and chunks[1].frames is None
    kept = [f for c in chunks if c.frames is not None for f in c.frames]
    expected = [_nearest(f) for i, f in enumerate(frames) if not 3 <= i < 6]  # chunk 1 finalises frames 3-5
    assert all(c.frames.dtype == torch.uint16 for c in chunks if c.frames is not None)
    assert len(kept) == len(expected) and all(torch.equal(a, b) for a, b in zip(kept, expected))
    assert [p for c in chunks for p in c.pts] == [3 * i for i in range(10)]
