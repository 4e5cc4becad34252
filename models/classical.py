"""Models that exist without training: ``identity`` and ``nlm`` (non-local means).

Both follow the image calling convention of the registry: ``forward(x)`` takes ``(B, C, H, W)``
float (normalised units) and returns the same shape (``scale = 1``). They are honest baselines for
``restore dicom`` until trained restoration weights ship: ``identity`` is also what the tests use
for exact round trips.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn


class Identity(nn.Module):
    """Returns its input unchanged: ``(B, C, H, W) -> (B, C, H, W)``."""

    scale = 1

    @classmethod
    def from_config(cls, config: dict) -> "Identity":
        if config:
            raise ValueError(f"identity takes no config, got {sorted(config)}")
        return cls()

    def config_dict(self) -> dict:
        return {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


@dataclass
class NLMConfig:
    """Non-local means (scikit-image ``denoise_nl_means``, fast mode).

    The noise sigma is estimated per image (:func:`noise_sigma`); the filter strength is
    ``h = h_factor * sigma``. ``patch_size`` and ``patch_distance`` are in pixels.
    """

    h_factor: float = 0.8
    patch_size: int = 5
    patch_distance: int = 6


def noise_sigma(image: np.ndarray) -> float:
    """Gaussian noise sigma of a 2-D image by Immerkaer's method (fast, no wavelets).

    Convolves with the 3x3 mask [[1,-2,1],[-2,4,-2],[1,-2,1]], which cancels smooth structure,
    and scales the mean absolute response: ``sqrt(pi/2) / (6 (H-2)(W-2)) * sum |I * M|``.
    """
    i = image.astype(np.float64)
    if min(i.shape) < 3:
        return 0.0
    r = (
        i[:-2, :-2] - 2 * i[:-2, 1:-1] + i[:-2, 2:]
        - 2 * i[1:-1, :-2] + 4 * i[1:-1, 1:-1] - 2 * i[1:-1, 2:]
        + i[2:, :-2] - 2 * i[2:, 1:-1] + i[2:, 2:]
    )
    return float(np.sqrt(np.pi / 2) * np.abs(r).mean() / 6)


class NonLocalMeans(nn.Module):
    """Classical non-local means denoiser per image and channel: ``(B, C, H, W) -> (B, C, H, W)``.

    Runs on the CPU in NumPy whatever the input device (results return to that device); it has
    no parameters and is scale-invariant in intensity.
    """

    scale = 1

    def __init__(self, config: NLMConfig | None = None):
        super().__init__()
        self.config = config or NLMConfig()

    @classmethod
    def from_config(cls, config: dict) -> "NonLocalMeans":
        return cls(NLMConfig(**config))

    def config_dict(self) -> dict:
        return asdict(self.config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from skimage.restoration import denoise_nl_means

        planes = x.detach().float().cpu().numpy()
        out = np.empty_like(planes)
        for b in range(planes.shape[0]):
            for c in range(planes.shape[1]):
                img = planes[b, c]
                sigma = noise_sigma(img)
                if sigma <= 0:  # flat image: nothing to denoise
                    out[b, c] = img
                    continue
                out[b, c] = denoise_nl_means(
                    img, h=self.config.h_factor * sigma, sigma=sigma, fast_mode=True,
                    patch_size=self.config.patch_size, patch_distance=self.config.patch_distance,
                )
        return torch.from_numpy(out).to(device=x.device, dtype=x.dtype)
