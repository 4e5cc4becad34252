"""Real media files for tests, made with PyAV (import as ``tests.fixtures``).

Plain functions, no pytest magic, so any test package can build what it needs in ``tmp_path``.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import NamedTuple

import av
import numpy as np
from av.subtitles.subtitle import SubtitleSet

# a minimal ASS header: FFmpeg's text-subtitle encoders need one to open
ASS_HEADER = (
    b"[Script Info]\nScriptType: v4.00+\nPlayResX: 384\nPlayResY: 288\n\n[V4+ Styles]\n"
    b"Format: Name, Fontname, Fontsize, PrimaryColour, SecondaryColour, OutlineColour, BackColour, Bold, Italic, "
    b"Underline, StrikeOut, ScaleX, ScaleY, Spacing, Angle, BorderStyle, Outline, Shadow, Alignment, MarginL, "
    b"MarginR, MarginV, Encoding\n"
    b"Style: Default,Arial,16,&Hffffff,&Hffffff,&H0,&H0,0,0,0,0,100,100,0,0,1,1,0,2,10,10,10,0\n\n"
    b"[Events]\nFormat: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text\n"
)
SUBTITLE_CUES = (b"first cue", b"second cue")
AUDIO_RATE = 48000
# frame-duration multipliers cycled through for variable-frame-rate clips
VFR_PATTERN = (1, 3, 2, 1, 4)


class MadeVideo(NamedTuple):
    """A video written by :func:`make_video`: the RGB frames fed to the encoder and their pts."""

    path: Path
    frames: list[np.ndarray]  # (H, W, 3) uint8, or uint16 for deep pixel formats
    pts: list[int]  # in time_base units
    time_base: Fraction
    fps: Fraction


def make_frames(count: int, height: int, width: int, *, deep: bool = False, seed: int = 0) -> list[np.ndarray]:
    """``count`` distinct RGB frames: a gradient, a moving square and noise; uint16 when ``deep``."""
    rng = np.random.default_rng(seed)
    top = 65535 if deep else 255
    y, x = np.mgrid[0:height, 0:width]
    frames = []
    for i in range(count):
        base = np.stack([x / max(width - 1, 1), y / max(height - 1, 1), np.full((height, width), (i % 7) / 7)], -1)
        square = (np.abs(x - (4 + 3 * i) % width) < 5) & (np.abs(y - height // 2) < 5)
        base[square] = 1.0 - base[square]
        noise = rng.uniform(-0.03, 0.03, base.shape)
        frames.append(np.clip((base + noise) * top, 0, top).round().astype(np.uint16 if deep else np.uint8))
    return frames


def _add_audio(container: av.container.OutputContainer, codec: str = "aac") -> av.audio.stream.AudioStream:
    stream = container.add_stream(codec, rate=AUDIO_RATE)
    stream.layout = "stereo"
    return stream


def _encode_audio(container: av.container.OutputContainer, stream: av.audio.stream.AudioStream, seconds: float) -> None:
    total = int(seconds * AUDIO_RATE)
    for start in range(0, total, 1024):
        n = min(1024, total - start)
        t = (start + np.arange(n)) / AUDIO_RATE
        samples = np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 660 * t)]).astype(np.float32) * 0.3
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="stereo")
        frame.sample_rate = AUDIO_RATE
        frame.pts = start
        frame.time_base = Fraction(1, AUDIO_RATE)
        container.mux(stream.encode(frame))
    container.mux(stream.encode(None))


def _add_subtitles(container: av.container.OutputContainer) -> av.stream.Stream:
    codec = "mov_text" if container.format.name in ("mp4", "mov") else "subrip"
    stream = container.add_stream(codec)
    stream.codec_context.subtitle_header = ASS_HEADER
    stream.codec_context.time_base = Fraction(1, 1000)
    stream.time_base = Fraction(1, 1000)
    return stream


def _encode_subtitles(container: av.container.OutputContainer, stream: av.stream.Stream, seconds: float) -> None:
    cue_ms = int(seconds * 1000) // len(SUBTITLE_CUES)
    for i, text in enumerate(SUBTITLE_CUES):
        cue = SubtitleSet.create(b"0,0,Default,,0,0,0,," + text, 0, cue_ms, pts=0)
        packet = stream.codec_context.encode_subtitle(cue)
        packet.pts = packet.dts = i * cue_ms
        packet.duration = cue_ms
        packet.time_base = Fraction(1, 1000)
        packet.stream = stream
        container.mux(packet)


def make_video(
    path: str | Path,
    *,
    frames: int = 12,
    width: int = 64,
    height: int = 48,
    fps: Fraction | int = 25,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    audio: bool = True,
    audio_codec: str = "aac",
    subtitles: bool = False,
    vfr: bool = False,
    rotation: int = 0,
    time_base: Fraction | None = None,
    first_pts: int = 0,
    options: dict[str, str] | None = None,
    container_options: dict[str, str] | None = None,
) -> MadeVideo:
    """Encode a small test clip; the container follows the extension of ``path``.

    Frames start at ``first_pts`` (in ``time_base`` units; default 1/fps, or 1/1000 when ``vfr``)
    and are one frame interval apart, or :data:`VFR_PATTERN` intervals when ``vfr``.
    ``rotation`` is stored as a display matrix (counter-clockwise degrees, PyAV's convention).
    Audio is stereo 48 kHz (``audio_codec``, AAC by default), subtitles two text cues (SubRip, or
    mov_text in mp4/mov), both from time 0 to the end of the video. Pixels are made as RGB (uint16
    when ``pix_fmt`` is deeper than 8 bits) and converted to ``pix_fmt`` by swscale.
    """
    path = Path(path)
    fps = Fraction(fps)
    time_base = time_base or (Fraction(1, 1000) if vfr else 1 / fps)
    step = round(1 / (fps * time_base))
    pts = [first_pts]
    for i in range(1, frames):
        pts.append(pts[-1] + step * (VFR_PATTERN[i % len(VFR_PATTERN)] if vfr else 1))
    deep = max(c.bits for c in av.VideoFormat(pix_fmt).components) > 8
    rgb = make_frames(frames, height, width, deep=deep)
    seconds = float((pts[-1] + step) * time_base)
    with av.open(str(path), mode="w", options=container_options or {}) as container:
        video = container.add_stream(codec, rate=fps, options=options or {})
        video.width, video.height, video.pix_fmt = width, height, pix_fmt
        video.time_base = time_base
        video.codec_context.time_base = time_base
        if rotation:
            video.set_display_rotation(rotation)
        sound = _add_audio(container, audio_codec) if audio else None
        text = _add_subtitles(container) if subtitles else None
        for image, stamp in zip(rgb, pts):
            frame = av.VideoFrame.from_ndarray(image, format="rgb48le" if deep else "rgb24")
            frame.pts = stamp
            frame.time_base = time_base
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        if sound is not None:
            _encode_audio(container, sound, seconds)
        if text is not None:
            _encode_subtitles(container, text, seconds)
    return MadeVideo(path, rgb, pts, time_base, fps)


def make_audio_only(path: str | Path, seconds: float = 0.5) -> Path:
    """An AAC-only file (e.g. ``.m4a`` or ``.mp4``)."""
    path = Path(path)
    with av.open(str(path), mode="w") as container:
        _encode_audio(container, _add_audio(container), seconds)
    return path


def truncate(path: str | Path, fraction: float, output: str | Path) -> Path:
    """Copy the first ``fraction`` of the bytes of ``path`` to ``output`` (a cut download)."""
    data = Path(path).read_bytes()
    Path(output).write_bytes(data[: int(len(data) * fraction)])
    return Path(output)


def packet_bytes(path: str | Path, kind: str) -> list[tuple[int | None, bytes]]:
    """``(pts, payload)`` of every packet of the first ``kind`` ("audio", "subtitle") stream."""
    with av.open(str(path)) as container:
        stream = getattr(container.streams, "subtitles" if kind == "subtitle" else kind)[0]
        return [(p.pts, bytes(p)) for p in container.demux(stream) if p.size]
