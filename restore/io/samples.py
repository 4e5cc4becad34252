"""Synthetic sample videos with audio, for the demo, benchmarks and tests (no external files)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np


def sample_frame(index: int, width: int, height: int, seed: int = 0) -> np.ndarray:
    """A textured, moving RGB frame ``(H, W, 3)`` uint8: sharp edges, gradients and fine detail."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    t = index / 30.0
    rng = np.random.default_rng(seed)
    phase = rng.uniform(0, 2 * np.pi, 3)
    rings = np.sin(np.hypot(x - width * (0.5 + 0.2 * np.sin(t)), y - height / 2) / 3.0 + phase[0])
    stripes = np.sign(np.sin((x + 40 * t) / 7.0 + phase[1]))
    ramp = (x + y) / (width + height)
    r = 0.5 + 0.35 * rings
    g = 0.5 + 0.25 * stripes * (y > height / 3)
    b = ramp + 0.2 * np.sin(x / 2.0 + y / 3.0 + phase[2])
    return (np.clip(np.stack([r, g, b], -1), 0, 1) * 255).astype(np.uint8)


def make_sample_video(
    path: str | Path,
    *,
    frames: int = 30,
    width: int = 160,
    height: int = 90,
    fps: int = 30,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    audio: bool = True,
    audio_rate: int = 48000,
) -> Path:
    """Encode a synthetic clip (moving pattern, optional 440 Hz AAC tone) to ``path`` with PyAV."""
    import av

    path = Path(path)
    with av.open(str(path), "w") as container:
        video = container.add_stream(codec, rate=fps)
        video.width, video.height, video.pix_fmt = width, height, pix_fmt
        audio_stream = container.add_stream("aac", rate=audio_rate) if audio else None
        samples_per_frame = audio_rate // fps
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(sample_frame(i, width, height), format="rgb24")
            for packet in video.encode(frame):
                container.mux(packet)
            if audio_stream is not None:
                n = np.arange(i * samples_per_frame, (i + 1) * samples_per_frame)
                tone = (0.2 * np.sin(2 * np.pi * 440 * n / audio_rate)).astype(np.float32)[None, :]
                aframe = av.AudioFrame.from_ndarray(tone, format="fltp", layout="mono")
                aframe.sample_rate = audio_rate
                aframe.pts = i * samples_per_frame
                aframe.time_base = Fraction(1, audio_rate)
                for packet in audio_stream.encode(aframe):
                    container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
        if audio_stream is not None:
            for packet in audio_stream.encode():
                container.mux(packet)
    return path
