"""restore.dicom.processing: unit conversion, sliding windows, baselines, model choice."""

from __future__ import annotations

import numpy as np
import pytest

from restore.dicom.processing import ProcessingConfig, SliceProcessor, build_processor, choose_model, upscale
from restore.dicom.writer import encode_stored
from restore.io.dicom import padding_mask, stored_frames, to_units
from tests.dicom_study import CT_PADDING, bundled, cr, ct_with_padding


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


def test_ct_model_sees_the_training_window_and_out_of_range_pixels_come_back_unchanged():
    # CT2_UNC-like slice: 22 % of it is -2048 HU padding outside the field of view, a value the
    # RAT CT models never saw (trained on HU clipped to [-1024, 3071]); fed to the network
    # unclipped it biased air by -167 HU and fat by +17 HU through the networks' global operations
    import torch
    from torch import nn

    from models.rat.network import CT_HU_RANGE

    seen = []

    class Recorder(nn.Module):
        def forward(self, x):
            seen.append(x.clone())
            return x

    hu = np.random.default_rng(0).uniform(-1000, 3000, size=(2, 32, 32)).astype(np.float32)
    hu[:, :6] = -2048.0  # padding
    hu[:, -2:, :4] = 3500.0  # metal
    hu[0, 10, 10], hu[0, 11, 11] = CT_HU_RANGE  # the full training window round-trips
    out = SliceProcessor(Recorder(), scale=1, config=ProcessingConfig(tile=32))(hu, "HU", "CT")
    x = torch.cat(seen)
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    np.testing.assert_allclose(out, hu, atol=1e-3)  # identity: every pixel back, in range or not
    inside = (hu >= CT_HU_RANGE[0]) & (hu <= CT_HU_RANGE[1])
    expected = (hu - CT_HU_RANGE[0]) / (CT_HU_RANGE[1] - CT_HU_RANGE[0])
    np.testing.assert_allclose(x[:, 0].numpy()[inside], expected[inside], atol=1e-6)
    assert float(x[0, 0, 0, 0]) == 0.0  # -2048 HU reaches the model as -1024 HU


def test_noise_below_the_hu_floor_takes_the_denoiser_output_and_padding_stays():
    # at 10 % dose air's noise reaches well below -1024 HU: passed through, those pixels came back
    # as raw noise (air 183 HU RMS on the flat-tissue phantom); padding far below stays unchanged
    # (an upscaler keeps the stored range: test_sr_x2_keeps_ct_padding_as_padding_and_real_values...)
    import torch
    from torch import nn

    class Flat(nn.Module):  # a "denoiser" that knows the answer: air everywhere
        def forward(self, x):
            return torch.full_like(x, 24.0 / 4095.0)  # -1000 HU in the [-1024, 3071] window

    hu = np.full((1, 32, 32), -1000.0, np.float32)
    hu[0, 8, 8:12] = [-1100.0, -1500.0, -1999.0, -1024.5]  # noise around air
    hu[0, :4] = -2048.0  # out of field, PixelPaddingValue not declared
    hu[0, 4, :4] = -2000.0  # GE-style padding value
    hu[0, -1, -1] = 3500.0  # metal
    out = SliceProcessor(Flat(), scale=1, config=ProcessingConfig(tile=32))(hu, "HU", "CT")
    np.testing.assert_allclose(out[0, 8, 8:12], -1000.0, atol=1e-3)
    assert (out[0, :4] == -2048.0).all() and (out[0, 4, :4] == -2000.0).all() and out[0, -1, -1] == 3500.0


def test_networks_run_channels_last_on_cpu_with_the_output_of_the_plain_layout():
    import torch

    from models.rat import RAT, RATConfig, PRESETS

    torch.manual_seed(0)
    net = RAT(RATConfig(**PRESETS["rat-s-ct"]["config"])).eval()
    for p in net.parameters():  # an untrained RAT is the identity: make every layer count
        p.data.normal_(0, 0.05)
    x = torch.rand(1, 1, 64, 64)
    with torch.inference_mode():
        expected = net(x, net.default_regions(x))
    proc = SliceProcessor(net, scale=1, config=ProcessingConfig(tile=64))
    assert proc.model.intro.weight.is_contiguous(memory_format=torch.channels_last)
    out = proc._infer(x, net.default_regions(x))
    assert torch.allclose(out, expected, atol=1e-5)


def test_model_card_caps_the_sliding_window():
    from torch import nn

    sizes = set()

    class Recorder(nn.Module):
        def forward(self, x):
            sizes.add(tuple(x.shape[-2:]))
            return x

    hu = np.zeros((1, 48, 40), np.float32)
    SliceProcessor(Recorder(), scale=1, card={"tile": 16}, config=ProcessingConfig(tile=512))(hu, "HU", "CT")
    assert sizes == {(16, 16)}
    sizes.clear()
    SliceProcessor(Recorder(), scale=1, card={"tile": 1024}, config=ProcessingConfig(tile=32))(hu, "HU", "CT")
    assert sizes == {(32, 32)}  # the smaller of the two


def test_only_trained_networks_get_clipped_hu():
    # NLM estimates its noise from the slice: clipped air would look less noisy (quarter-dose
    # CT2_UNC: 17.5 dB instead of 22.0), so the classical baselines see HU as they are
    assert not build_processor("ct-denoise", choose_model("ct-denoise", "nlm")).clip_hu
    assert not build_processor("ct-denoise", choose_model("ct-denoise", "identity")).clip_hu
    assert SliceProcessor(lambda x: x, scale=1).clip_hu  # a network (rat-s-ct & co.: a registry entry with weights)


def _slices(ds, units: str):
    """A dataset's frames in ``units`` and its padding mask, as the runner reads them."""
    frames = to_units(ds, stored_frames(ds), units)
    return frames, padding_mask(ds, frames, units)


@pytest.mark.parametrize("name", ["MR_small.dcm", "JPEG2000.dcm"])
def test_sr_x2_keeps_the_full_stored_range(name):
    # the bicubic path clamped each slice to its 0.5-99.5 % percentile window: MR_small's maximum
    # 2145 came back as 1841, the NM maximum 245 as 102
    frames, _ = _slices(bundled(name), "stored")
    out = build_processor("sr-x2", choose_model("sr-x2", None))(frames, "stored", "MR")
    tolerance = 0.01 * np.ptp(frames)  # an isolated extreme pixel is interpolated with its neighbours
    assert out.max() >= frames.max() - tolerance and out.min() <= frames.min() + tolerance
    # bicubic of the stored values almost everywhere (the model's own [0, 1] clamp trims the
    # overshoot beside the window's edges)
    assert np.mean(np.abs(out - upscale(frames, 2, "bicubic")) < 0.5) > 0.98


def test_sr_x2_keeps_ct_padding_as_padding_and_real_values_beyond_the_window():
    # CT below -1024 HU was clamped: the -3024 HU padding vanished while PixelPaddingValue stayed
    ds = ct_with_padding()
    hu, padding = _slices(ds, "HU")
    out = build_processor("sr-x2", choose_model("sr-x2", None))(hu, "HU", "CT", padding)
    stored, clipped = encode_stored(out, ds, "HU")
    big_padding = upscale(padding, 2, "nearest")
    assert clipped == 0
    assert (stored == CT_PADDING).sum() == 4 * padding.sum() and np.all(stored[big_padding] == CT_PADDING)
    # padding is not spread into the field of view: the pixels beside it are tissue, not -2000 HU smears
    assert out[~big_padding].min() > -1100
    # the middle of the 4 x 4 blocks of air below -1024 HU and metal above 3071 HU: exactly kept
    np.testing.assert_allclose(out[0, 83:85, 83:85], -1084, atol=0.01)
    np.testing.assert_allclose(out[0, 163:165, 163:165], 3576, atol=0.01)


def test_sr_x2_counts_what_the_stored_range_clips():
    # a saturated CR marker (4095 of 12 bits, under 0.5 % of the image): kept at 4095, and the
    # bicubic overshoot beyond 4095 is clipped and counted (it was clamped to the percentile window
    # before, uncounted)
    ds = cr()
    frames, _ = _slices(ds, "stored")
    out = build_processor("sr-x2", choose_model("sr-x2", None))(frames, "stored", "CR")
    stored, clipped = encode_stored(out, ds, "stored")
    marker = frames == 4095
    assert 0 < marker.sum() < 0.005 * marker.size
    assert np.all(stored[0, 10:12, 10:16] == 4095)  # the marker's middle row (its edges are interpolated)
    assert clipped == int((np.rint(out) > 4095).sum() + (np.rint(out) < 0).sum()) > 0
