import csv
import json
import math

import pytest
import torch
from torch import nn

from models.oasis.attention import routed_attention
from models.oasis.calibration import RoutingTable
from restore.calibrate import ClipOptions, calibrate_heads, folder_clips, load_clips
from restore.errors import InputError
from restore.io.samples import make_sample_video


class TinyAttention(nn.Module):
    """Patchify (B, T, 3, H, W) by 4, project to q/k/v, routed attention: the capture contract."""

    def __init__(self, heads: int = 2, d: int = 8):
        super().__init__()
        self.heads, self.d = heads, d
        self.qkv = nn.Linear(48, 3 * heads * d)
        self.routing = ["window"] * heads
        self.qk_observer = None

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        b, t, c, h, w = clip.shape
        x = clip.reshape(b, t, c, h // 4, 4, w // 4, 4).permute(0, 1, 3, 5, 2, 4, 6).reshape(b, -1, 48)
        grid = (t, h // 4, w // 4)
        q, k, v = self.qkv(x).view(b, -1, 3, self.heads, self.d).permute(2, 0, 3, 1, 4)
        if self.qk_observer is not None:
            self.qk_observer(q, k, grid)
        return routed_attention(q, k, v, grid, self.routing)


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList([TinyAttention(), TinyAttention()])

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        return sum(layer(clip) for layer in self.layers)


def test_calibrate_heads_writes_routing_csv_and_heatmap(tmp_path):
    torch.manual_seed(0)
    model = TinyNet()
    clips = load_clips("synthetic", ClipOptions(frames=3, height=24, width=32, count=2))
    outputs = calibrate_heads(model, clips, tmp_path / "routing.json", queries_per_clip=16, global_budget=1)

    table = RoutingTable.load(outputs.routing)
    assert [heads.count("global") for heads in table.layers] == [1, 1]
    assert len(table.stats) == 2 and 0 <= table.stats[0][0]["mass_window"] <= 1
    with open(outputs.csv) as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["layer"], r["head"]) for r in rows] == [("0", "0"), ("0", "1"), ("1", "0"), ("1", "1")]
    assert [r["group"] for r in rows] == [g for heads in table.layers for g in heads]
    assert outputs.heatmap.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["routing.csv", "routing.json", "routing.png"]


def test_synthetic_clips_shape_and_range():
    clips = list(load_clips("synthetic", ClipOptions(frames=4, height=16, width=24, count=2)))
    assert len(clips) == 2
    assert clips[0].shape == (1, 4, 3, 16, 24) and clips[0].dtype == torch.float32
    assert 0 <= clips[0].min() and clips[0].max() <= 1
    assert not torch.equal(clips[0], clips[1])


def test_folder_clips_decode_real_videos(tmp_path):
    make_sample_video(tmp_path / "a.mp4", frames=6, width=64, height=48)
    make_sample_video(tmp_path / "b.mkv", frames=6, width=64, height=48)
    (tmp_path / "notes.txt").write_text("not a video")
    clips = list(folder_clips(tmp_path, ClipOptions(frames=5, height=32, width=40, count=4)))
    assert len(clips) == 2
    assert clips[0].shape == (1, 5, 3, 32, 40)
    assert 0 < clips[0].mean() < 1


def test_folder_clips_errors_name_the_file(tmp_path):
    with pytest.raises(InputError, match="no video files"):
        list(folder_clips(tmp_path, ClipOptions()))
    make_sample_video(tmp_path / "short.mp4", frames=3, width=64, height=48)
    with pytest.raises(InputError, match=r"short\.mp4: has 3 frames"):
        list(folder_clips(tmp_path, ClipOptions(frames=5, height=32, width=32)))
    with pytest.raises(InputError, match="missing"):
        load_clips(str(tmp_path / "missing"), ClipOptions())


def test_cli_calibrate_heads_on_a_tiny_oasis(tmp_path, capsys):
    from cli import main

    config = {"heads": 2, "head_dim": 8, "layers": 2, "ffn_dim": 16, "decoder_channels": 8, "decoder_blocks": 1}
    (tmp_path / "tiny.json").write_text(json.dumps(config))
    out = tmp_path / "routing.json"
    rc = main(["calibrate-heads", "--config", str(tmp_path / "tiny.json"), "--clips", "synthetic", "--out", str(out),
               "--num-clips", "1", "--frames", "3", "--size", "32x32", "--queries", "8", "--device", "cpu"])
    assert rc == 0, capsys.readouterr().err
    table = RoutingTable.load(out)
    assert len(table.layers) == 2 and all(len(h) == 2 for h in table.layers)
    assert math.isfinite(table.stats[1][1]["kl_intra"])


def test_cli_reports_bad_config_in_one_line(tmp_path, capsys):
    from cli import main

    rc = main(["calibrate-heads", "--config", str(tmp_path / "nope.yaml"), "--clips", "synthetic",
               "--out", str(tmp_path / "r.json")])
    err = capsys.readouterr().err
    assert rc == 1 and "nope.yaml" in err and len(err.strip().splitlines()) == 1
