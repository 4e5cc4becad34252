"""Lightning module for RAT; validation restores whole slices with ``models.tiling``.

Batches are dicts: ``input`` ``(B, C, h, w)``, ``target`` ``(B, C, s*h, s*w)`` (both normalised
as documented in ``models.rat.network``) and ``regions`` ``(B, h, w)`` int64 partitions of the
input (see ``datasets.medical_data``).
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch

from ..metrics import psnr, ssim
from ..schedules import ContinuedCosine
from ..tiling import sliding_window_restore
from ..weights import read_state_dict
from . import PRESETS
from .losses import FocalNormalization, RATLossWeights, rat_loss
from .network import RAT


class RATModule(pl.LightningModule):
    """Trains a ``RAT`` (held as ``self.net``) with the focal region loss and MSGA guidance losses.

    ``preset``: a name of ``models.rat.PRESETS``; ``config``: ``RATConfig`` fields (override the
    preset). ``init_checkpoint``: start from these network weights (a Lightning checkpoint or an
    exported ``.safetensors``), with a fresh optimiser and schedule. Optimiser as the RAT training
    script: Adam ``lr`` with ``betas``, cosine decay to ``eta_min`` over the run's steps (continued
    to the new end when a run is resumed with more steps). Validation restores whole slices with
    ``sliding_window_restore(val_window, val_overlap)`` and logs PSNR/SSIM on the normalised
    [0, 1] images. ``scale_weight``: weight of the per-scale MSGA supervision (the network needs
    ``deep_supervision``); ``focal_beta``, ``focal_normalization`` (``"max"`` or ``"mean"``): see
    ``models.rat.losses.RATLossWeights``; ``train/focal_weight_cv`` logs the weighting's spread.
    """

    def __init__(
        self,
        preset: str | None = None,
        config: dict | None = None,
        init_checkpoint: str | None = None,
        lr: float = 2e-4,
        betas: tuple[float, float] = (0.5, 0.999),
        eta_min: float = 1e-6,
        focal_beta: float = 1e-3,
        focal_normalization: FocalNormalization = "max",
        guidance_weight: float = 0.25,
        reconstruction_weight: float = 0.1,
        scale_weight: float = 0.0,
        val_window: int = 128,
        val_overlap: float = 0.25,
    ):
        super().__init__()
        self.save_hyperparameters()
        if preset is not None and preset not in PRESETS:
            raise ValueError(f"unknown RAT preset {preset!r} (known: {', '.join(PRESETS)})")
        net_config = dict(PRESETS[preset]["config"]) if preset else {}
        net_config.update(config or {})
        self.net = RAT.from_config(net_config)
        if init_checkpoint is not None:
            self.net.load_state_dict(read_state_dict(init_checkpoint))
        self.weights = RATLossWeights(focal_beta, guidance_weight, reconstruction_weight, scale_weight,
                                      focal_normalization)

    def forward(self, x: torch.Tensor, regions: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(x, regions)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        out, aux = self.net(batch["input"], batch["regions"], return_aux=True)
        losses = rat_loss(out, batch["target"], batch["regions"], aux, self.weights)
        self.log_dict({f"train/{k}": v for k, v in losses.items()}, prog_bar=False, batch_size=out.shape[0])
        return losses["loss"]

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        out = self.predict_step(batch, batch_idx).clamp(0, 1)
        target = batch["target"]
        # sync_dist: each rank validates its own slices; the logged value (and what checkpoints
        # record) is the mean over all ranks
        self.log_dict({"val/psnr": psnr(out, target).mean(), "val/ssim": ssim(out, target).mean()},
                      prog_bar=True, sync_dist=True, batch_size=out.shape[0])

    def predict_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> torch.Tensor:
        return sliding_window_restore(self.net, batch["input"], batch["regions"], window=self.hparams.val_window,
                                      overlap=self.hparams.val_overlap)

    def configure_optimizers(self):
        optimizer = torch.optim.Adam(self.net.parameters(), lr=self.hparams.lr, betas=tuple(self.hparams.betas))
        scheduler = ContinuedCosine(optimizer, lambda: self.trainer.estimated_stepping_batches, self.hparams.eta_min)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
