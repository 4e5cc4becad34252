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

# oasis-s heads per layer: one global head for clip-wide (temporal) context, one intra-frame
# head, four cheap (3, 5, 5) window heads. Hand-set so the untrained model already has the
# speed of the shipped one; recalibrate with models.oasis.calibration after training.
_OASIS_S_ROUTING = [["global", "intra", "window", "window", "window", "window"] for _ in range(8)]

PRESETS: dict[str, dict] = {
    "oasis-s": {
        "task": "video-sr",
        "config": {
            "scale": 4, "heads": 6, "head_dim": 32, "layers": 8, "ffn_dim": 576, "patch_size": [1, 2, 2],
            "unshuffle": 4, "decoder": "light", "decoder_channels": 32, "decoder_blocks": 2,
            "temporal_window": 8, "routing": _OASIS_S_ROUTING, "window": [3, 5, 5],
        },
    },
    "oasis-t": {
        "task": "video-sr",
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
