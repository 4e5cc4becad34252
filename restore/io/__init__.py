"""File I/O: videos (PyAV), GIF and animated WebP (Pillow), still images (OpenCV), DICOM (pydicom);
``formats`` names suffixes and containers, ``pipes`` turns ``-`` (stdin, stdout) into files.

The video and image names are loaded on first use, so importing one submodule (e.g.
``restore.io.dicom``) does not pull in PyAV and OpenCV.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "VideoInfo": "video",
    "VideoReader": "video",
    "VideoWriter": "video",
    "concat_segments": "video",
    "probe_video": "video",
    "is_animation": "animation",
    "IMAGE_EXTENSIONS": "formats",
    "VIDEO_EXTENSIONS": "formats",
    "is_image": "formats",
    "is_video": "formats",
    "read_image": "image",
    "write_image": "image",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
