"""models.tiling: one sliding window for plain and region-aware models."""

from __future__ import annotations

import torch

from models.tiling import sliding_window_restore


def test_every_window_gets_its_own_crop_of_the_regions():
    regions = torch.arange(2 * 20 * 28).reshape(2, 20, 28)  # a distinct label per pixel
    x = torch.rand(2, 1, 20, 28)
    seen = []

    def model(windows: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(regions.shape))
        return regions[:, None].to(windows.dtype)  # echo the labels this window was given

    out = sliding_window_restore(model, x, regions, window=12, overlap=0.5, batch_size=3)
    assert len(seen) > 1 and all(s[1:] == (12, 12) for s in seen)
    torch.testing.assert_close(out[:, 0], regions.float(), atol=1e-3, rtol=0)


def test_window_is_capped_at_the_image_and_plain_models_get_no_regions():
    x = torch.rand(1, 3, 10, 14)
    shapes = []

    def model(windows: torch.Tensor) -> torch.Tensor:
        shapes.append(tuple(windows.shape[-2:]))
        return windows

    out = sliding_window_restore(model, x, window=64)
    assert shapes == [(10, 14)]
    torch.testing.assert_close(out, x)
