"""Spatial tiling with blended seams, for frames that exceed the memory budget.

Tiles are cut from the low-resolution input with MONAI's ``sliding_window_inference``; each tile
goes through the model (all frames of the chunk together, so temporal context is kept) and the
upscaled tiles are blended with a Gaussian weight map. For a per-pixel model the result equals
processing the whole frame (up to float rounding).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TilePlan:
    """``tile``: LR tile side in pixels (0 = whole frame); ``overlap``: LR pixels shared by neighbours.

    ``auto(...)`` picks the largest tile that keeps one model call under ``max_pixels`` LR pixels.
    """

    tile: int = 0
    overlap: int = 16

    def __post_init__(self) -> None:
        if self.tile < 0 or self.overlap < 0:
            raise ValueError("--tile and --tile-overlap must be >= 0")
        if self.tile and self.overlap >= self.tile:
            raise ValueError(f"--tile-overlap ({self.overlap}) must be smaller than --tile ({self.tile})")

    @classmethod
    def auto(cls, frames: int, height: int, width: int, max_pixels: int, overlap: int = 16, multiple: int = 16) -> "TilePlan":
        """Whole frame if ``frames*height*width <= max_pixels``, else square tiles that fit."""
        if frames * height * width <= max_pixels:
            return cls(0, overlap)
        side = int(math.sqrt(max_pixels / frames)) // multiple * multiple
        side = max(side, 2 * overlap + multiple)
        return cls(side, overlap)

    def applies_to(self, height: int, width: int) -> bool:
        return self.tile > 0 and (height > self.tile or width > self.tile)


def run_tiled(
    model: Callable[[torch.Tensor], torch.Tensor],
    clip: torch.Tensor,
    scale: int,
    plan: TilePlan,
) -> torch.Tensor:
    """Apply ``model`` to ``clip`` ``(B, T, C, h, w)`` tile by tile -> ``(B, T, C', s*h, s*w)``.

    Falls back to one call when the frame fits in one tile.
    """
    b, t, c, h, w = clip.shape
    if not plan.applies_to(h, w):
        return model(clip)
    from monai.inferers import sliding_window_inference

    roi = (min(plan.tile, h), min(plan.tile, w))
    overlap = tuple(min(plan.overlap / r, 0.99) for r in roi)
    out_channels: list[int] = []

    def predictor(tiles: torch.Tensor) -> torch.Tensor:
        n, _, th, tw = tiles.shape
        out = model(tiles.reshape(n, t, c, th, tw))
        out_channels[:] = [out.shape[2]]
        return out.reshape(n, t * out.shape[2], th * scale, tw * scale)

    merged = sliding_window_inference(
        clip.reshape(b, t * c, h, w),
        roi_size=roi,
        sw_batch_size=1,
        predictor=predictor,
        overlap=overlap,
        mode="gaussian",
        padding_mode="replicate",
    )
    return merged.reshape(b, t, out_channels[0], h * scale, w * scale)
