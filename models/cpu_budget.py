"""Stop a training run after a budget of CPU time, so that runs on a shared machine compare fairly.

``--trainer.max_time`` counts wall-clock time, which on a shared, noisy machine depends on what
else runs: two runs with the same ``max_time`` beside different neighbours get different amounts of
compute. An equal-budget comparison (docs/BENCHMARKS.md) gives every run the same CPU seconds of
its own process instead (``time.process_time``: every thread of the process, the data pipeline
included when ``num_workers`` is 0; worker processes are not counted).
"""

from __future__ import annotations

import time

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback


class CPUTimeBudget(Callback):
    """Stops ``fit`` once the training process has used ``minutes`` of CPU time.

    Checked after every training batch; the decision is rank 0's, broadcast, so every DDP rank stops
    at the same step. The CPU time spent is saved in checkpoints, so a resumed run spends only what
    is left of the budget. Logged as ``budget/cpu_minutes``.
    """

    def __init__(self, minutes: float):
        if minutes <= 0:
            raise ValueError(f"CPUTimeBudget: minutes must be positive, got {minutes}")
        self.minutes = minutes
        self.spent_s = 0.0  # CPU seconds of earlier runs of this fit (restored from a checkpoint)
        self._start: float | None = None

    def cpu_seconds(self) -> float:
        """CPU seconds used so far by this fit, earlier runs included."""
        running = 0.0 if self._start is None else time.process_time() - self._start
        return self.spent_s + running

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = time.process_time()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx: int) -> None:
        used = self.cpu_seconds()
        pl_module.log("budget/cpu_minutes", used / 60.0, on_step=True, on_epoch=False)
        should_stop = trainer.strategy.broadcast(used >= self.minutes * 60.0)
        trainer.should_stop = trainer.should_stop or should_stop

    def state_dict(self) -> dict:
        return {"spent_s": self.cpu_seconds(), "minutes": self.minutes}

    def load_state_dict(self, state_dict: dict) -> None:
        self.spent_s = float(state_dict["spent_s"])
