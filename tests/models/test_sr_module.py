"""``FrameSRModule``: any family trains by the OASIS recipe (the equal-budget baselines), and the shared validation."""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import pytest
import torch

from datasets.synthetic import moving_texture
from models.sr_module import FrameSRModule
from training import RestoreCLI

ROOT = Path(__file__).resolve().parents[2]


def test_unknown_preset_is_refused():
    with pytest.raises(ValueError, match="unknown edsr preset"):
        FrameSRModule("edsr", preset="edsr-giant")


def test_network_fields_override_the_preset():
    module = FrameSRModule("edsr", preset="edsr-baseline-x4", network={"blocks": 2, "channels": 8})
    assert module.net.config_dict() == {"scale": 4, "channels": 8, "blocks": 2, "in_channels": 3}


BASELINES = ROOT / "configs" / "baselines"
NETWORKS = sorted(p for p in BASELINES.glob("*.yaml") if p.name != "equal_budget_cpu.yaml")


@pytest.mark.parametrize("baseline", NETWORKS, ids=lambda p: p.stem)
def test_baseline_swaps_into_the_oasis_recipe_and_trains(baseline, tmp_path, monkeypatch):
    """The equal-budget command of docs/TRAINING.md: the OASIS recipe, the CPU budget, the network."""
    images = tmp_path / "images"
    images.mkdir()
    for i in range(3):
        cv2.imwrite(str(images / f"{i}.png"), moving_texture(1, 48, 48, seed=i)[0])
    monkeypatch.setattr(sys, "argv", ["restore"])
    cli = RestoreCLI(args=[
        "fit", "--config", str(ROOT / "configs" / "oasis_s_bi_x4.yaml"), "--config", str(BASELINES / "equal_budget_cpu.yaml"),
        "--config", str(baseline),
        "--trainer.fast_dev_run=true", "--trainer.accelerator=cpu", f"--trainer.default_root_dir={tmp_path}",
        "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
        f"--data.init_args.root={images}", "--data.init_args.val_count=1", "--data.init_args.crop_size=32",
        "--data.init_args.num_frames=2", "--data.init_args.batch_size=1", "--data.init_args.val_batch_size=1",
        "--data.init_args.num_workers=0",
    ])
    assert isinstance(cli.model, FrameSRModule) and cli.trainer.global_step == 1
    assert any(type(c).__name__ == "CPUTimeBudget" for c in cli.trainer.callbacks)
    assert torch.isfinite(cli.trainer.callback_metrics["train/loss"])
    assert torch.isfinite(cli.trainer.callback_metrics["val/psnr"])
    assert list(tmp_path.rglob("samples/*.png"))  # bicubic | model | HR
