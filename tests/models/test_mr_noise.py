"""Rician noise of MR magnitude images (models/mr_noise.py)."""

from __future__ import annotations

import numpy as np
import pytest

from models.mr_noise import add_relative_rician_noise, add_rician_noise, reference_intensity


def test_rician_noise_biases_dark_regions_up():
    rng = np.random.default_rng(0)
    image = np.zeros((64, 64), np.float32)
    image[:, 32:] = 1.0
    noisy = add_rician_noise(image, 0.1, rng)
    assert noisy.min() >= 0
    # background magnitude is Rayleigh: mean sigma * sqrt(pi / 2); bright side stays unbiased
    assert noisy[:, :32].mean() == pytest.approx(0.1 * np.sqrt(np.pi / 2), rel=0.05)
    assert noisy[:, 32:].mean() == pytest.approx(1.0, abs=0.01)


def test_relative_noise_is_a_fraction_of_the_bright_end_not_of_a_hot_pixel():
    image = np.full((100, 100), 1000.0, np.float32)
    image[0, 0] = 1e6  # one hot pixel: the 99.5th percentile ignores it
    assert reference_intensity(image) == pytest.approx(1000.0)
    noisy = add_relative_rician_noise(image, 0.05, np.random.default_rng(0))
    assert float(np.std(noisy[1:] - image[1:])) == pytest.approx(50.0, rel=0.05)
