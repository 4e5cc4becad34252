"""The OASIS diffusion transformer: Wan2.1-style blocks with routed self-attention, no text.

Each block is ``x += gate * RoutedSelfAttention(AdaLN(x)); x += context_bias;
x += gate * FFN(AdaLN(x))``, where shift/scale/gate come from the timestep embedding (AdaLN) and
attention uses 3D rotary positions over the token grid ``(t, h, w)``. Parameter names and maths
follow diffusers' ``WanTransformer3DModel`` so Wan2.1 weights map onto it one to one (see
``models.oasis.wan``); its text cross-attention, fed a null context, is exactly a per-block
constant and lives on as the learned ``context_bias``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .attention import routed_attention

Grid = tuple[int, int, int]


def rope_split(head_dim: int) -> tuple[int, int, int]:
    """Channels of each head given to the (t, h, w) rotary axes, as in Wan2.1 (t gets the rest)."""
    hw = 2 * (head_dim // 6)
    return head_dim - 2 * hw, hw, hw


Rope = tuple[torch.Tensor, torch.Tensor]


def rotary_embedding(grid: Grid, head_dim: int, theta: float, device: torch.device) -> Rope:
    """Cos and sin of the 3D rotary embedding, each ``(L, head_dim/2)``, for the raster-ordered grid.

    Each axis a with ``d_a`` channels (``rope_split``) rotates its channel pairs by
    ``pos_a * theta**(-2i/d_a)``; the pairs of t, h and w are concatenated in that order.
    """
    parts = []
    for axis, (n, d) in enumerate(zip(grid, rope_split(head_dim))):
        freqs = 1.0 / theta ** (torch.arange(0, d, 2, dtype=torch.float64, device=device) / d)
        angles = torch.arange(n, dtype=torch.float64, device=device)[:, None] * freqs[None]  # (n, d/2)
        shape = [1, 1, 1, d // 2]
        shape[axis] = n
        parts.append(angles.view(shape).expand(*grid, d // 2))
    angles = torch.cat(parts, dim=-1).reshape(math.prod(grid), head_dim // 2)
    return angles.cos().float(), angles.sin().float()


def apply_rotary(x: torch.Tensor, rope: Rope) -> torch.Tensor:
    """Rotate interleaved channel pairs ``(x[2i], x[2i+1])`` of ``x (B, heads, L, D)`` by the angles of ``rope``."""
    cos, sin = (r.to(x.dtype) for r in rope)
    x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)
    return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2)


class RoutedSelfAttention(nn.Module):
    """Multi-head self-attention whose heads are routed global / intra-frame / window (ASR).

    ``forward(x (B, L, dim), rope, grid) -> (B, L, dim)``, ``rope`` = cos, sin ``(L, head_dim/2)``.

    Attributes the head calibration (``models.oasis.calibration``) relies on:
        routing: one of "global" | "intra" | "window" per head; settable at run time.
        qk_observer: None, or a callable ``(q, k, grid)`` given the post-rotary ``q, k``
            ``(B, heads, L, head_dim)`` before attending.
        window: ``(t, h, w)`` extent of the window heads, in tokens.
    """

    def __init__(self, dim: int, heads: int, eps: float, routing: Sequence[str] | None, window: Grid):
        super().__init__()
        self.heads = heads
        self.to_q = nn.Linear(dim, dim)
        self.to_k = nn.Linear(dim, dim)
        self.to_v = nn.Linear(dim, dim)
        # RMS norm over all heads together, as Wan2.1 ("rms_norm_across_heads")
        self.norm_q = nn.RMSNorm(dim, eps=eps)
        self.norm_k = nn.RMSNorm(dim, eps=eps)
        self.to_out = nn.Linear(dim, dim)
        self.routing: list[str] = list(routing) if routing is not None else ["global"] * heads
        if len(self.routing) != heads:
            raise ValueError(f"routing has {len(self.routing)} entries for {heads} heads")
        self.window = tuple(window)
        self.qk_observer = None

    def forward(self, x: torch.Tensor, rope: Rope, grid: Grid) -> torch.Tensor:
        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.unflatten(-1, (self.heads, -1)).transpose(1, 2)  # (B, heads, L, D)

        q = apply_rotary(heads(self.norm_q(self.to_q(x))), rope)
        k = apply_rotary(heads(self.norm_k(self.to_k(x))), rope)
        v = heads(self.to_v(x))
        if self.qk_observer is not None:
            self.qk_observer(q, k, grid)
        out = routed_attention(q, k, v, grid, self.routing, self.window)
        return self.to_out(out.transpose(1, 2).flatten(2))


def _layer_norm(x: torch.Tensor, eps: float) -> torch.Tensor:
    # in float32 whatever the compute dtype, as Wan's FP32LayerNorm: bf16 statistics drift
    return F.layer_norm(x.float(), x.shape[-1:], eps=eps)


class OASISBlock(nn.Module):
    """One transformer block; ``forward(x (B, L, dim), mod (B, 6, dim), rope, grid) -> x``."""

    def __init__(self, dim: int, heads: int, ffn_dim: int, eps: float, routing: Sequence[str] | None, window: Grid):
        super().__init__()
        self.eps = eps
        self.attn = RoutedSelfAttention(dim, heads, eps, routing, window)
        self.context_bias = nn.Parameter(torch.zeros(dim))
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.GELU(approximate="tanh"), nn.Linear(ffn_dim, dim))
        # learned offsets of (shift, scale, gate) for attention and FFN, added to the timestep's
        self.scale_shift_table = nn.Parameter(torch.randn(1, 6, dim) / dim**0.5)

    def forward(self, x: torch.Tensor, mod: torch.Tensor, rope: Rope, grid: Grid) -> torch.Tensor:
        shift, scale, gate, ffn_shift, ffn_scale, ffn_gate = (self.scale_shift_table + mod.float()).unbind(1)
        h = (_layer_norm(x, self.eps) * (1 + scale[:, None]) + shift[:, None]).type_as(x)
        x = x + (self.attn(h, rope, grid) * gate[:, None]).type_as(x) + self.context_bias.to(x.dtype)
        h = (_layer_norm(x, self.eps) * (1 + ffn_scale[:, None]) + ffn_shift[:, None]).type_as(x)
        return x + (self.ffn(h) * ffn_gate[:, None]).type_as(x)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding ``(B,) -> (B, dim)``: [cos | sin], as diffusers' ``Timesteps(flip_sin_to_cos=True)``."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class OASISTransformer(nn.Module):
    """Diffusion transformer on the latent grid; no text conditioning.

    ``forward(lr, timestep, latent=None) -> velocity``:

    * ``lr``: unshuffled, packed LR clip ``(B, in_channels, T_z, H, W)`` (H, W multiples of the patch);
    * ``timestep``: ``(B,)`` flow-matching time in [0, 1000] (sigma * 1000);
    * ``latent``: the noisy latent ``x_t`` ``(B, latent_channels, T_z, H, W)``, or None for
      ``x_t = 0`` (one-step inference; only the embedding's bias remains, so nothing is computed);
    * returns the predicted flow velocity ``(B, latent_channels, T_z, H, W)``.

    The LR and the noisy latent have one patch embedding each and their tokens are summed (the
    same as one embedding of their channel concatenation), so a one-step model keeps the
    flow-matching model's weights. ``proj_out`` starts at zero: an untrained network predicts
    velocity 0 (for the light decoder: bicubic output).

    ``gradient_checkpointing = True`` recomputes each block's activations in the backward pass
    instead of storing them (for training the 1.3B config on long clips).
    """

    def __init__(
        self,
        in_channels: int,
        latent_channels: int,
        heads: int,
        head_dim: int,
        layers: int,
        ffn_dim: int,
        patch_size: Grid = (1, 2, 2),
        freq_dim: int = 256,
        eps: float = 1e-6,
        rope_theta: float = 10000.0,
        routing: Sequence[Sequence[str]] | None = None,
        window: Grid = (3, 5, 5),
    ):
        super().__init__()
        dim = heads * head_dim
        self.patch_size, self.head_dim, self.freq_dim = patch_size, head_dim, freq_dim
        self.eps, self.rope_theta = eps, rope_theta
        self.patch_embedding = nn.Conv3d(in_channels, dim, patch_size, stride=patch_size)
        self.latent_embedding = nn.Conv3d(latent_channels, dim, patch_size, stride=patch_size)
        self.time_embedder = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.time_proj = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
        self.blocks = nn.ModuleList(
            OASISBlock(dim, heads, ffn_dim, eps, None if routing is None else routing[i], window) for i in range(layers)
        )
        self.scale_shift_table = nn.Parameter(torch.randn(1, 2, dim) / dim**0.5)
        self.proj_out = nn.Linear(dim, latent_channels * math.prod(patch_size))
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)
        self.gradient_checkpointing = False

    def forward(self, lr: torch.Tensor, timestep: torch.Tensor, latent: torch.Tensor | None = None) -> torch.Tensor:
        b, _, t, h, w = lr.shape
        pt, ph, pw = self.patch_size
        grid = (t // pt, h // ph, w // pw)
        x = self.patch_embedding(lr)
        if latent is None:
            x = x + self.latent_embedding.bias.view(1, -1, 1, 1, 1).to(x.dtype)
        else:
            x = x + self.latent_embedding(latent.to(x.dtype))
        x = x.flatten(2).transpose(1, 2).contiguous()  # (B, L, dim), raster order (t, h, w)

        temb = self.time_embedder(timestep_embedding(timestep.expand(b), self.freq_dim).to(x.dtype))
        mod = self.time_proj(temb).unflatten(1, (6, -1))
        rope = rotary_embedding(grid, self.head_dim, self.rope_theta, x.device)
        for block in self.blocks:
            if self.gradient_checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, mod, rope, grid, use_reentrant=False)
            else:
                x = block(x, mod, rope, grid)

        shift, scale = (self.scale_shift_table + temb.float()[:, None]).unbind(1)
        x = (_layer_norm(x, self.eps) * (1 + scale[:, None]) + shift[:, None]).type_as(x)
        x = self.proj_out(x)  # (B, L, C * pt * ph * pw)
        # unpatchify: (B, t', h', w', pt, ph, pw, C) -> (B, C, t, h, w)
        x = x.reshape(b, *grid, pt, ph, pw, -1).permute(0, 7, 1, 4, 2, 5, 3, 6)
        return x.reshape(b, -1, t, h, w)
