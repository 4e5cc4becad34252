"""MR noise physics: Rician noise of magnitude images.

Shared by the training data (``datasets.medical``) and the MR benchmark (``restore.bench.quality``),
so it lives in the lowest layer, as ``models.ct_dose`` does for CT. Arrays are ``float32`` numpy
``(H, W)`` in the image's own units; randomness comes from a ``numpy.random.Generator``.
"""

from __future__ import annotations

import numpy as np

# the intensity that a noise level given as a fraction refers to (robust to a few hot pixels)
REFERENCE_PERCENTILE = 99.5


def add_rician_noise(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Magnitude MR noise: ``sqrt((x + n1)^2 + n2^2)``, ``n1, n2 ~ N(0, sigma^2)`` (image units)."""
    x = image.astype(np.float64)
    return np.sqrt((x + rng.normal(0.0, sigma, x.shape)) ** 2 + rng.normal(0.0, sigma, x.shape) ** 2).astype(np.float32)


def reference_intensity(image: np.ndarray) -> float:
    """The ``REFERENCE_PERCENTILE``-th percentile of ``image``: what "5 % noise" is 5 % of."""
    return float(np.percentile(image, REFERENCE_PERCENTILE))


def add_relative_rician_noise(image: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Rician noise of ``sigma = fraction * reference_intensity(image)`` (e.g. 0.05: "5 % noise")."""
    return add_rician_noise(image, fraction * reference_intensity(image), rng)
