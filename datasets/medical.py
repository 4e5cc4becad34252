"""Medical degradations: low-dose CT (projection domain, from ``models.ct_dose``), MR Rician noise, SR downsampling.

All functions take and return ``float32`` numpy arrays; CT slices are ``(H, W)`` in HU, other
images ``(H, W)`` or ``(H, W, C)`` in their own units. Randomness comes from a
``numpy.random.Generator`` so that degradations are reproducible.
"""

from __future__ import annotations

import numpy as np

# the CT physics lives in models/ so that the benchmark (restore/) can simulate doses too
from models.ct_dose import MU_WATER_PER_CM, hu_to_mu, mu_to_hu, simulate_low_dose_ct

__all__ = [
    "MU_WATER_PER_CM", "add_rician_noise", "bicubic_downsample", "hu_to_mu", "kspace_downsample", "mu_to_hu",
    "simulate_low_dose_ct",
]


def add_rician_noise(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Magnitude MR noise: ``sqrt((x + n1)^2 + n2^2)``, ``n1, n2 ~ N(0, sigma^2)`` (image units)."""
    x = image.astype(np.float64)
    return np.sqrt((x + rng.normal(0.0, sigma, x.shape)) ** 2 + rng.normal(0.0, sigma, x.shape) ** 2).astype(np.float32)


def kspace_downsample(image: np.ndarray, scale: int) -> np.ndarray:
    """MR SR degradation: keep the central ``1/scale`` of k-space (truncation) -> ``(H/s, W/s)``.

    ``image``: ``(H, W)`` magnitude with H, W divisible by ``scale``. Intensities are preserved
    (the inverse FFT is renormalised for the smaller matrix); the result is the magnitude.
    """
    h, w = image.shape
    if h % scale or w % scale:
        raise ValueError(f"image size {h}x{w} is not divisible by scale {scale}")
    k = np.fft.fftshift(np.fft.fft2(image.astype(np.float64)))
    hh, ww = h // scale, w // scale
    top, left = (h - hh) // 2, (w - ww) // 2
    small = np.fft.ifft2(np.fft.ifftshift(k[top : top + hh, left : left + ww])) / (scale * scale)
    return np.abs(small).astype(np.float32)


def bicubic_downsample(image: np.ndarray, scale: int) -> np.ndarray:
    """Pathology SR degradation: antialiased bicubic downsampling by ``scale``.

    ``image``: ``(H, W)`` or ``(H, W, C)`` with H, W divisible by ``scale`` -> ``(H/s, W/s[, C])``.
    Uses torch's bicubic (``antialias=True``, MATLAB ``imresize``-like), as the SR literature does.
    """
    import torch
    import torch.nn.functional as F

    h, w = image.shape[:2]
    if h % scale or w % scale:
        raise ValueError(f"image size {h}x{w} is not divisible by scale {scale}")
    t = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
    t = t[None, None] if t.dim() == 2 else t.permute(2, 0, 1)[None]
    out = F.interpolate(t, size=(h // scale, w // scale), mode="bicubic", antialias=True, align_corners=False)[0]
    return (out[0] if image.ndim == 2 else out.permute(1, 2, 0)).numpy()
