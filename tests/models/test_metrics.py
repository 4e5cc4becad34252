"""Tests for models/metrics.py: PSNR and SSIM against scikit-image, Y conversion, shapes."""

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from models.metrics import psnr, rgb_to_y, ssim


@pytest.fixture
def pair():
    g = torch.Generator().manual_seed(0)
    target = torch.rand(2, 3, 32, 40, generator=g)
    pred = (target + 0.05 * torch.randn(2, 3, 32, 40, generator=g)).clamp(0, 1)
    return pred, target


def test_psnr_matches_skimage(pair):
    pred, target = pair
    ours = psnr(pred, target)
    assert ours.shape == (2,)
    for i in range(2):
        ref = peak_signal_noise_ratio(target[i].numpy(), pred[i].numpy(), data_range=1.0)
        assert ours[i].item() == pytest.approx(ref, abs=1e-3)


def test_ssim_matches_skimage(pair):
    pred, target = pair
    ours = ssim(pred, target)
    for i in range(2):
        ref = structural_similarity(
            target[i].numpy(), pred[i].numpy(), data_range=1.0, channel_axis=0,
            gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
        )
        assert ours[i].item() == pytest.approx(ref, abs=1e-4)


def test_identical_images_are_perfect(pair):
    _, target = pair
    assert torch.allclose(ssim(target, target), torch.ones(2))
    assert (psnr(target, target) > 90).all()


def test_y_channel_matches_bt601():
    rgb = torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1)
    assert rgb_to_y(rgb).item() == pytest.approx((16 + 65.481) / 255)
    assert rgb_to_y(torch.ones(3, 1, 1)).item() == pytest.approx(235 / 255, abs=1e-4)
    assert rgb_to_y(torch.zeros(3, 1, 1)).item() == pytest.approx(16 / 255)


def test_clip_layout_crop_border_and_y(pair):
    pred, target = pair
    clip_p, clip_t = pred.view(1, 2, 3, 32, 40), target.view(1, 2, 3, 32, 40)
    out = psnr(clip_p, clip_t, crop_border=4, y_channel=True)
    assert out.shape == (1, 2)
    ref = peak_signal_noise_ratio(
        rgb_to_y(target[0])[..., 4:-4, 4:-4].numpy(), rgb_to_y(pred[0])[..., 4:-4, 4:-4].numpy(), data_range=1.0
    )
    assert out[0, 0].item() == pytest.approx(ref, abs=1e-3)
    assert ssim(clip_p, clip_t, y_channel=True).shape == (1, 2)


def test_data_range_for_hu_window():
    g = torch.Generator().manual_seed(1)
    target = torch.rand(1, 1, 24, 24, generator=g) * 400 - 160  # HU in the [-160, 240] window
    pred = target + 4 * torch.randn(1, 1, 24, 24, generator=g)
    ref = peak_signal_noise_ratio(target[0, 0].numpy(), pred[0, 0].numpy(), data_range=400)
    assert psnr(pred, target, data_range=400).item() == pytest.approx(ref, abs=1e-3)
    assert 0 < ssim(pred, target, data_range=400).item() < 1


def test_small_images_and_gradients():
    pred = torch.rand(1, 3, 6, 7, requires_grad=True)
    value = ssim(pred, torch.rand(1, 3, 6, 7)).sum()
    value.backward()
    assert np.isfinite(pred.grad.numpy()).all() and pred.grad.abs().sum() > 0


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="shape mismatch"):
        psnr(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 9))
