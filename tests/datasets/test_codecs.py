"""JPEG per frame as a training degradation (datasets/codecs.py); the video codecs are
tests/restore/io/test_memory_video.py."""

import pytest
import torch
import torch.nn.functional as F

from datasets.codecs import jpeg
from models.metrics import psnr


@pytest.fixture(scope="module")
def clip() -> torch.Tensor:
    torch.manual_seed(0)
    smooth = F.interpolate(torch.rand(4, 3, 8, 8), size=(38, 50), mode="bicubic", align_corners=False)
    return (smooth + 0.1 * torch.rand(4, 3, 38, 50)).clamp(0, 1)


def _jpeg_bytes(frame: torch.Tensor, quality: int) -> int:
    from torchvision.io import encode_jpeg

    return encode_jpeg(frame.mul(255).round().to(torch.uint8), quality=quality).numel()


def test_lower_jpeg_quality_gives_smaller_files_and_lower_psnr(clip):
    frames = clip[:2]
    low, high = jpeg(frames, [20, 20]), jpeg(frames, [90, 90])
    assert _jpeg_bytes(frames[0], 20) < _jpeg_bytes(frames[0], 90)
    assert (psnr(low, frames) < psnr(high, frames) - 2).all()
    mixed = jpeg(frames, [20, 90])
    assert torch.equal(mixed[0], low[0]) and torch.equal(mixed[1], high[1])
