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
from av.video.reformatter import ColorPrimaries, ColorTrc, Colorspace

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
# an HDR10 grade: BT.2020 primaries and matrix, PQ transfer, a 1000 cd/m2 mastering display
HDR10_TAGS = {"color_primaries": ColorPrimaries.BT2020, "color_trc": ColorTrc.SMPTE2084, "colorspace": Colorspace.BT2020}
MASTER_DISPLAY = "G(13250,34500)B(7500,3000)R(34000,16000)WP(15635,16450)L(10000000,1)"  # x265's syntax
CONTENT_LIGHT = (1000, 400)  # MaxCLL, MaxFALL in cd/m2
# an attachment as Matroska files carry the fonts of their ASS subtitles: (file name, MIME type, data)
FONT = ("DejaVuSans.ttf", "application/x-truetype-font", b"\x00\x01\x00\x00 not really a font")


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


def _encode_audio(
    container: av.container.OutputContainer, stream: av.audio.stream.AudioStream, seconds: float, begin: float = 0.0
) -> None:
    """A tone from ``begin`` to ``seconds`` (both in seconds)."""
    first, total = round(begin * AUDIO_RATE), int(seconds * AUDIO_RATE)
    for start in range(first, total, 1024):
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
    audio_delay: float = 0.0,
    codec_context: dict[str, object] | None = None,
    tags: dict[str, str] | None = None,
    chapters: list[tuple[float, float, str]] | None = None,
    attachments: list[tuple[str, str, bytes]] | None = None,
) -> MadeVideo:
    """Encode a small test clip; the container follows the extension of ``path``.

    Frames start at ``first_pts`` (in ``time_base`` units; default 1/fps, or 1/1000 when ``vfr``)
    and are one frame interval apart, or :data:`VFR_PATTERN` intervals when ``vfr``.
    ``rotation`` is stored as a display matrix (counter-clockwise degrees, PyAV's convention).
    Audio is stereo 48 kHz (``audio_codec``, AAC by default) from the first frame (``audio_delay``
    seconds later) to the end of the video, subtitles two text cues (SubRip, or mov_text in
    mp4/mov) from time 0 to the end. Pixels are made as RGB (uint16 when ``pix_fmt`` is deeper
    than 8 bits) and converted to ``pix_fmt`` by swscale.

    ``codec_context`` sets attributes of the video encoder (``color_trc``, ``sample_aspect_ratio``,
    ...); ``tags`` are the container's metadata, ``chapters`` ``(start, end, title)`` in seconds,
    ``attachments`` ``(file name, MIME type, data)`` (Matroska).
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
        for name, value in (codec_context or {}).items():
            setattr(video.codec_context, name, value)
        container.metadata.update(tags or {})
        container.set_chapters([
            {"id": i + 1, "start": round(a * 1000), "end": round(b * 1000), "time_base": Fraction(1, 1000),
             "metadata": {"title": title}}
            for i, (a, b, title) in enumerate(chapters or [])
        ])
        for name, mimetype, data in attachments or []:
            container.add_attachment(name, mimetype, data)
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
            _encode_audio(container, sound, seconds, float(first_pts * time_base) + audio_delay)
        if text is not None:
            _encode_subtitles(container, text, seconds)
    return MadeVideo(path, rgb, pts, time_base, fps)


def make_hdr10_video(path: str | Path, **kwargs) -> MadeVideo:
    """A 10-bit HEVC clip tagged HDR10, with mastering display and content light SEI, and
    anamorphic pixels (SAR 4:3, as 1440x1080 shown at 16:9); needs libx265. ``kwargs`` go to
    :func:`make_video`."""
    params = f"log-level=error:master-display={MASTER_DISPLAY}:max-cll={CONTENT_LIGHT[0]},{CONTENT_LIGHT[1]}"
    context = {**HDR10_TAGS, "sample_aspect_ratio": Fraction(4, 3)}
    return make_video(
        path, codec="libx265", pix_fmt="yuv420p10le", options={"x265-params": params}, codec_context=context, **kwargs
    )


def stream_starts(path: str | Path) -> dict[str, float]:
    """Seconds at which the first video and the first audio stream of ``path`` start."""
    with av.open(str(path)) as container:
        streams = (container.streams.video[0], *container.streams.audio[:1])
        return {s.type: float(s.start_time * s.time_base) for s in streams}


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


def corrupt_packet(path: str | Path, index: int, output: str | Path) -> Path:
    """Copy ``path`` to ``output`` with the payload of video packet ``index`` scrambled (bit rot, a
    bad sector): the container still reads, the decoder refuses that packet. For intra-only codecs
    (MJPEG) it costs exactly that frame."""
    with av.open(str(path)) as container:
        packets = [(p.pos, p.size) for p in container.demux(video=0) if p.size]
    pos, size = packets[index]
    data = bytearray(Path(path).read_bytes())
    for i in range(pos + size // 4, pos + size - 2):
        data[i] = (data[i] * 7 + 13) & 0xFF
    Path(output).write_bytes(bytes(data))
    return Path(output)


def unknown_codec(path: str | Path, output: str | Path) -> Path:
    """Copy the FFV1 Matroska file ``path`` to ``output`` with a codec ID FFmpeg does not know."""
    data = Path(path).read_bytes()
    assert data.count(b"V_FFV1") == 1, "expects one FFV1 track in Matroska"
    Path(output).write_bytes(data.replace(b"V_FFV1", b"V_QQQ1"))
    return Path(output)


PHOTO_DPI = (300, 150)
PHOTO_MAKE = "Test Camera Co."


def make_photo(path: str | Path, *, height: int = 12, width: int = 20, orientation: int = 6) -> tuple[np.ndarray, bytes]:
    """An RGB image as a camera writes it, saved by Pillow in the format of ``path``: the pixels
    stored sideways with EXIF ``orientation`` (6: turn 90 degrees clockwise to view), an ICC
    profile, :data:`PHOTO_DPI` and the camera's make. Returns the stored ``(height, width, 3)``
    pixels and the profile."""
    from PIL import Image, ImageCms

    stored = make_frames(1, height, width)[0]
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = Image.Exif()
    exif[0x0112], exif[0x010F] = orientation, PHOTO_MAKE
    Image.fromarray(stored).save(path, icc_profile=profile, dpi=PHOTO_DPI, exif=exif)
    return stored, profile
