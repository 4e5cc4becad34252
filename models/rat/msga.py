"""Multi-scale self-guided attention (Sinha & Dolz, IEEE JBHI 2020), adapted to restoration.

The decoder features of every scale are projected to ``channels`` and resized to a common grid
(the bottleneck's, the coarsest, so that position attention stays affordable); their
concatenation is fused into ``F_MS``. For every scale ``s`` and each of two stages:

* stage 1 input ``concat(F_s, F_MS)``, stage 2 input ``concat(F_s, A_s^1 * F_MS)``;
* position attention (PAM, query/key at C/8, output scale ``gamma`` initialised 0) plus channel
  attention (CAM) on that input, projected back to ``channels``;
* gated by an encoder-decoder (the "semantic module", one per stage, shared by the scales):
  ``A_s = att * sigmoid(decoder(encoder(att)))``.

The refined attention maps of stage 2 are averaged over scales and returned; the network adds
them (through a zero-initialised projection) to its full-resolution features. Guidance losses
(returned in a dict): ``guidance`` = MSE between stage-1 and stage-2 encodings, ``reconstruction``
= MSE of each encoder-decoder's reconstruction of its input, both averaged over scales. The
refined maps of every scale can also be returned, for the per-scale (deep) supervision of the
paper, where each scale's attention features predict the output on their own.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PositionAttention(nn.Module):
    """DANet position attention: every position attends to all (key/value positions avg-pooled
    by ``key_pool`` to bound cost). ``(B, C, h, w)`` -> same shape; identity at initialisation."""

    def __init__(self, channels: int, key_pool: int = 1):
        super().__init__()
        qk = max(channels // 8, 1)
        self.query = nn.Conv2d(channels, qk, 1)
        self.key = nn.Conv2d(channels, qk, 1)
        self.value = nn.Conv2d(channels, channels, 1)
        self.key_pool = key_pool
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        kv = F.avg_pool2d(x, self.key_pool, ceil_mode=True) if self.key_pool > 1 else x
        q = self.query(x).flatten(2).transpose(1, 2)[:, None]  # (B, 1, hw, C/8)
        k = self.key(kv).flatten(2).transpose(1, 2)[:, None]
        v = self.value(kv).flatten(2).transpose(1, 2)[:, None]
        out = F.scaled_dot_product_attention(q, k, v)[:, 0].transpose(1, 2).reshape(b, c, h, w)
        return x + self.gamma * out


class ChannelAttention(nn.Module):
    """DANet channel attention: ``softmax(max(E) - E)`` over the ``C x C`` Gram matrix ``E``.
    ``(B, C, h, w)`` -> same shape; identity at initialisation."""

    def __init__(self):
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(2)
        energy = flat @ flat.transpose(1, 2) / flat.shape[-1]  # normalised by positions: size-independent
        attn = torch.softmax(energy.amax(-1, keepdim=True) - energy, dim=-1)
        return x + self.gamma * (attn @ flat).reshape_as(x)


class SemanticModule(nn.Module):
    """Small encoder-decoder: ``(B, C, h, w)`` -> (encoding ``(B, 2C, h/2, w/2)``, reconstruction).
    ``upsample``: the decoder's first layer, ``"transposed"`` (2x2 stride-2 transposed conv: a
    2-pixel pattern on flat input) or ``"bilinear"`` (bilinear x2 then a 1x1 conv)."""

    def __init__(self, channels: int, upsample: str = "transposed"):
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(channels, 2 * channels, 3, stride=2, padding=1), nn.GELU(),
                                     nn.Conv2d(2 * channels, 2 * channels, 3, padding=1))
        up = (nn.ConvTranspose2d(2 * channels, channels, 2, stride=2) if upsample == "transposed" else
              nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                            nn.Conv2d(2 * channels, channels, 1)))
        self.decoder = nn.Sequential(up, nn.GELU(), nn.Conv2d(channels, channels, 3, padding=1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        enc = self.encoder(x)
        rec = self.decoder(enc)[..., : x.shape[-2], : x.shape[-1]]
        return enc, rec


class GuidedAttentionStage(nn.Module):
    """One stage for one scale: PAM + CAM on ``concat(F_s, guide)``, gated by the semantic module."""

    def __init__(self, channels: int, key_pool: int):
        super().__init__()
        self.pam = PositionAttention(2 * channels, key_pool)
        self.cam = ChannelAttention()
        self.project = nn.Conv2d(2 * channels, channels, 1)

    def forward(self, feat: torch.Tensor, guide: torch.Tensor, semantic: SemanticModule):
        x = torch.cat([feat, guide], dim=1)
        att = self.project(self.pam(x) + self.cam(x))
        enc, rec = semantic(att)
        return att * torch.sigmoid(rec), enc, F.mse_loss(rec, att)


class MultiScaleGuidedAttention(nn.Module):
    """Fuse decoder scales with two-stage self-guided attention.

    ``in_channels``: channels of each scale's features (coarsest first). ``forward(features)``:
    list of ``(B, C_s, h_s, w_s)`` -> (``(B, channels, h_0, w_0)`` at the coarsest scale's size,
    ``{"guidance": scalar, "reconstruction": scalar}``). ``upsample``: see ``SemanticModule``.
    """

    def __init__(self, in_channels: list[int], channels: int = 32, key_pool: int = 2, upsample: str = "transposed"):
        super().__init__()
        self.inputs = nn.ModuleList(nn.Conv2d(c, channels, 1) for c in in_channels)
        self.fuse = nn.Sequential(nn.Conv2d(len(in_channels) * channels, channels, 1), nn.GELU())
        self.stages = nn.ModuleList(
            nn.ModuleList(GuidedAttentionStage(channels, key_pool) for _ in in_channels) for _ in range(2)
        )
        self.semantic = nn.ModuleList(SemanticModule(channels, upsample) for _ in range(2))

    def forward(self, features: list[torch.Tensor], return_scales: bool = False):
        """With ``return_scales`` also the refined stage-2 maps of every scale (list of
        ``(B, channels, h_0, w_0)``, coarsest first), for per-scale supervision."""
        size = features[0].shape[-2:]
        scaled = [F.adaptive_avg_pool2d(proj(f), size) for proj, f in zip(self.inputs, features)]
        fused = self.fuse(torch.cat(scaled, dim=1))
        guidance, reconstruction = [], []
        outputs = []
        for s, feat in enumerate(scaled):
            a1, enc1, rec1 = self.stages[0][s](feat, fused, self.semantic[0])
            a2, enc2, rec2 = self.stages[1][s](feat, a1 * fused, self.semantic[1])
            guidance.append(F.mse_loss(enc2, enc1))
            reconstruction.append(0.5 * (rec1 + rec2))
            outputs.append(a2)
        losses = {"guidance": torch.stack(guidance).mean(), "reconstruction": torch.stack(reconstruction).mean()}
        fused = torch.stack(outputs).mean(0)
        return (fused, losses, outputs) if return_scales else (fused, losses)
