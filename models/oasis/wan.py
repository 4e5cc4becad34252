"""The Wan2.1 path of OASIS (``oasis-1.3b``): frozen Wan VAE as decoder, Wan transformer weights.

Everything is read from a local Wan2.1 diffusers folder (``transformer/`` and ``vae/``, e.g.
Wan-AI/Wan2.1-T2V-1.3B-Diffusers downloaded beforehand); nothing is downloaded at run time.

* ``WanVAECodec``: latent <-> HR clip with diffusers' ``AutoencoderKLWan``, frozen. Its weights
  stay out of OASIS checkpoints (they are read from the folder).
* ``wan_transformer_state(folder, config)``: the state dict of ``OASISTransformer`` taken from
  diffusers' ``WanTransformer3DModel``. Wan's patch embedding becomes the noisy-latent embedding;
  the LR embedding (``patch_embedding``) is new. Text cross-attention is removed: fed a null
  context (all-zero text embeddings) every key is the same, the softmax is uniform, and the
  cross-attention output is the constant ``to_out(to_v(text_embedder(0)))`` per block, which we
  store as the block's learned ``context_bias``.

diffusers is imported inside the functions (it is slow to import and only this path needs it).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..losses import exclude_from_state_dict
from .config import OASISConfig


class WanVAECodec(nn.Module):
    """Frozen Wan2.1 VAE: ``encode(hr, lr)`` -> normalised latent, ``decode(latent, lr)`` -> HR.

    HR clips are ``(B, T, 3, H, W)`` in [0, 1] with ``T = 1 + 4k``; latents are
    ``(B, 16, 1 + k, H/8, W/8)``, normalised per channel with the VAE's ``latents_mean`` and
    ``latents_std`` as the Wan pipelines do. ``lr`` is unused (the decoder is not conditioned).
    """

    def __init__(self, wan_path: str | Path):
        super().__init__()
        from diffusers import AutoencoderKLWan

        folder = Path(wan_path) / "vae"
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: no Wan2.1 VAE folder (expected a diffusers Wan2.1 download)")
        self.vae = AutoencoderKLWan.from_pretrained(str(folder)).eval().requires_grad_(False)
        cfg = self.vae.config
        self.latent_channels = cfg.z_dim
        self.register_buffer("mean", torch.tensor(cfg.latents_mean).view(1, -1, 1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(cfg.latents_std).view(1, -1, 1, 1, 1), persistent=False)
        exclude_from_state_dict(self)

    def train(self, mode: bool = True) -> "WanVAECodec":
        super().train(mode)
        self.vae.eval()  # frozen: no dropout, whatever the enclosing module does
        return self

    @torch.no_grad()
    def encode(self, hr: torch.Tensor, lr: torch.Tensor | None = None) -> torch.Tensor:
        x = hr.transpose(1, 2).to(self.vae.dtype) * 2 - 1  # (B, 3, T, H, W) in [-1, 1]
        latent = self.vae.encode(x).latent_dist.mode()
        return (latent - self.mean) / self.std

    def decode(self, latent: torch.Tensor, lr: torch.Tensor | None = None) -> torch.Tensor:
        # gradients flow through the frozen decoder to the transformer (pixel losses)
        video = self.vae.decode((latent * self.std + self.mean).to(self.vae.dtype)).sample
        return (video.transpose(1, 2) + 1) / 2


@torch.no_grad()
def wan_transformer_state(wan_path: str | Path, config: OASISConfig) -> dict[str, torch.Tensor]:
    """``OASISTransformer`` weights from ``wan_path/transformer`` (LR ``patch_embedding`` excluded).

    Raises ``ValueError`` when the folder's geometry differs from ``config``.
    """
    from diffusers import WanTransformer3DModel

    wan = WanTransformer3DModel.from_pretrained(str(Path(wan_path) / "transformer")).eval()
    c = wan.config
    got = (c.num_attention_heads, c.attention_head_dim, c.num_layers, c.ffn_dim, tuple(c.patch_size))
    want = (config.heads, config.head_dim, config.layers, config.ffn_dim, config.patch_size)
    if got != want:
        raise ValueError(f"{wan_path}: Wan transformer geometry {got} does not match the config {want}")
    if c.added_kv_proj_dim is not None or c.image_dim is not None:
        raise ValueError(f"{wan_path}: an image-to-video Wan model; OASIS starts from text-to-video")

    src = wan.state_dict()
    state = {
        "latent_embedding.weight": src["patch_embedding.weight"],
        "latent_embedding.bias": src["patch_embedding.bias"],
        "time_embedder.0.weight": src["condition_embedder.time_embedder.linear_1.weight"],
        "time_embedder.0.bias": src["condition_embedder.time_embedder.linear_1.bias"],
        "time_embedder.2.weight": src["condition_embedder.time_embedder.linear_2.weight"],
        "time_embedder.2.bias": src["condition_embedder.time_embedder.linear_2.bias"],
        "time_proj.1.weight": src["condition_embedder.time_proj.weight"],
        "time_proj.1.bias": src["condition_embedder.time_proj.bias"],
        "scale_shift_table": src["scale_shift_table"],
        "proj_out.weight": src["proj_out.weight"],
        "proj_out.bias": src["proj_out.bias"],
    }
    null_context = wan.condition_embedder.text_embedder(torch.zeros(1, 1, c.text_dim))  # (1, 1, dim)
    for i, block in enumerate(wan.blocks):
        p = f"blocks.{i}."
        for name in ("to_q", "to_k", "to_v", "norm_q", "norm_k"):
            for key, value in getattr(block.attn1, name).state_dict().items():
                state[f"{p}attn.{name}.{key}"] = value
        state[f"{p}attn.to_out.weight"] = src[p + "attn1.to_out.0.weight"]
        state[f"{p}attn.to_out.bias"] = src[p + "attn1.to_out.0.bias"]
        state[f"{p}ffn.0.weight"] = src[p + "ffn.net.0.proj.weight"]
        state[f"{p}ffn.0.bias"] = src[p + "ffn.net.0.proj.bias"]
        state[f"{p}ffn.2.weight"] = src[p + "ffn.net.2.weight"]
        state[f"{p}ffn.2.bias"] = src[p + "ffn.net.2.bias"]
        state[f"{p}scale_shift_table"] = src[p + "scale_shift_table"]
        # one repeated key: uniform attention, output = to_out(to_v(context)) whatever the query
        state[f"{p}context_bias"] = block.attn2.to_out[0](block.attn2.to_v(null_context)).reshape(-1)
    return {k: v.detach().float().clone() for k, v in state.items()}
