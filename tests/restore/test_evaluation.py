"""Evaluation protocols (restore/evaluation.py): BI degradation, SR metrics, warping error, CT metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from restore.evaluation import (
    ImresizeBicubic,
    bicubic_downscale,
    bm3d_denoise,
    ct_metrics,
    evaluate_clip,
    evaluate_image,
    mod_crop,
    quantize,
    super_resolve,
    synthetic_clip,
    tune_on_clean,
    warping_error,
)


class Oracle(nn.Module):
    """A "model" that returns a fixed HR clip and records the LR it was given."""

    temporal_window = 1

    def __init__(self, hr: torch.Tensor):
        super().__init__()
        self.hr, self.inputs = hr, []

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        self.inputs.append(lr)
        return self.hr[None, None].expand(lr.shape[0], lr.shape[1], -1, -1, -1)


def _image(h: int = 34, w: int = 43, seed: int = 0) -> torch.Tensor:
    return synthetic_clip(1, h, w, seed=seed)[0]


def test_bicubic_downscale_is_8bit_antialiased_and_needs_multiples():
    hr = mod_crop(_image(), 4)
    assert hr.shape[-2:] == (32, 40)
    lr = bicubic_downscale(hr, 4)
    assert lr.shape == (3, 8, 10)
    assert torch.equal(lr * 255, (lr * 255).round())
    # antialiasing: a one-pixel checkerboard averages out instead of aliasing into a pattern
    checker = (torch.arange(32)[:, None] + torch.arange(32)[None]) % 2
    flat = bicubic_downscale(checker.float().expand(3, -1, -1), 4)
    assert flat.std() < 2 / 255 and abs(float(flat.mean()) - 0.5) < 2 / 255
    with pytest.raises(ValueError, match="mod_crop"):
        bicubic_downscale(_image(), 4)


def test_evaluate_image_feeds_the_protocol_lr_and_shaves_the_border():
    hr = _image()
    oracle = Oracle(mod_crop(hr, 4))
    perfect = evaluate_image(oracle, hr, 4)
    assert perfect["psnr"] > 99 and perfect["ssim"] == pytest.approx(1.0)
    torch.testing.assert_close(oracle.inputs[0][0, 0], bicubic_downscale(mod_crop(hr, 4), 4))
    # errors confined to the shaved border do not count; one pixel further in, they do
    border = mod_crop(hr, 4).clone()
    border[:, :4] = 0
    assert evaluate_image(Oracle(border), hr, 4)["psnr"] > 99
    border[:, 4] = 0
    assert evaluate_image(Oracle(border), hr, 4)["psnr"] < 40


def test_imresize_bicubic_differs_from_torch_default_but_keeps_constants():
    lr = torch.rand(1, 1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    from models.bicubic import Bicubic

    assert not torch.allclose(ImresizeBicubic(4)(lr), Bicubic()(lr))
    flat = torch.full((1, 1, 3, 8, 8), 0.3)
    torch.testing.assert_close(ImresizeBicubic(4)(flat), torch.full((1, 1, 3, 32, 32), 0.3))


def test_super_resolve_chunks_as_restore_upscale_does():
    """T=1 is one frame per call; the temporal mode runs the window in overlapping chunks
    (a quarter of the window) cross-faded at the seams, as ``restore upscale`` does by default."""
    class Window(nn.Module):
        def __init__(self, window: int):
            super().__init__()
            self.temporal_window, self.sizes = window, []

        def forward(self, x):
            self.sizes.append(x.shape[1])
            return x + len(self.sizes) - 1  # each call offset by its index: seams show in the output

    clip = torch.zeros(5, 3, 4, 4)
    model = Window(4)  # chunk 4, overlap 1: frames 0-3, then 3-4
    out = super_resolve(model, clip, temporal=True)
    assert model.sizes == [4, 2]
    assert out[:, 0, 0, 0].tolist() == [0.0, 0.0, 0.0, 0.5, 1.0]  # frame 3 faded half-way
    model = Window(2)  # a window too short for an overlap: plain chunks
    assert torch.equal(super_resolve(model, clip, temporal=True)[:, 0, 0, 0], torch.tensor([0.0, 0, 1, 1, 2]))
    model.sizes.clear()
    super_resolve(model, clip, temporal=False)
    assert model.sizes == [1] * 5


def test_warping_error_separates_steady_from_flickering_clips():
    clip = synthetic_clip(4, 48, 64, seed=1)
    steady = warping_error(clip, clip)
    flicker = (clip + torch.tensor([0.0, 0.08, -0.08, 0.08]).view(4, 1, 1, 1)).clamp(0, 1)
    assert steady < 2e-3
    assert warping_error(flicker, clip) > 3 * steady + 3e-3
    with pytest.raises(ValueError, match="2 frames"):
        warping_error(clip[:1], clip[:1])


def test_synthetic_clip_is_deterministic_and_moving():
    a, b = synthetic_clip(3, 24, 32, seed=5), synthetic_clip(3, 24, 32, seed=5)
    assert a.shape == (3, 3, 24, 32) and torch.equal(a, b)
    assert (a[1] - a[0]).abs().mean() > 0.01  # frames differ: the scene pans


def test_evaluate_clip_reports_frame_metrics_and_warp_error():
    hr = synthetic_clip(3, 32, 48, seed=2)
    metrics = evaluate_clip(ImresizeBicubic(4), hr, 4, temporal=True)
    assert set(metrics) == {"psnr", "ssim", "warp_error"}
    assert 15 < metrics["psnr"] < 60 and 0 < metrics["ssim"] < 1 and metrics["warp_error"] >= 0


def test_degrade_lr_is_seeded_noise_or_a_real_h264_round_trip():
    from restore.evaluation import degrade_lr

    lr = synthetic_clip(3, 32, 48)
    noisy = degrade_lr(lr, "noise:10", seed=1)
    assert torch.equal(noisy, degrade_lr(lr, "noise:10", seed=1)) and not torch.equal(noisy, degrade_lr(lr, "noise:10", seed=2))
    assert abs(float((noisy - lr).std()) * 255 - 10) < 1.5 and torch.equal(noisy, quantize(noisy))
    light, heavy = degrade_lr(lr, "h264:18"), degrade_lr(lr, "h264:45")
    assert light.shape == lr.shape and float((heavy - lr).abs().mean()) > float((light - lr).abs().mean())
    with pytest.raises(ValueError, match="known: noise:N"):
        degrade_lr(lr, "h264")


def test_ct_metrics_only_see_the_window():
    clean = np.full((16, 16), 40.0, np.float32)
    clean[:, :8] = -900.0  # air, outside [-160, 240]
    pred = clean.copy()
    pred[:, :8] = -500.0  # differs only where both clip to -160
    assert ct_metrics(pred, clean)["psnr"] > 150
    pred[0, 12] += 40.0
    assert ct_metrics(pred, clean)["psnr"] < 60


def test_tune_on_clean_keeps_the_best_parameter():
    clean = np.linspace(-100, 200, 64, dtype=np.float32).reshape(8, 8)
    best = tune_on_clean(lambda x, p: x * p, clean * 2, clean, [0.25, 0.5, 1.0])
    assert best.param == 0.5 and [p for p, _ in best.tried] == [0.25, 0.5, 1.0]
    np.testing.assert_allclose(best.output, clean)


def test_bm3d_reduces_noise_in_hu():  # bm3d comes with the bench extra, which `make test` installs
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:32, :32]
    clean = np.where((yy - 16) ** 2 + (xx - 16) ** 2 < 100, 60.0, -20.0).astype(np.float32)
    noisy = (clean + rng.normal(0, 30, clean.shape)).astype(np.float32)
    out = bm3d_denoise(noisy, 30.0)
    assert out.shape == clean.shape and out.dtype == np.float32
    assert ct_metrics(out, clean)["psnr"] > ct_metrics(noisy, clean)["psnr"] + 3


def test_flat_tissue_phantom_measures_an_offset_and_not_blur():
    from scipy.ndimage import gaussian_filter

    from restore.evaluation import flat_tissue_phantom, hu_bias

    clean = flat_tissue_phantom(256)
    blurred = hu_bias(gaussian_filter(clean, 1.0), clean, erosion=6)
    assert set(blurred) >= {"air", "fat", "soft tissue"}
    assert max(abs(blurred["fat"]), abs(blurred["soft tissue"])) < 0.5  # smoothing leaves flat interiors alone
    shifted = hu_bias(clean + 3.0, clean, erosion=6)
    assert abs(shifted["fat"] - 3.0) < 1e-3 and abs(shifted["soft tissue"] - 3.0) < 1e-3
    # a scalp: 5 px of fat between skin and bone; the same blur reads as a positive "bias"
    scalp = np.full((64, 64), 40.0, np.float32)
    scalp[:, 30:35], scalp[:, 35:40] = -100.0, 1000.0
    assert hu_bias(gaussian_filter(scalp, 1.0), scalp, tissues={"fat": (-120.0, -60.0)}, erosion=2)["fat"] > 4


def test_band_rmse_counts_noise_that_the_mean_error_hides():
    from restore.evaluation import flat_tissue_phantom, hu_band_rmse, hu_bias

    clean = flat_tissue_phantom(128)
    noisy = clean + np.random.default_rng(0).normal(0.0, 10.0, clean.shape)
    rmse, bias = hu_band_rmse(noisy, clean), hu_bias(noisy, clean)
    assert set(rmse) >= {"air", "soft tissue", "bone"}
    for band in rmse:
        assert 9.0 < rmse[band] < 11.0
    # the bone rim is thinner than the erosion hu_bias applies: rmse keeps the edges in
    assert "bone" not in bias and all(abs(v) < 2.0 for v in bias.values())
    assert hu_band_rmse(clean + 3.0, clean)["soft tissue"] == pytest.approx(3.0)
