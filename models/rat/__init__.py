"""RAT: Region Attention Transformer for medical image restoration (MICCAI 2024), with
multi-scale self-guided attention (Sinha & Dolz 2020) fusing the decoder scales.

``RAT``/``RATConfig`` are the network (``models.rat.network``); ``RATModule`` is the Lightning
module (imported lazily: Lightning is heavy and ``restore models`` only needs ``PRESETS``).
"""

from __future__ import annotations

from .network import RAT, RATConfig

# Presets for the registry. "rat-s-*" follow the published layout at half width.
# CPU-sized (about 1 s per 512x512 slice on 2 cores): three levels so that region attention runs
# at 1/8 scale, bilinear upsampling (no sub-pixel grid), MSGA with per-scale heads. The weights
# shipped before 2026-12-01 (width 32, two levels, PixelShuffle) carry their own config in their
# card and still load.
_RAT_S = {"in_channels": 1, "width": 16, "enc_depths": [1, 1, 1], "dec_depths": [1, 1, 1], "bottleneck_layers": 2,
          "heads": 4, "msga_channels": 16, "scale": 1, "upsample": "bilinear", "deep_supervision": True}

PRESETS: dict[str, dict] = {
    "rat-t": {  # tests and smoke runs only: not listed by `restore models`
        "task": "ct-denoise",
        "test_only": True,
        "config": {"in_channels": 1, "width": 8, "enc_depths": [1, 1], "dec_depths": [1, 1], "bottleneck_layers": 1,
                   "heads": 2, "msga_channels": 8, "scale": 1},
    },
    "rat-s-ct": {"task": "ct-denoise", "config": dict(_RAT_S)},
    "rat-s-mr": {"task": "mr-denoise", "config": dict(_RAT_S)},
}

__all__ = ["RAT", "RATConfig", "RATModule", "PRESETS"]


def __getattr__(name: str):
    if name == "RATModule":
        from .module import RATModule

        return RATModule
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
