"""``restore train``: a run resumed or continued follows its schedule, and every way a run ends leaves ``last.ckpt``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Timer

from tests.processes import default_sigint
from training import RestoreCLI

ROOT = Path(__file__).resolve().parents[1]
RECIPE = str(ROOT / "configs" / "oasis_t_x4.yaml")
LR, LR_MIN = 1e-3, 1e-5


class LearningRateProbe(pl.Callback):
    """Appends ``[step, learning rate]`` of every optimizer step to ``path`` (JSON lines)."""

    def __init__(self, path: str):
        self.path = path

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        with open(self.path, "a") as fh:
            fh.write(json.dumps([trainer.global_step, trainer.optimizers[0].param_groups[0]["lr"]]) + "\n")


class StopAt(pl.Callback):
    """Ends training after ``step`` optimizer steps: ``should_stop``, the trainer's ``max_time`` or a signal.

    ``how="max_time"`` shortens the trainer's ``Timer`` to the time spent so far, so that its own
    check stops the run at a known step.
    """

    def __init__(self, step: int, how: str = "should_stop"):
        self.step, self.how = step, how

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step != self.step:
            return
        if self.how == "should_stop":
            trainer.should_stop = True
        elif self.how == "max_time":
            timer = next(cb for cb in trainer.callbacks if isinstance(cb, Timer))
            timer._duration = timer.time_elapsed("train")
        else:
            os.kill(os.getpid(), getattr(signal, self.how))


def _callbacks(path: Path, *extra: dict, every: int = 100) -> str:
    """A config whose callbacks save checkpoints every ``every`` steps (with ``last.ckpt``), plus ``extra``."""
    checkpoint = {"class_path": "pytorch_lightning.callbacks.ModelCheckpoint",
                  "init_args": {"save_last": True, "every_n_train_steps": every}}
    path.write_text(json.dumps({"trainer": {"callbacks": [checkpoint, *extra]}}))
    return str(path)


def _args(tmp_path: Path, *extra: str) -> list[str]:
    return ["fit", "--config", RECIPE, "--trainer.accelerator=cpu", "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false", "--trainer.limit_val_batches=0",
            f"--trainer.default_root_dir={tmp_path}", f"--model.init_args.lr={LR}",
            f"--model.init_args.lr_min={LR_MIN}", *extra]


def _fit(tmp_path: Path, monkeypatch, *extra: str) -> RestoreCLI:
    monkeypatch.setattr(sys, "argv", ["restore"])  # LightningCLI warns when argv and args both hold arguments
    return RestoreCLI(args=_args(tmp_path, *extra))


def _lr_curve(path: Path) -> dict[int, float]:
    return {step: lr for step, lr in map(json.loads, path.read_text().splitlines())}


def _last(tmp_path: Path) -> dict:
    last = max(tmp_path.rglob("last.ckpt"), key=lambda p: p.stat().st_mtime)
    return torch.load(last, map_location="cpu", weights_only=True)


def test_resumed_run_follows_the_uninterrupted_schedule_and_a_longer_one_keeps_decaying(tmp_path, monkeypatch):
    probe = lambda name: {"class_path": "test_training_resume.LearningRateProbe",  # noqa: E731
                          "init_args": {"path": str(tmp_path / name)}}
    stop = {"class_path": "test_training_resume.StopAt", "init_args": {"step": 6}}
    monkeypatch.syspath_prepend(str(Path(__file__).parent))

    whole = tmp_path / "whole"
    _fit(whole, monkeypatch, "--trainer.max_steps=12", "--config", _callbacks(tmp_path / "a.json", probe("whole.jsonl")))
    reference = _lr_curve(tmp_path / "whole.jsonl")

    cut = tmp_path / "cut"
    _fit(cut, monkeypatch, "--trainer.max_steps=12", "--config", _callbacks(tmp_path / "b.json", probe("cut.jsonl"), stop))
    assert _last(cut)["global_step"] == 6
    resumed = _fit(cut, monkeypatch, "--trainer.max_steps=12", "--ckpt_path=last",  # the newest last.ckpt under cut/
                   "--config", _callbacks(tmp_path / "c.json", probe("cut.jsonl")))
    assert resumed.trainer.global_step == 12 and len(list(cut.rglob("last.ckpt"))) == 2  # a new version folder
    cut_curve = _lr_curve(tmp_path / "cut.jsonl")
    assert list(cut_curve) == list(range(12))
    assert cut_curve == pytest.approx(reference)

    # continued to twice the length: from the learning rate it had, down to lr_min at the new end, never up
    longer = _fit(cut, monkeypatch, "--trainer.max_steps=24", "--ckpt_path=last",
                  "--config", _callbacks(tmp_path / "d.json", probe("longer.jsonl")))
    assert longer.trainer.global_step == 24
    curve = [lr for _, lr in sorted((_lr_curve(tmp_path / "cut.jsonl") | _lr_curve(tmp_path / "longer.jsonl")).items())]
    assert len(curve) == 24
    assert all(b <= a * (1 + 1e-9) for a, b in zip(curve, curve[1:])), curve
    final_lr = longer.trainer.optimizers[0].param_groups[0]["lr"]
    assert final_lr == pytest.approx(LR_MIN)


def test_ckpt_path_last_without_an_earlier_run_is_refused(tmp_path, monkeypatch):
    from restore.errors import InputError

    with pytest.raises(InputError, match="no last.ckpt"):
        _fit(tmp_path, monkeypatch, "--trainer.max_steps=2", "--ckpt_path=last")


def test_last_checkpoint_when_max_steps_falls_between_saves(tmp_path, monkeypatch):
    _fit(tmp_path, monkeypatch, "--trainer.max_steps=5", "--config", _callbacks(tmp_path / "cb.json", every=2))
    assert _last(tmp_path)["global_step"] == 5


def test_last_checkpoint_when_max_time_stops_the_run(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    stop = {"class_path": "test_training_resume.StopAt", "init_args": {"step": 5, "how": "max_time"}}
    cli = _fit(tmp_path, monkeypatch, "--trainer.max_steps=40", "--trainer.max_time=00:01:00:00",
               "--config", _callbacks(tmp_path / "cb.json", stop, every=2))
    assert cli.trainer.global_step == 5
    assert _last(tmp_path)["global_step"] == 5


@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGINT"])
def test_last_checkpoint_when_a_signal_stops_the_run(signal_name, tmp_path):
    stop = {"class_path": "test_training_resume.StopAt", "init_args": {"step": 3, "how": signal_name}}
    cmd = [sys.executable, "-m", "cli", "train", *_args(tmp_path, "--trainer.max_steps=40"),
           "--config", _callbacks(tmp_path / "cb.json", stop)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), str(ROOT)]), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, preexec_fn=default_sigint)
    assert done.returncode == {"SIGTERM": 143, "SIGINT": 1}[signal_name], done.stderr[-2000:]
    assert _last(tmp_path)["global_step"] == 3, done.stderr[-2000:]
