"""``OASISModule``: the Lightning module that trains an OASIS network.

Batches are dicts ``{"lr": (B, T, 3, h, w), "hr": (B, T, 3, s*h, s*w)}`` (or ``(lr, hr)``
tuples), floats in [0, 1].

Objectives:

* ``one_step``: the network's single forward pass at t* (``OASIS.restore``) against the HR clip:
  Charbonnier + SSIM + frequency loss, optionally a temporal-difference loss (frame-to-frame changes
  against the HR clip's, against flicker), plus a perceptual (VGG19) loss when a local checkpoint is
  given, an adversarial loss (PatchGAN, non-saturating) when its weight is > 0, and an optional
  latent MSE against the encoded HR clip;
* ``flow_matching``: the prior stage, rectified-flow velocity MSE at logit-normal sigmas;
  validation runs the N-step sampler (``sample_steps``). A one-step run starts from it with
  ``init_checkpoint``.

Validation, sample PNGs and the optimiser are ``models.sr_module.VideoSRModule``'s (PSNR / SSIM on
Y of the model and of bicubic; the flow-matching stage validates its N-step sampler). EMA is Lightning's ``WeightAveraging`` callback, configured in the
trainer; it swaps the averaged weights in for validation, and this module keeps no copy of its
own that could bypass that.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..losses import (PatchDiscriminator, PerceptualLoss, charbonnier_loss, frequency_loss, gan_loss, ssim_loss,
                      temporal_difference_loss)
from ..sr_module import VideoSRModule
from ..weights import read_state_dict
from . import PRESETS
from .config import OBJECTIVES, OASISConfig
from .network import OASIS


def build_network(network: OASISConfig | dict | None = None, wan_path: str | None = None) -> OASIS:
    """The network that ``OASISModule(network=..., wan_path=...)`` trains, before any checkpoint.

    ``network``: ``OASISConfig`` fields, default the ``oasis-s`` preset; with ``wan_path`` (a local
    Wan2.1 diffusers folder) only overrides of the Wan geometry, initialised with Wan's transformer
    weights. Also what ``restore calibrate-heads`` builds from a training recipe.
    """
    if isinstance(network, OASISConfig):
        network = network.to_dict()
    if wan_path is not None:
        return OASIS.from_wan(wan_path, **(network or {}))
    return OASIS.from_config(network if network is not None else PRESETS["oasis-s"]["config"])


class OASISModule(VideoSRModule):
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
        mse_weight: weight of the plain MSE (one_step; 0: off): the loss PSNR measures, for a
            last fine-tuning stage after Charbonnier (L1-like) training.
        temporal_weight: weight of ``temporal_difference_loss`` (one_step; 0: off): the output's
            frame-to-frame changes against the HR clip's, which penalises flicker on still content.
        perceptual_weight, perceptual_checkpoint, perceptual_layers: VGG19 feature loss; needs a
            local torchvision ``vgg19`` state dict when the weight is > 0; layers and their
            weights default to ``PerceptualLoss``'s (its weights stay out of checkpoints).
        adversarial_weight: generator GAN-loss weight; > 0 adds a ``PatchDiscriminator``
            (``discriminator_channels``, learning rate ``discriminator_lr``) and switches to manual
            optimisation (generator and discriminator step on every batch).
        latent_weight: MSE between the one-step latent and the encoded HR clip (one_step).
        lr, betas, weight_decay: AdamW of the network.
        lr_min: if set, cosine decay per step from ``lr`` to ``lr_min`` over the whole run
            (``models.schedules.ContinuedCosine``: a run resumed with a larger ``max_steps``
            continues the decay to the new end).
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
        mse_weight: float = 0.0,
        temporal_weight: float = 0.0,
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

        self.net = build_network(network, wan_path)
        if init_checkpoint is not None:
            self.net.load_warm_start(read_state_dict(init_checkpoint))
        if objective == "flow_matching" and self.net.config.decoder_features:
            raise ValueError("decoder_features > 0 trains one_step only: a feature latent has no flow-matching target")
        self.net.config.objective = objective  # recorded in the model card: whether sample() is trained
        self.net.transformer.gradient_checkpointing = gradient_checkpointing
        if objective == "one_step":
            # one step never feeds a noisy latent (only the embedding's bias enters); a frozen weight
            # keeps plain DDP from stopping on an unused parameter, and stays loadable from or into
            # a flow-matching checkpoint.
            self.net.transformer.latent_embedding.weight.requires_grad_(False)

        self.perceptual = PerceptualLoss(perceptual_checkpoint, perceptual_layers) if perceptual_weight > 0 else None
        self.discriminator = PatchDiscriminator(channels=discriminator_channels) if adversarial_weight > 0 else None
        self.automatic_optimization = self.discriminator is None

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
            "mse": (hp.mse_weight, lambda: F.mse_loss(pred.float(), hr.float())),
            "temporal": (hp.temporal_weight, lambda: temporal_difference_loss(pred, hr)),
            "perceptual": (hp.perceptual_weight, lambda: self.perceptual(pred, hr)),
            "latent": (hp.latent_weight, lambda: F.mse_loss(latent.float(), self.net.encode_target(hr, lr).float())),
        }
        logs = {name: fn() for name, (weight, fn) in terms.items() if weight > 0}
        loss = sum(terms[name][0] * value for name, value in logs.items())
        return loss, pred, logs

    # -- steps --------------------------------------------------------------------------------

    def training_step(self, batch, batch_idx: int):
        lr, hr = self.unpack(batch)
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

    def validation_prediction(self, lr: torch.Tensor, batch_idx: int) -> torch.Tensor:
        """One step, or the N-step sampler when training the flow-matching prior."""
        if self.hparams.objective == "flow_matching":
            generator = torch.Generator(device=lr.device).manual_seed(batch_idx)
            return self.net.sample(lr, self.hparams.sample_steps, generator=generator)
        return self(lr)

    # -- optimisation -------------------------------------------------------------------------

    def configure_gradient_clipping(self, optimizer: torch.optim.Optimizer, gradient_clip_val: float | None = None,
                                    gradient_clip_algorithm: str | None = None) -> None:
        """Norm clipping under FSDP too (``gradient_clip_val`` of ``configs/oasis_1.3b_x4.yaml``).

        Each FSDP rank holds a shard of every gradient, so only the root wrapper's
        ``clip_grad_norm_`` sees the global norm; Lightning's ``FSDPPrecision`` refuses norm
        clipping for that reason (it has no handle on the root). Other strategies: Lightning's.
        """
        from torch.distributed.fsdp import FullyShardedDataParallel

        fsdp_root = self.trainer.model if isinstance(self.trainer.model, FullyShardedDataParallel) else None
        if fsdp_root is not None and gradient_clip_val and gradient_clip_algorithm in (None, "norm"):
            fsdp_root.clip_grad_norm_(gradient_clip_val)
            return
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def configure_optimizers(self):
        optimizers = [self.network_optimizer()]
        if self.discriminator is not None:
            hp = self.hparams
            d_params = self.discriminator.parameters()
            optimizers.append(torch.optim.AdamW(d_params, lr=hp.discriminator_lr, betas=tuple(hp.betas)))
        return optimizers, self.cosine_schedule(optimizers[0])
