"""Two-stage degradation curriculum (OASIS): consistent degradations first, then inconsistent ones."""

from __future__ import annotations

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback


class DegradationCurriculum(Callback):
    """Sets the share of temporally inconsistent clips, ``inconsistent_prob``, over training steps.

    ``p(step) = 0`` for ``step < consistent_steps`` (stage 1), then rises linearly to ``final_prob``
    over ``ramp_steps`` (``ramp_steps=0``: a switch). It drives the ``degradation`` attribute of the
    datamodule and/or the LightningModule (the one that degrades batches), on every rank, from
    ``trainer.global_step``, so resuming from a checkpoint resumes the schedule. Batches are
    degraded when they reach the device, before ``on_train_batch_start``: the value for step ``k``
    is therefore set at the end of step ``k - 1`` (and at the start of training). It is logged as
    ``curriculum/inconsistent_prob``.
    """

    def __init__(self, consistent_steps: int, ramp_steps: int = 0, final_prob: float = 1.0):
        if consistent_steps < 0 or ramp_steps < 0 or not 0.0 <= final_prob <= 1.0:
            raise ValueError("need consistent_steps >= 0, ramp_steps >= 0 and 0 <= final_prob <= 1")
        self.consistent_steps = consistent_steps
        self.ramp_steps = ramp_steps
        self.final_prob = final_prob

    def probability(self, step: int) -> float:
        """Share of inconsistent clips for optimizer step ``step`` (0-based)."""
        if step < self.consistent_steps:
            return 0.0
        if self.ramp_steps == 0:
            return self.final_prob
        return self.final_prob * min(1.0, (step - self.consistent_steps + 1) / self.ramp_steps)

    @staticmethod
    def _targets(trainer: pl.Trainer, pl_module: pl.LightningModule) -> list:
        owners = [trainer.datamodule, pl_module]
        return [o.degradation for o in owners if getattr(o, "degradation", None) is not None]

    def _set(self, trainer: pl.Trainer, pl_module: pl.LightningModule, step: int) -> None:
        targets = self._targets(trainer, pl_module)
        if not targets:
            raise RuntimeError(
                "DegradationCurriculum: neither the datamodule nor the model has a `degradation` to drive"
            )
        for degradation in targets:
            degradation.inconsistent_prob = self.probability(step)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._set(trainer, pl_module, trainer.global_step)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch, batch_idx: int) -> None:
        pl_module.log("curriculum/inconsistent_prob", self.probability(trainer.global_step), on_step=True, on_epoch=False)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx: int) -> None:
        self._set(trainer, pl_module, trainer.global_step)
