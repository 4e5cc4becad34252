"""``CPUTimeBudget``: a fit stops after its CPU time, and a resumed fit spends only what is left."""

from __future__ import annotations

import time

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from models.cpu_budget import CPUTimeBudget


class BusyRegression(pl.LightningModule):
    """A linear fit whose every step burns about ``busy_s`` CPU seconds, so a budget is reached in a few steps."""

    def __init__(self, busy_s: float = 0.05):
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)
        self.busy_s = busy_s

    def training_step(self, batch, batch_idx):
        start = time.process_time()
        while time.process_time() - start < self.busy_s:
            pass
        x, y = batch
        return torch.nn.functional.mse_loss(self.layer(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def _loader() -> DataLoader:
    return DataLoader(TensorDataset(torch.randn(64, 4), torch.randn(64, 1)), batch_size=1)


class _RecordingBudget(CPUTimeBudget):
    """The budget, recording the CPU seconds each of its decisions was taken on (read once, inside the
    decision: a second reading afterwards would be a little later and could cross the limit a step early)."""

    def __init__(self, minutes: float):
        super().__init__(minutes)
        self.seconds: list[float] = []
        self._read: float | None = None

    def cpu_seconds(self) -> float:
        self._read = super().cpu_seconds()
        return self._read

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        self.seconds.append(self._read)


def _trainer(tmp_path, budget: CPUTimeBudget) -> pl.Trainer:
    return pl.Trainer(
        accelerator="cpu", max_steps=1000, callbacks=[budget], default_root_dir=tmp_path, logger=False,
        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
    )


def _stopped_at_the_first_step_over(seconds: list[float], limit: float) -> bool:
    """Every batch before the last ended under ``limit`` CPU seconds, the last at or over it: the fit
    stopped at the first chance (step counts depend on the machine's load; this does not)."""
    return seconds[-1] >= limit and all(s < limit for s in seconds[:-1])


def test_refuses_a_non_positive_budget():
    with pytest.raises(ValueError, match="positive"):
        CPUTimeBudget(0)


def test_fit_stops_once_the_cpu_budget_is_spent(tmp_path):
    budget = _RecordingBudget(minutes=0.5 / 60)  # 0.5 CPU seconds: about 10 steps of 0.05 s
    trainer = _trainer(tmp_path, budget)
    trainer.fit(BusyRegression(), _loader())
    assert _stopped_at_the_first_step_over(budget.seconds, 0.5)
    assert trainer.global_step == len(budget.seconds) < 1000
    assert trainer.callback_metrics["budget/cpu_minutes"] * 60 >= 0.5


def test_resumed_fit_spends_only_the_rest_of_the_budget(tmp_path):
    budget = _RecordingBudget(minutes=1.0 / 60)  # the same class as the resumed one: checkpointed state is keyed by class
    trainer = _trainer(tmp_path, budget)
    trainer.fit(BusyRegression(), _loader())
    ckpt = tmp_path / "spent.ckpt"
    trainer.save_checkpoint(ckpt)
    first_spent = budget.cpu_seconds()

    resumed_budget = _RecordingBudget(minutes=1.4 / 60)  # 0.4 s more than the first fit spent, about
    resumed = _trainer(tmp_path, resumed_budget)
    resumed.fit(BusyRegression(), _loader(), ckpt_path=ckpt)
    # the resumed fit starts from what the first one spent, not from 0, and stops when the total is over
    assert resumed_budget.spent_s == pytest.approx(first_spent, abs=0.05) and first_spent >= 1.0
    assert resumed_budget.seconds[0] >= first_spent and _stopped_at_the_first_step_over(resumed_budget.seconds, 1.4)
    assert resumed.global_step > trainer.global_step
