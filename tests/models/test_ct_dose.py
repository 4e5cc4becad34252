"""Projection-domain CT noise at a given level (models/ct_dose.py; the dose simulation itself is
tested with the training degradations in tests/datasets/test_medical.py)."""

from __future__ import annotations

import numpy as np
import pytest

from models.ct_dose import simulate_ct_noise


def _head(size: int = 96) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size] - size / 2
    r = np.hypot(yy, xx)
    hu = np.where(r < 0.42 * size, 35.0, -1000.0)
    return np.where((r >= 0.36 * size) & (r < 0.42 * size), 1200.0, hu).astype(np.float32)  # a skull rim


def test_ct_noise_has_the_requested_level_over_the_body_and_a_correlated_texture():
    hu = _head()
    noisy = simulate_ct_noise(hu, 20.0, np.random.default_rng(0), pixel_size_mm=2.0)
    noise = (noisy - hu).astype(np.float64)
    body = hu > -500
    assert noise[body].std() == pytest.approx(20.0, rel=1e-3)
    # FBP noise is not white: neighbouring pixels are anti-correlated by the ramp filter
    inside = noise[30:66, 30:66]
    neighbour = np.corrcoef(inside[:, :-1].ravel(), inside[:, 1:].ravel())[0, 1]
    white = np.random.default_rng(1).normal(0, 20, inside.shape)
    assert abs(neighbour) > 0.1 > abs(np.corrcoef(white[:, :-1].ravel(), white[:, 1:].ravel())[0, 1])
    assert np.array_equal(noisy, simulate_ct_noise(hu, 20.0, np.random.default_rng(0), pixel_size_mm=2.0))
    with pytest.raises(ValueError, match="noise_hu"):
        simulate_ct_noise(hu, -1.0, np.random.default_rng(0))
