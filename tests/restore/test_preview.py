"""restore.preview: pictures of inputs and of what the models attend to."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from restore.errors import InputError
from restore.preview import (
    WINDOW_PRESETS,
    head_attention,
    heat_overlay,
    partition_overlay,
    rat_regions,
    read_frame,
    to_rgb8,
    window_to_rgb,
)
from restore.registry import build_model, get_entry


def test_window_maps_level_and_width_to_gray():
    level, width = WINDOW_PRESETS["soft tissue"]
    hu = np.array([[level - width, level, level + width]], dtype=np.float32)
    rgb = window_to_rgb(hu, level, width)
    assert rgb.shape == (1, 3, 3) and rgb.dtype == np.uint8
    assert rgb[0, :, 0].tolist() == [0, 128, 255]
    with pytest.raises(ValueError):
        window_to_rgb(hu, 0, 0)


def test_to_rgb8_scales_16_bit():
    assert to_rgb8(np.array([[0, 65535]], dtype=np.uint16))[0, :, 1].tolist() == [0, 255]


def test_partition_overlay_draws_boundaries_between_regions():
    image = np.zeros((8, 8, 3), dtype=np.uint8)
    labels = np.zeros((8, 8), dtype=np.int32)
    labels[:, 4:] = 1
    out = partition_overlay(image, labels)
    assert (out[:, 3] == 255).all() or (out[:, 4] == 255).all()  # the edge is white
    assert (out[:, 0] < 255).any() and (out[:, 7] < 255).any()  # inside is not
    assert not (out[:, 0] == out[:, 7]).all()  # regions get different colours


def test_heat_overlay_keeps_image_size():
    assert heat_overlay(np.zeros((16, 12, 3), np.uint8), np.eye(4)).shape == (16, 12, 3)


def test_read_frame_past_the_end_names_the_file(tmp_path):
    from restore.io.samples import make_sample_video

    clip = make_sample_video(tmp_path / "c.mp4", frames=3, width=32, height=32, audio=False)
    assert read_frame(clip, 2).shape == (32, 32, 3)
    with pytest.raises(InputError, match="c.mp4.*3 frames"):
        read_frame(clip, 5)


@pytest.fixture(scope="module")
def oasis():
    torch.manual_seed(0)
    return build_model("oasis", get_entry("oasis-t").config).eval()


def test_head_attention_is_a_distribution_inside_the_heads_group(oasis):
    clip = torch.rand(1, 4, 3, 16, 16)
    routing = [m.routing for m in oasis.modules() if hasattr(m, "qk_observer")]
    for layer, heads in enumerate(routing):
        for head, group in enumerate(heads):
            attention = head_attention(oasis, clip, layer, head, (1, 5, 7))
            assert attention.shape == (4, 4, 4) and torch.isclose(attention.sum(), torch.tensor(1.0))
            support = int((attention > 0).sum())
            assert support == {"global": 64, "intra": 16, "window": 27}[group]
            if group == "intra":  # only the query's own frame
                assert attention[1].sum() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="out of range"):
        head_attention(oasis, clip, 9, 0, (0, 0, 0))


def test_rat_regions_follow_the_bottleneck_grid():
    rat = build_model("rat", get_entry("rat-t").config).eval()
    regions = np.zeros((30, 40), dtype=np.int32)
    regions[:, 20:] = 1
    tokens = rat_regions(rat, np.zeros((30, 40), np.float32), regions)
    levels = len(rat.config.enc_depths)
    assert tokens.shape == (32 // 2**levels, 40 // 2**levels)
    assert set(np.unique(tokens)) == {0, 1} and tokens[0, 0] != tokens[0, -1]


def test_zoom_comparison_puts_three_magnified_crops_side_by_side():
    from restore.preview import resize_bicubic, zoom_comparison

    lr = np.random.default_rng(0).integers(0, 256, (16, 20, 3), dtype=np.uint8)
    before = resize_bicubic(lr, (64, 80))
    after = before.copy()
    out = zoom_comparison(lr, before, after, crop=32, zoom=2)
    assert out.shape == (64, 3 * 64 + 8, 3) and out.dtype == np.uint8
    assert np.array_equal(out[:, -64:], np.repeat(np.repeat(after[16:48, 24:56], 2, 0), 2, 1))


def test_routing_grid_colours_each_head_by_its_group():
    from restore.preview import ROUTING_COLOURS, routing_grid

    grid = routing_grid([["global", "window"], ["intra", "window"]], cell=10)
    assert grid.shape == (21, 21, 3)
    assert tuple(grid[5, 5]) == ROUTING_COLOURS["global"] and tuple(grid[15, 5]) == ROUTING_COLOURS["intra"]
    assert tuple(grid[15, 15]) == ROUTING_COLOURS["window"]


def test_modality_window_prefers_the_files_own_window():
    from restore.preview import WINDOW_PRESETS, modality_window

    mr = np.linspace(0, 2000, 100, dtype=np.float32).reshape(10, 10)
    assert modality_window(mr, "MR", (600.0, 1600.0)) == (600.0, 1600.0)
    assert modality_window(mr, "CT") == WINDOW_PRESETS["soft tissue"]
    level, width = modality_window(mr, "MR")
    assert 900 < level < 1100 and width > 1800  # the percentile range, not a CT window
