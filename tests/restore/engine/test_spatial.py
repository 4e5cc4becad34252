import pytest
import torch
import torch.nn.functional as F

from restore.engine.spatial import TilePlan, run_tiled


def _per_pixel(scale):
    """A per-pixel model: nearest upsampling followed by a pointwise nonlinearity."""

    def model(clip):
        b, t, c, h, w = clip.shape
        up = F.interpolate(clip.reshape(b * t, c, h, w), scale_factor=scale, mode="nearest")
        return torch.sigmoid(3 * up - 1).reshape(b, t, c, h * scale, w * scale)

    return model


@pytest.mark.parametrize("scale", [2, 4])
@pytest.mark.parametrize("size", [(37, 53), (64, 64), (20, 90)])
def test_tile_stitching_is_exact_for_a_per_pixel_model(scale, size):
    torch.manual_seed(0)
    clip = torch.rand(1, 3, 3, *size)
    model = _per_pixel(scale)
    whole = model(clip)
    tiled = run_tiled(model, clip, scale, TilePlan(tile=16, overlap=4))
    assert tiled.shape == whole.shape
    torch.testing.assert_close(tiled, whole, rtol=0, atol=1e-6)


def test_each_tile_sees_all_frames_of_the_chunk():
    seen = []

    def model(clip):
        seen.append(clip.shape)
        return F.interpolate(clip[0], scale_factor=2).unsqueeze(0)

    run_tiled(model, torch.rand(1, 5, 3, 40, 40), 2, TilePlan(tile=16, overlap=4))
    assert len(seen) > 1
    assert all(s[1] == 5 and s[3] <= 16 and s[4] <= 16 for s in seen)


def test_auto_plan_tiles_only_above_the_budget():
    assert TilePlan.auto(8, 270, 480, max_pixels=8 * 270 * 480).tile == 0
    plan = TilePlan.auto(8, 1080, 1920, max_pixels=1_000_000)
    assert 0 < plan.tile and 8 * plan.tile**2 <= 1_000_000 and plan.tile % 16 == 0


def test_bad_tile_settings_are_refused():
    with pytest.raises(ValueError):
        TilePlan(tile=16, overlap=16)
