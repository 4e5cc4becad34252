"""Tests for the Wan2.1 path (models/oasis/wan.py): a tiny random Wan2.1 saved in diffusers format."""

import pytest
import torch
from diffusers import AutoencoderKLWan, WanTransformer3DModel

from models.oasis import OASIS, OASISConfig


@pytest.fixture(scope="module")
def wan_folder(tmp_path_factory):
    """A Wan2.1-shaped diffusers folder with tiny random weights (real classes, real files)."""
    folder = tmp_path_factory.mktemp("wan")
    torch.manual_seed(0)
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=16, out_channels=16,
        text_dim=32, freq_dim=32, ffn_dim=48, num_layers=2, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=32,
    )
    # diffusers initialises some of these to zero; random values make the comparison meaningful
    with torch.no_grad():
        for p in transformer.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    transformer.save_pretrained(folder / "transformer")
    AutoencoderKLWan(base_dim=8, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                     temperal_downsample=[False, True, True]).save_pretrained(folder / "vae")
    return folder


def test_config_reads_wan_geometry(wan_folder):
    config = OASISConfig.wan_1_3b(wan_folder, scale=2)
    assert (config.heads, config.head_dim, config.layers, config.ffn_dim) == (2, 12, 2, 48)
    assert (config.unshuffle, config.temporal_packing, config.latent_channels) == (4, 4, 16)
    assert config.in_channels == 3 * 4 * 16
    with pytest.raises(ValueError, match="transformer config"):
        OASISConfig.wan_1_3b(wan_folder / "missing")


@pytest.mark.parametrize("scale", [2, 4])
def test_from_wan_runs_any_size(wan_folder, scale):
    model = OASIS.from_wan(wan_folder, scale=scale).eval()
    clip = torch.rand(1, 3, 3, 10, 14)  # T padded to 5 = 1 + 4k, H and W to multiples of 8/s * 2
    with torch.no_grad():
        out = model(clip)
    assert out.shape == (1, 3, 3, 10 * scale, 14 * scale)
    assert out.min() >= 0 and out.max() <= 1
    latent = model.encode_target(torch.rand(1, 3, 3, 10 * scale, 14 * scale), clip)
    grid = {2: (4, 4), 4: (6, 8)}[scale]  # LR padded to multiples of 2u (u = 8/s), then / u
    assert latent.shape == (1, 16, 2, *grid)
    assert model.decode(latent, clip).shape == out.shape


def test_transformer_matches_diffusers_wan_with_null_text(wan_folder):
    """Our blocks with the converted weights compute what Wan2.1 computes with an all-zero text context."""
    model = OASIS.from_wan(wan_folder, scale=4).eval()
    wan = WanTransformer3DModel.from_pretrained(str(wan_folder / "transformer")).eval()
    with torch.no_grad():
        model.transformer.patch_embedding.weight.zero_()  # drop the (new) LR input
        model.transformer.patch_embedding.bias.zero_()
        g = torch.Generator().manual_seed(0)
        latent = torch.randn(2, 16, 3, 6, 8, generator=g)
        lr = torch.rand(2, model.config.in_channels, 3, 6, 8, generator=g)
        t = torch.tensor([250.0, 800.0])
        ours = model.transformer(lr, t, latent)
        theirs = wan(latent, t, torch.zeros(2, 7, 32), return_dict=False)[0]
    assert torch.allclose(ours, theirs, atol=1e-4), (ours - theirs).abs().max()
    assert ours.abs().max() > 1e-2  # not trivially zero


def test_vae_stays_out_of_checkpoints(wan_folder, tmp_path):
    model = OASIS.from_wan(wan_folder, scale=4)
    state = model.state_dict()
    assert not any(k.startswith("codec.") for k in state) and "transformer.patch_embedding.weight" in state
    assert all(not p.requires_grad for p in model.codec.parameters())
    model.train()
    assert not model.codec.vae.training
    # strict round trip through a fresh model built from the config alone (the registry's path)
    torch.save(state, tmp_path / "w.pt")
    fresh = OASIS.from_config(model.config_dict())
    fresh.load_state_dict(torch.load(tmp_path / "w.pt", weights_only=True), strict=True)
    clip = torch.rand(1, 1, 3, 4, 4)
    with torch.no_grad():
        assert torch.equal(fresh.eval()(clip), model.eval()(clip))
