"""Bidirectional recurrent propagation of the light decoder's features along a clip, by optical flow.

Early fusion (``decoder_neighbors``) shows frame ``t`` only its nearest neighbours. Propagation
carries what the decoder has seen of every frame of the model's temporal window to every other
(BasicVSR, Chan et al., CVPR 2021: a backward and a forward pass of a hidden state, each step
warped onto the next frame by optical flow): a scene point seen at several sub-pixel offsets over
the window contributes all of them to each output frame, not only those of ``t-r .. t+r``.

The state is the decoder's own feature map ``(C, h, w)`` at LR resolution. Each step warps the
state of the previous frame onto the current one by the DIS flows of
``alignment.neighbor_flows`` (``models.flow.warp``, bilinear like BasicVSR's feature warp: bicubic
costs more, and a feature map has no fine texture to keep) and adds a fusion of it with the
current features. The fusions' last convolutions start at zero: an untrained propagation is the
identity, so weights trained without it load and decode exactly as before (a warm start). The window is the
engine's chunk: the state does not cross chunks, whose overlaps the engine cross-fades.

At a chunk's ends one of the two states is empty, so a still scene decodes differently there than
in the middle: the output flickers at every seam. ``warmup`` frames replayed in reflection at each
end (frames ``w .. 1`` before frame 0, as in EDVR's reflection padding of frame indices) give both
states a history there; they reuse the features and flows already computed, so they cost only
recurrent steps, not decoder blocks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..flow import warp


class _Fusion(nn.Module):
    """``(x, memory) -> x + out(relu(from_x(x) + from_memory(memory)))``, 1x1 convolutions; ``out``
    starts at zero (identity). Per pixel: the flow has aligned the memory, and the residual blocks
    after the propagation see its neighbourhood; 3x3 here cost 0.67x the decoder's frames/s."""

    def __init__(self, channels: int):
        super().__init__()
        self.from_x = nn.Conv2d(channels, channels, 1)
        self.from_memory = nn.Conv2d(channels, channels, 1, bias=False)
        self.out = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        return x + self.out(F.relu(self.from_x(x) + self.from_memory(memory), inplace=True))


class BidirectionalPropagation(nn.Module):
    """A backward then a forward pass of a hidden state over a clip's feature maps.

    ``forward(features, to_next, to_previous)``: features ``(B, T, C, h, w)``; ``to_next`` and
    ``to_previous`` ``(B, T, h, w, 2)``, the flow (LR pixels, ``(dx, dy)``) from frame ``t`` to
    frame ``t+1`` and ``t-1`` (``alignment.neighbor_flows``; entries beyond the clip's ends are
    not read) -> ``(B, T, C, h, w)``. Output frame ``t`` depends on every frame of the clip.
    ``warmup``: frames replayed in reflection before the first and after the last (at most
    ``T - 1``); 0 starts each pass on the end frame's own features.
    """

    def __init__(self, channels: int, warmup: int = 0):
        super().__init__()
        if warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {warmup}")
        self.warmup = warmup
        self.backward_fusion = _Fusion(channels)
        self.forward_fusion = _Fusion(channels)

    def forward(self, features: torch.Tensor, to_next: torch.Tensor, to_previous: torch.Tensor) -> torch.Tensor:
        t = features.shape[1]
        w = min(self.warmup, t - 1)
        frames = [*range(w, 0, -1), *range(t), *range(t - 2, t - 2 - w, -1)]  # e.g. 2 1 | 0 .. T-1 | T-2 T-3

        def flow(i: int, j: int) -> torch.Tensor:
            """Flow from frame ``frames[i]`` to its neighbour ``frames[j]`` (``|i - j| == 1``)."""
            return (to_next if frames[j] > frames[i] else to_previous)[:, frames[i]]

        backward = [features[:, frames[-1]]]
        for i in range(len(frames) - 2, -1, -1):
            backward.append(self.backward_fusion(features[:, frames[i]], warp(backward[-1], flow(i, i + 1), mode="bilinear")))
        backward.reverse()
        out = [backward[0]]
        for i in range(1, len(frames)):
            out.append(self.forward_fusion(backward[i], warp(out[-1], flow(i, i - 1), mode="bilinear")))
        return torch.stack(out[w : w + t], dim=1)
