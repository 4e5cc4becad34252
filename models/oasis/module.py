"""``OASISModule``: the Lightning module that trains an OASIS network.

Batches are dicts ``{"lr": (B, T, 3, h, w), "hr": (B, T, 3, s*h, s*w)}`` (or ``(lr, hr)``
tuples), floats in [0, 1].

Objectives:

* ``one_step``: the network's single forward pass at t* (``OASIS.restore``) against the HR clip:
  Charbonnier + SSIM + frequency loss, plus a perceptual (VGG19) loss when a local checkpoint is
  given, an adversarial loss (PatchGAN, non-saturating) when its weight is > 0, and an optional
  latent MSE against the encoded HR clip;
* ``flow_matching``: the prior stage, rectified-flow velocity MSE at logit-normal sigmas;
  validation runs the N-step sampler (``sample_steps``). A one-step run starts from it with
  ``init_checkpoint``.

Validation logs PSNR / SSIM on Y (BT.601, ``crop_border = scale``) of the model and of bicubic,
and saves the middle frame of the first clips (bicubic | model | HR) as PNGs under
``<log_dir>/samples/``. EMA is Lightning's ``WeightAveraging`` callback, configured in the
trainer; it swaps the averaged weights in for validation, and this module keeps no copy of its
own that could bypass that.
"""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from ..losses import PatchDiscriminator, PerceptualLoss, charbonnier_loss, frequency_loss, gan_loss, ssim_loss
from ..metrics import psnr, ssim
from . import PRESETS
from .config import OASISConfig
from .network import OASIS

OBJECTIVES = ("one_step", "flow_matching")


def _load_network_state(path: str | Path) -> dict[str, torch.Tensor]:
    """Network tensors of a Lightning checkpoint (``net.`` prefix stripped) or a weight file."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state)
    if any(k.startswith("net.") for k in state):
        state = {k[len("net."):]: v for k, v in state.items() if k.startswith("net.")}
    return state


class OASISModule(pl.LightningModule):
    """Trains ``OASIS`` (held as ``self.net``).

    Args:
        network: the ``OASISConfig`` or its dict (e.g. ``PRESETS["oasis-s"]["config"]``); default
            oasis-s. With ``wan_path`` it only overrides fields of the Wan config.
        wan_path: build ``oasis-1.3b`` from this local Wan2.1 diffusers folder, initialised with
            its transformer weights (``OASIS.from_wan``).
        init_checkpoint: load the network's weights from this file first (a Lightning checkpoint
            or ``.safetensors``), e.g. the flow-matching stage before ``one_step`` training.
        objective: ``"one_step"`` or ``"flow_matching"``.
        charbonnier_weight, ssim_weight, frequency_weight: pixel-loss weights (one_step).
        perceptual_weight, perceptual_checkpoint, perceptual_layers: VGG19 feature loss; needs a
            local torchvision ``vgg19`` state dict when the weight is > 0; layers and their
            weights default to ``PerceptualLoss``'s (its weights stay out of checkpoints).
        adversarial_weight: generator GAN-loss weight; > 0 adds a ``PatchDiscriminator``
            (``discriminator_channels``, learning rate ``discriminator_lr``) and switches to manual
            optimisation (generator and discriminator step on every batch).
        latent_weight: MSE between the one-step latent and the encoded HR clip (one_step).
        lr, betas, weight_decay: AdamW of the network.
        lr_min: if set, cosine decay per step from ``lr`` to ``lr_min`` over the whole run.
        sample_steps: Euler steps of the validation sampler (flow_matching).
        log_samples: validation clips saved as PNG per validation run (0: none).
        gradient_checkpointing: recompute transformer blocks in the backward pass (saves memory).
    """

    def __init__(
        self,
        network: OASISConfig | dict | None = None,
        wan_path: str | None = None,
        init_checkpoint: str | None = None,
        objective: str = "one_step",
        charbonnier_weight: float = 1.0,
        ssim_weight: float = 0.1,
        frequency_weight: float = 0.05,
        perceptual_weight: float = 0.0,
        perceptual_checkpoint: str | None = None,
        perceptual_layers: dict[str, float] | None = None,
        adversarial_weight: float = 0.0,
        discriminator_channels: tuple[int, ...] = (64, 128, 256),
        discriminator_lr: float = 1e-4,
        latent_weight: float = 0.0,
        lr: float = 2e-4,
        betas: tuple[float, float] = (0.9, 0.99),
        weight_decay: float = 0.0,
        lr_min: float | None = None,
        sample_steps: int = 20,
        log_samples: int = 2,
        gradient_checkpointing: bool = False,
    ):
        super().__init__()
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
        if objective == "flow_matching" and adversarial_weight > 0:
            raise ValueError("the adversarial loss applies to the one_step objective only")
        if perceptual_weight > 0 and not perceptual_checkpoint:
            raise ValueError("perceptual_weight > 0 needs perceptual_checkpoint (a local VGG19 state dict)")
        if isinstance(network, OASISConfig):
            network = network.to_dict()  # plain dict in checkpoints (loadable with weights_only=True)
        self.save_hyperparameters()

        if wan_path is not None:
            self.net = OASIS.from_wan(wan_path, **(network or {}))
        else:
            self.net = OASIS.from_config(network if network is not None else PRESETS["oasis-s"]["config"])
        if init_checkpoint is not None:
            self.net.load_state_dict(_load_network_state(init_checkpoint))
        self.net.transformer.gradient_checkpointing = gradient_checkpointing
        if objective == "one_step":
            # one step never feeds a noisy latent (only the embedding's bias enters); a frozen weight
            # keeps plain DDP from stopping on an unused parameter, and stays loadable from or into
            # a flow-matching checkpoint.
            self.net.transformer.latent_embedding.weight.requires_grad_(False)

        self.perceptual = PerceptualLoss(perceptual_checkpoint, perceptual_layers) if perceptual_weight > 0 else None
        self.discriminator = PatchDiscriminator(channels=discriminator_channels) if adversarial_weight > 0 else None
        self.automatic_optimization = self.discriminator is None

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        """``(B, T, 3, h, w) -> (B, T, 3, s*h, s*w)`` in [0, 1] (one step)."""
        return self.net(lr)

    @staticmethod
    def _unpack(batch) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(batch, dict):
            return batch["lr"], batch["hr"]
        return batch[0], batch[1]

    # -- losses -------------------------------------------------------------------------------

    def _flow_matching_loss(self, lr: torch.Tensor, hr: torch.Tensor) -> tuple[torch.Tensor, dict]:
        with torch.no_grad():
            x0 = self.net.encode_target(hr, lr)
        # logit-normal sigmas (SD3): most samples at mid noise, where the velocity is hardest
        sigma = torch.sigmoid(torch.randn(x0.shape[0], device=x0.device))
        noise = torch.randn_like(x0)
        s = sigma.view(-1, 1, 1, 1, 1)
        v = self.net.velocity(lr, sigma, (1 - s) * x0 + s * noise)
        loss = F.mse_loss(v.float(), (noise - x0).float())
        return loss, {"flow": loss}

    def _one_step_loss(self, lr: torch.Tensor, hr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict]:
        hp = self.hparams
        latent = self.net.one_step_latent(lr)
        pred = self.net.decode(latent, lr)
        terms = {
            "charbonnier": (hp.charbonnier_weight, lambda: charbonnier_loss(pred, hr)),
            "ssim": (hp.ssim_weight, lambda: ssim_loss(pred, hr)),
            "frequency": (hp.frequency_weight, lambda: frequency_loss(pred, hr)),
            "perceptual": (hp.perceptual_weight, lambda: self.perceptual(pred, hr)),
            "latent": (hp.latent_weight, lambda: F.mse_loss(latent.float(), self.net.encode_target(hr, lr).float())),
        }
        logs = {name: fn() for name, (weight, fn) in terms.items() if weight > 0}
        loss = sum(terms[name][0] * value for name, value in logs.items())
        return loss, pred, logs

    # -- steps --------------------------------------------------------------------------------

    def training_step(self, batch, batch_idx: int):
        lr, hr = self._unpack(batch)
        if self.hparams.objective == "flow_matching":
            loss, logs = self._flow_matching_loss(lr, hr)
        else:
            loss, pred, logs = self._one_step_loss(lr, hr)
        if self.discriminator is not None:
            loss, logs = self._adversarial_step(loss, logs, pred, hr)
        self.log_dict({f"train/{k}": v.detach() for k, v in logs.items()}, batch_size=lr.shape[0])
        self.log("train/loss", loss.detach(), prog_bar=True, batch_size=lr.shape[0])
        return loss

    def _adversarial_step(self, loss: torch.Tensor, logs: dict, pred: torch.Tensor, hr: torch.Tensor):
        """Manual optimisation: one generator step (with the GAN term), then one discriminator step."""
        g_opt, d_opt = self.optimizers()
        fake, real = pred.flatten(0, 1), hr.flatten(0, 1)
        logs["adversarial"] = gan_loss(self.discriminator(fake), True)
        loss = loss + self.hparams.adversarial_weight * logs["adversarial"]
        g_opt.zero_grad()
        self.manual_backward(loss)
        g_opt.step()
        d_real, d_fake = self.discriminator(real), self.discriminator(fake.detach())
        logs["discriminator"] = gan_loss(d_real, True) + gan_loss(d_fake, False)
        d_opt.zero_grad()  # also drops what the generator step left on the discriminator
        self.manual_backward(logs["discriminator"])
        d_opt.step()
        scheduler = self.lr_schedulers()  # the network's, when lr_min is set
        if scheduler is not None:
            scheduler.step()
        return loss, logs

    def validation_step(self, batch, batch_idx: int) -> None:
        lr, hr = self._unpack(batch)
        if self.hparams.objective == "flow_matching":
            generator = torch.Generator(device=lr.device).manual_seed(batch_idx)
            pred = self.net.sample(lr, self.hparams.sample_steps, generator=generator)
        else:
            pred = self.net(lr)
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
        from torchvision.utils import save_image

        n, mid = min(self.hparams.log_samples, hr.shape[0]), hr.shape[1] // 2
        rows = [torch.cat([x[i, mid] for x in (bicubic, pred, hr)], dim=-1) for i in range(n)]
        folder = Path(self.trainer.log_dir or self.trainer.default_root_dir) / "samples"
        folder.mkdir(parents=True, exist_ok=True)
        save_image(torch.stack(rows).float().cpu(), folder / f"step{self.global_step:07d}.png", nrow=1)

    def predict_step(self, batch, batch_idx: int) -> torch.Tensor:
        lr = batch["lr"] if isinstance(batch, dict) else batch[0] if isinstance(batch, (list, tuple)) else batch
        return self.net(lr)

    # -- optimisation -------------------------------------------------------------------------

    def configure_optimizers(self):
        hp = self.hparams
        params = [p for p in self.net.parameters() if p.requires_grad]
        optimizers = [torch.optim.AdamW(params, lr=hp.lr, betas=tuple(hp.betas), weight_decay=hp.weight_decay)]
        if self.discriminator is not None:
            d_params = self.discriminator.parameters()
            optimizers.append(torch.optim.AdamW(d_params, lr=hp.discriminator_lr, betas=tuple(hp.betas)))
        if hp.lr_min is None:
            return optimizers
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizers[0], T_max=total, eta_min=hp.lr_min)
        return optimizers, [{"scheduler": cosine, "interval": "step"}]
