"""Tests for the optical-flow alignment of the light decoder's neighbours (models/oasis/alignment.py)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models.oasis import OASIS, PRESETS, OASISConfig
from models.oasis.alignment import aligned_neighbor_frames
from models.oasis.decoder import neighbor_frames


def camera_pan_clip(frames: int, step_hr: int, size: int = 64, scale: int = 4, seed: int = 0) -> torch.Tensor:
    """An LR clip ``(1, T, 3, size, size)``: exact crops of a random smooth HR texture moving
    ``step_hr`` HR pixels right and down per frame, bicubic-downscaled by ``scale``: a motion of
    ``step_hr / scale`` LR pixels, sub-pixel when ``step_hr < scale``."""
    g = torch.Generator().manual_seed(seed)
    hr_size = scale * size + step_hr * frames
    texture = F.avg_pool2d(torch.rand(1, 3, hr_size + 6, hr_size + 6, generator=g), 7, stride=1)
    crops = [texture[..., i * step_hr : i * step_hr + scale * size, i * step_hr : i * step_hr + scale * size]
             for i in range(frames)]
    lr = [F.interpolate(c, scale_factor=1 / scale, mode="bicubic", antialias=True) for c in crops]
    return torch.stack(lr, dim=1).clamp(0, 1)


def test_sub_pixel_motion_is_registered_onto_the_centre_frame():
    clip = camera_pan_clip(frames=3, step_hr=2)  # 0.5 LR pixels per frame
    raw = neighbor_frames(clip, 1)[0, 1].unflatten(0, (3, 3))
    aligned = aligned_neighbor_frames(clip, 1)[0, 1].unflatten(0, (3, 3))
    centre = clip[0, 1]
    inner = (slice(None), slice(4, -4), slice(4, -4))  # away from the replicated borders
    for k in (0, 2):
        raw_error = (raw[k] - centre)[inner].abs().mean()
        aligned_error = (aligned[k] - centre)[inner].abs().mean()
        assert aligned_error < raw_error / 3, (k, float(raw_error), float(aligned_error))
    assert torch.equal(aligned[1], centre)  # frame t is passed as it is


def test_clip_ends_and_still_frames_are_copied_not_resampled():
    clip = camera_pan_clip(frames=2, step_hr=3)
    aligned = aligned_neighbor_frames(clip, 1)
    # frame 0's "t-1" is frame 0 itself (clamped): exactly the frame, as in neighbor_frames
    assert torch.equal(aligned[0, 0, :3], clip[0, 0])
    assert torch.equal(aligned[0, 1, 6:], clip[0, 1])
    assert torch.equal(aligned_neighbor_frames(clip, 0), clip)


def test_network_with_aligned_neighbours_is_built_runs_and_is_bicubic_untrained():
    config = dict(PRESETS["oasis-t"]["config"], decoder_neighbors=1, decoder_alignment="dis")
    model = OASIS.from_config(config).eval()
    clip = camera_pan_clip(frames=3, step_hr=2, size=16)
    with torch.no_grad():
        out = model(clip)
    bicubic = F.interpolate(clip.flatten(0, 1), scale_factor=4, mode="bicubic", align_corners=False)
    assert torch.allclose(out, bicubic.unflatten(0, (1, 3)).clamp(0, 1), atol=1e-5)
    assert OASISConfig.from_dict(model.config.to_dict()).decoder_alignment == "dis"


@pytest.mark.parametrize("overrides, message", [
    ({"decoder_alignment": "raft"}, "decoder_alignment must be one of"),
    ({"decoder_alignment": "dis", "decoder_neighbors": 0}, "needs the light decoder with decoder_neighbors"),
])
def test_config_refuses_alignment_it_cannot_do(overrides, message):
    with pytest.raises(ValueError, match=message):
        OASISConfig(**overrides)


def test_flow_runs_on_the_cpu_copy_whatever_the_dtype():
    clip = camera_pan_clip(frames=3, step_hr=2, size=24).double()
    out = aligned_neighbor_frames(clip, 1)
    assert out.dtype == torch.float64 and np.isfinite(out.numpy()).all()
