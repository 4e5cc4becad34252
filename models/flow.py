"""Optical flow between frames: OpenCV's DIS (Kroeger et al., ECCV 2016) and a backward warp.

Shared by the OASIS decoder's neighbour alignment (``models.oasis.alignment``) and the temporal
warping error of the benchmarks (``restore.evaluation``). OpenCV is imported lazily.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def dis_flow(reference: np.ndarray, moving: np.ndarray) -> np.ndarray:
    """DIS optical flow from ``reference`` to ``moving`` (both ``(H, W)`` uint8): ``(H, W, 2)``
    float32 ``(dx, dy)`` in pixels with ``reference[y, x] ~ moving[y + dy, x + dx]``."""
    import cv2

    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    return dis.calc(reference, moving, None)


def warp(frames: torch.Tensor, flow: torch.Tensor, mode: str = "bicubic") -> torch.Tensor:
    """Backward-warp ``frames`` ``(N, C, H, W)`` by ``flow`` ``(N, H, W, 2)`` (pixels, ``(dx, dy)``):
    ``out[y, x] = frames[y + dy, x + dx]``, borders replicated; ``mode`` of ``F.grid_sample``
    (bicubic, the default, keeps more of an image's detail than bilinear). A zero flow returns
    ``frames`` to float rounding."""
    n, _, h, w = frames.shape
    ys, xs = torch.meshgrid(torch.arange(h, device=frames.device, dtype=frames.dtype),
                            torch.arange(w, device=frames.device, dtype=frames.dtype), indexing="ij")
    x = xs + flow[..., 0]
    y = ys + flow[..., 1]
    # normalised coordinates of pixel centres (align_corners=False)
    grid = torch.stack([(2 * x + 1) / w - 1, (2 * y + 1) / h - 1], dim=-1)
    return F.grid_sample(frames, grid, mode=mode, padding_mode="border", align_corners=False)
