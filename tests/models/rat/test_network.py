"""RAT network (models/rat/network.py, msga.py) and the registry contract."""

from __future__ import annotations

import pytest
import torch

from models.rat import PRESETS, RAT, RATConfig
from models.rat.msga import MultiScaleGuidedAttention

TINY = PRESETS["rat-t"]["config"]


@pytest.mark.parametrize("scale", [1, 2, 4])
def test_shapes_any_size_and_scale(scale):
    net = RAT.from_config({**TINY, "scale": scale})
    x = torch.rand(2, 1, 22, 18)  # not a multiple of the U-Net stride
    out, aux = net(x, return_aux=True)
    assert out.shape == (2, 1, 22 * scale, 18 * scale)
    assert set(aux) == {"guidance", "reconstruction"} and all(torch.isfinite(v) for v in aux.values())


def test_transformer_layers_start_as_identity():
    # zero-initialised residual scales: a fresh region transformer leaves its features unchanged
    net = RAT.from_config({**TINY, "half_scale_layers": 1})
    feat = torch.rand(1, net.config.width * 4, 4, 4)
    regions = torch.randint(0, 3, (1, 16, 16))
    torch.testing.assert_close(net.bottleneck(feat, regions), feat)


def test_regions_change_the_output_once_trained():
    torch.manual_seed(0)
    net = RAT.from_config({**TINY, "min_region_tokens": 1})
    for p in net.parameters():  # leave the zero init: make every branch active
        if torch.count_nonzero(p) == 0:
            torch.nn.init.normal_(p, std=0.5)
    x = torch.rand(1, 1, 32, 32)
    one = torch.zeros(1, 32, 32, dtype=torch.long)
    halves = one.clone()
    halves[..., 16:] = 1
    assert not torch.allclose(net(x, one), net(x, halves))
    torch.testing.assert_close(net(x, one), net(x, one + 5))  # only the grouping matters, not the ids


def test_default_partition_follows_config():
    grid = RAT.from_config(TINY).default_regions(torch.rand(2, 1, 40, 40))
    assert grid.shape == (2, 40, 40) and int(grid.max()) == 3  # 2 x 2 cells of 32 px
    ct = RAT.from_config({**TINY, "partition": {"method": "hu", "modality": "ct"}})
    x = torch.full((1, 1, 16, 16), 1024 / 4095)  # 0 HU in the documented window
    x[..., 8:] = 0.0  # -1024 HU: air
    labels = ct.default_regions(x)
    assert labels[0, 0, 0] != labels[0, 0, 15]  # soft tissue vs air (the smoothed edge adds bands between)
    assert ct(x).shape == x.shape
    with pytest.raises(ValueError, match="partition method"):
        RATConfig(partition={"method": "nope"})


def test_three_channels_and_gradients():
    net = RAT.from_config({**TINY, "in_channels": 3, "scale": 2, "half_scale_layers": 1})
    out, aux = net(torch.rand(1, 3, 16, 16), torch.randint(0, 3, (1, 16, 16)), return_aux=True)
    (out.mean() + aux["guidance"] + aux["reconstruction"]).backward()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)


def test_config_round_trip_and_validation():
    net = RAT.from_config(TINY)
    again = RAT.from_config(net.config_dict())
    assert again.config == net.config and net.scale == 1
    with pytest.raises(ValueError, match="unknown RAT config"):
        RAT.from_config({"depth": 3})
    with pytest.raises(ValueError, match="divisible"):
        RATConfig(width=8, heads=3)
    with pytest.raises(ValueError, match="scale"):
        RATConfig(scale=3)


def test_msga_fuses_scales_to_coarsest_grid():
    msga = MultiScaleGuidedAttention([16, 8, 4], channels=8)
    feats = [torch.rand(2, 16, 4, 4), torch.rand(2, 8, 8, 8), torch.rand(2, 4, 16, 16)]
    fused, losses = msga(feats)
    assert fused.shape == (2, 8, 4, 4)
    assert losses["guidance"] >= 0 and losses["reconstruction"] > 0


def test_registry_builds_presets():
    from restore.registry import build_model, list_models

    names = {e.name: e for e in list_models()}
    assert {"rat-t", "rat-s-ct", "rat-s-mr"} <= set(names)
    assert names["rat-s-ct"].task == "ct-denoise" and names["rat-s-mr"].task == "mr-denoise"
    net = build_model("rat", names["rat-t"].config)
    assert isinstance(net, RAT) and net(torch.rand(1, 1, 8, 8)).shape == (1, 1, 8, 8)


def _activate(net: RAT, seed: int = 0) -> RAT:
    """Give every zero-initialised parameter random values, as training would."""
    torch.manual_seed(seed)
    for p in net.parameters():
        if torch.count_nonzero(p) == 0:
            torch.nn.init.normal_(p, std=0.2)
    return net


@pytest.mark.parametrize("preset", ["rat-t", "rat-s-ct"])
def test_untrained_rat_returns_its_input_exactly(preset):
    # residual over the input through a zero-initialised last conv: a fresh (or weak) model is no
    # worse than its input (the shipped rat-s-ct of 2026-11-26 changed a clean slice by 0.45)
    net = RAT.from_config(PRESETS[preset]["config"]).eval()
    x = torch.rand(2, 1, 40, 24)
    with torch.no_grad():
        assert torch.equal(net(x), x)


def test_bilinear_upsampling_keeps_a_constant_image_constant():
    # the 4-pixel grid of the shipped rat-s-ct: PixelShuffle's sub-pixel phases (and MSGA's
    # transposed convs) come from different channels, so a flat region leaves the decoder with a
    # 2- and 4-pixel periodic pattern; bilinear upsampling keeps a constant constant
    x = torch.full((1, 1, 256, 256), 0.27)
    regions = torch.zeros(1, 256, 256, dtype=torch.long)
    interior = (0, 0, slice(64, 192), slice(64, 192))  # away from the convs' zero padding

    def periodic_power(upsample: str) -> float:
        net = _activate(RAT.from_config({**TINY, "enc_depths": [1, 1, 1], "dec_depths": [1, 1, 1],
                                         "upsample": upsample})).eval()
        with torch.no_grad():
            out = net(x, regions)[interior]
        spectrum = torch.fft.fft2(out - out.mean()).abs()
        return max(float(spectrum[0, 128 // p] + spectrum[128 // p, 0]) for p in (2, 4, 8))

    assert periodic_power("pixelshuffle") > 1e-2
    assert periodic_power("bilinear") < 1e-3  # float rounding only (multi-threaded convs: ~2e-4)
    with pytest.raises(ValueError, match="upsample"):
        RATConfig(upsample="nearest")


def test_deep_supervision_predicts_every_msga_scale():
    net = RAT.from_config({**TINY, "deep_supervision": True})
    x = torch.rand(2, 1, 20, 16)
    out, aux = net(x, return_aux=True)
    assert len(aux["scales"]) == len(TINY["enc_depths"]) + 1
    coarse = torch.nn.functional.avg_pool2d(x, 4)
    for pred in aux["scales"]:  # zero-initialised heads: the pooled input
        torch.testing.assert_close(pred, coarse)
    assert set(net(x, return_aux=True)[1]) == {"guidance", "reconstruction", "scales"}
    assert "scales" not in RAT.from_config(TINY)(x, return_aux=True)[1]
    with pytest.raises(ValueError, match="msga"):
        RATConfig(msga=False, deep_supervision=True)
