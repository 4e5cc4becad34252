"""Configuration of the OASIS network (one-step diffusion-transformer video super-resolution).

Geometry, for an LR clip ``(B, T, 3, h, w)`` and upscaling factor ``s = scale``:

* the LR frames are pixel-unshuffled by ``u = unshuffle`` (this replaces a VAE encoder) and
  ``p = temporal_packing`` consecutive frames are stacked in channels, the first frame alone as
  the Wan VAE does (``T = 1 + p*k``): ``(B, 3*p*u*u, T_z, h/u, w/u)``;
* a 3D patch embedding ``patch_size = (pt, ph, pw)`` makes tokens on the grid
  ``(T_z/pt, h/(u*ph), w/(u*pw))``; the transformer predicts the *latent* on the same grid as the
  unshuffled LR, ``(B, latent_channels, T_z, h/u, w/u)``;
* the decoder turns the latent into the HR clip ``(B, T, 3, s*h, s*w)``: the frozen Wan2.1 VAE
  decoder (``decoder="wan"``: 16-channel latent, 8x spatial and 4x temporal compression, hence
  ``u = 8 / s`` and ``p = 4``), or the light decoder trained jointly (``decoder="light"``: the
  latent is the HR residual over bicubic, pixel-unshuffled by ``s*u``).

Inputs of any size are padded (replicate) to the multiples these factors need and the output is
cropped back.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

DECODERS = ("light", "wan")
# how the light decoder registers its neighbouring frames to frame t: as they are, or warped by
# DIS optical flow (models.oasis.alignment)
ALIGNMENTS = ("none", "dis")
# whether the light decoder carries a hidden state along the clip (models.oasis.propagation)
PROPAGATIONS = ("none", "bidirectional")
OBJECTIVES = ("one_step", "flow_matching")


@dataclass
class OASISConfig:
    """OASIS network hyper-parameters (plain values, so it round-trips through JSON and YAML).

    Attributes:
        scale: upscaling factor s, 2 or 4.
        heads, head_dim: attention heads and channels per head (model width = heads * head_dim).
        layers: transformer blocks.
        ffn_dim: hidden width of each block's feed-forward network.
        patch_size: (t, h, w) patch of the token embedding, in latent-grid cells.
        unshuffle: LR pixel-unshuffle factor u (the latent grid is h/u x w/u).
        temporal_packing: LR frames stacked per latent frame (Wan VAE: 4, first frame alone).
        freq_dim: sinusoidal timestep-embedding width.
        eps: epsilon of the layer and RMS norms.
        rope_theta: base of the 3D rotary position frequencies.
        timestep: fixed t* of one-step inference, on the 0..1000 flow-matching scale
            (sigma = t/1000). Not published by OASIS; 399 is what DOVE uses.
        decoder: "light" (trained jointly, no VAE) or "wan" (frozen Wan2.1 VAE decoder).
        decoder_channels, decoder_blocks: width and residual blocks of the light decoder.
        decoder_features: light decoder only: 0, the transformer predicts the HR residual over
            bicubic (a latent with a flow-matching target); F > 0, it emits F feature channels per
            LR pixel that only the decoder's convolutions read (no shortcut to the pixels; one-step
            only). See ``models.oasis.decoder``.
        decoder_neighbors: LR frames on each side of frame t that the light decoder reads with it
            (0: each frame alone); the video engine's chunks give them, at the clip's ends the
            first or last frame stands in.
        decoder_alignment: light decoder only: "none" (the neighbours as they are) or "dis"
            (warped onto frame t by DIS optical flow first; ``models.oasis.alignment``).
        decoder_propagation: light decoder only: "none" or "bidirectional" (a hidden state
            carried backward and forward over the temporal window, warped by DIS flow,
            BasicVSR-style; ``models.oasis.propagation``). It starts as the identity, so weights
            trained without it warm-start it.
        decoder_propagation_warmup: frames the propagation replays in reflection at each end of
            the window, so that its states are not empty at the engine's chunk seams (a still
            scene flickered there). No weights of its own: set it on trained weights too.
        latent_std: light decoder only: the HR-minus-bicubic residual is divided by this so the
            flow-matching latent has roughly unit variance.
        temporal_window: frames the model sees jointly at inference; the video engine chunks
            clips by it.
        routing: attention-head routing (ASR): None (every head global), a nested list
            ``routing[layer][head]`` of "global" | "intra" | "window", or the path of a
            ``routing.json`` (read when the network is built and stored here as the nested list).
        window: (t, h, w) extent of "window" heads, in tokens.
        wan_path: local Wan2.1 diffusers folder (``decoder="wan"`` only; its ``vae/`` is loaded).
        wan_latent_channels: latent channels of that VAE (16 for Wan2.1).
        objective: what the weights were trained for, set by ``OASISModule``: "one_step" (the
            single forward pass at t*; ``OASIS.sample`` refuses such weights, their velocity at
            other noise levels was never trained) or "flow_matching" (the N-step sampler works).
    """

    scale: int = 4
    heads: int = 6
    head_dim: int = 32
    layers: int = 8
    ffn_dim: int = 576
    patch_size: tuple[int, int, int] = (1, 2, 2)
    unshuffle: int = 4
    temporal_packing: int = 1
    freq_dim: int = 256
    eps: float = 1e-6
    rope_theta: float = 10000.0
    timestep: float = 399.0
    decoder: str = "light"
    decoder_channels: int = 32
    decoder_blocks: int = 2
    decoder_features: int = 0
    decoder_neighbors: int = 0
    decoder_alignment: str = "none"
    decoder_propagation: str = "none"
    decoder_propagation_warmup: int = 0
    latent_std: float = 0.1
    temporal_window: int = 8
    routing: list[list[str]] | str | None = None
    window: tuple[int, int, int] = (3, 5, 5)
    wan_path: str | None = None
    wan_latent_channels: int = 16
    objective: str = "one_step"

    def __post_init__(self) -> None:
        self.patch_size = tuple(int(n) for n in self.patch_size)
        self.window = tuple(int(n) for n in self.window)
        if self.scale not in (2, 4):
            raise ValueError(f"scale must be 2 or 4, got {self.scale}")
        if self.decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {DECODERS}, got {self.decoder!r}")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if self.decoder_features and (self.decoder != "light" or self.objective == "flow_matching"):
            raise ValueError("decoder_features needs the light decoder and the one_step objective "
                             "(a feature latent has no flow-matching target)")
        if self.decoder_alignment not in ALIGNMENTS:
            raise ValueError(f"decoder_alignment must be one of {ALIGNMENTS}, got {self.decoder_alignment!r}")
        if self.decoder_alignment != "none" and (self.decoder != "light" or not self.decoder_neighbors):
            raise ValueError("decoder_alignment needs the light decoder with decoder_neighbors > 0")
        if self.decoder_propagation not in PROPAGATIONS:
            raise ValueError(f"decoder_propagation must be one of {PROPAGATIONS}, got {self.decoder_propagation!r}")
        if self.decoder_propagation != "none" and self.decoder != "light":
            raise ValueError("decoder_propagation needs the light decoder")
        if self.decoder_propagation_warmup < 0 or (self.decoder_propagation_warmup and self.decoder_propagation == "none"):
            raise ValueError("decoder_propagation_warmup must be >= 0, and > 0 only with a decoder_propagation")
        if self.decoder == "wan":
            if not self.wan_path:
                raise ValueError("decoder='wan' needs wan_path (a local Wan2.1 diffusers folder)")
            if self.unshuffle * self.scale != 8 or self.temporal_packing != 4:
                raise ValueError(
                    f"the Wan VAE compresses 8x in space and 4x in time: unshuffle must be {8 // self.scale} "
                    f"for x{self.scale} and temporal_packing 4 (got {self.unshuffle}, {self.temporal_packing})"
                )
        if self.patch_size[0] != 1:
            raise ValueError("patch_size[0] must be 1 (temporal grouping is temporal_packing's job)")
        if self.head_dim % 2:
            raise ValueError(f"head_dim must be even for rotary positions, got {self.head_dim}")
        if isinstance(self.routing, list) and len(self.routing) != self.layers:
            raise ValueError(f"routing has {len(self.routing)} layers, config has {self.layers}")

    @property
    def dim(self) -> int:
        """Model width (channels per token)."""
        return self.heads * self.head_dim

    @property
    def in_channels(self) -> int:
        """Channels of the unshuffled, packed LR clip that the patch embedding reads."""
        return 3 * self.temporal_packing * self.unshuffle**2

    @property
    def latent_channels(self) -> int:
        """Channels of the latent the transformer predicts (per latent frame)."""
        if self.decoder == "wan":
            return self.wan_latent_channels
        per_pixel = self.decoder_features or 3 * self.scale**2
        return self.temporal_packing * per_pixel * self.unshuffle**2

    @property
    def pad_multiple(self) -> tuple[int, int]:
        """LR height and width must be multiples of these (inputs are padded to them)."""
        return self.unshuffle * self.patch_size[1], self.unshuffle * self.patch_size[2]

    def packed_frames(self, frames: int) -> int:
        """LR frames after temporal padding: ``1 + p*ceil((T-1)/p)`` for packing ``p`` > 1."""
        p = self.temporal_packing
        return frames if p == 1 else 1 + p * math.ceil(max(frames - 1, 0) / p)

    def to_dict(self) -> dict:
        """Plain JSON-able dict (tuples as lists); ``OASISConfig(**d)`` rebuilds it."""
        d = asdict(self)
        d["patch_size"], d["window"] = list(self.patch_size), list(self.window)
        return d

    @classmethod
    def from_dict(cls, config: dict) -> "OASISConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(config) - known
        if unknown:
            raise ValueError(f"unknown OASIS config key(s): {', '.join(sorted(unknown))}")
        return cls(**config)

    @classmethod
    def wan_1_3b(cls, wan_path: str | Path, scale: int = 4, **overrides) -> "OASISConfig":
        """The ``oasis-1.3b`` config: the geometry of the Wan2.1 transformer in ``wan_path``.

        ``wan_path`` is a local diffusers folder with ``transformer/config.json`` and ``vae/``
        (Wan2.1-T2V-1.3B: 30 layers, 12 heads x 128, FFN 8960, patch (1, 2, 2)); any Wan2.1-shaped
        folder works, e.g. a tiny random one in tests. ``overrides`` set other fields (routing,
        timestep, temporal_window, ...).
        """
        path = Path(wan_path) / "transformer" / "config.json"
        try:
            wan = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: not a Wan2.1 diffusers transformer config ({exc})") from None
        vae = json.loads((Path(wan_path) / "vae" / "config.json").read_text())
        settings = dict(
            scale=scale,
            heads=wan["num_attention_heads"],
            head_dim=wan["attention_head_dim"],
            layers=wan["num_layers"],
            ffn_dim=wan["ffn_dim"],
            patch_size=tuple(wan["patch_size"]),
            unshuffle=8 // scale,
            temporal_packing=4,
            freq_dim=wan["freq_dim"],
            eps=wan["eps"],
            decoder="wan",
            temporal_window=33,  # the 33-frame clips of the OASIS paper (1 + 4 * 8)
            wan_path=str(wan_path),
            wan_latent_channels=vae.get("z_dim", 16),
        )
        settings.update(overrides)
        return cls(**settings)
