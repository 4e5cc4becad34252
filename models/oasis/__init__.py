"""OASIS: one-step diffusion-transformer video super-resolution (arXiv 2509.23980).

No official code exists; this is our implementation (design notes in the module docstrings of
``config``, ``network``, ``transformer``, ``decoder`` and ``wan``).

* ``OASIS``/``OASISConfig``: the network; ``OASIS.from_wan(path)`` builds ``oasis-1.3b`` from a
  local Wan2.1-T2V-1.3B diffusers folder (not a registry preset: it needs that folder).
* ``OASISModule``: the Lightning module (imported lazily: Lightning is heavy and
  ``restore models`` only needs ``PRESETS``).
* ``PRESETS``: ``oasis-s`` (the CPU-friendly model we train and ship) and ``oasis-t`` (tests).
"""

from __future__ import annotations

from .config import OASISConfig
from .network import OASIS

# oasis-s heads per layer before calibration: one global head for clip-wide (temporal) context,
# one intra-frame head, two cheap (3, 3, 3) window heads. Windows smaller than the training token
# grid (192 px crops: 3 x 6 x 6 tokens), so window heads learn local attention; the shipped
# routing comes from `restore calibrate-heads` on the trained model (see its model card).
_OASIS_S_ROUTING = [["global", "intra", "window", "window"] for _ in range(6)]

PRESETS: dict[str, dict] = {
    # Capacity where the pixels are: a light DiT for coarse, clip-wide context (a token covers
    # 8x8 LR pixels) and a 48-channel, 6-block decoder at LR resolution that reads frames
    # t-1, t, t+1 (sub-pixel motion that tokens cannot express). About 2.3M parameters.
    "oasis-s": {
        "task": "video-sr",
        "config": {
            "scale": 4, "heads": 4, "head_dim": 32, "layers": 6, "ffn_dim": 384, "patch_size": [1, 2, 2],
            "unshuffle": 4, "decoder": "light", "decoder_channels": 48, "decoder_blocks": 6, "decoder_neighbors": 1,
            "temporal_window": 8, "routing": _OASIS_S_ROUTING, "window": [3, 3, 3],
        },
    },
    "oasis-t": {  # tests and smoke runs only: not listed by `restore models`
        "task": "video-sr",
        "test_only": True,
        "config": {
            "scale": 4, "heads": 2, "head_dim": 8, "layers": 2, "ffn_dim": 32, "patch_size": [1, 2, 2],
            "unshuffle": 2, "freq_dim": 16, "decoder": "light", "decoder_channels": 8, "decoder_blocks": 1,
            "temporal_window": 4, "routing": [["global", "window"], ["intra", "window"]], "window": [3, 3, 3],
        },
    },
}

__all__ = ["OASIS", "OASISConfig", "OASISModule", "PRESETS"]


def __getattr__(name: str):
    if name == "OASISModule":
        from .module import OASISModule

        return OASISModule
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
