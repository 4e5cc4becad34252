"""The contract every network family of ``models.families`` passes (as diffusers' model tester does).

Build from each preset's config (or a minimal one), round-trip the config, save and reload the
weights through ``models.weights.read_state_dict``, and forward a tiny input in the calling
convention of ``restore.registry``.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from models.families import FAMILIES, architecture_of, network_class, presets
from models.weights import read_state_dict

MINIMAL = {"bicubic": ("video-sr", {"scale": 4}), "identity": ("image", {}), "nlm": ("image-denoise", {})}
CASES = [(family, family, *MINIMAL[family]) for family in MINIMAL]
CASES += [(family, name, p["task"], p["config"]) for family in FAMILIES for name, p in presets(family).items()]


def test_every_family_is_covered():
    assert {family for family, *_ in CASES} == set(FAMILIES)


@pytest.mark.parametrize(("family", "name", "task", "config"), CASES, ids=[c[1] for c in CASES])
def test_family_contract(family, name, task, config, tmp_path):
    torch.manual_seed(0)
    net = network_class(family).from_config(dict(config)).eval()
    assert architecture_of(net) == family
    rebuilt = network_class(family).from_config(net.config_dict())
    assert rebuilt.config_dict() == net.config_dict()  # the config round-trips through a card

    with torch.no_grad():  # trained weights are not zero: make the reload observable
        for p in net.parameters():
            p.add_(0.01 * torch.randn_like(p))
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    if state:
        save_file(state, tmp_path / "w.safetensors")
        rebuilt.load_state_dict(read_state_dict(tmp_path / "w.safetensors"), strict=True)
    rebuilt.eval()

    scale = int(net.config_dict().get("scale", 1))
    if task == "video-sr":
        x = torch.rand(1, 2, 3, 16, 16)
        expected = (1, 2, 3, 16 * scale, 16 * scale)
    else:
        channels = int(net.config_dict().get("in_channels", 1))
        x = torch.rand(1, channels, 16, 16)
        expected = (1, channels, 16 * scale, 16 * scale)
    with torch.no_grad():
        out = net(x)
        assert out.shape == expected and torch.isfinite(out).all()
        torch.testing.assert_close(rebuilt(x), out)
