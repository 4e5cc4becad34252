"""Lightning modules shared by every video super-resolution family.

``VideoSRModule`` is what every video-SR trainer has in common: the batch contract of
``datasets.video`` (``{"lr": (B, T, 3, h, w), "hr": (B, T, 3, s*h, s*w)}`` floats in [0, 1], or
``(lr, hr)`` tuples), validation against bicubic (PSNR / SSIM on BT.601 Y, ``crop_border = scale``)
with the middle frame of the first clips saved as ``bicubic | model | HR`` PNGs under
``<log_dir>/samples/``, and AdamW with an optional per-step cosine (``ContinuedCosine``).
Subclasses hold the network as ``self.net`` (with ``scale``) and implement ``training_step``;
``OASISModule`` is one.

``FrameSRModule`` trains any network of ``models.families`` with the pixel objective of the OASIS
recipes (Charbonnier), so that a baseline (FSRCNN, SRVGG, EDSR) and oasis-s train by the same
recipe: same data module, crops, loss, optimiser, schedule and EMA, for the same CPU minutes.
"""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from .families import network_class, presets
from .losses import charbonnier_loss, excluded_modules
from .metrics import psnr, ssim
from .schedules import ContinuedCosine
from .weights import read_state_dict


class VideoSRModule(pl.LightningModule):
    """Validation, sample images and the optimiser of a video-SR trainer (see the module docstring).

    Uses ``self.hparams``: ``lr``, ``betas``, ``weight_decay``, ``lr_min`` (None: constant rate) and
    ``log_samples`` (validation clips saved per validation run; 0: none).
    """

    @staticmethod
    def unpack(batch) -> tuple[torch.Tensor, torch.Tensor]:
        """``(lr, hr)`` of a batch dict or tuple."""
        if isinstance(batch, dict):
            return batch["lr"], batch["hr"]
        return batch[0], batch[1]

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        """``(B, T, 3, h, w) -> (B, T, 3, s*h, s*w)`` in [0, 1]."""
        return self.net(lr).clamp(0, 1)

    def validation_prediction(self, lr: torch.Tensor, batch_idx: int) -> torch.Tensor:
        """The output that validation measures; ``forward`` unless a subclass samples differently."""
        return self(lr)

    def setup(self, stage: str) -> None:
        # `trainer.log_dir` is a collective (it broadcasts rank 0's folder): read it here, where every
        # rank takes part, and never in the rank-0-only `_save_samples` (that deadlocked every DDP run)
        self._samples_dir = Path(self.trainer.log_dir or self.trainer.default_root_dir) / "samples"
        self._keep_frozen_networks_out_of_fsdp()

    def _keep_frozen_networks_out_of_fsdp(self) -> None:
        """Under FSDP, frozen networks read from their own files (``exclude_from_state_dict``: the
        Wan VAE, a perceptual VGG) are given to FSDP as ``ignored_states``: each rank holds them
        whole (frozen: nothing to shard or reduce), and FSDP neither gathers them for a checkpoint
        nor asserts that their keys, which their own hook drops, are in it (it did, and every
        FSDP checkpoint failed). Lightning wraps the model after ``setup`` with
        ``strategy.kwargs``; FSDP does not move ignored modules to the device, so this does.
        (Not in ``configure_model``: overriding it makes ``WeightAveraging`` warn on every run.)
        Other strategies: nothing to do."""
        from pytorch_lightning.strategies import FSDPStrategy

        strategy, frozen = self.trainer.strategy, excluded_modules(self)
        if not isinstance(strategy, FSDPStrategy) or not frozen:
            return
        ignored = list(strategy.kwargs.get("ignored_states") or [])
        strategy.kwargs["ignored_states"] = ignored + [m for m in frozen if all(m is not i for i in ignored)]
        for module in frozen:
            module.to(strategy.root_device)

    def validation_step(self, batch, batch_idx: int) -> None:
        lr, hr = self.unpack(batch)
        pred = self.validation_prediction(lr, batch_idx)
        bicubic = F.interpolate(lr.flatten(0, 1), scale_factor=self.net.scale, mode="bicubic", align_corners=False)
        bicubic = bicubic.clamp(0, 1).unflatten(0, lr.shape[:2])
        crop = self.net.scale
        metrics = {
            "val/psnr_y": psnr(pred, hr, crop_border=crop, y_channel=True).mean(),
            "val/ssim_y": ssim(pred, hr, crop_border=crop, y_channel=True).mean(),
            "val/psnr_y_bicubic": psnr(bicubic, hr, crop_border=crop, y_channel=True).mean(),
        }
        self.log_dict(metrics, prog_bar=False, sync_dist=True, batch_size=lr.shape[0])
        self.log("val/psnr", metrics["val/psnr_y"], prog_bar=True, sync_dist=True, batch_size=lr.shape[0])
        if batch_idx == 0 and self.hparams.log_samples > 0 and self.trainer.is_global_zero:
            self._save_samples(bicubic, pred, hr)

    def _save_samples(self, bicubic: torch.Tensor, pred: torch.Tensor, hr: torch.Tensor) -> None:
        """Write the middle frame of the first ``log_samples`` clips (bicubic | model | HR) as one
        PNG under ``<log_dir>/samples/``; rank 0 only, no collective calls."""
        from torchvision.utils import save_image

        n, mid = min(self.hparams.log_samples, hr.shape[0]), hr.shape[1] // 2
        rows = [torch.cat([x[i, mid] for x in (bicubic, pred, hr)], dim=-1) for i in range(n)]
        self._samples_dir.mkdir(parents=True, exist_ok=True)
        save_image(torch.stack(rows).float().cpu(), self._samples_dir / f"step{self.global_step:07d}.png", nrow=1)

    def predict_step(self, batch, batch_idx: int) -> torch.Tensor:
        lr = batch["lr"] if isinstance(batch, dict) else batch[0] if isinstance(batch, (list, tuple)) else batch
        return self(lr)

    def network_optimizer(self) -> torch.optim.Optimizer:
        """AdamW over the network's trainable parameters."""
        hp = self.hparams
        params = [p for p in self.net.parameters() if p.requires_grad]
        return torch.optim.AdamW(params, lr=hp.lr, betas=tuple(hp.betas), weight_decay=hp.weight_decay)

    def cosine_schedule(self, optimizer: torch.optim.Optimizer) -> list[dict]:
        """The per-step cosine to ``lr_min`` over the run (``[]`` when ``lr_min`` is None)."""
        if self.hparams.lr_min is None:
            return []
        cosine = ContinuedCosine(optimizer, lambda: self.trainer.estimated_stepping_batches, self.hparams.lr_min)
        return [{"scheduler": cosine, "interval": "step"}]

    def configure_optimizers(self):
        optimizer = self.network_optimizer()
        return [optimizer], self.cosine_schedule(optimizer)


class FrameSRModule(VideoSRModule):
    """Trains any ``models.families`` SR network (held as ``self.net``) with a Charbonnier loss.

    Args:
        architecture: a key of ``models.families.FAMILIES`` (``fsrcnn``, ``srvgg``, ``edsr``, ...).
        preset: one of that family's presets (e.g. ``edsr-baseline-x4``); ``network`` fields
            override it.
        network: the network's config dict.
        init_checkpoint: start from these weights (Lightning checkpoint or ``.safetensors``).
        lr, betas, weight_decay, lr_min: AdamW and the optional cosine decay (as ``OASISModule``).
        log_samples: validation clips saved as PNG per validation run.
    """

    def __init__(
        self,
        architecture: str,
        preset: str | None = None,
        network: dict | None = None,
        init_checkpoint: str | None = None,
        lr: float = 2e-4,
        betas: tuple[float, float] = (0.9, 0.99),
        weight_decay: float = 0.0,
        lr_min: float | None = None,
        log_samples: int = 2,
    ):
        super().__init__()
        self.save_hyperparameters()
        named = presets(architecture)
        if preset is not None and preset not in named:
            raise ValueError(f"unknown {architecture} preset {preset!r} (known: {', '.join(named) or 'none'})")
        config = {**(named[preset]["config"] if preset else {}), **(network or {})}
        self.net = network_class(architecture).from_config(config)
        if init_checkpoint is not None:
            self.net.load_state_dict(read_state_dict(init_checkpoint))

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        lr, hr = self.unpack(batch)
        loss = charbonnier_loss(self.net(lr), hr)
        self.log("train/loss", loss.detach(), prog_bar=True, batch_size=lr.shape[0])
        return loss
