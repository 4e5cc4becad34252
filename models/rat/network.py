"""RAT: U-shaped NAFNet with region-attention transformer layers and multi-scale self-guided attention.

Input normalisation (what ``forward`` expects, ``(B, C, H, W)`` float):

* CT: HU windowed linearly from ``[-1024, 3071]`` to ``[0, 1]`` (clipped), 1 channel;
* MR: each image divided by its 99.5th percentile and clipped to ``[0, 1]``, 1 channel;
* pathology / natural images: RGB in ``[0, 1]``, 3 channels.

The output is the same normalisation at ``scale`` times the size, not clamped (clamp for display).
It is a residual over the (upsampled) input through a zero-initialised last convolution: an
untrained network returns its input exactly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .msga import MultiScaleGuidedAttention
from .partitions import PartitionConfig, compute_partition, token_labels
from .region_attention import RegionLayout, region_attention

# HU window of the CT normalisation documented above
CT_HU_RANGE = (-1024.0, 3071.0)


@dataclass
class RATConfig:
    """Architecture of a RAT network.

    ``width``: channels at full resolution (doubled per level); ``enc_depths``/``dec_depths``:
    NAFBlocks per level (their length is the number of stride-2 levels, the bottleneck is at
    ``1/2**len``); ``bottleneck_layers``/``half_scale_layers``: transformer layers (region MSA,
    MLP, window MSA, MLP) at the bottleneck and at 1/2 scale (0 = none); ``heads``: attention
    heads; ``window_size``: window attention size in tokens; ``scale``: 1 (denoising) or 2/4 (SR,
    the input is upsampled bicubically first); ``min_region_tokens``: regions smaller than this at
    an attention scale merge into their largest neighbour; ``partition``: ``PartitionConfig``
    fields of the partition ``forward`` computes when it gets none (set it to what the model was
    trained with, e.g. ``{"method": "hu", "modality": "ct"}``; CT input is mapped back to HU
    through ``CT_HU_RANGE``); None: a grid of ``default_grid`` pixels; ``msga``: fuse decoder scales with
    multi-scale self-guided attention of ``msga_channels``, position-attention keys pooled by
    ``msga_key_pool``; ``attention_backend``: see ``region_attention``. ``upsample``: decoder
    upsampling, ``"pixelshuffle"`` (1x1 conv + PixelShuffle, and transposed convs in MSGA; their
    sub-pixel phases print a 2**levels-pixel grid on flat regions) or ``"bilinear"`` (1x1 conv +
    bilinear, no grid: a constant stays constant). ``deep_supervision``: one zero-initialised 1x1
    head per MSGA scale predicting the output at the coarsest scale (``return_aux`` adds them as
    ``"scales"``), the per-scale supervision of Sinha & Dolz (needs ``msga``).
    """

    in_channels: int = 1
    width: int = 32
    enc_depths: tuple[int, ...] = (2, 2)
    dec_depths: tuple[int, ...] = (2, 2)
    bottleneck_layers: int = 4
    half_scale_layers: int = 0
    heads: int = 8
    window_size: int = 4
    mlp_ratio: float = 2.0
    scale: int = 1
    min_region_tokens: int = 4
    default_grid: int = 32
    partition: dict | None = None
    msga: bool = True
    msga_channels: int = 32
    msga_key_pool: int = 2
    attention_backend: str = "auto"
    upsample: str = "pixelshuffle"
    deep_supervision: bool = False

    def __post_init__(self):
        self.enc_depths = tuple(self.enc_depths)
        self.dec_depths = tuple(self.dec_depths)
        if len(self.enc_depths) != len(self.dec_depths) or not self.enc_depths:
            raise ValueError("enc_depths and dec_depths need the same, non-zero length")
        if self.scale not in (1, 2, 4):
            raise ValueError(f"scale must be 1, 2 or 4, got {self.scale}")
        if self.upsample not in ("pixelshuffle", "bilinear"):
            raise ValueError(f"upsample must be 'pixelshuffle' or 'bilinear', got {self.upsample!r}")
        if self.deep_supervision and not self.msga:
            raise ValueError("deep_supervision needs msga")
        if self.partition is not None:
            PartitionConfig(**self.partition)  # fail early on a bad partition config
        if self.half_scale_layers and len(self.enc_depths) < 2:
            raise ValueError("half_scale_layers needs at least two levels")
        bottleneck = self.width * 2 ** len(self.enc_depths)
        for name, ch in (("bottleneck", bottleneck), ("1/2 scale", self.width * 2)):
            if ch % self.heads:
                raise ValueError(f"{name} channels {ch} are not divisible by heads={self.heads}")


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over channels of ``(B, C, H, W)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class NAFBlock(nn.Module):
    """NAFNet block: gated depthwise conv + simplified channel attention, then a gated FFN.
    Residual scales start at 0, so a fresh block is the identity."""

    def __init__(self, channels: int):
        super().__init__()
        c2 = 2 * channels
        self.norm1 = LayerNorm2d(channels)
        self.conv1 = nn.Conv2d(channels, c2, 1)
        self.dwconv = nn.Conv2d(c2, c2, 3, padding=1, groups=c2)
        self.sca = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, channels, 1))
        self.conv2 = nn.Conv2d(channels, channels, 1)
        self.norm2 = LayerNorm2d(channels)
        self.ffn1 = nn.Conv2d(channels, c2, 1)
        self.ffn2 = nn.Conv2d(channels, channels, 1)
        self.beta = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, channels, 1, 1))

    @staticmethod
    def _gate(x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, dim=1)
        return a * b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self._gate(self.dwconv(self.conv1(self.norm1(x))))
        x = x + self.beta * self.conv2(y * self.sca(y))
        return x + self.gamma * self.ffn2(self._gate(self.ffn1(self.norm2(x))))


class SelfAttention(nn.Module):
    """Multi-head self-attention restricted by a ``RegionLayout``: ``(B, L, C)`` -> ``(B, L, C)``."""

    def __init__(self, channels: int, heads: int, backend: str):
        super().__init__()
        self.heads = heads
        self.backend = backend
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor, layout: RegionLayout) -> torch.Tensor:
        b, length, c = x.shape
        q, k, v = self.qkv(x).reshape(b, length, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        out = region_attention(q, k, v, layout, self.backend)  # softmax scale head_dim**-0.5
        return self.proj(out.transpose(1, 2).reshape(b, length, c))


class RATLayer(nn.Module):
    """Region MSA -> MLP -> window MSA -> MLP, each pre-norm with a zero-initialised residual scale."""

    def __init__(self, channels: int, heads: int, mlp_ratio: float, backend: str):
        super().__init__()
        hidden = int(channels * mlp_ratio)
        self.norms = nn.ModuleList(nn.LayerNorm(channels) for _ in range(4))
        self.region_attn = SelfAttention(channels, heads, backend)
        self.window_attn = SelfAttention(channels, heads, backend)
        self.mlps = nn.ModuleList(
            nn.Sequential(nn.Linear(channels, hidden), nn.GELU(), nn.Linear(hidden, channels)) for _ in range(2)
        )
        self.scales = nn.Parameter(torch.zeros(4, channels))

    def forward(self, x: torch.Tensor, regions: RegionLayout, windows: RegionLayout) -> torch.Tensor:
        x = x + self.scales[0] * self.region_attn(self.norms[0](x), regions)
        x = x + self.scales[1] * self.mlps[0](self.norms[1](x))
        x = x + self.scales[2] * self.window_attn(self.norms[2](x), windows)
        return x + self.scales[3] * self.mlps[1](self.norms[3](x))


class RegionTransformer(nn.Module):
    """Transformer layers on a feature map ``(B, C, h, w)`` given pixel regions ``(B, H, W)``."""

    def __init__(self, channels: int, depth: int, config: RATConfig):
        super().__init__()
        self.window_size = config.window_size
        self.min_tokens = config.min_region_tokens
        self.layers = nn.ModuleList(
            RATLayer(channels, config.heads, config.mlp_ratio, config.attention_backend) for _ in range(depth)
        )

    def forward(self, feat: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
        b, c, h, w = feat.shape
        # layouts are built once here and shared by every layer
        region_layout = RegionLayout.from_labels(token_labels(regions, (h, w), self.min_tokens))
        yy = torch.arange(h, device=feat.device)[:, None] // self.window_size
        xx = torch.arange(w, device=feat.device)[None, :] // self.window_size
        windows = (yy * -(-w // self.window_size) + xx).reshape(1, -1).expand(b, -1)
        window_layout = RegionLayout.from_labels(windows)
        x = feat.flatten(2).transpose(1, 2)
        for layer in self.layers:
            x = layer(x, region_layout, window_layout)
        return x.transpose(1, 2).reshape(b, c, h, w)


class RAT(nn.Module):
    """Region Attention Transformer for medical image restoration.

    ``forward(x, regions=None, return_aux=False)``: ``x`` ``(B, C, H, W)`` normalised as in the
    module docstring; ``regions`` ``(B, H, W)`` integer partition of the input (see
    ``models.rat.partitions``; a ``default_grid`` grid when None). Returns ``(B, C, s*H, s*W)``,
    and with ``return_aux`` also ``{"guidance", "reconstruction"}`` losses of the MSGA module and,
    with ``deep_supervision``, ``"scales"``: one ``(B, C, sH/m, sW/m)`` prediction per MSGA scale
    (``m = 2**levels``; the residual over the input average-pooled by ``m``).
    """

    def __init__(self, config: RATConfig | None = None):
        super().__init__()
        self.config = cfg = config or RATConfig()
        self.scale = cfg.scale
        levels = len(cfg.enc_depths)
        self.multiple = 2**levels
        self.intro = nn.Conv2d(cfg.in_channels, cfg.width, 3, padding=1)
        self.encoders, self.downs, self.ups, self.decoders = (nn.ModuleList() for _ in range(4))
        ch = cfg.width
        for depth in cfg.enc_depths:
            self.encoders.append(nn.Sequential(*(NAFBlock(ch) for _ in range(depth))))
            self.downs.append(nn.Conv2d(ch, 2 * ch, 2, stride=2))
            ch *= 2
        self.bottleneck = RegionTransformer(ch, cfg.bottleneck_layers, cfg)
        decoder_channels = [ch]
        for depth in reversed(cfg.dec_depths):
            if cfg.upsample == "pixelshuffle":
                self.ups.append(nn.Sequential(nn.Conv2d(ch, 2 * ch, 1, bias=False), nn.PixelShuffle(2)))
            else:
                self.ups.append(nn.Sequential(nn.Conv2d(ch, ch // 2, 1, bias=False),
                                              nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)))
            ch //= 2
            self.decoders.append(nn.Sequential(*(NAFBlock(ch) for _ in range(depth))))
            decoder_channels.append(ch)
        self.half_scale = (RegionTransformer(2 * cfg.width, cfg.half_scale_layers, cfg)
                           if cfg.half_scale_layers else None)
        if cfg.msga:
            self.msga = MultiScaleGuidedAttention(decoder_channels, cfg.msga_channels, cfg.msga_key_pool,
                                                  "transposed" if cfg.upsample == "pixelshuffle" else "bilinear")
            self.msga_out = nn.Conv2d(cfg.msga_channels, cfg.width, 1)
            # zero init: the fused attention starts as a no-op on the U-Net features
            nn.init.zeros_(self.msga_out.weight)
            nn.init.zeros_(self.msga_out.bias)
        if cfg.deep_supervision:
            self.scale_heads = nn.ModuleList(nn.Conv2d(cfg.msga_channels, cfg.in_channels, 1) for _ in decoder_channels)
            for head in self.scale_heads:
                nn.init.zeros_(head.weight)
                nn.init.zeros_(head.bias)
        self.ending = nn.Conv2d(cfg.width, cfg.in_channels, 3, padding=1)
        # zero init: the network starts as the identity (it predicts a residual over its input)
        nn.init.zeros_(self.ending.weight)
        nn.init.zeros_(self.ending.bias)

    @classmethod
    def from_config(cls, config: dict) -> "RAT":
        known = {f.name for f in fields(RATConfig)}
        unknown = set(config) - known
        if unknown:
            raise ValueError(f"unknown RAT config keys {sorted(unknown)}")
        return cls(RATConfig(**config))

    def config_dict(self) -> dict:
        d = asdict(self.config)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    def default_regions(self, x: torch.Tensor) -> torch.Tensor:
        """Partition ``(B, H, W)`` of ``x`` ``(B, C, H, W)`` per ``config.partition`` (grid by default)."""
        b, _, h, w = x.shape
        if self.config.partition is None:
            g = self.config.default_grid
            yy = torch.arange(h, device=x.device)[:, None] // g
            xx = torch.arange(w, device=x.device)[None, :] // g
            return (yy * -(-w // g) + xx).expand(b, h, w)
        config = PartitionConfig(**self.config.partition)
        images = x.detach().float().cpu().permute(0, 2, 3, 1).numpy()
        if config.modality == "ct":
            lo, hi = CT_HU_RANGE
            images = images * (hi - lo) + lo
        labels = [compute_partition(img[..., 0] if img.shape[-1] == 1 else img, config) for img in images]
        return torch.from_numpy(np.stack(labels).astype(np.int64)).to(x.device)

    def forward(self, x: torch.Tensor, regions: torch.Tensor | None = None, return_aux: bool = False):
        if self.scale > 1:
            x = F.interpolate(x, scale_factor=self.scale, mode="bicubic", align_corners=False)
        b, _, h, w = x.shape
        regions = self.default_regions(x) if regions is None else regions
        if regions.shape[-2:] != (h, w):
            regions = F.interpolate(regions[:, None].float(), size=(h, w), mode="nearest")[:, 0]
        pad_h, pad_w = -h % self.multiple, -w % self.multiple
        xp = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate") if pad_h or pad_w else x
        rp = F.pad(regions[:, None].float(), (0, pad_w, 0, pad_h), mode="replicate")[:, 0]

        feat = self.intro(xp)
        skips = []
        for encoder, down in zip(self.encoders, self.downs):
            feat = encoder(feat)
            skips.append(feat)
            feat = down(feat)
        feat = self.bottleneck(feat, rp)
        scales = [feat]
        for up, decoder, skip in zip(self.ups, self.decoders, reversed(skips)):
            feat = up(feat) + skip
            if self.half_scale is not None and feat.shape[1] == 2 * self.config.width:
                feat = self.half_scale(feat, rp)
            feat = decoder(feat)
            scales.append(feat)
        aux = {}
        if self.config.msga:
            if self.config.deep_supervision and return_aux:
                fused, aux, per_scale = self.msga(scales, return_scales=True)
                coarse = F.avg_pool2d(xp, self.multiple)
                aux["scales"] = [(coarse + head(a))[..., : -(-h // self.multiple), : -(-w // self.multiple)]
                                 for head, a in zip(self.scale_heads, per_scale)]
            else:
                fused, aux = self.msga(scales)
            fused = F.interpolate(fused, size=feat.shape[-2:], mode="bilinear", align_corners=False)
            feat = feat + self.msga_out(fused)
        out = self.ending(feat)[..., :h, :w] + x
        return (out, aux) if return_aux else out
