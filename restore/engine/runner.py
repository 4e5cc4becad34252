"""Run a model on integer frames and give integer frames back: whole frames, or a video in chunks.

The model sees ``(B, T, C, H, W)`` float in [0, 1] on its device and precision; everything
outside this module sees ``(H, W, C)`` ``uint8``/``uint16`` frames, the type it put in.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace

import torch
from torch import nn

from .spatial import TilePlan, run_tiled
from .temporal import ChunkPlan, ChunkResult, stream_chunks

# Default budget of LR pixels per model call before tiling kicks in (frames x height x width).
DEFAULT_MAX_PIXELS = 8 * 1920 * 1080


def _to_float(frames: list[torch.Tensor]) -> torch.Tensor:
    """``n`` frames ``(H, W, C)`` uint8/uint16 -> ``(n, C, H, W)`` float32 in [0, 1]."""
    stack = torch.stack(frames)
    peak = 255.0 if stack.dtype == torch.uint8 else 65535.0
    return stack.permute(0, 3, 1, 2).float().div_(peak)


def _to_integer(frames: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``(n, C, H, W)`` float in [0, 1] -> ``(n, H, W, C)`` uint8 or uint16 (rounded, clamped), on CPU."""
    peak = 255.0 if dtype == torch.uint8 else 65535.0
    out = frames.float().mul(peak).round_().clamp_(0, peak).permute(0, 2, 3, 1)
    # uint16 arithmetic is limited in torch: go through int32.
    return out.to(torch.int32).to(dtype).cpu() if dtype == torch.uint16 else out.to(dtype).cpu()


@dataclass
class FrameRunner:
    """Runs ``model`` on ``device`` in ``dtype``; integer frames in, the same integer type out.

    * ``runner(frames)``: a list of ``n`` frames ``(H, W, C)`` uint8/uint16 -> ``(n, s*H, s*W, C)``
      of the same dtype, on CPU (one model call, tiled when it exceeds ``max_pixels``);
    * ``runner.stream(frames, plan, needs)``: a whole video in overlapping chunks, see :meth:`stream`.

    ``C`` is 3 (RGB) or 1 (grey: replicated to the model's 3 channels and averaged back), plus an
    alpha channel last (``C`` = 4 or 2), which goes through bicubic interpolation instead of the
    model (a restoration model is trained on pictures, not on masks). Values are rounded and
    clamped once, at the end: the model output and the cross-fade of chunk overlaps stay float.
    """

    model: nn.Module
    device: torch.device
    dtype: torch.dtype
    tiles: TilePlan | None = None  # None = choose per chunk from max_pixels
    max_pixels: int = DEFAULT_MAX_PIXELS

    @property
    def scale(self) -> int:
        return int(self.model.scale)

    def __call__(self, frames: list[torch.Tensor]) -> torch.Tensor:
        return _to_integer(self._upscale(frames), frames[0].dtype)

    def stream(
        self,
        frames: Iterable[tuple[torch.Tensor, int]],
        plan: ChunkPlan,
        needs: Callable[[int], bool] = lambda c: True,
    ) -> Iterator[ChunkResult]:
        """Upscale a video: :func:`~restore.engine.temporal.stream_chunks` over this runner.

        ``frames`` yields ``(frame (H, W, C) uint8/uint16, pts)``; every chunk of ``plan`` is
        yielded in order, its ``frames`` ``(n, s*H, s*W, C)`` of the input's dtype on CPU, or None
        when ``needs(chunk index)`` said the chunk is done already (resume).
        """
        source = iter(frames)
        first = next(source, None)
        if first is None:
            return
        dtype = first[0].dtype  # what the caller put in is what it gets back
        for chunk in stream_chunks(itertools.chain([first], source), plan, self._upscale, needs):
            yield chunk if chunk.frames is None else replace(chunk, frames=_to_integer(chunk.frames, dtype))

    @torch.no_grad()
    def _upscale(self, frames: list[torch.Tensor]) -> torch.Tensor:
        """``n`` frames ``(H, W, C)`` uint8/uint16 -> ``(n, C, s*H, s*W)`` float32 in [0, 1] on ``device``."""
        alpha = None
        if frames[0].shape[2] in (2, 4):
            # on the CPU, where the frames are: the alpha is cheap and stays the same on every device
            alpha = _to_float([f[:, :, -1:] for f in frames])
            alpha = torch.nn.functional.interpolate(alpha, scale_factor=self.scale, mode="bicubic").clamp_(0, 1)
            frames = [f[:, :, :-1] for f in frames]
        clip = _to_float(frames).to(self.device)
        grey = clip.shape[1] == 1
        if grey:
            clip = clip.expand(-1, 3, -1, -1)
        n, _, h, w = clip.shape
        plan = self.tiles or TilePlan.auto(n, h, w, self.max_pixels)
        out = run_tiled(self._forward, clip.unsqueeze(0), self.scale, plan)[0]
        out = out.float().clamp_(0, 1)
        if grey:
            out = out.mean(dim=1, keepdim=True)
        return out if alpha is None else torch.cat([out, alpha.to(out.device)], dim=1)

    def _forward(self, clip: torch.Tensor) -> torch.Tensor:
        return self.model(clip.to(self.dtype))
