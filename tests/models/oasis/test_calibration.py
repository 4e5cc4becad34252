import math

import pytest
import torch
from torch import nn

from models.oasis.attention import routed_attention
from models.oasis.calibration import NEGLIGIBLE_EFFECT, RoutingTable, assign_groups, attention_modules, calibrate, flop_fraction

GRID = (2, 12, 12)  # 12 > 2 * 5: a shift of 6 rows/columns leaves every (3, 5, 5) window


def _coords():
    t, h, w = GRID
    idx = torch.arange(t * h * w)
    return torch.stack([idx // (h * w), (idx // w) % h, idx % w], dim=1).float()  # (L, 3)


def _head_qk(target: torch.Tensor, sharpness: float = 4.0) -> tuple[torch.Tensor, torch.Tensor]:
    """q, k (L, 5) whose softmax(q k^T / sqrt(5)) peaks, for query l, at the token at target[l].

    logits = -sharpness * |target_l - p_m|^2 up to a per-query constant = 2 s target.p - s |p|^2.
    """
    p = _coords()
    scale = math.sqrt(5)  # undo the D ** -0.5 softmax scale
    q = torch.cat([2 * sharpness * target, torch.ones(len(p), 1), torch.zeros(len(p), 1)], 1) * scale
    k = torch.cat([p, -sharpness * (p**2).sum(1, keepdim=True), torch.zeros(len(p), 1)], 1)
    return q, k


def _targets() -> dict[str, torch.Tensor]:
    p = _coords()
    t, h, w = GRID
    shifted = p.clone()
    shifted[:, 1] = (p[:, 1] + h // 2) % h
    shifted[:, 2] = (p[:, 2] + w // 2) % w
    other_frame = shifted.clone()
    other_frame[:, 0] = (p[:, 0] + 1) % t
    return {"window": p, "intra": shifted, "global": other_frame}


class ProbeAttention(nn.Module):
    """An attention layer honouring the capture contract, with fixed q, k per head."""

    def __init__(self, kinds: list[str]):
        super().__init__()
        targets = _targets()
        qk = [_head_qk(targets[kind]) for kind in kinds]
        self.register_buffer("q", torch.stack([q for q, _ in qk])[None])  # (1, heads, L, 5)
        self.register_buffer("k", torch.stack([k for _, k in qk])[None])
        self.routing = ["window"] * len(kinds)
        self.qk_observer = None

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        q, k = self.q.expand(len(v), -1, -1, -1), self.k.expand(len(v), -1, -1, -1)
        if self.qk_observer is not None:
            self.qk_observer(q, k, GRID)
        return routed_attention(q, k, v, GRID, self.routing)


class ProbeNet(nn.Module):
    def __init__(self, layers: list[list[str]]):
        super().__init__()
        self.layers = nn.ModuleList(ProbeAttention(kinds) for kinds in layers)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            v = layer(v)
        return v


def _clips(n=2, heads=3):
    g = torch.Generator().manual_seed(1)
    return [torch.randn(1, heads, math.prod(GRID), 5, generator=g) for _ in range(n)]


def test_local_heads_become_window_and_far_heads_global():
    layers = [["window", "global", "intra"], ["global", "window", "window"]]
    net = ProbeNet(layers)
    table = calibrate(net, _clips(), queries_per_clip=40)
    assert table.layers == layers
    window_head, far_head = table.stats[0][0], table.stats[0][1]
    assert window_head["mass_window"] > 0.99 and window_head["kl_window"] < 0.01
    assert far_head["mass_window"] < 0.01 and far_head["mass_intra"] < 0.05
    assert far_head["kl_intra"] > 3
    # the intra head keeps its mass in its own frame but not in its window
    assert table.stats[0][2]["mass_intra"] > 0.95 and table.stats[0][2]["mass_window"] < 0.01


class ResidualProbeNet(nn.Module):
    """``v + gain * attention(v)``: the network uses its attention only as far as ``gain`` says, in [0, 1] units."""

    def __init__(self, gain: float):
        super().__init__()
        self.attention = ProbeAttention(["window", "global", "intra"])
        self.gain = gain

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return v + self.gain * self.attention(v)


@pytest.mark.parametrize("gain", [0.0, 1e-4, 0.05])
def test_attention_effect_is_the_output_change_without_attention(gain):
    clips = _clips(2)
    net = ResidualProbeNet(gain)
    net.attention.routing = ["global"] * 3  # calibration measures every head global
    expected = torch.cat([(gain * net.attention(c) * 255).flatten() for c in clips]).pow(2).mean().sqrt()
    net.attention.routing = ["window"] * 3
    table = calibrate(net, clips, queries_per_clip=16)
    assert table.attention_effect == pytest.approx(float(expected), rel=1e-4, abs=1e-6)
    # an unused attention (a change far below one grey level) is flagged: its statistics are not evidence
    assert table.effect_negligible == (gain < 1e-3)
    assert net.attention.routing == ["window"] * 3  # the hooks are gone: the output is the network's own
    assert torch.equal(net(clips[0]), clips[0] + gain * net.attention(clips[0]))


def test_attention_effect_survives_the_routing_file(tmp_path):
    table = RoutingTable([["global"]], attention_effect=0.25)
    table.save(tmp_path / "routing.json")
    loaded = RoutingTable.load(tmp_path / "routing.json")
    assert loaded.attention_effect == 0.25 and loaded.effect_negligible == (0.25 < NEGLIGIBLE_EFFECT)


def test_calibration_restores_the_modules():
    net = ProbeNet([["window", "global", "intra"]])
    observer = object()
    net.layers[0].qk_observer = observer
    calibrate(net, _clips(1), queries_per_clip=16)
    assert net.layers[0].routing == ["window"] * 3
    assert net.layers[0].qk_observer is observer


def test_global_budget_keeps_the_least_local_heads_global():
    net = ProbeNet([["window", "global", "intra", "global"]])
    table = calibrate(net, _clips(1, heads=4), queries_per_clip=32, global_budget=1)
    assert table.layers[0].count("global") == 1
    assert table.layers[0][0] == "window" and table.layers[0][2] == "intra"
    assert table.layers[0][1] == "global" or table.layers[0][3] == "global"


def test_sampling_is_seeded():
    net = ProbeNet([["window", "global", "intra"]])
    a = calibrate(net, _clips(1), queries_per_clip=8, seed=3)
    b = calibrate(net, _clips(1), queries_per_clip=8, seed=3)
    assert a.stats == b.stats


def test_assign_by_thresholds():
    stats = [
        {"kl_window": 0.05, "kl_intra": 0.01, "mass_window": 0.95, "mass_intra": 0.99},
        {"kl_window": 1.0, "kl_intra": 0.1, "mass_window": 0.4, "mass_intra": 0.9},
        {"kl_window": 1.0, "kl_intra": 2.0, "mass_window": 0.4, "mass_intra": 0.1},
    ]
    assert assign_groups(stats) == ["window", "intra", "global"]
    assert assign_groups(stats, global_budget=0) == ["window", "intra", "window"]
    assert assign_groups(stats, global_budget=3) == ["global"] * 3


def test_routing_table_roundtrip_and_apply(tmp_path):
    table = RoutingTable([["global", "intra", "window"], ["window"] * 3], window=(3, 3, 3),
                         stats=[[{"kl_window": 0.5}] * 3] * 2)
    table.save(tmp_path / "routing.json")
    loaded = RoutingTable.load(tmp_path / "routing.json")
    assert loaded == table
    net = ProbeNet([["window"] * 3, ["window"] * 3])
    loaded.apply(net)
    assert [m.routing for m in attention_modules(net)] == table.layers
    with pytest.raises(ValueError, match="2 layers"):
        loaded.apply(ProbeNet([["window"] * 3]))


def test_bad_routing_file_names_the_file(tmp_path):
    bad = tmp_path / "routing.json"
    bad.write_text('{"layers": [["global", "nearby"]]}')
    with pytest.raises(ValueError, match="routing.json.*nearby"):
        RoutingTable.load(bad)


def test_uniform_and_flop_fraction():
    assert RoutingTable.uniform(2, 3).layers == [["global"] * 3] * 2
    grid = (9, 45, 80)
    split = RoutingTable([["global"] * 4 + ["intra"] * 4 + ["window"] * 4])
    assert 1 / flop_fraction(split, grid) == pytest.approx(2.69, abs=0.01)  # REFERENCE.md: ideal 2.7x
    assert flop_fraction(RoutingTable.uniform(1, 12), grid) == 1
