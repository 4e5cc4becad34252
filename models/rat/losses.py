"""RAT training losses: the focal region loss and the weighted total with the MSGA guidance terms."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def focal_region_loss(pred: torch.Tensor, target: torch.Tensor, regions: torch.Tensor, beta: float) -> torch.Tensor:
    """``mean(e * (1 + beta * w))`` with ``e = |pred - target|`` per pixel.

    ``pred``, ``target``: ``(B, C, H, W)``; ``regions``: ``(B, H, W)`` integer labels (resized by
    nearest neighbour when the size differs, e.g. for SR). ``w`` is the detached mean error of each
    pixel's region (over its pixels and channels), normalised by the batch maximum and clamped to
    ``[0, 1]``: regions that are restored badly weigh more. ``beta = 0`` gives plain L1.
    """
    e = (pred - target).abs()
    if beta == 0:
        return e.mean()
    b, _, h, w = e.shape
    if regions.shape[-2:] != (h, w):
        regions = F.interpolate(regions[:, None].float(), size=(h, w), mode="nearest")[:, 0]
    labels = regions.long().reshape(b, -1)
    num = int(labels.max()) + 1
    ids = (labels + torch.arange(b, device=labels.device)[:, None] * num).reshape(-1)
    with torch.no_grad():
        pixel_err = e.mean(1).reshape(-1)
        sums = torch.zeros(b * num, device=e.device, dtype=e.dtype).index_add_(0, ids, pixel_err)
        counts = torch.bincount(ids, minlength=b * num).clamp(min=1).to(e.dtype)
        region_mean = sums / counts
        weight = (region_mean[ids] / region_mean.max().clamp(min=torch.finfo(e.dtype).tiny)).clamp(0, 1)
    return (e * (1 + beta * weight.reshape(b, 1, h, w))).mean()


@dataclass
class RATLossWeights:
    """Weights of the total loss: focal region loss ``beta`` (1e-3 as the released training
    script; it is a no-op there: the weight is at most 1 + beta, try ~1), MSGA ``guidance``
    (encoding MSE between stages, 0.25), ``reconstruction`` (0.1) and ``scales``: L1 of each MSGA
    scale's own prediction against the target average-pooled to its size (deep supervision; the
    network returns them with ``deep_supervision``)."""

    beta: float = 1e-3
    guidance: float = 0.25
    reconstruction: float = 0.1
    scales: float = 0.0


def rat_loss(pred: torch.Tensor, target: torch.Tensor, regions: torch.Tensor, aux: dict[str, torch.Tensor],
             weights: RATLossWeights) -> dict[str, torch.Tensor]:
    """Total loss and its parts: ``{"loss", "focal", "guidance"?, "reconstruction"?, "scales"?}`` (scalars)."""
    parts = {"focal": focal_region_loss(pred, target, regions, weights.beta)}
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
