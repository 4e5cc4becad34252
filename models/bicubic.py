"""Bicubic interpolation as a model: the always-available baseline."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class BicubicConfig:
    """``scale``: integer upscaling factor (2 or 4)."""

    scale: int = 4


class Bicubic(nn.Module):
    """Per-frame bicubic upscaling, clamped to [0, 1].

    ``forward(clip)``: ``(B, T, C, h, w)`` float in [0, 1] -> ``(B, T, C, s*h, s*w)``.
    It has no temporal context (``temporal_window = 1``) and no parameters.
    """

    temporal_window = 1

    def __init__(self, config: BicubicConfig | None = None):
        super().__init__()
        self.config = config or BicubicConfig()
        self.scale = self.config.scale

    @classmethod
    def from_config(cls, config: dict) -> "Bicubic":
        return cls(BicubicConfig(**config))

    def config_dict(self) -> dict:
        return asdict(self.config)

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        b, t, c, h, w = clip.shape
        out = F.interpolate(clip.reshape(b * t, c, h, w), scale_factor=self.scale, mode="bicubic", align_corners=False)
        return out.clamp_(0, 1).reshape(b, t, c, h * self.scale, w * self.scale)
