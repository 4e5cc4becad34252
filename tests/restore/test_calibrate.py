import csv
import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from models.oasis.attention import routed_attention
from models.oasis.calibration import RoutingTable
from restore.calibrate import ClipOptions, calibrate_heads, folder_clips, load_clips, load_network
from restore.errors import InputError, ModelError
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


def test_small_video_frames_are_cropped_to_what_fits_the_model(tmp_path):
    """A clip smaller than the crop is calibrated on its largest centre crop of whole padding
    multiples, or whole when it is smaller than one multiple (it used to stop the calibration)."""
    from datasets.synthetic import moving_texture, write_video

    write_video(tmp_path / "small.mp4", moving_texture(3, 38, 46, seed=0), audio=False)
    (clip,) = folder_clips(tmp_path, ClipOptions(frames=3, height=64, width=64, multiple=(4, 4)))
    assert clip.shape == (1, 3, 3, 36, 44)
    (clip,) = folder_clips(tmp_path, ClipOptions(frames=3, height=64, width=64, multiple=(64, 64)))
    assert clip.shape == (1, 3, 3, 38, 46)


def test_cli_calibrate_heads_takes_the_training_recipe_and_a_small_real_clip(tmp_path, capsys):
    """`restore calibrate-heads --config configs/oasis_t_x4.yaml` (a LightningCLI recipe: its
    model.init_args.network) on a 46x38 video at the default 64x64 crop."""
    from cli import main
    from datasets.synthetic import moving_texture, write_video

    recipe = Path(__file__).resolve().parents[2] / "configs" / "oasis_t_x4.yaml"
    write_video(tmp_path / "clips" / "small.mp4", moving_texture(3, 38, 46, seed=0))
    out = tmp_path / "r.json"
    rc = main(["calibrate-heads", "--config", str(recipe), "--clips", str(tmp_path / "clips"), "--out", str(out),
               "--frames", "3", "--queries", "8", "--device", "cpu"])
    assert rc == 0, capsys.readouterr().err
    table = RoutingTable.load(out)
    assert [len(heads) for heads in table.layers] == [2, 2]  # oasis-t: 2 layers of 2 heads
    assert out.with_suffix(".csv").is_file() and out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"


def test_load_network_from_a_model_card_takes_the_weights_it_names(tmp_path):
    from safetensors.torch import save_file

    from models.oasis import OASIS, PRESETS
    from restore.registry import sha256_of

    torch.manual_seed(0)
    trained = OASIS.from_config(PRESETS["oasis-t"]["config"])
    save_file(trained.state_dict(), tmp_path / "mine.safetensors")
    card = {"name": "mine", "architecture": "oasis", "task": "video-sr", "scale": 4, "config": trained.config_dict(),
            "weights": "mine.safetensors", "sha256": sha256_of(tmp_path / "mine.safetensors")}
    (tmp_path / "mine.json").write_text(json.dumps(card))
    loaded = load_network(str(tmp_path / "mine.json"), None)
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in trained.state_dict().items())
    (tmp_path / "mine.json").write_text(json.dumps({**card, "sha256": "0" * 64}))
    with pytest.raises(ModelError, match="sha256"):
        load_network(str(tmp_path / "mine.json"), None)


def test_load_network_refuses_a_recipe_of_another_model(tmp_path):
    recipe = tmp_path / "rat.yaml"
    recipe.write_text("model:\n  class_path: models.rat.RATModule\n  init_args:\n    preset: rat-t\n")
    with pytest.raises(ModelError, match="not models.oasis.OASISModule"):
        load_network(str(recipe), None)
