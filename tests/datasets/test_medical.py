"""Medical degradations (datasets/medical.py)."""

from __future__ import annotations

import numpy as np
import pytest

from datasets.medical import (
    bicubic_downsample,
    hu_to_mu,
    image_as_slice,
    kspace_downsample,
    mu_to_hu,
    random_phantom,
    simulate_low_dose_ct,
)


def _water_phantom(n: int = 48) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[:n, :n] - n / 2
    hu = np.where(xx**2 + yy**2 < (0.42 * n) ** 2, 0.0, -1000.0).astype(np.float32)
    hu[(xx - 4) ** 2 + yy**2 < 16] = 700.0
    inner = xx**2 + yy**2 < (0.3 * n) ** 2
    return hu, inner


def test_hu_mu_round_trip():
    hu = np.array([-1000.0, 0.0, 1000.0])
    np.testing.assert_allclose(mu_to_hu(hu_to_mu(hu)), hu, atol=1e-9)
    assert hu_to_mu(np.array([-1500.0]))[0] == 0.0


def test_ct_noise_grows_as_dose_falls():
    hu, inner = _water_phantom()
    stds = []
    for dose in (1.0, 0.5, 0.25, 0.1):
        low = simulate_low_dose_ct(hu, dose, np.random.default_rng(0), i0=2e4, pixel_size_mm=8.0)
        noise = (low - hu)[inner]
        stds.append(noise.std())
        assert abs(noise.mean()) < 0.25 * noise.std() + 2.0  # noise only, no HU bias
    assert all(a < b for a, b in zip(stds, stds[1:]))
    # quantum noise: std ~ 1 / sqrt(dose) (electronic noise adds a little at low dose)
    assert 1.6 < stds[2] / stds[0] < 2.6


def test_ct_simulation_is_reproducible_and_validates_dose():
    hu, _ = _water_phantom(32)
    a = simulate_low_dose_ct(hu, 0.25, np.random.default_rng(1), pixel_size_mm=8.0)
    b = simulate_low_dose_ct(hu, 0.25, np.random.default_rng(1), pixel_size_mm=8.0)
    assert a.dtype == np.float32 and np.array_equal(a, b)
    with pytest.raises(ValueError, match="dose_fraction"):
        simulate_low_dose_ct(hu, 0.0, np.random.default_rng(1))


def test_kspace_truncation_keeps_low_frequencies_and_intensity():
    yy, xx = np.mgrid[:32, :32]
    smooth = (1 + np.cos(2 * np.pi * xx / 32)).astype(np.float32)  # one cycle: survives truncation
    small = kspace_downsample(smooth, 2)
    assert small.shape == (16, 16)
    np.testing.assert_allclose(small, smooth[::2, ::2], atol=1e-4)
    with pytest.raises(ValueError, match="divisible"):
        kspace_downsample(np.zeros((15, 16)), 2)


def test_bicubic_downsample_rgb_and_gray():
    rgb = np.random.default_rng(0).random((16, 12, 3)).astype(np.float32)
    assert bicubic_downsample(rgb, 4).shape == (4, 3, 3)
    flat = np.full((8, 8), 0.3, np.float32)
    np.testing.assert_allclose(bicubic_downsample(flat, 2), 0.3, atol=1e-6)


def test_random_phantom_is_a_body_in_air_with_varied_tissues_and_reproducible():
    a = random_phantom(64, np.random.default_rng(3))
    assert a.shape == (64, 64) and a.dtype == np.float32
    assert a[0, 0] == pytest.approx(-1000.0, abs=1.0)  # corners are air
    assert np.ptp(a[20:44, 20:44]) > 100  # more than one tissue inside the body
    np.testing.assert_array_equal(a, random_phantom(64, np.random.default_rng(3)))
    assert not np.array_equal(a, random_phantom(64, np.random.default_rng(4)))


def test_image_as_slice_maps_grey_levels_to_hu_inside_a_body_or_to_mr_magnitude():
    ramp = np.tile(np.linspace(0, 1, 80, dtype=np.float32), (60, 1))[..., None].repeat(3, axis=2)
    hu = image_as_slice(ramp, 32, "HU", np.random.default_rng(0))
    assert hu.shape == (32, 32) and hu[0, 0] == -1000.0  # outside the body: air
    row = hu[16, 8:24]
    assert np.all(np.diff(row) > 0) and -1000 <= row.min() and row.max() <= 1500  # grey -> HU, increasing
    mr = image_as_slice(ramp, 32, "stored", np.random.default_rng(0))
    assert mr.min() >= 0 and np.all(np.diff(mr[16]) >= 0) and mr.max() > 400
