"""Focal region loss and total loss (models/rat/losses.py)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from models.rat.losses import RATLossWeights, focal_region_loss, focal_region_weight, rat_loss


def _batch():
    g = torch.Generator().manual_seed(0)
    pred = torch.rand(2, 3, 8, 8, generator=g, requires_grad=True)
    target = torch.rand(2, 3, 8, 8, generator=g)
    regions = torch.zeros(2, 8, 8, dtype=torch.long)
    regions[:, :, 4:] = 1
    return pred, target, regions


def test_beta_zero_is_l1():
    pred, target, regions = _batch()
    assert focal_region_loss(pred, target, regions, beta=0.0).item() == pytest.approx(F.l1_loss(pred, target).item())


def test_worst_region_weighs_more():
    pred = torch.zeros(1, 1, 4, 4)
    target = torch.zeros(1, 1, 4, 4)
    target[..., :2] = 1.0  # region 0 entirely wrong by 1, region 1 wrong by 0.1
    target[..., 2:] = 0.1
    regions = torch.zeros(1, 4, 4, dtype=torch.long)
    regions[..., 2:] = 1
    beta = 0.5
    # w = 1 for region 0 and 0.1 for region 1 (region means normalised by the max)
    expected = (8 * 1.0 * (1 + beta * 1.0) + 8 * 0.1 * (1 + beta * 0.1)) / 16
    assert focal_region_loss(pred, target, regions, beta).item() == pytest.approx(expected)


def test_mean_normalization_keeps_the_spread_a_tiny_worst_region_collapses():
    # one pixel off by 1 (its own region), the rest off by 0.1 in two regions of 0.1 and 0.3
    pred = torch.zeros(1, 1, 4, 4)
    target = torch.full((1, 1, 4, 4), 0.1)
    target[..., 2:] = 0.3
    target[0, 0, 0, 0] = 1.0
    regions = torch.zeros(1, 4, 4, dtype=torch.long)
    regions[..., 2:] = 1
    regions[0, 0, 0] = 2
    e = (pred - target).abs()
    by_max = focal_region_weight(e, regions, "max")
    by_mean = focal_region_weight(e, regions, "mean")
    assert by_mean.mean().item() == pytest.approx(1.0)  # pixel-weighted mean of region means = mean error
    assert by_mean[0, 0, 1, 3].item() == pytest.approx(0.3 / e.mean().item())
    # the worst pixel squeezes the max-normalised weights of the large regions to 0.1 and 0.3;
    # normalised by the mean, the worse large region still weighs 3x the other, and far more than 1
    assert by_max[0, 0, 1, 3].item() == pytest.approx(0.3)
    cv = lambda w: ((1 + w).std() / (1 + w).mean()).item()
    assert cv(by_mean) > 2 * cv(by_max)
    with pytest.raises(ValueError, match="unknown focal normalization"):
        focal_region_weight(e, regions, "median")


def test_rat_loss_logs_the_pixel_weight_spread():
    pred, target, regions = _batch()
    parts = rat_loss(pred, target, regions, {}, RATLossWeights(beta=1.0, focal_normalization="mean"))
    w = focal_region_weight((pred - target).abs(), regions, "mean")
    assert parts["focal_weight_cv"].item() == pytest.approx(((1 + w).std() / (1 + w).mean()).item())
    assert parts["loss"].item() == pytest.approx(focal_region_loss(pred, target, regions, 1.0, "mean").item())
    assert "focal_weight_cv" not in rat_loss(pred, target, regions, {}, RATLossWeights(beta=0.0))


def test_weights_are_detached_and_sr_regions_resized():
    pred, target, regions = _batch()
    small = regions[:, ::2, ::2]  # partition of an input at half the size (SR)
    focal_region_loss(pred, target, small, beta=1.0).backward()
    l1 = pred.grad.clone()
    pred.grad = None
    # with a detached w the gradient is sign(e) * (1 + beta * w) / N: bounded by 2 / N
    assert l1.abs().max() <= 2 / pred.numel() + 1e-9
    assert l1.abs().min() >= 1 / pred.numel() - 1e-9


def test_total_loss_uses_weights():
    pred, target, regions = _batch()
    aux = {"guidance": torch.tensor(2.0), "reconstruction": torch.tensor(3.0)}
    parts = rat_loss(pred, target, regions, aux, RATLossWeights(beta=0.0, guidance=0.25, reconstruction=0.1))
    assert parts["loss"].item() == pytest.approx(F.l1_loss(pred, target).item() + 0.5 + 0.3)
    assert set(parts) == {"loss", "focal", "guidance", "reconstruction"}


def test_per_scale_supervision_compares_each_scale_with_the_pooled_target():
    pred, target, regions = _batch()
    coarse = F.avg_pool2d(target, 4)
    aux = {"scales": [coarse + 0.5, coarse.clone()]}  # one scale off by 0.5, one exact
    parts = rat_loss(pred, target, regions, aux, RATLossWeights(beta=0.0, scales=2.0))
    assert parts["scales"].item() == pytest.approx(0.25)
    assert parts["loss"].item() == pytest.approx(F.l1_loss(pred, target).item() + 2.0 * 0.25)
    assert "scales" not in rat_loss(pred, target, regions, aux, RATLossWeights(beta=0.0))  # weight 0: off
