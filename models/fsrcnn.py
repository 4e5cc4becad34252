"""FSRCNN (Dong, Loy and Tang, ECCV 2016): the small CNN a user who wants fast CPU upscaling picks.

Feature extraction (5x5, ``d`` channels), shrinking (1x1 to ``s``), ``m`` 3x3 mapping layers,
expanding (1x1 back to ``d``), all PReLU at LR resolution, then one 9x9 transposed convolution
with stride ``scale`` to HR: 12K parameters on Y as in the paper, 25K on RGB as here. A baseline
of the equal-budget comparison in ``docs/BENCHMARKS.md``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass
class FSRCNNConfig:
    """``d``, ``s``, ``m``: the paper's widths and mapping depth (FSRCNN(56, 12, 4)); ``scale``: 2 or 4."""

    scale: int = 4
    d: int = 56
    s: int = 12
    m: int = 4
    in_channels: int = 3


class FSRCNN(nn.Module):
    """``forward(clip)``: ``(B, T, C, h, w)`` in [0, 1] -> ``(B, T, C, s*h, s*w)``, frame by frame."""

    temporal_window = 1

    def __init__(self, config: FSRCNNConfig | None = None):
        super().__init__()
        self.config = c = config or FSRCNNConfig()
        self.scale = c.scale
        layers: list[nn.Module] = [nn.Conv2d(c.in_channels, c.d, 5, padding=2), nn.PReLU(c.d),
                                   nn.Conv2d(c.d, c.s, 1), nn.PReLU(c.s)]
        for _ in range(c.m):
            layers += [nn.Conv2d(c.s, c.s, 3, padding=1), nn.PReLU(c.s)]
        layers += [nn.Conv2d(c.s, c.d, 1), nn.PReLU(c.d)]
        self.body = nn.Sequential(*layers)
        self.upsample = nn.ConvTranspose2d(c.d, c.in_channels, 9, stride=c.scale, padding=4, output_padding=c.scale - 1)

    @classmethod
    def from_config(cls, config: dict) -> "FSRCNN":
        return cls(FSRCNNConfig(**config))

    def config_dict(self) -> dict:
        return asdict(self.config)

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        b, t, c, h, w = clip.shape
        out = self.upsample(self.body(clip.reshape(b * t, c, h, w)))
        return out.reshape(b, t, c, h * self.scale, w * self.scale)


PRESETS: dict[str, dict] = {
    "fsrcnn-x4": {"task": "video-sr", "config": {"scale": 4}},
}
