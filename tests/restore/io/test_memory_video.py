"""Video codecs in memory (restore/io/memory_video.py)."""

import pytest
import torch
import torch.nn.functional as F

from models.metrics import psnr
from restore.io.memory_video import compress_clip


@pytest.fixture(scope="module")
def clip() -> torch.Tensor:
    torch.manual_seed(0)
    smooth = F.interpolate(torch.rand(4, 3, 8, 8), size=(38, 50), mode="bicubic", align_corners=False)
    return (smooth + 0.1 * torch.rand(4, 3, 38, 50)).clamp(0, 1)


@pytest.mark.parametrize("codec", ["libx264", "libx265"])
def test_higher_crf_gives_smaller_files_and_lower_psnr(clip, codec):
    good, good_bytes = compress_clip(clip, codec, crf=15)
    bad, bad_bytes = compress_clip(clip, codec, crf=40)
    assert good.shape == clip.shape == bad.shape
    assert bad_bytes < good_bytes
    assert psnr(bad, clip).mean() < psnr(good, clip).mean() - 1


def test_mpeg4_bitrate_and_determinism(clip):
    low, low_bytes = compress_clip(clip, "mpeg4", bitrate=10_000)
    high, high_bytes = compress_clip(clip, "mpeg4", bitrate=400_000)
    assert low_bytes < high_bytes and psnr(low, clip).mean() < psnr(high, clip).mean()
    again, again_bytes = compress_clip(clip, "mpeg4", bitrate=10_000)
    assert torch.equal(again, low) and again_bytes == low_bytes


def test_rejects_unknown_codec_and_ambiguous_rate(clip):
    with pytest.raises(ValueError, match="unknown video codec"):
        compress_clip(clip, "vp9", crf=30)
    with pytest.raises(ValueError, match="exactly one"):
        compress_clip(clip, "libx264", crf=30, bitrate=1000)
