"""The OASIS network: LR clip -> pixel-unshuffle -> diffusion transformer -> decoder -> HR clip.

Flow matching (rectified flow, the Wan2.1 convention): a clean latent ``x_0`` and noise ``e``
give ``x_s = (1 - s) x_0 + s e`` at ``sigma = s`` in [0, 1] (timestep ``1000 s``); the
transformer predicts the velocity ``v = e - x_0`` from ``x_s`` and the LR clip.

One-step inference evaluates it once at the fixed ``sigma* = timestep / 1000`` with ``x_s = 0``
(the noise mean; for the light decoder the zero latent is also the bicubic estimate) and returns
``x_0 = x_s - sigma* v = -sigma* v``, decoded to pixels. ``sample`` runs the N-step Euler sampler
of the flow-matching stage for comparison. Both use the same weights, so a one-step model is
fine-tuned from a flow-matching checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .config import OASISConfig
from .decoder import LightDecoder, pack_frames, space_to_depth
from .transformer import OASISTransformer


def _resolve_routing(config: OASISConfig) -> None:
    """Replace a ``routing.json`` path in ``config`` by its nested list (and window)."""
    if isinstance(config.routing, (str, Path)):
        from .calibration import RoutingTable

        table = RoutingTable.load(config.routing)
        config.routing, config.window = [list(heads) for heads in table.layers], tuple(table.window)
        if len(config.routing) != config.layers:
            raise ValueError(f"routing table has {len(config.routing)} layers, the config {config.layers}")


def _pad_clip(clip: torch.Tensor, frames: int, multiple_h: int, multiple_w: int) -> torch.Tensor:
    """Replicate-pad ``(B, T, C, H, W)`` to ``frames`` frames and H, W multiples of the given sizes."""
    b, t, c, h, w = clip.shape
    if frames > t:
        clip = torch.cat([clip, clip[:, -1:].expand(b, frames - t, c, h, w)], dim=1)
    ph, pw = -h % multiple_h, -w % multiple_w
    if ph or pw:
        clip = F.pad(clip.flatten(0, 1), (0, pw, 0, ph), mode="replicate").unflatten(0, (b, frames))
    return clip


class OASIS(nn.Module):
    """One-step diffusion-transformer video super-resolution.

    ``forward(clip)``: ``(B, T, 3, h, w)`` float in [0, 1] -> ``(B, T, 3, s*h, s*w)`` in [0, 1],
    any T, h, w (padded inside, cropped back). Attributes for the engine: ``scale`` (s) and
    ``temporal_window`` (frames per chunk the model sees jointly).

    Build from a config (``OASIS(OASISConfig(...))``, ``OASIS.from_config(dict)``), or from a
    local Wan2.1 folder with its transformer weights (``OASIS.from_wan(path, scale)``).
    """

    def __init__(self, config: OASISConfig | None = None):
        super().__init__()
        config = config or OASISConfig()
        _resolve_routing(config)
        self.config = config
        self.scale = config.scale
        self.temporal_window = config.temporal_window
        self.transformer = OASISTransformer(
            in_channels=config.in_channels,
            latent_channels=config.latent_channels,
            heads=config.heads,
            head_dim=config.head_dim,
            layers=config.layers,
            ffn_dim=config.ffn_dim,
            patch_size=config.patch_size,
            freq_dim=config.freq_dim,
            eps=config.eps,
            rope_theta=config.rope_theta,
            routing=config.routing,
            window=config.window,
        )
        if config.decoder == "wan":
            from .wan import WanVAECodec

            self.codec: nn.Module = WanVAECodec(config.wan_path)
        else:
            self.codec = LightDecoder(
                config.scale, config.unshuffle, config.temporal_packing,
                config.decoder_channels, config.decoder_blocks, config.latent_std, config.decoder_neighbors,
                config.decoder_features, config.decoder_alignment, config.decoder_propagation,
                config.decoder_propagation_warmup,
            )

    @classmethod
    def from_config(cls, config: dict) -> "OASIS":
        """Build from a plain dict (a model card's ``config``), random weights."""
        return cls(OASISConfig.from_dict(dict(config)))

    @classmethod
    def from_wan(cls, wan_path: str | Path, scale: int = 4, **overrides) -> "OASIS":
        """``oasis-1.3b``: the Wan2.1 geometry and transformer weights of ``wan_path``, frozen Wan VAE.

        Only the LR input embedding is new (random); see ``models.oasis.wan``.
        """
        from .wan import wan_transformer_state

        model = cls(OASISConfig.wan_1_3b(wan_path, scale, **overrides))
        state = wan_transformer_state(wan_path, model.config)
        missing, unexpected = model.transformer.load_state_dict(state, strict=False)
        if unexpected or set(missing) != {"patch_embedding.weight", "patch_embedding.bias"}:
            raise RuntimeError(f"Wan weight conversion out of step: missing {missing}, unexpected {unexpected}")
        return model

    def _identity_at_init(self, state: dict[str, torch.Tensor]) -> tuple[str, ...]:
        """Key prefixes of parts that start as the identity, so weights trained without them
        warm-start this network unchanged: a ``decoder_propagation``, and light-decoder residual
        blocks appended after the trained ones (each ends in a zero convolution). With propagation
        the body is split at its middle, so appended blocks would move the split: they must fit."""
        prefixes = ["codec.propagation."]
        body = getattr(self.codec, "body", None)
        if body is not None and getattr(self.codec, "propagation", None) is None:
            trained = {int(k.split(".")[2]) for k in state if k.startswith("codec.body.")}
            prefixes += [f"codec.body.{i}." for i in range(len(trained), len(body))]
        return tuple(prefixes)

    def load_warm_start(self, state: dict[str, torch.Tensor]) -> None:
        """Load ``state`` strictly, except that parts starting as the identity (a
        ``decoder_propagation``, or ``decoder_blocks`` added after the trained blocks of a decoder
        without propagation) may be missing and keep their init: the network then computes what
        the weights computed, and training goes on from there."""
        missing, unexpected = self.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith(self._identity_at_init(state))]
        if missing or unexpected:
            raise ValueError(f"the weights do not fit this network: missing {missing[:4]}, unexpected {unexpected[:4]}")

    def config_dict(self) -> dict:
        """The config as a plain dict, with the routing the attention layers use now."""
        d = self.config.to_dict()
        routing = [list(block.attn.routing) for block in self.transformer.blocks]
        d["routing"] = None if all(g == "global" for heads in routing for g in heads) else routing
        d["window"] = list(self.transformer.blocks[0].attn.window)
        return d

    # -- layout -------------------------------------------------------------------------------

    def _pad_lr(self, clip: torch.Tensor) -> torch.Tensor:
        mh, mw = self.config.pad_multiple
        return _pad_clip(clip, self.config.packed_frames(clip.shape[1]), mh, mw)

    def encode_lr(self, clip: torch.Tensor) -> torch.Tensor:
        """LR clip -> transformer input ``(B, in_channels, T_z, H/u, W/u)`` (padded, unshuffled, packed)."""
        clip = self._pad_lr(clip)
        return pack_frames(space_to_depth(clip, self.config.unshuffle), self.config.temporal_packing)

    def encode_target(self, hr: torch.Tensor, clip: torch.Tensor) -> torch.Tensor:
        """HR clip ``(B, T, 3, s*h, s*w)`` + its LR clip -> clean latent ``x_0`` (flow-matching target)."""
        mh, mw = self.config.pad_multiple
        frames = self.config.packed_frames(clip.shape[1])
        hr = _pad_clip(hr, frames, mh * self.scale, mw * self.scale)
        return self.codec.encode(hr, self._pad_lr(clip))

    def decode(self, latent: torch.Tensor, clip: torch.Tensor) -> torch.Tensor:
        """Latent ``x_0`` + LR clip ``(B, T, 3, h, w)`` -> HR ``(B, T, 3, s*h, s*w)``, unclamped."""
        t, h, w = clip.shape[1], clip.shape[3], clip.shape[4]
        hr = self.codec.decode(latent, self._pad_lr(clip))
        return hr[:, :t, :, : h * self.scale, : w * self.scale]

    # -- prediction ---------------------------------------------------------------------------

    def velocity(
        self, clip: torch.Tensor, sigma: torch.Tensor | float, latent: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Predicted flow velocity at noise level ``sigma`` (scalar or ``(B,)``) for noisy latent ``latent``.

        ``latent`` None means ``x_sigma = 0``. Returns ``(B, latent_channels, T_z, H/u, W/u)``.
        """
        x = self.encode_lr(clip)
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device).reshape(-1)
        return self.transformer(x, sigma * 1000.0, latent)

    def one_step_latent(self, clip: torch.Tensor) -> torch.Tensor:
        """The one-step estimate of the clean latent: ``-sigma* v(x = 0, sigma*)``."""
        sigma = self.config.timestep / 1000.0
        return -sigma * self.velocity(clip, sigma)

    def restore(self, clip: torch.Tensor) -> torch.Tensor:
        """One-step super-resolution without the final clamp (what the pixel losses train)."""
        return self.decode(self.one_step_latent(clip), clip)

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        return self.restore(clip).clamp(0, 1)

    @torch.no_grad()
    def sample(self, clip: torch.Tensor, steps: int = 20, generator: torch.Generator | None = None) -> torch.Tensor:
        """N-step Euler flow-matching sampler, sigma 1 -> 0: ``(B, T, 3, h, w) -> (B, T, 3, s*h, s*w)`` in [0, 1].

        Only for weights trained with the flow-matching objective (``config.objective``): a
        one-step model's velocity is trained at t* alone, and its samples are noise.
        """
        if self.config.objective != "flow_matching":
            raise ValueError("these weights were trained for one-step restoration only (objective "
                             f"{self.config.objective!r}): sample() needs a flow-matching checkpoint; use forward()")
        x_lr = self.encode_lr(clip)
        b, _, t, h, w = x_lr.shape
        shape = (b, self.config.latent_channels, t, h, w)
        x = torch.randn(shape, generator=generator, device="cpu" if generator is None else generator.device)
        x = x.to(device=x_lr.device, dtype=x_lr.dtype)
        sigmas = torch.linspace(1.0, 0.0, steps + 1, device=x_lr.device)
        for s, s_next in zip(sigmas[:-1], sigmas[1:]):
            v = self.transformer(x_lr, (s * 1000.0).reshape(1), x)
            x = x + (s_next - s) * v
        return self.decode(x, clip).clamp(0, 1)
