"""models.ensemble: the dihedral transforms and the self-ensemble around a real (tiny) model."""

from __future__ import annotations

import torch
from torch import nn

from models.ensemble import DIHEDRAL, SelfEnsemble, dihedral, inverse_dihedral


def test_the_eight_transforms_are_distinct_and_each_is_undone_by_its_inverse():
    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)
    images = [dihedral(x, k, f) for k, f in DIHEDRAL]
    assert len({tuple(t.flatten().tolist()) for t in images}) == 8
    for (k, f), t in zip(DIHEDRAL, images):
        assert torch.equal(inverse_dihedral(t, k, f), x)


class _Upscale(nn.Module):
    """x2 nearest upscaling plus a fixed left-to-right ramp: not equivariant to flips."""

    scale = 2
    temporal_window = 3

    def forward(self, x):
        y = x.repeat_interleave(2, -2).repeat_interleave(2, -1)
        return y + torch.linspace(0, 1, y.shape[-1], dtype=y.dtype)


def test_the_ensemble_averages_out_what_is_not_equivariant_and_keeps_what_is():
    x = torch.rand(1, 3, 3, 6, 10)  # (B, T, C, H, W), not square: the turns swap H and W
    model = SelfEnsemble(_Upscale())
    out = model(x)
    assert out.shape == (1, 3, 3, 12, 20)
    # the ramp is seen in 8 orientations: its mean over them is a constant
    torch.testing.assert_close(out, x.repeat_interleave(2, -2).repeat_interleave(2, -1) + 0.5)
    assert (model.scale, model.temporal_window) == (2, 3)


def test_a_model_without_temporal_window_has_none_through_the_ensemble():
    assert getattr(SelfEnsemble(nn.Identity()), "temporal_window", 1) == 1


def test_the_ensemble_of_a_tiny_oasis_is_close_to_the_model_and_is_its_exact_mean():
    from restore.registry import build_model, get_entry

    torch.manual_seed(0)
    net = build_model("oasis", get_entry("oasis-t").config).eval()
    clip = torch.rand(1, 2, 3, 16, 24)
    with torch.no_grad():
        plain = net(clip)
        mean = torch.stack([inverse_dihedral(net(dihedral(clip, k, f)), k, f) for k, f in DIHEDRAL]).mean(0)
        torch.testing.assert_close(SelfEnsemble(net)(clip), mean, rtol=0, atol=1e-6)
    assert plain.shape == mean.shape and not torch.equal(plain, mean)


def test_the_ensemble_accumulates_in_float32_and_returns_the_models_dtype():
    x = torch.rand(1, 1, 3, 4, 4).to(torch.bfloat16)
    out = SelfEnsemble(_Upscale())(x)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), (x.repeat_interleave(2, -2).repeat_interleave(2, -1) + 0.5).float(),
                               rtol=0, atol=1e-2)
