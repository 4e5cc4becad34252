"""CT dose physics: HU <-> attenuation, and a projection-domain low-dose simulator.

Shared by the training data (``datasets.medical``) and the CT benchmark (``restore.evaluation``),
so it lives in the lowest layer. Arrays are ``float32`` numpy ``(H, W)`` in HU; randomness comes
from a ``numpy.random.Generator`` so that simulations are reproducible.
"""

from __future__ import annotations

import numpy as np

# linear attenuation of water at ~70 keV effective energy (cm^-1); HU = 1000 (mu - mu_w) / mu_w
MU_WATER_PER_CM = 0.192


def hu_to_mu(hu: np.ndarray, mu_water: float = MU_WATER_PER_CM) -> np.ndarray:
    """HU -> linear attenuation (cm^-1), clipped at 0 (nothing attenuates less than vacuum)."""
    return np.maximum(mu_water * (1.0 + hu.astype(np.float64) / 1000.0), 0.0)


def mu_to_hu(mu: np.ndarray, mu_water: float = MU_WATER_PER_CM) -> np.ndarray:
    """Linear attenuation (cm^-1) -> HU."""
    return 1000.0 * (mu - mu_water) / mu_water


def simulate_low_dose_ct(
    hu: np.ndarray,
    dose_fraction: float,
    rng: np.random.Generator,
    *,
    i0: float = 1e5,
    electronic_noise: float = 10.0,
    pixel_size_mm: float = 0.7,
    n_angles: int | None = None,
    mu_water: float = MU_WATER_PER_CM,
) -> np.ndarray:
    """Simulate a reduced-dose acquisition of a CT slice in the projection domain.

    ``hu``: ``(H, W)`` full-dose slice in HU -> ``(H, W)`` low-dose slice in HU (float32).

    HU -> attenuation (cm^-1) -> parallel-beam sinogram of line integrals ``p`` (cm, via the
    pixel size) over ``n_angles`` views in [0, 180) (default ``max(H, W)``) -> detected counts
    ``Poisson(I0 * dose * exp(-p)) + N(0, electronic_noise^2)`` (``i0``: incident photons per
    detector bin per view at full dose) -> ``p' = -log(counts / (I0 * dose))`` (counts floored at
    1: photon starvation) -> filtered back-projection (ramp) -> HU.

    The noise is inserted as ``FBP(p') - FBP(p)`` on top of the input, so the simulated slice keeps
    the input's resolution and only gains the quantum and electronic noise of the lower dose (the
    input already carries full-dose noise; the added variance is that of dose ``dose_fraction``).
    """
    from skimage.transform import iradon, radon

    if not 0 < dose_fraction <= 1:
        raise ValueError(f"dose_fraction must be in (0, 1], got {dose_fraction}")
    h, w = hu.shape
    theta = np.linspace(0.0, 180.0, n_angles or max(h, w), endpoint=False)
    mu = hu_to_mu(hu, mu_water)
    pixel_cm = pixel_size_mm / 10.0
    sinogram = radon(mu, theta=theta, circle=False) * pixel_cm  # line integrals, dimensionless (cm * cm^-1)
    flux = i0 * dose_fraction
    counts = rng.poisson(flux * np.exp(-sinogram)) + rng.normal(0.0, electronic_noise, sinogram.shape)
    noisy = -np.log(np.maximum(counts, 1.0) / flux)
    size = max(h, w)

    def fbp(p: np.ndarray) -> np.ndarray:
        rec = iradon(p / pixel_cm, theta=theta, circle=False, filter_name="ramp", output_size=size)
        return rec[(size - h) // 2 : (size - h) // 2 + h, (size - w) // 2 : (size - w) // 2 + w]

    noise_hu = mu_to_hu(fbp(noisy), mu_water) - mu_to_hu(fbp(sinogram), mu_water)
    return (hu + noise_hu).astype(np.float32)
