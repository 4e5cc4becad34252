"""Latent layout of OASIS and its light decoder (the decoder for configs without a VAE).

Layout helpers map clips ``(B, T, C, H, W)`` to the transformer's latent grid and back:
``space_to_depth`` (pixel-unshuffle per frame) and ``pack_frames`` (``p`` frames per latent
frame, the first frame alone, like the Wan VAE's causal temporal compression).

``LightDecoder`` has two latents, both without a learned encoder:

* the *residual latent* (``features=0``): the HR residual over bicubic, pixel-unshuffled to the
  LR grid, scaled to about unit variance; the flow-matching target. Decoding adds it to bicubic
  and refines the sum with a few convolutions;
* the *feature latent* (``features=F``): ``F`` channels per LR pixel that the transformer emits
  and only the convolutions read, as the Wan VAE decoder reads its latent: no path from the
  transformer to the pixels bypasses the decoder, so the network cannot ignore the transformer
  by scaling its output down (the residual latent reaches the pixels through a fixed gain of
  ``-sigma* x latent_std``, 0.04 in the first oasis-s, which made the transformer unused). It
  has no encoder and trains one-step only.

The convolutions run at LR resolution, conditioned on the LR frame and its ``neighbors`` on each
side (early fusion: they see the sub-pixel motion between them, which 8x8-pixel tokens cannot
express), add bicubic (computed as a polyphase filter on the LR grid) and pixel-shuffle to HR as
the very last step. With ``alignment="dis"`` the neighbours are first warped onto frame t by an
optical flow (``models.oasis.alignment``), so that they add sub-pixel samples of the same scene
points instead of displaced ones. With ``propagation="bidirectional"`` a hidden state carries the
features of every frame of the clip to every other, warped by DIS flows, half-way through
the residual blocks (``models.oasis.propagation``). A zero latent through an untrained decoder decodes to bicubic exactly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .alignment import aligned_neighbor_frames, neighbor_flows
from .config import ALIGNMENTS, PROPAGATIONS
from .propagation import BidirectionalPropagation


def space_to_depth(clip: torch.Tensor, factor: int) -> torch.Tensor:
    """Pixel-unshuffle every frame: ``(B, T, C, H, W) -> (B, T, C*f*f, H/f, W/f)``."""
    b, t = clip.shape[:2]
    return F.pixel_unshuffle(clip.flatten(0, 1), factor).unflatten(0, (b, t))


def depth_to_space(clip: torch.Tensor, factor: int) -> torch.Tensor:
    """Inverse of ``space_to_depth``: ``(B, T, C*f*f, H, W) -> (B, T, C, H*f, W*f)``."""
    b, t = clip.shape[:2]
    return F.pixel_shuffle(clip.flatten(0, 1), factor).unflatten(0, (b, t))


def pack_frames(clip: torch.Tensor, p: int) -> torch.Tensor:
    """Stack ``p`` frames per latent frame: ``(B, T, C, H, W) -> (B, p*C, T_z, H, W)``.

    ``p = 1``: ``T_z = T``. ``p > 1`` needs ``T = 1 + p*k`` and gives ``T_z = 1 + k``: the first
    frame forms a latent frame alone (repeated p times), as the Wan VAE's first latent frame.
    """
    b, t, c, h, w = clip.shape
    if p > 1:
        if (t - 1) % p:
            raise ValueError(f"temporal packing {p} needs 1 + {p}*k frames, got {t}")
        clip = torch.cat([clip[:, :1].expand(b, p - 1, c, h, w), clip], dim=1)
    return clip.reshape(b, -1, p * c, h, w).transpose(1, 2)


def unpack_frames(latent: torch.Tensor, p: int) -> torch.Tensor:
    """Inverse of ``pack_frames``: ``(B, p*C, T_z, H, W) -> (B, 1 + p*(T_z-1) or T_z, C, H, W)``."""
    b, pc, tz, h, w = latent.shape
    clip = latent.transpose(1, 2).reshape(b, tz * p, pc // p, h, w)
    return clip[:, p - 1 :] if p > 1 else clip


def neighbor_frames(clip: torch.Tensor, radius: int) -> torch.Tensor:
    """Each frame with its ``radius`` neighbours on each side, stacked in channels.

    ``(B, T, C, H, W) -> (B, T, (2r+1)*C, H, W)``, frames ``t-r .. t+r`` in order; the first and
    last frames stand in for neighbours beyond the clip's ends.
    """
    if radius == 0:
        return clip
    t = clip.shape[1]
    index = (torch.arange(t, device=clip.device)[:, None] + torch.arange(-radius, radius + 1, device=clip.device)).clamp(0, t - 1)
    return clip[:, index].flatten(2, 3)


def bicubic_kernel(scale: int, a: float = -0.75) -> torch.Tensor:
    """Bicubic x``scale`` upsampling as a polyphase filter: ``(scale*scale, 1, 5, 5)``.

    Output phase ``(i, j)`` (channel ``i*scale + j``) of LR pixel ``(y, x)`` is HR pixel
    ``(y*scale + i, x*scale + j)``. Convolving the replicate-padded (by 2) LR frame with it and
    pixel-shuffling equals ``F.interpolate(mode="bicubic", align_corners=False)`` (cubic
    coefficient ``a = -0.75`` as PyTorch), at a fraction of the cost: nothing runs at HR size.
    """

    def cubic(d: torch.Tensor) -> torch.Tensor:
        d = d.abs()
        near = ((a + 2) * d - (a + 3)) * d * d + 1
        far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
        return torch.where(d <= 1, near, torch.where(d < 2, far, torch.zeros_like(d)))

    offsets = torch.arange(-2, 3, dtype=torch.float64)  # taps relative to the LR pixel
    src = (torch.arange(scale, dtype=torch.float64) + 0.5) / scale - 0.5  # source position of each phase
    w = cubic(offsets[None, :] - src[:, None])  # (scale, 5); zero beyond distance 2
    return (w[:, None, :, None] * w[None, :, None, :]).reshape(scale * scale, 1, 5, 5).float()


class ResidualBlock(nn.Module):
    """``x + conv(relu(conv(x)))`` with 3x3 convolutions; the second starts at zero (identity block)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(x), inplace=True))


class LightDecoder(nn.Module):
    """Latent <-> HR clip without a VAE; trained jointly with the transformer.

    Latent ``(B, p*c*u*u, T_z, h/u, w/u)``: ``c`` channels per LR pixel, packed and unshuffled
    by ``u`` (``s`` scale, ``p`` temporal packing):

    * ``features=0``: ``c = 3*s*s``, the space-to-depth HR residual over bicubic divided by
      ``latent_std``; ``encode(hr, lr)`` gives it (the flow-matching target, no parameters);
    * ``features=F``: ``c = F`` decoder input channels; ``encode`` refuses (there is no target).

    ``decode(latent, lr)``: latent + LR ``(B, T, 3, h, w)`` -> HR ``(B, T, 3, s*h, s*w)``,
    unclamped. All convolutions run at LR resolution (``channels`` wide, ``blocks`` residual
    blocks) on the HR clip in space-to-depth form ``(3*s*s, h, w)``; the pixel shuffle to HR is
    the last step. They read LR frame ``t`` with its ``neighbors`` on each side (``neighbor_frames``;
    ``alignment="dis"``: warped onto frame ``t``, ``alignment.aligned_neighbor_frames``);
    ``propagation="bidirectional"`` runs a ``propagation.BidirectionalPropagation`` over the clip
    after the first ``blocks // 2`` blocks, warping by the alignment's DIS flows (computed for it
    when ``alignment="none"``), with ``propagation_warmup`` reflected frames at the clip's ends.
    """

    def __init__(
        self, scale: int, unshuffle: int, temporal_packing: int, channels: int, blocks: int, latent_std: float,
        neighbors: int = 0, features: int = 0, alignment: str = "none", propagation: str = "none",
        propagation_warmup: int = 0,
    ):
        super().__init__()
        if alignment not in ALIGNMENTS:
            raise ValueError(f"alignment must be one of {ALIGNMENTS}, got {alignment!r}")
        if propagation not in PROPAGATIONS:
            raise ValueError(f"propagation must be one of {PROPAGATIONS}, got {propagation!r}")
        self.alignment = alignment
        self.scale, self.unshuffle, self.temporal_packing = scale, unshuffle, temporal_packing
        self.latent_std, self.neighbors, self.features = latent_std, neighbors, features
        s2 = 3 * scale * scale
        self.register_buffer("bicubic", bicubic_kernel(scale).repeat(3, 1, 1, 1), persistent=False)
        self.conv_in = nn.Conv2d(3 * (2 * neighbors + 1) + self.pixel_channels, channels, 3, padding=1)
        self.body = nn.Sequential(*(ResidualBlock(channels) for _ in range(blocks)))
        self.propagation = BidirectionalPropagation(channels, propagation_warmup) if propagation != "none" else None
        self.conv_out = nn.Conv2d(channels, s2, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    @property
    def pixel_channels(self) -> int:
        """Latent channels per LR pixel: ``features``, or ``3*s*s`` for the residual latent."""
        return self.features or 3 * self.scale * self.scale

    @property
    def latent_channels(self) -> int:
        return self.temporal_packing * self.pixel_channels * self.unshuffle**2

    def upsample(self, lr: torch.Tensor) -> torch.Tensor:
        """Bicubic in space-to-depth form: ``(N, 3, h, w) -> (N, 3*s*s, h, w)`` (pixel-shuffle it for HR)."""
        return F.conv2d(F.pad(lr, (2, 2, 2, 2), mode="replicate"), self.bicubic.to(lr.dtype), groups=3)

    def encode(self, hr: torch.Tensor, lr: torch.Tensor) -> torch.Tensor:
        if self.features:
            raise ValueError("a feature latent (decoder_features > 0) has no encoder: it trains one-step only")
        b, t = lr.shape[:2]
        # residual on the LR grid in space-to-depth form (B, T, 3*s*s, h, w), then unshuffled by u
        residual = space_to_depth(hr, self.scale) - self.upsample(lr.flatten(0, 1)).unflatten(0, (b, t))
        return pack_frames(space_to_depth(residual, self.unshuffle), self.temporal_packing) / self.latent_std

    def decode(self, latent: torch.Tensor, lr: torch.Tensor) -> torch.Tensor:
        b, t = lr.shape[:2]
        lr = lr.to(latent.dtype)
        flows, r = None, self.neighbors  # flows[:, :, r -/+ 1]: frame t onto t-1 / t+1
        if self.alignment == "dis":
            flows = neighbor_flows(lr, r)  # (B, T, 2r+1, h, w, 2); r >= 1 (the config's rule)
            context = aligned_neighbor_frames(lr, r, flows)
        else:
            context = neighbor_frames(lr, r)
        context = context.flatten(0, 1)  # (B*T, 3*(2r+1), h, w)
        scale = 1.0 if self.features else self.latent_std
        pixels = depth_to_space(unpack_frames(latent * scale, self.temporal_packing), self.unshuffle)
        pixels = pixels.flatten(0, 1)  # (B*T, pixel_channels, h, w)
        x = self.conv_in(torch.cat([context, pixels], dim=1))
        if self.propagation is None:
            x = self.body(x)
        else:
            if flows is None:
                flows, r = neighbor_flows(lr, 1), 1
            half = len(self.body) // 2
            x = self.body[:half](x).unflatten(0, (b, t))
            x = self.propagation(x, flows[:, :, r + 1], flows[:, :, r - 1]).flatten(0, 1)
            x = self.body[half:](x)
        out = self.upsample(lr.flatten(0, 1)) + self.conv_out(x)
        if not self.features:
            out = out + pixels  # the residual latent is an HR estimate itself
        return F.pixel_shuffle(out, self.scale).unflatten(0, (b, t))
