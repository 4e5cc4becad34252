"""Whole-image inference in overlapping windows, optionally with a region partition per pixel.

The one sliding window that both the DICOM slice processor (``restore.dicom.processing``) and
RAT validation (``models.rat.module``) run: MONAI's ``sliding_window_inference`` with Gaussian
blending, the partition cut into the same windows as the image through MONAI's ``condition``
(MONAI 1.5.1 on).
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def sliding_window_restore(
    model: Callable[..., torch.Tensor],
    x: torch.Tensor,
    regions: torch.Tensor | None = None,
    *,
    window: int,
    overlap: float = 0.25,
    batch_size: int = 4,
) -> torch.Tensor:
    """Apply ``model`` to ``x`` in overlapping windows blended with Gaussian weights.

    ``x``: ``(B, C, H, W)``; ``regions``: ``(B, H, W)`` integer labels, or None for a model
    without them. ``model(w)`` (or ``model(w, regions=r)``, ``r`` the matching ``(b, h, w)``
    crop) maps ``(b, C, h, w)`` windows to ``(b, C', s*h, s*w)``. ``window``: window side in
    input pixels, capped at the image (a window larger than a small image would feed the model,
    and image statistics such as NLM's noise estimate, a frame of padding); ``overlap``: fraction
    of a window shared with its neighbour; ``batch_size``: windows per model call. Returns
    ``(B, C', s*H, s*W)`` in ``x``'s dtype and on its device.
    """
    from monai.inferers import sliding_window_inference

    def predict(windows: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        if condition is None:
            return model(windows)
        return model(windows, regions=condition[:, 0])

    roi = (min(window, x.shape[-2]), min(window, x.shape[-1]))
    # MONAI crops `condition` (a channel-first map beside the image) with every window and passes
    # it on to `predict` when it is not None; labels stay integers, exact at any model dtype
    condition = None if regions is None else regions[:, None].to(x.device)
    return sliding_window_inference(x, roi, batch_size, predict, overlap=overlap, mode="gaussian",
                                    condition=condition)
