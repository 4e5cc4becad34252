"""Convert integer frames to model input, run the model (tiled if needed), and convert back."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .spatial import TilePlan, run_tiled

# Default budget of LR pixels per model call before tiling kicks in (frames x height x width).
DEFAULT_MAX_PIXELS = 8 * 1920 * 1080


def to_float(frames: list[torch.Tensor]) -> torch.Tensor:
    """``n`` frames ``(H, W, C)`` uint8/uint16 -> ``(n, C, H, W)`` float32 in [0, 1]."""
    stack = torch.stack(frames)
    peak = 255.0 if stack.dtype == torch.uint8 else 65535.0
    return stack.permute(0, 3, 1, 2).float().div_(peak)


def to_integer(frames: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``(n, C, H, W)`` float in [0, 1] -> ``(n, H, W, C)`` uint8 or uint16 (rounded, clamped), on CPU."""
    peak = 255.0 if dtype == torch.uint8 else 65535.0
    out = frames.float().mul(peak).round_().clamp_(0, peak).permute(0, 2, 3, 1)
    # uint16 arithmetic is limited in torch: go through int32.
    return out.to(torch.int32).to(dtype).cpu() if dtype == torch.uint16 else out.to(dtype).cpu()


@dataclass
class FrameRunner:
    """Runs ``model`` on a chunk of frames on ``device`` in ``dtype``.

    ``__call__(frames)``: list of ``n`` frames ``(H, W, C)`` uint8/uint16 -> ``(n, C, s*H, s*W)``
    float32 in [0, 1] on ``device``. Grey frames are replicated to the model's 3 channels and
    averaged back.
    """

    model: nn.Module
    device: torch.device
    dtype: torch.dtype
    tiles: TilePlan | None = None  # None = choose per chunk from max_pixels
    max_pixels: int = DEFAULT_MAX_PIXELS

    @property
    def scale(self) -> int:
        return int(self.model.scale)

    @torch.no_grad()
    def __call__(self, frames: list[torch.Tensor]) -> torch.Tensor:
        clip = to_float(frames).to(self.device)
        grey = clip.shape[1] == 1
        if grey:
            clip = clip.expand(-1, 3, -1, -1)
        n, _, h, w = clip.shape
        plan = self.tiles or TilePlan.auto(n, h, w, self.max_pixels)
        out = run_tiled(self._forward, clip.unsqueeze(0), self.scale, plan)[0]
        out = out.float().clamp_(0, 1)
        return out.mean(dim=1, keepdim=True) if grey else out

    def _forward(self, clip: torch.Tensor) -> torch.Tensor:
        return self.model(clip.to(self.dtype))
