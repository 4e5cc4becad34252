"""Video codecs in memory: encode frames with a real encoder (PyAV) and decode them back.

What a lossy video pipeline does to frames, without files: the training degradations
(``datasets.degradations``) and the benchmark's compressed-input conditions
(``restore.bench.quality``) both round-trip clips through it. Encoders run single-threaded so that
the same input and settings always give the same bytes.
"""

from __future__ import annotations

import io

import av
import numpy as np
import torch
import torch.nn.functional as F

# Matroska, not MP4: FFmpeg's MP4 muxer rejects some libx265 streams of tiny frames ("not yet
# implemented"), about half of random 8x8 two-frame clips.
CONTAINER = "matroska"
# encoder -> the rate control it supports besides a target bitrate
VIDEO_CODECS = {"libx264": "crf", "libx265": "crf", "mpeg4": "qscale"}
# libx265's AVX2 kernels in the x265 that PyAV's wheels bundle corrupt the heap on some frame
# sizes (48x48, 64x40, ...); its SSE4.2 kernels do not.
_QUIET_SINGLE_THREAD = {
    "libx264": {"threads": "1"},
    "libx265": {"x265-params": "log-level=error:asm=sse4.2:pools=none:frame-threads=1"},
    "mpeg4": {"threads": "1"},
}


def to_uint8(frames: torch.Tensor) -> torch.Tensor:
    """Float in [0, 1] -> ``uint8`` with rounding, same shape."""
    return frames.clamp(0, 1).mul(255).round().to(torch.uint8)


def encode_video(
    frames: np.ndarray, codec: str, *, crf: int | None = None, bitrate: int | None = None, fps: int = 25
) -> bytes:
    """Encode ``(T, H, W, 3)`` ``uint8`` RGB (H, W even) into an in-memory Matroska file -> its bytes.

    Exactly one of ``crf`` (constant rate factor for x264/x265, quantiser scale 1-31 for mpeg4) and
    ``bitrate`` (bits/s) sets the rate control.
    """
    if (crf is None) == (bitrate is None):
        raise ValueError("give exactly one of crf and bitrate")
    if codec not in VIDEO_CODECS:
        raise ValueError(f"unknown video codec {codec!r} (known: {', '.join(VIDEO_CODECS)})")
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=CONTAINER) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        options = dict(_QUIET_SINGLE_THREAD[codec])
        if bitrate is not None:
            stream.bit_rate = int(bitrate)
        elif VIDEO_CODECS[codec] == "crf":
            options["crf"] = str(int(crf))
        else:
            options["qscale"] = str(int(crf))
            stream.codec_context.qscale = int(crf)
        stream.options = options
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return buffer.getvalue()


def decode_video(data: bytes) -> np.ndarray:
    """Decode an in-memory video -> ``(T, H, W, 3)`` ``uint8`` RGB."""
    with av.open(io.BytesIO(data), mode="r") as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def compress_clip(
    clip: torch.Tensor, codec: str, *, crf: int | None = None, bitrate: int | None = None, fps: int = 25
) -> tuple[torch.Tensor, int]:
    """Round-trip one clip through a video codec: ``(T, 3, H, W)`` in [0, 1] -> same, and the size in bytes.

    Frames are padded by edge replication to whole macroblocks (multiples of 16, at least 16: the
    4:2:0 encoders need even sizes and libx265 rejects frames under 16 px) and cropped back.
    """
    t, _, h, w = clip.shape
    pad_h, pad_w = max(16, -(-h // 16) * 16) - h, max(16, -(-w // 16) * 16) - w
    padded = F.pad(clip, (0, pad_w, 0, pad_h), mode="replicate") if (pad_h or pad_w) else clip
    frames = to_uint8(padded).permute(0, 2, 3, 1).cpu().numpy()
    data = encode_video(frames, codec, crf=crf, bitrate=bitrate, fps=fps)
    decoded = decode_video(data)
    if decoded.shape[0] != t:
        raise RuntimeError(f"{codec} returned {decoded.shape[0]} frames for {t}")
    out = torch.from_numpy(decoded[:, :h, :w]).to(clip.device).permute(0, 3, 1, 2)
    return out.to(clip.dtype) / 255, len(data)
