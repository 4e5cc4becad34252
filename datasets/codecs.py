"""Real lossy codecs as degradations: JPEG per frame (torchvision) and video codecs per clip
(PyAV, through ``restore.io.memory_video``).

Both take and return float frames in [0, 1]; they quantise to 8 bits on the way in, as a real
encoder would.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.io import decode_jpeg, encode_jpeg

from restore.io.memory_video import VIDEO_CODECS, compress_clip, to_uint8

__all__ = ["VIDEO_CODECS", "compress_clip", "jpeg"]


def jpeg(frames: torch.Tensor, quality: Sequence[int]) -> torch.Tensor:
    """JPEG-compress each frame at its own quality: ``(N, 3, H, W)`` in [0, 1], ``N`` ints in 1..100.

    Frames that share a quality are encoded in one call (batched on CUDA via nvJPEG).
    """
    data = to_uint8(frames)
    out = torch.empty_like(frames)
    quality = [int(q) for q in quality]
    for q in sorted(set(quality)):
        idx = [i for i, qi in enumerate(quality) if qi == q]
        encoded = encode_jpeg([data[i] for i in idx], quality=q)
        decoded = decode_jpeg([e.cpu() for e in encoded], device=frames.device)
        for i, image in zip(idx, decoded):
            out[i] = image.to(frames.dtype) / 255
    return out
