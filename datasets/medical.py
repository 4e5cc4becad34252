"""Medical degradations (low-dose CT in the projection domain from ``models.ct_dose``, MR Rician
noise from ``models.mr_noise``, SR downsampling) and made-up clean slices to train on (random phantoms, natural images as
attenuation maps).

All functions take and return ``float32`` numpy arrays; CT slices are ``(H, W)`` in HU, other
images ``(H, W)`` or ``(H, W, C)`` in their own units. Randomness comes from a
``numpy.random.Generator`` so that degradations are reproducible.
"""

from __future__ import annotations

import numpy as np

# the CT and MR physics live in models/ so that the benchmark (restore/) can simulate them too
from models.ct_dose import MU_WATER_PER_CM, hu_to_mu, mu_to_hu, simulate_ct_noise, simulate_low_dose_ct
from models.mr_noise import add_relative_rician_noise, add_rician_noise

__all__ = [
    "MU_WATER_PER_CM", "add_relative_rician_noise", "add_rician_noise", "bicubic_downsample", "hu_to_mu", "image_as_slice", "kspace_downsample",
    "mu_to_hu", "random_phantom", "simulate_ct_noise", "simulate_low_dose_ct",
]

# (HU low, HU high) of the tissues a random phantom draws its ellipses from
_TISSUES_HU = {"air": (-1000, -900), "lung": (-900, -600), "fat": (-120, -60), "fluid": (0, 20),
               "soft tissue": (20, 80), "enhancing": (80, 200), "bone": (400, 1500)}
_AIR_HU = -1000.0


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


def _ellipse(size: int, centre: tuple[float, float], axes: tuple[float, float], angle: float) -> np.ndarray:
    """Boolean ``(size, size)`` mask of an ellipse; centre and axes in pixels, angle in radians."""
    y, x = np.mgrid[:size, :size].astype(np.float64)
    dy, dx = y - centre[0], x - centre[1]
    u = dx * np.cos(angle) + dy * np.sin(angle)
    v = -dx * np.sin(angle) + dy * np.cos(angle)
    return (u / axes[1]) ** 2 + (v / axes[0]) ** 2 <= 1.0


def _body_mask(size: int, rng: np.random.Generator, shrink: float = 1.0) -> np.ndarray:
    """An elliptic body filling 60-95 % of the slice; ``shrink`` < 1: the same ellipse, smaller
    (draws the same numbers from a generator in the same state)."""
    half = size / 2
    centre = (half + rng.uniform(-0.05, 0.05) * size, half)
    axes = (half * rng.uniform(0.6, 0.9) * shrink, half * rng.uniform(0.75, 0.95) * shrink)
    return _ellipse(size, centre, axes, rng.uniform(-0.2, 0.2))


def random_phantom(size: int, rng: np.random.Generator, ellipses: int = 24) -> np.ndarray:
    """A made-up CT slice ``(size, size)`` in HU: an elliptic body of soft tissue in air, often
    with a bone rim (skull, ribs), holding ``ellipses`` random ellipses of the tissues of
    ``_TISSUES_HU`` (from organ size down to a few pixels), smoothed by about a pixel of blur."""
    from scipy.ndimage import gaussian_filter

    state = rng.bit_generator.state
    body = _body_mask(size, rng)
    hu = np.full((size, size), _AIR_HU)
    hu[body] = rng.uniform(*_TISSUES_HU["soft tissue"])
    if rng.random() < 0.5:
        rim_rng = np.random.default_rng()
        rim_rng.bit_generator.state = state
        hu[body & ~_body_mask(size, rim_rng, shrink=rng.uniform(0.9, 0.97))] = rng.uniform(*_TISSUES_HU["bone"])
    ys, xs = np.nonzero(body)
    tissues = list(_TISSUES_HU)
    for _ in range(ellipses):
        i = rng.integers(len(ys))
        major = size * float(np.exp(rng.uniform(np.log(0.01), np.log(0.25))))
        mask = _ellipse(size, (ys[i], xs[i]), (major * rng.uniform(0.3, 1.0), major), rng.uniform(0, np.pi)) & body
        hu[mask] = rng.uniform(*_TISSUES_HU[tissues[rng.integers(len(tissues))]])
    return gaussian_filter(hu, rng.uniform(0.5, 1.2)).astype(np.float32)


def image_as_slice(image: np.ndarray, size: int, units: str, rng: np.random.Generator) -> np.ndarray:
    """A natural image as a clean ``(size, size)`` medical slice (the content a small training set
    of real slices lacks: edges and textures at every scale).

    ``image``: ``(H, W)`` or ``(H, W, 3)`` in [0, 1], centre-cropped square and resized. ``units``
    ``"HU"``: an attenuation map, grey level mapped linearly onto a random range within
    [-1000, 1500] HU inside an elliptic body in air (so rays cross air, tissue and bone as in a
    patient); other units (MR magnitude): grey level times a random scale in [500, 4000].
    """
    import cv2

    grey = image.mean(axis=2) if image.ndim == 3 else image
    h, w = grey.shape
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    grey = cv2.resize(grey[top : top + side, left : left + side].astype(np.float32), (size, size), interpolation=cv2.INTER_AREA)
    if units != "HU":
        return (grey * rng.uniform(500, 4000)).astype(np.float32)
    low, high = rng.uniform(-1000, -100), rng.uniform(100, 1500)
    hu = np.where(_body_mask(size, rng), low + grey * (high - low), _AIR_HU)
    return hu.astype(np.float32)
