"""SRVGG compact: the per-frame CNN of Real-ESRGAN's ``realesr-general-x4v3`` (speed reference).

A plain VGG-style stack at LR resolution followed by a pixel shuffle, plus a nearest-upsampled
skip. The parameter names follow the published layout (``body.N``), so a user's own
``realesr-general-x4v3`` checkpoint loads with ``--weights``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class SRVGGConfig:
    """``channels``: feature width; ``convs``: 3x3 convolutions in the body; ``scale``: 2 or 4."""

    scale: int = 4
    channels: int = 64
    convs: int = 32
    in_channels: int = 3


class SRVGG(nn.Module):
    """``forward(clip)``: ``(B, T, C, h, w)`` in [0, 1] -> ``(B, T, C, s*h, s*w)``, frame by frame."""

    temporal_window = 1

    def __init__(self, config: SRVGGConfig | None = None):
        super().__init__()
        self.config = c = config or SRVGGConfig()
        self.scale = c.scale
        layers: list[nn.Module] = [nn.Conv2d(c.in_channels, c.channels, 3, padding=1), nn.PReLU(c.channels)]
        for _ in range(c.convs):
            layers += [nn.Conv2d(c.channels, c.channels, 3, padding=1), nn.PReLU(c.channels)]
        layers.append(nn.Conv2d(c.channels, c.in_channels * c.scale**2, 3, padding=1))
        self.body = nn.ModuleList(layers)

    @classmethod
    def from_config(cls, config: dict) -> "SRVGG":
        return cls(SRVGGConfig(**config))

    def config_dict(self) -> dict:
        return asdict(self.config)

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        b, t, c, h, w = clip.shape
        x = clip.reshape(b * t, c, h, w)
        out = x
        for layer in self.body:
            out = layer(out)
        out = F.pixel_shuffle(out, self.scale) + F.interpolate(x, scale_factor=self.scale, mode="nearest")
        return out.reshape(b, t, c, h * self.scale, w * self.scale)


PRESETS: dict[str, dict] = {
    # the realesr-general-x4v3 geometry; bring its weights with --weights
    "srvgg-compact": {"task": "video-sr", "config": {"scale": 4, "channels": 64, "convs": 32}},
}
