"""RAT training losses: the focal region loss and the weighted total with the MSGA guidance terms."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

FocalNormalization = Literal["max", "mean"]


def focal_region_weight(error: torch.Tensor, regions: torch.Tensor,
                        normalization: FocalNormalization = "max") -> torch.Tensor:
    """Detached region weight ``w`` ``(B, 1, H, W)`` of each pixel of ``error`` ``(B, C, H, W)``.

    ``w`` is the mean error of the pixel's region (over its pixels and channels; ``regions``
    ``(B, H, W)`` integer labels, resized by nearest neighbour when the size differs, e.g. for SR),
    divided by the batch's worst region (``"max"``: the released RAT script; ``w`` in ``[0, 1]``)
    or by the batch's mean pixel error (``"mean"``: ``w`` averages 1 over the pixels, a region
    twice as bad as the batch weighs 2). Only ``w``'s spread matters under Adam, which is
    invariant to a loss scale: with ``"max"`` a few-pixel worst region sets the maximum and
    ``1 + w`` varies by 4-9 % over a CT batch (docs/BENCHMARKS.md), with ``"mean"`` by 20-80 %.
    """
    b, _, h, w = error.shape
    if regions.shape[-2:] != (h, w):
        regions = F.interpolate(regions[:, None].float(), size=(h, w), mode="nearest")[:, 0]
    labels = regions.long().reshape(b, -1)
    num = int(labels.max()) + 1
    ids = (labels + torch.arange(b, device=labels.device)[:, None] * num).reshape(-1)
    with torch.no_grad():
        pixel_err = error.mean(1).reshape(-1)
        sums = torch.zeros(b * num, device=error.device, dtype=error.dtype).index_add_(0, ids, pixel_err)
        counts = torch.bincount(ids, minlength=b * num).clamp(min=1).to(error.dtype)
        region_mean = sums / counts
        tiny = torch.finfo(error.dtype).tiny
        if normalization == "max":
            weight = (region_mean[ids] / region_mean.max().clamp(min=tiny)).clamp(0, 1)
        elif normalization == "mean":
            weight = region_mean[ids] / pixel_err.mean().clamp(min=tiny)
        else:
            raise ValueError(f"unknown focal normalization {normalization!r} (known: max, mean)")
    return weight.reshape(b, 1, h, w)


def focal_region_loss(pred: torch.Tensor, target: torch.Tensor, regions: torch.Tensor, beta: float,
                      normalization: FocalNormalization = "max") -> torch.Tensor:
    """``mean(e * (1 + beta * w))`` with ``e = |pred - target|`` per pixel and ``w`` the region
    weight of ``focal_region_weight`` (regions restored badly weigh more). ``pred``, ``target``:
    ``(B, C, H, W)``; ``regions``: ``(B, H, W)``. ``beta = 0`` gives plain L1."""
    return _focal_parts(pred, target, regions, beta, normalization)["focal"]


def _focal_parts(pred: torch.Tensor, target: torch.Tensor, regions: torch.Tensor, beta: float,
                 normalization: FocalNormalization) -> dict[str, torch.Tensor]:
    """``{"focal"}`` and, when beta > 0, ``"focal_weight_cv"``: std / mean of the pixel weight
    ``1 + beta * w``, the spread that decides whether the weighting changes training at all."""
    e = (pred - target).abs()
    if beta == 0:
        return {"focal": e.mean()}
    pixel_weight = 1 + beta * focal_region_weight(e, regions, normalization)
    return {"focal": (e * pixel_weight).mean(), "focal_weight_cv": pixel_weight.std() / pixel_weight.mean()}


@dataclass
class RATLossWeights:
    """Weights of the total loss: focal region loss ``beta`` (1e-3 as the released training
    script; it is a no-op there: the weight is at most 1 + beta, try ~1) and the normalisation of
    its region weight (``focal_region_weight``), MSGA ``guidance`` (encoding MSE between stages,
    0.25), ``reconstruction`` (0.1) and ``scales``: L1 of each MSGA scale's own prediction against
    the target average-pooled to its size (deep supervision; the network returns them with
    ``deep_supervision``)."""

    beta: float = 1e-3
    guidance: float = 0.25
    reconstruction: float = 0.1
    scales: float = 0.0
    focal_normalization: FocalNormalization = "max"


def rat_loss(pred: torch.Tensor, target: torch.Tensor, regions: torch.Tensor, aux: dict[str, torch.Tensor],
             weights: RATLossWeights) -> dict[str, torch.Tensor]:
    """Total loss and its parts: ``{"loss", "focal", "focal_weight_cv"?, "guidance"?,
    "reconstruction"?, "scales"?}`` (scalars; ``focal_weight_cv`` is logged, not optimised)."""
    parts = _focal_parts(pred, target, regions, weights.beta, weights.focal_normalization)
    total = parts["focal"]
    for name in ("guidance", "reconstruction"):
        if name in aux:
            parts[name] = aux[name]
            total = total + getattr(weights, name) * aux[name]
    if aux.get("scales") and weights.scales > 0:
        parts["scales"] = torch.stack([
            (p - F.adaptive_avg_pool2d(target, p.shape[-2:])).abs().mean() for p in aux["scales"]
        ]).mean()
        total = total + weights.scales * parts["scales"]
    return {"loss": total, **parts}
