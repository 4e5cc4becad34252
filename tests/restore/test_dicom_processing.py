"""restore.dicom.processing: unit conversion, sliding windows, baselines, model choice."""

from __future__ import annotations

import numpy as np
import pytest

from restore.dicom.processing import ProcessingConfig, SliceProcessor, build_processor, choose_model


def test_identity_round_trips_hu_through_overlapping_windows():
    choice = choose_model("ct-denoise", "identity")
    proc = build_processor("ct-denoise", choice, config=ProcessingConfig(tile=32, overlap=0.5, batch_size=2))
    hu = np.random.default_rng(0).integers(-1024, 3000, size=(3, 48, 40)).astype(np.float32)
    out = proc(hu, "HU", "CT")
    assert out.shape == hu.shape and np.abs(out - hu).max() < 0.01


def test_nlm_baseline_reduces_noise():
    choice = choose_model("mr-denoise", None)
    assert choice.name == "nlm" and choice.baseline
    proc = build_processor("mr-denoise", choice)
    rng = np.random.default_rng(1)
    clean = np.tile(np.linspace(100, 900, 64, dtype=np.float32), (1, 64, 1))
    noisy = clean + rng.normal(0, 40, clean.shape).astype(np.float32)
    out = proc(noisy, "stored", "MR")
    assert np.abs(out - clean).mean() < 0.6 * np.abs(noisy - clean).mean()


def test_sr_task_needs_an_x2_model():
    proc = build_processor("sr-x2", choose_model("sr-x2", None))
    assert proc(np.zeros((1, 8, 8), np.float32), "HU", "CT").shape == (1, 16, 16)
    from restore.errors import ModelError

    with pytest.raises(ModelError, match="x1"):
        build_processor("sr-x2", choose_model("sr-x2", "identity"))


def test_unsupported_names_why_a_series_cannot_be_processed():
    from torch import nn

    rat = SliceProcessor(nn.Identity(), scale=1, config=ProcessingConfig(regions="hu"), uses_regions=True,
                         in_channels=1)
    assert rat.unsupported("CT", 1) is None
    assert "'hu' needs single-channel CT" in rat.unsupported("MR", 1)
    assert "takes 1-channel slices, the series has 3" in rat.unsupported("US", 3)
    slic = SliceProcessor(nn.Identity(), scale=1, config=ProcessingConfig(regions="slic"), uses_regions=True,
                          in_channels=1)
    assert slic.unsupported("MR", 1) is None
    # the classical baselines take any modality and channel count
    assert build_processor("mr-denoise", choose_model("mr-denoise", None)).unsupported("US", 3) is None
