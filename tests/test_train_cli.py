"""``restore train``: fast_dev_run of every config (smoke recipes from any folder), checkpoint/resume/export,
and 2-process DDP and FSDP on CPU."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import pytest
import pytorch_lightning as pl
import torch
import yaml
from pytorch_lightning.strategies import FSDPStrategy

from datasets.synthetic import moving_texture, write_video
from training import RestoreCLI
from training import main as train_main

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


class RankProbe(pl.Callback):
    """Writes, per rank, the dataset items it trained on (of batches that carry an ``index``), its
    training steps, its last validation metrics and its final weights."""

    def __init__(self, out_dir: str):
        self.out_dir, self.indices, self.steps = Path(out_dir), [], 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.steps += 1
        self.indices += batch["index"].tolist() if "index" in batch else []

    def on_train_end(self, trainer, pl_module):
        weights = torch.cat([p.detach().flatten() for p in pl_module.net.parameters()])
        val = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        record = {"indices": self.indices, "steps": self.steps, "val": val, "weights": weights.tolist(),
                  "world_size": trainer.world_size}
        (self.out_dir / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))


class CPUFSDPStrategy(FSDPStrategy):
    """Lightning's ``FSDPStrategy`` on CPU processes (gloo), standing in for GPUs.

    Neither obstacle on CPU is FSDP's own (Lightning 2.6, torch 2.x): Lightning's accelerator
    connector refuses a strategy whose type *is* ``FSDPStrategy`` unless the accelerator is CUDA
    (a subclass passes), and ``FSDPStrategy._setup_model`` wraps with ``device_id=root_device.index``,
    None for the CPU, whereupon torch's FSDP takes the current accelerator and raises "FSDP needs
    a non-CPU accelerator device". With ``device_id=torch.device("cpu")`` it shards on CPU. (What
    else the stock ``_setup_model`` does, activation checkpointing and torchmetrics, the recipe
    does not use.)
    """

    def _setup_model(self, model: torch.nn.Module) -> torch.nn.Module:
        from torch.distributed.fsdp import FullyShardedDataParallel

        return FullyShardedDataParallel(model, cpu_offload=self.cpu_offload, mixed_precision=self.mixed_precision_config,
                                        sharding_strategy=self.sharding_strategy, device_id=self.root_device,
                                        **self.kwargs)


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


def _callbacks_config(path: Path) -> str:
    """A second config that replaces the trainer's callbacks: a 2-step curriculum, EMA, checkpoints."""
    callbacks = [
        {"class_path": "datasets.curriculum.DegradationCurriculum", "init_args": {"consistent_steps": 2}},
        {"class_path": "pytorch_lightning.callbacks.EMAWeightAveraging", "init_args": {"decay": 0.9}},
        {"class_path": "pytorch_lightning.callbacks.ModelCheckpoint", "init_args": {"save_last": True}},
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


# smoke recipes are named FAMILY_t[_...]: the tiny preset, no data, no GPU
SMOKE_RECIPES = sorted(p.stem for p in CONFIGS.glob("*.yaml") if re.fullmatch(r"[a-z]+_t(_\w+)?", p.stem))


@pytest.mark.parametrize("config", SMOKE_RECIPES)
def test_smoke_recipes_need_no_data_and_run_from_any_folder(config, tmp_path, monkeypatch):
    """`cd $(mktemp -d) && restore train fit --config .../configs/X_t.yaml --trainer.fast_dev_run=true`."""
    monkeypatch.chdir(tmp_path)  # empty: no data/ or configs/ to find by relative path
    cli = _run(["fit", "--config", str(CONFIGS / f"{config}.yaml"), "--trainer.fast_dev_run=true",
                "--trainer.accelerator=cpu", *QUIET], monkeypatch)
    assert cli.trainer.state.finished and torch.isfinite(cli.trainer.callback_metrics["val/psnr"])


def test_checkpoint_resume_and_export(tmp_path, monkeypatch):
    from restore.registry import load_model, read_card, sha256_of

    base = ["--config", str(CONFIGS / "oasis_t_x4.yaml"), "--trainer.accelerator=cpu", "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false", f"--trainer.default_root_dir={tmp_path}",
            "--trainer.val_check_interval=2", "--config", _callbacks_config(tmp_path / "callbacks.json")]
    first = _run(["fit", *base, "--trainer.max_steps=2"], monkeypatch)
    log_dir = Path(first.trainer.log_dir)
    assert (log_dir / "config.yaml").is_file()  # the resolved config is saved with the run
    last = next(tmp_path.rglob("last.ckpt"))
    first_cpu_s = torch.load(last, weights_only=False)["restore_card"]["cpu_time_s"]
    resumed = _run(["fit", *base, "--trainer.max_steps=4", f"--ckpt_path={last}"], monkeypatch)
    assert resumed.trainer.global_step == 4
    assert resumed.datamodule.degradation.inconsistent_prob > 0  # the curriculum resumed past stage 1

    out = tmp_path / "weights" / "oasis-t-x4.safetensors"
    monkeypatch.setattr(sys, "argv", ["restore"])
    bench = tmp_path / "quality.json"
    bench.write_text('{"images": {"set5_x4": {"models": {}}}}')
    newest = max(tmp_path.rglob("last.ckpt"), key=lambda p: p.stat().st_mtime_ns)  # the resumed run's
    assert train_main(["export", "--ckpt", str(newest), "--out", str(out),
                       "--data", "synthetic clips", "--benchmarks", str(bench), "--default",
                       "--set", "temporal_window=6"]) == 0
    card = read_card(out.with_suffix(".json"))
    assert card["overrides"] == {"temporal_window": 6} and card["config"]["temporal_window"] == 6
    training = card["training"]
    assert training["data"] == "synthetic clips" and training["hardware"].startswith("CPU ")
    assert training["wall_time_s"] > 0 and card["default"] is True
    assert training["global_step"] == 4 and 0 < first_cpu_s < training["cpu_time_s"]  # CPU time adds up
    assert card["benchmarks"] == {"quality": {"images": {"set5_x4": {"models": {}}}}}
    assert card["name"] == "oasis-t-x4" and card["architecture"] == "oasis" and card["task"] == "video-sr"
    assert card["scale"] == 4 and card["sha256"] == sha256_of(out) and card["training"]["ema"]
    assert "val/psnr" in card["metrics"] and "DegradationCurriculum" in card["training"]["config"]
    model = load_model("oasis-t", weights=out)
    assert model(torch.rand(1, 2, 3, 8, 8)).shape == (1, 2, 3, 32, 32)


@pytest.mark.parametrize("override", sorted((CONFIGS / "shipped").glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_run_overrides_compose_with_their_recipe(override, monkeypatch, capsys):
    """configs/shipped/ holds the exact settings of the shipped weights' runs: each must still
    parse on top of the recipe it names (a renamed key would make the run irreproducible), with
    the other overrides it stacks on ("Overrides of configs/R.yaml + configs/shipped/S.yaml")."""
    named = re.search(r"Overrides of (configs/\S+\.yaml(?: \+ configs/shipped/\S+\.yaml)*)", override.read_text())
    configs = [arg for path in named.group(1).split(" + ") for arg in ("--config", str(ROOT / path))]
    monkeypatch.setattr(sys, "argv", ["restore"])
    with pytest.raises(SystemExit) as exited:
        RestoreCLI(args=["fit", *configs, "--config", str(override), "--print_config"])
    assert exited.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["trainer"]["max_steps"] == yaml.safe_load(override.read_text())["trainer"]["max_steps"]


def test_equal_budget_continuation_flag_sets_the_cpu_budget(monkeypatch, capsys):
    """docs/TRAINING.md continues an equal-budget run with --trainer.callbacks.init_args.minutes N,
    which jsonargparse applies to the last callback of the list: that must stay the budget."""
    monkeypatch.setattr(sys, "argv", ["restore"])
    configs = ["--config", str(CONFIGS / "oasis_s_bi_x4.yaml"), "--config", str(CONFIGS / "baselines" / "equal_budget_cpu.yaml")]
    with pytest.raises(SystemExit):
        RestoreCLI(args=["fit", *configs, "--trainer.callbacks.init_args.minutes", "60", "--print_config"])
    callbacks = yaml.safe_load(capsys.readouterr().out)["trainer"]["callbacks"]
    budgets = [c for c in callbacks if c["class_path"] == "models.cpu_budget.CPUTimeBudget"]
    assert budgets == [{"class_path": "models.cpu_budget.CPUTimeBudget", "init_args": {"minutes": 60.0}}]


def test_export_names_a_bad_checkpoint(tmp_path):
    from restore.errors import InputError

    bad = tmp_path / "bad.ckpt"
    torch.save({"state_dict": {}}, bad)
    with pytest.raises(InputError, match="restore_card") as info:
        train_main(["export", "--ckpt", str(bad), "--out", str(tmp_path / "w.safetensors")])
    assert info.value.path == bad


def _fit_on_two_processes(config: str, tmp_path: Path, *overrides: str, timeout: float = 180) -> list[dict]:
    """``python -m cli train fit`` of a recipe on 2 CPU processes, run in ``tmp_path`` -> each
    rank's ``RankProbe`` record. A run that outlives ``timeout`` (a rank waiting forever in a
    collective) is killed with its ranks, which share the launcher's process group."""
    probe = {"class_path": "test_train_cli.RankProbe", "init_args": {"out_dir": str(tmp_path)}}
    cmd = [sys.executable, "-m", "cli", "train", "fit", "--config", str(CONFIGS / f"{config}.yaml"),
           "--trainer.accelerator=cpu", "--trainer.devices=2", f"--trainer.default_root_dir={tmp_path}", *QUIET,
           *overrides, f"--trainer.callbacks+={json.dumps(probe)}"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), str(ROOT)]), "OMP_NUM_THREADS": "1"}
    with subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          start_new_session=True) as run:
        try:
            _, err = run.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(run.pid, signal.SIGKILL)
            _, err = run.communicate()
            pytest.fail(f"{config} on 2 processes did not end within {timeout} s:\n{err[-3000:]}")
    assert run.returncode == 0, err[-3000:]
    return [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]


@pytest.mark.parametrize("config", ["oasis_t_x4", "rat_t"])
def test_two_process_ddp_validates_logs_samples_checkpoints_and_ends_with_identical_weights(config, tmp_path):
    """The recipe with its own callbacks (OASIS: curriculum, EMA) on 2 DDP processes: sanity check,
    3 steps on different samples per rank, a validation whose metrics are the mean over both ranks
    (each validates its own clip or slice), sample PNGs written by rank 0 (OASIS), last.ckpt."""
    ranks = _fit_on_two_processes(config, tmp_path, "--trainer.strategy=ddp", "--trainer.max_steps=3",
                                  "--trainer.val_check_interval=3", "--trainer.limit_val_batches=1")
    assert all(r["world_size"] == 2 and r["steps"] == 3 for r in ranks)
    assert ranks[0]["weights"] == ranks[1]["weights"]
    assert "val/psnr" in ranks[0]["val"] and ranks[0]["val"] == ranks[1]["val"]  # synced, not rank-local
    (last,) = tmp_path.rglob("last.ckpt")
    assert torch.load(last, map_location="cpu", weights_only=False)["global_step"] == 3
    if config == "oasis_t_x4":
        assert len(ranks[0]["indices"]) == 6 and not set(ranks[0]["indices"]) & set(ranks[1]["indices"])
        assert sorted(p.name for p in tmp_path.rglob("samples/*.png")) == ["step0000000.png", "step0000003.png"]


def test_two_process_fsdp_runs_the_wan_recipe_checkpoints_resumes_and_exports(tmp_path, wan_and_videos, monkeypatch):
    """configs/oasis_1.3b_x4.yaml's FSDP path (FULL_SHARD, full state dict, gradient clipping) on 2
    CPU processes (gloo, 32-bit: bf16 is the GPUs'), on a tiny random Wan folder: sanity check, one
    step, a validation and its sample PNGs, and a checkpoint at that step (the recipe's
    ``ModelCheckpoint(save_last)``, here every step). The frozen Wan VAE stays out of it (it is read
    from the Wan folder) and out of FSDP's flat parameters: FSDP's state-dict hook expects every
    parameter it manages in the state dict, whereas the codec drops its own
    (``models.losses.exclude_from_state_dict``; before ``VideoSRModule.setup`` gave it to FSDP as
    ``ignored_states``, every save failed: AssertionError on rank 0, KeyError on rank 1). Then one
    more step resumed from last.ckpt under FSDP, and the export of that checkpoint loaded back
    (strictly, the VAE again from the Wan folder)."""
    from restore.registry import load_model, read_card

    callbacks = tmp_path / "callbacks.json"
    callbacks.write_text(json.dumps({"trainer": {"callbacks": [
        {"class_path": "datasets.curriculum.DegradationCurriculum", "init_args": {"consistent_steps": 1}},
        {"class_path": "pytorch_lightning.callbacks.ModelCheckpoint",
         "init_args": {"save_last": True, "every_n_train_steps": 1}}]}}))
    common = [
        "--config", str(callbacks), "--trainer.strategy.class_path=test_train_cli.CPUFSDPStrategy",
        "--trainer.precision=32-true", f"--model.init_args.wan_path={wan_and_videos / 'wan'}",
        f"--data.init_args.root={wan_and_videos / 'videos'}", "--data.init_args.val_count=1",
        "--data.init_args.num_frames=5", "--data.init_args.crop_size=32", "--data.init_args.num_workers=0",
    ]
    ranks = _fit_on_two_processes("oasis_1.3b_x4", tmp_path, *common, "--trainer.max_steps=1",
                                  "--trainer.val_check_interval=1", "--trainer.limit_val_batches=1")
    assert all(r["world_size"] == 2 and r["steps"] == 1 for r in ranks)
    assert ranks[0]["val"] == ranks[1]["val"] and torch.isfinite(torch.tensor(ranks[0]["val"]["val/psnr"]))
    assert sorted(p.name for p in tmp_path.rglob("samples/*.png")) == ["step0000000.png", "step0000001.png"]
    (last,) = tmp_path.rglob("last.ckpt")
    checkpoint = torch.load(last, map_location="cpu", weights_only=True)
    state = checkpoint["state_dict"]
    assert checkpoint["global_step"] == 1 and "net.transformer.patch_embedding.weight" in state
    assert not any(k.startswith("net.codec.") for k in state)  # no VAE weights: they are the Wan folder's
    assert len(checkpoint["optimizer_states"][0]["state"]) > 0

    resumed = _fit_on_two_processes("oasis_1.3b_x4", tmp_path, *common, "--trainer.max_steps=2",
                                    "--trainer.limit_val_batches=0", "--trainer.num_sanity_val_steps=0",
                                    f"--ckpt_path={last}")
    assert all(r["steps"] == 1 for r in resumed)
    (last,) = (p for p in tmp_path.rglob("last.ckpt") if p != last)
    checkpoint = torch.load(last, map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] == 2 and checkpoint["state_dict"].keys() == state.keys()
    assert not torch.equal(checkpoint["state_dict"]["net.transformer.proj_out.weight"],
                           state["net.transformer.proj_out.weight"])
    assert {float(s["step"]) for s in checkpoint["optimizer_states"][0]["state"].values()} == {2.0}  # AdamW resumed

    out = tmp_path / "weights" / "oasis-1.3b-x4.safetensors"
    monkeypatch.setattr(sys, "argv", ["restore"])
    assert train_main(["export", "--ckpt", str(last), "--out", str(out)]) == 0
    card = read_card(out.with_suffix(".json"))
    assert card["architecture"] == "oasis" and card["config"]["decoder"] == "wan"
    assert card["training"]["global_step"] == 2
    model = load_model("oasis-s", weights=out)  # the card's config: the Wan geometry, VAE from wan_path
    loaded = model.state_dict()
    for key, value in checkpoint["state_dict"].items():
        torch.testing.assert_close(loaded[key.removeprefix("net.")], value, rtol=0, atol=0)
    assert model(torch.rand(1, 5, 3, 8, 8)).shape == (1, 5, 3, 32, 32)
