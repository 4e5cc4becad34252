"""Learning-rate schedules that survive resuming a run with a different length.

``ContinuedCosine`` decays the learning rate by a cosine from its base value to ``eta_min`` at
the run's last step. PyTorch's ``CosineAnnealingLR`` stores ``T_max`` in its state, so a run
resumed with a larger ``max_steps`` climbs back up once it passes the first run's end. Here the
run's length is asked for at every step; when it changed, the decay continues from the current
learning rate down to ``eta_min`` at the new end, never up. A deliberate restart (a new warm-up or
a higher learning rate) is what warm-starting from weights is for.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch.optim.lr_scheduler import LRScheduler


class ContinuedCosine(LRScheduler):
    """Per-step cosine decay to ``eta_min`` at ``total_steps()``, continued when the total changes.

    Args:
        optimizer: the optimizer whose groups it drives.
        total_steps: called at every step; the step at which the learning rate reaches ``eta_min``
            (e.g. ``lambda: trainer.estimated_stepping_batches``).
        eta_min: the final learning rate.

    State (saved in checkpoints): the current segment of the decay, ``(first step, learning rates
    at that step, last step)``.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, total_steps: Callable[[], int], eta_min: float = 0.0,
                 last_epoch: int = -1):
        self.total_steps, self.eta_min = total_steps, eta_min
        self.segment: tuple[int, list[float], int] | None = None
        super().__init__(optimizer, last_epoch)

    def state_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "total_steps")}

    def get_lr(self) -> list[float]:
        step, end = self.last_epoch, max(int(self.total_steps()), 1)
        if self.segment is None:
            self.segment = (0, list(self.base_lrs), end)
        elif self.segment[2] != end:
            # the run was resumed with another length: decay from where it stands to the new end
            self.segment = (step, [group["lr"] for group in self.optimizer.param_groups], end)
        start, start_lrs, end = self.segment
        progress = min(max(step - start, 0) / max(end - start, 1), 1.0)
        weight = 0.5 * (1.0 + math.cos(math.pi * progress))
        return [self.eta_min + (lr - self.eta_min) * weight for lr in start_lrs]
