"""``restore train``: fast_dev_run of every config, checkpoint/resume/export, and 2-process DDP on CPU."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import pytest
import pytorch_lightning as pl
import torch
import yaml

from datasets.synthetic import moving_texture, write_video
from training import RestoreCLI
from training import main as train_main

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


class RankProbe(pl.Callback):
    """Writes, per rank, the dataset items it trained on and a checksum of its final weights."""

    def __init__(self, out_dir: str):
        self.out_dir, self.indices = Path(out_dir), []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.indices += batch["index"].tolist()

    def on_train_end(self, trainer, pl_module):
        weights = torch.cat([p.detach().flatten() for p in pl_module.net.parameters()])
        record = {"indices": self.indices, "weights": weights.tolist(), "world_size": trainer.world_size}
        (self.out_dir / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))


@pytest.fixture(scope="module")
def image_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    for i in range(4):
        cv2.imwrite(str(root / f"{i}.png"), moving_texture(1, 48, 56, seed=i)[0])
    return root


@pytest.fixture(scope="module")
def wan_and_videos(tmp_path_factory):
    """A Wan2.1-shaped diffusers folder with tiny random weights, and two short videos."""
    from diffusers import AutoencoderKLWan, WanTransformer3DModel

    root = tmp_path_factory.mktemp("wan")
    torch.manual_seed(0)
    WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=16, out_channels=16,
        text_dim=32, freq_dim=32, ffn_dim=48, num_layers=1, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=32,
    ).save_pretrained(root / "wan" / "transformer")
    AutoencoderKLWan(base_dim=8, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                     temperal_downsample=[False, True, True]).save_pretrained(root / "wan" / "vae")
    for i in range(2):
        write_video(root / "videos" / f"{i}.mp4", moving_texture(5, 32, 64, seed=i))
    return root


def _callbacks_config(path: Path, *extra: dict) -> str:
    """A second config that replaces the trainer's callbacks: a 2-step curriculum, EMA, checkpoints."""
    callbacks = [
        {"class_path": "datasets.curriculum.DegradationCurriculum", "init_args": {"consistent_steps": 2}},
        {"class_path": "pytorch_lightning.callbacks.EMAWeightAveraging", "init_args": {"decay": 0.9}},
        {"class_path": "pytorch_lightning.callbacks.ModelCheckpoint", "init_args": {"save_last": True}},
        *extra,
    ]
    path.write_text(json.dumps({"trainer": {"callbacks": callbacks}}))
    return str(path)


def _run(args: list[str], monkeypatch) -> RestoreCLI:
    monkeypatch.setattr(sys, "argv", ["restore"])  # LightningCLI warns when argv and args both hold arguments
    return RestoreCLI(args=args)


@pytest.mark.parametrize("config", ["oasis_t_x4", "oasis_s_x4", "oasis_s_x2", "oasis_s_bi_x4", "oasis_1.3b_x4"])
def test_fast_dev_run_of_every_config(config, tmp_path, monkeypatch, image_root, wan_and_videos):
    small = ["--data.init_args.batch_size=1", "--data.init_args.val_batch_size=1", "--data.init_args.num_workers=0"]
    data = {
        "oasis_t_x4": [],
        "oasis_s_x4": [f"--data.init_args.root={image_root}", "--data.init_args.val_count=1", "--data.init_args.crop_size=32",
                       "--data.init_args.num_frames=2", *small],
        "oasis_s_x2": [f"--data.init_args.root={image_root}", "--data.init_args.val_count=1", "--data.init_args.crop_size=32",
                       "--data.init_args.num_frames=2", *small],
        "oasis_s_bi_x4": [f"--data.init_args.root={image_root}", "--data.init_args.val_count=1", "--data.init_args.crop_size=32",
                          "--data.init_args.num_frames=2", *small],
        # FSDP and bf16 need GPUs: the config's model and data on one CPU process
        "oasis_1.3b_x4": [f"--model.init_args.wan_path={wan_and_videos / 'wan'}", "--trainer.strategy=auto",
                          "--trainer.precision=32-true", f"--data.init_args.root={wan_and_videos / 'videos'}",
                          "--data.init_args.val_count=1", "--data.init_args.num_frames=5", "--data.init_args.crop_size=32", *small],
    }[config]
    cli = _run(["fit", "--config", str(CONFIGS / f"{config}.yaml"), "--trainer.fast_dev_run=true",
                "--trainer.accelerator=cpu", f"--trainer.default_root_dir={tmp_path}", *QUIET, *data], monkeypatch)
    assert cli.trainer.state.finished and cli.trainer.global_step == 1
    assert torch.isfinite(cli.trainer.callback_metrics["train/loss"])
    assert torch.isfinite(cli.trainer.callback_metrics["val/psnr"])
    if config == "oasis_s_bi_x4":  # the benchmark's degradation: LR = 8-bit antialiased bicubic of HR
        from restore.evaluation import bicubic_downscale

        hr = torch.rand(1, 2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
        lr = cli.datamodule.degradation(hr, torch.Generator().manual_seed(0))
        torch.testing.assert_close(lr, bicubic_downscale(hr, 4))


def test_checkpoint_resume_and_export(tmp_path, monkeypatch):
    from restore.registry import load_model, read_card, sha256_of

    base = ["--config", str(CONFIGS / "oasis_t_x4.yaml"), "--trainer.accelerator=cpu", "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false", f"--trainer.default_root_dir={tmp_path}",
            "--trainer.val_check_interval=2", "--config", _callbacks_config(tmp_path / "callbacks.json")]
    first = _run(["fit", *base, "--trainer.max_steps=2"], monkeypatch)
    log_dir = Path(first.trainer.log_dir)
    assert (log_dir / "config.yaml").is_file()  # the resolved config is saved with the run
    last = next(tmp_path.rglob("last.ckpt"))
    resumed = _run(["fit", *base, "--trainer.max_steps=4", f"--ckpt_path={last}"], monkeypatch)
    assert resumed.trainer.global_step == 4
    assert resumed.datamodule.degradation.inconsistent_prob > 0  # the curriculum resumed past stage 1

    out = tmp_path / "weights" / "oasis-t-x4.safetensors"
    monkeypatch.setattr(sys, "argv", ["restore"])
    bench = tmp_path / "quality.json"
    bench.write_text('{"images": {"set5_x4": {"models": {}}}}')
    assert train_main(["export", "--ckpt", str(next(tmp_path.rglob("last.ckpt"))), "--out", str(out),
                       "--data", "synthetic clips", "--benchmarks", str(bench), "--default"]) == 0
    card = read_card(out.with_suffix(".json"))
    training = card["training"]
    assert training["data"] == "synthetic clips" and training["hardware"].startswith("CPU ")
    assert training["wall_time_s"] > 0 and card["default"] is True
    assert card["benchmarks"] == {"quality": {"images": {"set5_x4": {"models": {}}}}}
    assert card["name"] == "oasis-t-x4" and card["architecture"] == "oasis" and card["task"] == "video-sr"
    assert card["scale"] == 4 and card["sha256"] == sha256_of(out) and card["training"]["ema"]
    assert "val/psnr" in card["metrics"] and "DegradationCurriculum" in card["training"]["config"]
    model = load_model("oasis-t", weights=out)
    assert model(torch.rand(1, 2, 3, 8, 8)).shape == (1, 2, 3, 32, 32)


@pytest.mark.parametrize("override", sorted((CONFIGS / "shipped").glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_run_overrides_compose_with_their_recipe(override, monkeypatch, capsys):
    """configs/shipped/ holds the exact settings of the shipped weights' runs: each must still
    parse on top of the recipe it names (a renamed key would make the run irreproducible)."""
    base = re.search(r"Overrides of (configs/\S+\.yaml)", override.read_text()).group(1)
    monkeypatch.setattr(sys, "argv", ["restore"])
    with pytest.raises(SystemExit) as exited:
        RestoreCLI(args=["fit", "--config", str(ROOT / base), "--config", str(override), "--print_config"])
    assert exited.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["trainer"]["max_steps"] == yaml.safe_load(override.read_text())["trainer"]["max_steps"]


def test_export_names_a_bad_checkpoint(tmp_path):
    from restore.errors import InputError

    bad = tmp_path / "bad.ckpt"
    torch.save({"state_dict": {}}, bad)
    with pytest.raises(InputError, match="restore_card") as info:
        train_main(["export", "--ckpt", str(bad), "--out", str(tmp_path / "w.safetensors")])
    assert info.value.path == bad


def test_two_process_ddp_reads_different_samples_and_ends_with_identical_weights(tmp_path):
    probe = {"class_path": "test_train_cli.RankProbe", "init_args": {"out_dir": str(tmp_path)}}
    cmd = [
        sys.executable, "-m", "cli", "train", "fit", "--config", str(CONFIGS / "oasis_t_x4.yaml"),
        "--trainer.accelerator=cpu", "--trainer.devices=2",
        "--trainer.strategy=ddp", "--trainer.max_steps=3",
        "--trainer.limit_val_batches=0", f"--trainer.default_root_dir={tmp_path}",
        "--config", _callbacks_config(tmp_path / "callbacks.json", probe), *QUIET,
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), str(ROOT)]), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["world_size"] == 2 for r in ranks)
    assert len(ranks[0]["indices"]) == 6 and not set(ranks[0]["indices"]) & set(ranks[1]["indices"])
    assert ranks[0]["weights"] == ranks[1]["weights"]
