"""Tests for models/losses.py: pixel, SSIM, frequency, perceptual and adversarial losses."""

import pytest
import torch
import torch.nn.functional as F

from models.losses import (
    PatchDiscriminator,
    PerceptualLoss,
    charbonnier_loss,
    excluded_modules,
    frequency_loss,
    gan_loss,
    ssim_loss,
    temporal_difference_loss,
)


def test_charbonnier_is_eps_at_zero_and_near_l1():
    x = torch.rand(2, 3, 8, 8)
    assert charbonnier_loss(x, x, eps=1e-3).item() == pytest.approx(1e-3)
    y = x + 0.5
    assert charbonnier_loss(x, y).item() == pytest.approx(F.l1_loss(x, y).item(), rel=1e-4)


def test_ssim_loss_zero_for_identical_and_positive_otherwise():
    x = torch.rand(1, 2, 3, 16, 16)  # a clip works too
    assert ssim_loss(x, x).item() == pytest.approx(0.0, abs=1e-6)
    assert ssim_loss(x, torch.rand_like(x)).item() > 0.5


def test_temporal_difference_loss_penalises_flicker_not_a_steady_error():
    still = torch.rand(1, 1, 3, 16, 16).expand(2, 6, 3, 16, 16)  # a clip that holds still
    sign = torch.tensor([1.0, -1.0]).repeat(3).view(1, 6, 1, 1, 1)
    steady, flicker = still + 0.1, still + 0.1 * sign  # the same error in every frame
    assert charbonnier_loss(steady, still).item() == pytest.approx(charbonnier_loss(flicker, still).item())
    assert temporal_difference_loss(steady, still).item() == pytest.approx(1e-3, abs=1e-6)
    assert temporal_difference_loss(flicker, still).item() == pytest.approx(0.2, rel=1e-3)
    assert temporal_difference_loss(flicker[:, :1], still[:, :1]).item() == 0.0


def test_frequency_loss_penalises_blur_more_than_l1_does():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, 32, 32, generator=g)
    blurred = F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
    shifted = x + (blurred - x).abs().mean()  # same L1 error, but a flat (DC-only) one
    assert F.l1_loss(blurred, x).item() == pytest.approx(F.l1_loss(shifted, x).item(), rel=1e-5)
    assert frequency_loss(blurred, x) > frequency_loss(shifted, x)
    assert frequency_loss(x, x).item() == 0.0


def test_perceptual_loss_from_local_checkpoint(tmp_path):
    torch.manual_seed(0)
    # a checkpoint holding just the first VGG19 block is enough for relu1_2
    state = {
        "features.0.weight": torch.randn(64, 3, 3, 3) * 0.1, "features.0.bias": torch.zeros(64),
        "features.2.weight": torch.randn(64, 64, 3, 3) * 0.05, "features.2.bias": torch.zeros(64),
    }
    path = tmp_path / "vgg19.pth"
    torch.save(state, path)
    loss_fn = PerceptualLoss(path, layers={"relu1_2": 1.0}).train()
    assert not loss_fn.features.training
    assert torch.equal(loss_fn.features[0].weight, state["features.0.weight"])
    x = torch.rand(2, 3, 16, 16, requires_grad=True)
    assert loss_fn(x.detach(), x.detach()).item() == 0.0
    loss = loss_fn(x, torch.rand(2, 3, 16, 16))
    loss.backward()
    assert loss.item() > 0 and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in loss_fn.parameters())
    holder = torch.nn.ModuleDict({"perceptual": loss_fn, "conv": torch.nn.Conv2d(3, 3, 1)})
    assert list(holder.state_dict()) == ["conv.weight", "conv.bias"]  # the VGG stays out
    assert excluded_modules(holder) == [loss_fn]  # what FSDP is told to ignore


def test_perceptual_loss_missing_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="vgg.pth"):
        PerceptualLoss(tmp_path / "vgg.pth")


def test_discriminator_and_gan_loss_train_apart_real_and_fake():
    torch.manual_seed(0)
    disc = PatchDiscriminator(channels=(8, 16))
    real, fake = torch.rand(4, 3, 16, 16) * 0.2 + 0.8, torch.rand(4, 3, 16, 16) * 0.2
    assert disc(real).shape == (4, 1, 4, 4)
    opt = torch.optim.Adam(disc.parameters(), lr=1e-2)
    for _ in range(20):
        opt.zero_grad()
        loss = gan_loss(disc(real), True) + gan_loss(disc(fake), False)
        loss.backward()
        opt.step()
    assert disc(real).mean() > disc(fake).mean()
    assert gan_loss(torch.tensor([50.0]), True).item() == pytest.approx(0.0, abs=1e-6)
    assert gan_loss(torch.tensor([0.0]), False).item() == pytest.approx(torch.log(torch.tensor(2.0)).item())
