"""restore.export: weights + model card from a `restore train` checkpoint."""

from __future__ import annotations

import json

import pytest
import torch

from models.rat import PRESETS, RAT
from restore.errors import InputError
from restore.export import CARD_KEY, export_checkpoint


def _rat_checkpoint(path, preset: str | None):
    net = RAT.from_config(PRESETS["rat-t"]["config"])
    card = {"architecture": "rat", "config": net.config_dict(), "scale": 1, "preset": preset, "metrics": {}}
    torch.save({"state_dict": {f"net.{k}": v for k, v in net.state_dict().items()}, CARD_KEY: card,
                "global_step": 5}, path)
    return path


def test_task_comes_from_the_preset_the_run_started_from(tmp_path):
    # RAT presets span ct-denoise and mr-denoise: the architecture alone does not tell the task
    ckpt = _rat_checkpoint(tmp_path / "last.ckpt", "rat-s-mr")
    card = json.loads(export_checkpoint(ckpt, tmp_path / "rat.safetensors").read_text())
    assert card["task"] == "mr-denoise" and card["training"]["global_step"] == 5


def test_an_unknown_task_fails_before_anything_is_written(tmp_path):
    ckpt = _rat_checkpoint(tmp_path / "last.ckpt", None)
    with pytest.raises(InputError, match="pass --task"):
        export_checkpoint(ckpt, tmp_path / "out" / "rat.safetensors")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    card = json.loads(export_checkpoint(ckpt, tmp_path / "rat.safetensors", task="ct-denoise").read_text())
    assert card["task"] == "ct-denoise"
