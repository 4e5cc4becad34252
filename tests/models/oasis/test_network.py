"""Tests for the OASIS network (models/oasis/network.py, transformer.py, decoder.py, config.py)."""

import json

import pytest
import torch
import torch.nn.functional as F

from models.oasis import OASIS, PRESETS, OASISConfig
from models.oasis.calibration import RoutingTable
from models.oasis.decoder import LightDecoder, pack_frames, unpack_frames
from models.oasis.transformer import apply_rotary, rotary_embedding


def tiny(**overrides) -> OASIS:
    config = dict(PRESETS["oasis-t"]["config"])
    config.update(overrides)
    return OASIS.from_config(config)


def randomise_head(model: OASIS, seed: int = 0) -> OASIS:
    """Give the zero-initialised output layers random weights, so the output depends on the input."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in (model.transformer.proj_out.weight, model.codec.conv_out.weight):
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return model


def bicubic(clip: torch.Tensor, scale: int) -> torch.Tensor:
    out = F.interpolate(clip.flatten(0, 1), scale_factor=scale, mode="bicubic", align_corners=False)
    return out.unflatten(0, clip.shape[:2])


@pytest.mark.parametrize("features", [0, 4])
@pytest.mark.parametrize("scale", [2, 4])
@pytest.mark.parametrize("size", [(3, 16, 24), (5, 13, 17), (1, 7, 9)])
def test_shapes_any_size_and_untrained_is_bicubic(scale, size, features):
    torch.manual_seed(0)
    model = tiny(scale=scale, decoder_features=features).eval()
    t, h, w = size
    clip = torch.rand(2, t, 3, h, w)
    with torch.no_grad():
        out = model(clip)
    assert out.shape == (2, t, 3, scale * h, scale * w)
    # zero-initialised output layers: the untrained model is exactly bicubic (clamped)
    assert torch.allclose(out, bicubic(clip, scale).clamp(0, 1), atol=1e-5)
    assert model.scale == scale and model.temporal_window == 4


def test_trained_output_stays_in_range_and_uses_neighbour_frames():
    torch.manual_seed(0)
    model = randomise_head(tiny()).eval()
    clip = torch.rand(1, 4, 3, 12, 12)
    changed = clip.clone()
    changed[:, 0] = torch.rand(3, 12, 12)
    with torch.no_grad():
        a, b = model(clip), model(changed)
    assert a.min() >= 0 and a.max() <= 1
    # frame 3 never changed; it only differs through attention over time (the global head)
    assert (a[:, 3] - b[:, 3]).abs().max() > 1e-4
    model.transformer.blocks[0].attn.routing = ["intra", "window"]
    model.transformer.blocks[1].attn.routing = ["intra", "intra"]
    with torch.no_grad():
        a, b = model(clip), model(changed)
    assert torch.allclose(a[:, 3], b[:, 3], atol=1e-6)  # window (t=3) reaches frame 1 at most


def test_config_round_trip_and_registry_preset_fields():
    model = tiny(scale=2)
    again = OASIS.from_config(json.loads(json.dumps(model.config_dict())))
    assert again.config_dict() == model.config_dict()
    assert again.config_dict()["routing"] == PRESETS["oasis-t"]["config"]["routing"]
    for preset in PRESETS.values():
        assert preset["task"] == "video-sr" and preset["config"]["scale"] == 4
    with pytest.raises(ValueError, match="unknown OASIS config"):
        OASIS.from_config({"scale": 4, "depth": 3})
    with pytest.raises(ValueError, match="scale must be 2 or 4"):
        OASISConfig(scale=3)


def test_oasis_s_budget():
    model = OASIS.from_config(PRESETS["oasis-s"]["config"])
    params = sum(p.numel() for p in model.parameters())
    assert params * 4 < 20e6  # fp32 safetensors under 20 MB
    assert model.config.pad_multiple == (8, 8)  # tokens at 1/8 of the LR resolution


def test_routing_from_json_and_runtime_routing(tmp_path):
    table = RoutingTable([["window", "intra"], ["global", "window"]], window=(1, 3, 3))
    table.save(tmp_path / "routing.json")
    model = tiny(routing=str(tmp_path / "routing.json"))
    attn = [b.attn for b in model.transformer.blocks]
    assert [a.routing for a in attn] == table.layers and attn[0].window == (1, 3, 3)
    assert model.config_dict()["routing"] == table.layers  # a card stores the list, not the path
    for a in attn:
        a.routing = ["global", "global"]
    assert model.config_dict()["routing"] is None


def test_qk_observer_sees_post_rotary_queries():
    model = tiny()
    seen = []
    model.transformer.blocks[1].attn.qk_observer = lambda q, k, grid: seen.append((q.shape, k.shape, grid))
    with torch.no_grad():
        model(torch.rand(1, 3, 3, 8, 12))
    # oasis-t: unshuffle 2, patch 2 -> tokens at 1/4 of the LR size; 2 heads of 8
    assert seen == [((1, 2, 3 * 2 * 3, 8), (1, 2, 3 * 2 * 3, 8), (3, 2, 3))]


def test_rotary_is_relative():
    cos, sin = rotary_embedding((4, 3, 5), 12, 10000.0, torch.device("cpu"))
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(1, 1, 1, 12, generator=g), torch.randn(1, 1, 1, 12, generator=g)
    L = 4 * 3 * 5
    qr = apply_rotary(q.expand(1, 1, L, 12), (cos, sin))
    kr = apply_rotary(k.expand(1, 1, L, 12), (cos, sin))
    logits = (qr @ kr.transpose(-1, -2))[0, 0]
    idx = lambda t, h, w: (t * 3 + h) * 5 + w  # noqa: E731
    # same offset (1, 1, 2) at two places -> same logit; a rotation keeps the norm
    assert logits[idx(0, 0, 0), idx(1, 1, 2)] == pytest.approx(logits[idx(2, 1, 1), idx(3, 2, 3)].item(), abs=1e-4)
    assert torch.allclose(qr.norm(dim=-1), q.norm().expand(1, 1, L), atol=1e-5)


@pytest.mark.parametrize("p", [1, 4])
def test_pack_unpack_round_trip(p):
    clip = torch.rand(2, 9, 3, 4, 5)
    packed = pack_frames(clip, p)
    assert packed.shape == (2, 3 * p, 9 if p == 1 else 3, 4, 5)
    assert torch.equal(unpack_frames(packed, p), clip)
    if p > 1:
        with pytest.raises(ValueError, match="1 \\+ 4\\*k"):
            pack_frames(clip[:, :8], p)


@pytest.mark.parametrize("scale", [2, 4])
def test_light_decoder_latent_round_trip_and_polyphase_bicubic(scale):
    decoder = LightDecoder(scale, unshuffle=2, temporal_packing=4, channels=8, blocks=1, latent_std=0.1).double()
    lr = torch.rand(1, 5, 3, 6, 10, dtype=torch.float64)
    hr = torch.rand(1, 5, 3, 6 * scale, 10 * scale, dtype=torch.float64)
    latent = decoder.encode(hr, lr)
    assert latent.shape == (1, decoder.latent_channels, 2, 3, 5)
    assert torch.allclose(decoder.decode(latent, lr), hr, atol=1e-12)
    assert torch.allclose(decoder.decode(torch.zeros_like(latent), lr), bicubic(lr, scale), atol=1e-12)


def test_feature_latent_reaches_the_pixels_only_through_the_decoder():
    model = randomise_head(tiny(decoder_features=4))
    assert model.transformer.proj_out.out_features == 4 * 2 * 2 * 4  # F * u^2 * patch (2 x 2)
    clip, hr = torch.rand(1, 3, 3, 8, 8), torch.rand(1, 3, 3, 32, 32)
    F.mse_loss(model.restore(clip), hr).backward()
    assert model.transformer.proj_out.weight.grad.abs().sum() > 0
    # with the decoder's input weights of the features at zero the transformer cannot act
    with torch.no_grad():
        model.codec.conv_in.weight[:, 3:] = 0  # after the 3 LR channels
        a = model(clip)
        model.transformer.proj_out.weight.mul_(3)
        assert torch.allclose(a, model(clip), atol=1e-6)
    with pytest.raises(ValueError, match="no encoder"):
        model.encode_target(hr, clip)
    with pytest.raises(ValueError, match="one_step objective"):
        OASISConfig(decoder_features=4, objective="flow_matching")


def test_network_target_round_trip_with_padding():
    model = tiny().double()
    lr = torch.rand(1, 3, 3, 7, 10, dtype=torch.float64)
    hr = torch.rand(1, 3, 3, 28, 40, dtype=torch.float64)
    latent = model.encode_target(hr, lr)
    assert latent.shape == (1, 192, 3, 4, 6)  # padded to 8 x 12 LR, grid at 1/2
    assert torch.allclose(model.decode(latent, lr), hr, atol=1e-12)


def test_sampler_refuses_weights_trained_for_one_step_only():
    with pytest.raises(ValueError, match="one-step restoration only"):
        tiny().sample(torch.rand(1, 2, 3, 8, 8), steps=2)


def test_flow_matching_sampler_shapes_and_determinism():
    model = randomise_head(tiny())
    model.config.objective = "flow_matching"
    model.eval()
    clip = torch.rand(1, 2, 3, 8, 8)
    a = model.sample(clip, steps=3, generator=torch.Generator().manual_seed(1))
    b = model.sample(clip, steps=3, generator=torch.Generator().manual_seed(1))
    assert a.shape == (1, 2, 3, 32, 32) and torch.equal(a, b)
    assert a.min() >= 0 and a.max() <= 1


def test_registry_lists_and_loads_presets(tmp_path):
    from safetensors.torch import save_file

    from restore.registry import list_models, load_model

    names = {e.name: e for e in list_models()}
    assert {"oasis-s", "oasis-t"} <= set(names) and names["oasis-s"].scale == 4
    model = randomise_head(tiny())
    save_file(model.state_dict(), tmp_path / "t.safetensors")
    loaded = load_model("oasis-t", weights=tmp_path / "t.safetensors")
    clip = torch.rand(1, 2, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded(clip), model.eval()(clip))


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    model = randomise_head(tiny())
    clip = torch.rand(1, 2, 3, 8, 8)
    grads = []
    for enabled in (False, True):
        model.zero_grad()
        model.transformer.gradient_checkpointing = enabled
        model.restore(clip).square().mean().backward()
        grads.append([p.grad.clone() for p in model.transformer.parameters() if p.grad is not None])
    assert len(grads[0]) == len(grads[1]) > 10
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(*grads))


def test_a_deeper_decoder_warm_starts_from_the_trained_blocks_and_computes_the_same():
    config = dict(PRESETS["oasis-t"]["config"], decoder_neighbors=1)
    torch.manual_seed(0)
    trained = OASIS.from_config(config).eval()
    with torch.no_grad():
        for p in trained.codec.parameters():
            p.add_(0.05 * torch.randn_like(p))
    blocks = len(trained.codec.body)
    deeper = OASIS.from_config(dict(config, decoder_blocks=blocks + 2)).eval()
    deeper.load_warm_start(trained.state_dict())
    clip = torch.rand(1, 3, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(deeper(clip), trained(clip), atol=1e-6)
    # fewer blocks than trained: the extra trained blocks are refused, named
    with pytest.raises(ValueError, match=f"unexpected .*codec.body.{blocks}"):
        trained.load_warm_start(deeper.state_dict())
    # with propagation the body is split at its middle, so added blocks would change the function
    propagating = OASIS.from_config(dict(config, decoder_blocks=blocks + 2, decoder_propagation="bidirectional"))
    with pytest.raises(ValueError, match="missing .*codec.body"):
        propagating.load_warm_start(trained.state_dict())
