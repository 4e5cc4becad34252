"""Training losses shared by every model family.

Pixel losses are plain functions on ``(..., C, H, W)`` tensors (images or clips) returning a
scalar mean. Losses with weights are modules: ``PerceptualLoss`` (VGG19 features from a local
checkpoint, nothing downloaded) and ``PatchDiscriminator`` + ``gan_loss`` for adversarial training.
``exclude_from_state_dict`` keeps frozen, separately stored networks (the VGG, a VAE) out of
checkpoints; ``excluded_modules`` finds them again (FSDP must leave them out of its flat parameters).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .metrics import ssim
from .weights import read_state_dict


def charbonnier_loss(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Charbonnier (smooth L1): ``mean(sqrt((pred - target)^2 + eps^2))``; same-shape tensors -> scalar."""
    return torch.sqrt((pred - target).pow(2) + eps * eps).mean()


def temporal_difference_loss(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Charbonnier between the frame-to-frame changes of two clips ``(B, T, C, H, W)`` -> scalar.

    Compares ``pred[:, t+1] - pred[:, t]`` with ``target[:, t+1] - target[:, t]``: output that flickers
    where the ground truth holds still (or holds still where it moves) costs here even when each frame
    alone is as close to its target. ``T == 1`` gives 0.
    """
    if pred.shape[1] < 2:
        return pred.new_zeros(())
    return charbonnier_loss(pred.diff(dim=1), target.diff(dim=1), eps)


def ssim_loss(pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """``1 - SSIM`` averaged over images: ``(..., C, H, W)`` x2 -> scalar (see ``models.metrics.ssim``)."""
    return 1.0 - ssim(pred, target, data_range=data_range).mean()


def frequency_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 distance between 2-D spectra: ``(..., C, H, W)`` x2 -> scalar.

    Compares real and imaginary parts of the orthonormal ``rfft2`` over (H, W), which penalises
    missing high frequencies (blur) that pixel losses average away. Orthonormal scaling keeps the
    magnitude comparable to a pixel L1 whatever the image size.
    """
    diff = torch.fft.rfft2(pred.float() - target.float(), norm="ortho")
    return torch.view_as_real(diff).abs().mean()


# torchvision VGG19 ``features`` indices of relu1_2, relu2_2, relu3_4, relu4_4, relu5_4
VGG19_LAYERS = {"relu1_2": 3, "relu2_2": 8, "relu3_4": 17, "relu4_4": 26, "relu5_4": 35}


def exclude_from_state_dict(module: nn.Module) -> None:
    """Keep a frozen module's tensors out of its parents' checkpoints.

    Its keys are dropped from ``state_dict()``, and ``load_state_dict`` fills them from the module
    itself, so strict loading of a checkpoint saved without them still passes. For networks
    loaded from their own files (a VGG for the perceptual loss, a frozen VAE), which would
    otherwise bloat every checkpoint.
    """
    names = list(module.state_dict(keep_vars=True))

    def drop(mod: nn.Module, state_dict: dict, prefix: str, local_metadata: dict) -> None:
        for name in names:
            state_dict.pop(prefix + name, None)

    def fill(mod: nn.Module, state_dict: dict, prefix: str, *args) -> None:
        for name in names:
            state_dict.setdefault(prefix + name, _tensor(mod, name))

    module.register_state_dict_post_hook(drop)
    module.register_load_state_dict_pre_hook(fill)
    module._excluded_from_state_dict = True  # for ``excluded_modules``


def excluded_modules(root: nn.Module) -> list[nn.Module]:
    """The modules under ``root`` (itself included) passed to ``exclude_from_state_dict``.

    What FSDP must be given as ``ignored_states``: it flattens every parameter it manages and its
    state-dict hook then expects each of them in the state dict, which these modules' own hook
    has emptied (see ``models.sr_module.VideoSRModule.setup``).
    """
    return [m for m in root.modules() if getattr(m, "_excluded_from_state_dict", False)]


def _tensor(module: nn.Module, name: str) -> torch.Tensor:
    owner, _, attr = name.rpartition(".")
    return getattr(module.get_submodule(owner) if owner else module, attr)


class PerceptualLoss(nn.Module):
    """L1 between VGG19 feature maps of prediction and target (frozen network).

    ``checkpoint``: a local torchvision ``vgg19`` state dict (``.pth`` or ``.safetensors``, the
    ``features.*`` keys are used; ``classifier.*`` is ignored). Inputs are RGB in [0, 1],
    ``(..., 3, H, W)``; they are ImageNet-normalised inside. ``layers`` maps layer names of
    ``VGG19_LAYERS`` to weights (the default is the Real-ESRGAN choice). Its weights are not
    saved in the state dict of modules holding it (``exclude_from_state_dict``).
    """

    def __init__(self, checkpoint: str | Path, layers: dict[str, float] | None = None):
        super().__init__()
        from torchvision.models import vgg19

        self.layers = layers or {"relu1_2": 0.1, "relu2_2": 0.1, "relu3_4": 1.0, "relu4_4": 1.0, "relu5_4": 1.0}
        unknown = set(self.layers) - set(VGG19_LAYERS)
        if unknown:
            raise ValueError(f"unknown VGG19 layers {sorted(unknown)} (known: {list(VGG19_LAYERS)})")
        state = read_state_dict(checkpoint)
        features = vgg19(weights=None).features[: max(VGG19_LAYERS[n] for n in self.layers) + 1]
        prefix = "features."
        features.load_state_dict(
            {
                k[len(prefix):]: v
                for k, v in state.items()
                if k.startswith(prefix) and int(k.split(".")[1]) < len(features)
            }
        )
        self.features = features.eval().requires_grad_(False)
        self._taps = {VGG19_LAYERS[n]: w for n, w in self.layers.items()}
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)
        exclude_from_state_dict(self)  # the VGG is read from ``checkpoint`` every time

    def train(self, mode: bool = True) -> "PerceptualLoss":
        # the VGG stays in eval mode whatever the enclosing module does
        super().train(mode)
        self.features.eval()
        return self

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        h, w = pred.shape[-2:]
        x = (pred.reshape(-1, 3, h, w) - self.mean) / self.std
        y = (target.reshape(-1, 3, h, w) - self.mean) / self.std
        loss = pred.new_zeros(())
        for i, layer in enumerate(self.features):
            x = layer(x)
            with torch.no_grad():
                y = layer(y)
            if i in self._taps:
                loss = loss + self._taps[i] * F.l1_loss(x, y)
        return loss


class PatchDiscriminator(nn.Module):
    """Spectral-normalised PatchGAN: ``(N, C, H, W)`` -> logits ``(N, 1, H/2^k, W/2^k)``.

    ``channels``: widths of the stride-2 stages (k = ``len(channels)``); a final 3x3 conv maps to
    one real/fake logit per patch. Spectral norm keeps it Lipschitz, which stabilises training
    without a gradient penalty.
    """

    def __init__(self, in_channels: int = 3, channels: Sequence[int] = (64, 128, 256)):
        super().__init__()
        sn = nn.utils.parametrizations.spectral_norm
        layers: list[nn.Module] = [nn.Conv2d(in_channels, channels[0], 3, padding=1), nn.LeakyReLU(0.2)]
        prev = channels[0]
        for ch in channels:
            layers += [sn(nn.Conv2d(prev, ch, 4, stride=2, padding=1)), nn.LeakyReLU(0.2)]
            prev = ch
        layers.append(nn.Conv2d(prev, 1, 3, padding=1))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def gan_loss(logits: torch.Tensor, real: bool) -> torch.Tensor:
    """Non-saturating GAN loss (BCE with logits) towards label ``real``; any shape -> scalar."""
    # softplus(-x) = -log(sigmoid(x)), softplus(x) = -log(1 - sigmoid(x)); stable for large |x|
    return F.softplus(-logits).mean() if real else F.softplus(logits).mean()
