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
    ``i0`` is a nominal full dose, not the scan's: on a smooth 0.5 mm head slice (3 HU of its own
    noise) dose 0.25 adds ~110 HU in the brain. :func:`simulate_ct_noise` sets the level instead.
    """
    if not 0 < dose_fraction <= 1:
        raise ValueError(f"dose_fraction must be in (0, 1], got {dose_fraction}")
    noise = _fbp_noise(hu, i0 * dose_fraction, rng, electronic_noise=electronic_noise, pixel_size_mm=pixel_size_mm,
                       n_angles=n_angles, mu_water=mu_water)
    return (hu + noise).astype(np.float32)


def simulate_ct_noise(
    hu: np.ndarray,
    noise_hu: float,
    rng: np.random.Generator,
    *,
    pixel_size_mm: float = 0.7,
    n_angles: int | None = None,
    body_hu: float = -500.0,
) -> np.ndarray:
    """Add reduced-dose CT noise of a given level: ``(H, W)`` HU -> ``(H, W)`` HU (float32).

    The noise of :func:`simulate_low_dose_ct` at full nominal dose (its FBP texture: correlated,
    streaks behind bone), scaled so that its standard deviation over the body (clean pixels above
    ``body_hu``) is ``noise_hu``: the way a protocol's image noise is quoted (SD in HU), without
    a guess at the scanner's photon flux.
    """
    if noise_hu < 0:
        raise ValueError(f"noise_hu must be >= 0, got {noise_hu}")
    noise = _fbp_noise(hu, 1e5, rng, electronic_noise=10.0, pixel_size_mm=pixel_size_mm, n_angles=n_angles)
    body = hu > body_hu
    std = float(noise[body].std()) if body.any() else float(noise.std())
    return (hu + noise * (noise_hu / max(std, 1e-6))).astype(np.float32)


def _fbp_noise(
    hu: np.ndarray,
    flux: float,
    rng: np.random.Generator,
    *,
    electronic_noise: float,
    pixel_size_mm: float,
    n_angles: int | None,
    mu_water: float = MU_WATER_PER_CM,
) -> np.ndarray:
    """``FBP(p') - FBP(p)`` in HU for incident ``flux`` photons per bin per view (see
    :func:`simulate_low_dose_ct`)."""
    from skimage.transform import iradon, radon

    h, w = hu.shape
    theta = np.linspace(0.0, 180.0, n_angles or max(h, w), endpoint=False)
    mu = hu_to_mu(hu, mu_water)
    pixel_cm = pixel_size_mm / 10.0
    sinogram = radon(mu, theta=theta, circle=False) * pixel_cm  # line integrals, dimensionless (cm * cm^-1)
    counts = rng.poisson(flux * np.exp(-sinogram)) + rng.normal(0.0, electronic_noise, sinogram.shape)
    noisy = -np.log(np.maximum(counts, 1.0) / flux)
    size = max(h, w)

    def fbp(p: np.ndarray) -> np.ndarray:
        rec = iradon(p / pixel_cm, theta=theta, circle=False, filter_name="ramp", output_size=size)
        return rec[(size - h) // 2 : (size - h) // 2 + h, (size - w) // 2 : (size - w) // 2 + w]

    return mu_to_hu(fbp(noisy), mu_water) - mu_to_hu(fbp(sinogram), mu_water)
