"""EDSR-baseline (Lim et al., CVPRW 2017): a plain residual CNN at LR resolution with a pixel-shuffle upsampler.

``blocks`` residual blocks (conv-ReLU-conv, no batch norm, residual scale 1) of ``channels``
features between a head and a tail convolution with a long skip, then ``log2(scale)`` stages of
conv + pixel shuffle x2. The paper's baseline is 16 blocks of 64 channels (1.5 M parameters).
Inputs are centred on the DIV2K mean, as in the paper. A baseline of the equal-budget comparison
in ``docs/BENCHMARKS.md``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

DIV2K_MEAN = (0.4488, 0.4371, 0.4040)


@dataclass
class EDSRConfig:
    """``channels``, ``blocks``: width and residual blocks; ``scale``: 2 or 4."""

    scale: int = 4
    channels: int = 64
    blocks: int = 16
    in_channels: int = 3


class _ResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(x)))


class EDSR(nn.Module):
    """``forward(clip)``: ``(B, T, C, h, w)`` in [0, 1] -> ``(B, T, C, s*h, s*w)``, frame by frame."""

    temporal_window = 1

    def __init__(self, config: EDSRConfig | None = None):
        super().__init__()
        self.config = c = config or EDSRConfig()
        self.scale = c.scale
        if c.scale not in (2, 4):
            raise ValueError(f"scale must be 2 or 4, got {c.scale}")
        mean = torch.tensor(DIV2K_MEAN if c.in_channels == 3 else (0.5,) * c.in_channels)
        self.register_buffer("mean", mean.view(1, -1, 1, 1), persistent=False)
        self.head = nn.Conv2d(c.in_channels, c.channels, 3, padding=1)
        self.body = nn.Sequential(*(_ResidualBlock(c.channels) for _ in range(c.blocks)),
                                  nn.Conv2d(c.channels, c.channels, 3, padding=1))
        stages: list[nn.Module] = []
        for _ in range(int(math.log2(c.scale))):
            stages += [nn.Conv2d(c.channels, 4 * c.channels, 3, padding=1), nn.PixelShuffle(2)]
        self.upsample = nn.Sequential(*stages)
        self.tail = nn.Conv2d(c.channels, c.in_channels, 3, padding=1)

    @classmethod
    def from_config(cls, config: dict) -> "EDSR":
        return cls(EDSRConfig(**config))

    def config_dict(self) -> dict:
        return asdict(self.config)

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        b, t, c, h, w = clip.shape
        x = self.head(clip.reshape(b * t, c, h, w) - self.mean)
        out = self.tail(self.upsample(x + self.body(x))) + self.mean
        return out.reshape(b, t, c, h * self.scale, w * self.scale)


PRESETS: dict[str, dict] = {
    "edsr-baseline-x4": {"task": "video-sr", "config": {"scale": 4}},
}
