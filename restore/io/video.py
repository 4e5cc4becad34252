"""Streaming video I/O with PyAV: probe, decode, encode, and remux segments with the source audio.

* :func:`probe_video` reads the headers (and decodes one frame for the display rotation, which
  PyAV 18 exposes on frames only) into a :class:`VideoInfo`.
* :class:`VideoReader` yields ``(frame, pts)`` one frame at a time: ``(H, W, 3)`` RGB, ``uint8``
  for 8-bit sources and ``uint16`` (full 16-bit range) for deeper ones, display rotation applied,
  ``pts`` in the source stream's time base. It never drops frames silently: a short or corrupt
  stream raises :class:`~restore.errors.InputError` naming how many frames were decoded.
* :class:`VideoWriter` encodes one video stream (libx264, libx265, ffv1, or a folder of PNG
  frames) at the source time base, so timestamps (VFR included) pass through unchanged.
* :func:`concat_segments` joins segment files written by :class:`VideoWriter` without re-encoding
  and muxes the audio and subtitle streams of the source in, untouched where the container allows.

Colour: sources are converted to RGB with the matrix and range they are tagged with (BT.601 when
untagged, FFmpeg's default); the writer converts RGB to Y'CbCr with BT.709, limited range, and tags
the stream accordingly, so players decode it the way it was encoded.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import TracebackType

import av
import numpy as np
import torch
from av.video.reformatter import ColorRange, Colorspace

from ..errors import InputError, OutputError
from .image import write_image

logger = logging.getLogger("restore.io")

VIDEO_CODECS = ("libx264", "libx265", "ffv1", "png")
# codecs that take crf and preset (the others are lossless)
_RATE_CONTROLLED = ("libx264", "libx265")
X26X_PRESETS = (
    "ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow", "placebo"
)
CRF_RANGE = (0, 51)
# audio codecs tried, in order, when the output container cannot hold the source audio codec
_FALLBACK_AUDIO_CODECS = ("aac", "opus")
# text subtitle codecs mp4/mov can hold after conversion; bitmap subtitles are dropped instead
_FALLBACK_SUBTITLE_CODEC = "mov_text"
# native-endian 16-bit RGB, the form numpy hands over without a byte swap
_RGB48 = "rgb48le" if sys.byteorder == "little" else "rgb48be"
# AVCOL_SPC_BT709: the matrix tag that matches the writer's RGB -> Y'CbCr conversion
_AVCOL_SPC_BT709 = 1
# float sample formats (grayf32le, gbrpf16le, ...): VideoFormat does not expose the float flag
_FLOAT_PIX_FMT = re.compile(r"f(16|32|64)(le|be)?$")
# no encoder reorders frames further than this; a larger PTS-DTS gap is garbage (VideoWriter._mux)
_MAX_REORDER_SECONDS = 10
# file names of PNG frames (codec "png"); zero-padded so that they sort in frame order
_FRAME_NAME = "frame_{index:08d}.png"
# muxers built on FFmpeg's mov muxer, which otherwise rounds the video time base up to >= 1/10000
_MOV_MUXERS = {"mp4", "mov", "ipod", "3gp", "3g2", "psp", "ismv", "f4v"}


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe_video` learns about a video file.

    ``width``/``height`` are the display size (after rotation). ``frames`` is the count stored in
    the container or stream header (mp4 has it, Matroska usually not) and None when unknown.
    ``fps`` is the average frame rate; ``time_base`` is the unit of the ``pts`` the reader yields.
    ``rotation`` is the counter-clockwise rotation in degrees (0, 90, 180, 270) that the reader
    applies to every decoded frame, taken from the display matrix (PyAV's ``frame.rotation``).
    ``duration`` is in seconds (the video stream's when known, else the container's).
    """

    path: Path
    width: int
    height: int
    frames: int | None
    fps: Fraction
    time_base: Fraction
    pix_fmt: str
    bit_depth: int
    rotation: int
    duration: float | None
    audio_streams: int
    subtitle_streams: int
    codec: str


def _check_file(path: Path) -> None:
    if not path.exists():
        raise InputError(path, "file not found")
    if path.is_dir():
        raise InputError(path, "is a folder, not a video file")
    if path.stat().st_size == 0:
        raise InputError(path, "empty file")


def _open_input(path: Path) -> av.container.InputContainer:
    _check_file(path)
    try:
        return av.open(str(path), mode="r")
    except av.FFmpegError as exc:
        with open(path, "rb") as fh:
            head = fh.read(12)
        if head[4:8] == b"ftyp":  # an MP4/MOV whose index ('moov', written last) is missing or damaged
            raise InputError(path, f"truncated or corrupt MP4/MOV: decoded 0 frames ({_describe(exc)})") from exc
        raise InputError(path, f"not a video: {_describe(exc)}") from exc


def _describe(exc: BaseException) -> str:
    """FFmpeg and OS errors as one short line (their str() repeats the path and errno)."""
    return getattr(exc, "strerror", None) or next(iter(str(exc).splitlines()), type(exc).__name__)


def _video_stream(container: av.container.InputContainer, path: Path) -> av.video.stream.VideoStream:
    """The first real video stream; cover art (an attached picture) is not video."""
    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:
            return stream
    if container.streams.audio:
        raise InputError(path, "no video stream (audio-only file)")
    raise InputError(path, "no video stream")


def _bit_depth(pix_fmt: str, path: Path) -> int:
    """Deepest component of ``pix_fmt`` in bits; InputError for formats we cannot turn into RGB."""
    try:
        fmt = av.VideoFormat(pix_fmt)
    except (ValueError, av.FFmpegError) as exc:
        raise InputError(path, f"unsupported pixel format {pix_fmt}") from exc
    depth = max((c.bits for c in fmt.components), default=0)
    # float samples (HDR intermediates) have no integer RGB form without tone decisions we won't guess
    if _FLOAT_PIX_FMT.search(pix_fmt) or not 1 <= depth <= 16:
        raise InputError(path, f"unsupported pixel format {pix_fmt} (only integer samples up to 16 bits)")
    return max(depth, 8)


def _stream_duration(
    stream: av.video.stream.VideoStream, container: av.container.InputContainer
) -> tuple[float | None, bool]:
    """(seconds, whether it is the video stream's own duration rather than the container's)."""
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base), True
    # Matroska written by FFmpeg stores a DURATION tag per stream, e.g. 00:00:01.200000000; it is
    # the end time of the track, so a stream that starts late is shorter by its start time
    tag = stream.metadata.get("DURATION") or stream.metadata.get("duration")
    if tag:
        match = re.fullmatch(r"(\d+):(\d+):(\d+(?:\.\d+)?)", tag.strip())
        if match:
            hours, minutes, seconds = match.groups()
            start = float((stream.start_time or 0) * stream.time_base)
            return int(hours) * 3600 + int(minutes) * 60 + float(seconds) - start, True
    if container.duration is not None:
        return container.duration / av.time_base, False
    return None, False


def _normalise_rotation(degrees: float, path: Path) -> int:
    rotation = int(round(degrees)) % 360
    if rotation % 90:
        logger.warning("%s: display rotation of %d degrees is not a multiple of 90; ignored", path, rotation)
        return 0
    return rotation


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Read a video's geometry, timing and streams.

    Decodes the first frame (PyAV exposes the display rotation on frames only). Raises
    :class:`~restore.errors.InputError` for a missing or empty file, a file FFmpeg cannot open
    ("not a video: ..."), a file without video ("no video stream (audio-only file)"), an
    unsupported pixel format (float or deeper than 16 bits) and a stream with no decodable frame.
    """
    path = Path(path)
    with _open_input(path) as container:
        stream = _video_stream(container, path)
        ctx = stream.codec_context
        pix_fmt = ctx.pix_fmt
        if pix_fmt is None:
            raise InputError(path, f"unknown pixel format (codec {ctx.name}); the stream cannot be decoded")
        bit_depth = _bit_depth(pix_fmt, path)
        try:
            first = next(container.decode(stream), None)
        except av.FFmpegError as exc:
            cause = f"truncated or corrupt video: cannot decode the first frame: {_describe(exc)}"
            raise InputError(path, cause) from exc
        if first is None:
            raise InputError(path, "video stream has no frames")
        rotation = _normalise_rotation(first.rotation, path)
        width, height = first.width, first.height
        if rotation in (90, 270):
            width, height = height, width
        fps = stream.average_rate or stream.guessed_rate or stream.base_rate
        if not fps:
            raise InputError(path, "unknown frame rate")
        duration, _ = _stream_duration(stream, container)
        return VideoInfo(
            path=path,
            width=width,
            height=height,
            frames=stream.frames or None,
            fps=Fraction(fps),
            time_base=Fraction(stream.time_base),
            pix_fmt=pix_fmt,
            bit_depth=bit_depth,
            rotation=rotation,
            duration=duration,
            audio_streams=len(container.streams.audio),
            subtitle_streams=len(container.streams.subtitles),
            codec=ctx.name,
        )


def frame_to_tensor(frame: av.VideoFrame, bit_depth: int, rotation: int) -> torch.Tensor:
    """A decoded frame as ``(H, W, 3)`` RGB: ``uint8`` if ``bit_depth`` is 8, else ``uint16``.

    The conversion uses the matrix and range the frame is tagged with; ``rotation`` is applied
    counter-clockwise (display orientation).
    """
    array = frame.to_ndarray(format="rgb24" if bit_depth <= 8 else _RGB48)
    if rotation:
        array = np.ascontiguousarray(np.rot90(array, k=rotation // 90))
    return torch.from_numpy(array)


class VideoReader:
    """Decode a video frame by frame, holding one frame at a time.

    Iterating yields ``(frame, pts)``: ``frame`` is ``(H, W, 3)`` RGB, ``uint8`` for 8-bit sources
    and ``uint16`` over the full 16-bit range for deeper sources, rotated for display; ``pts`` is
    in ``info.time_base`` units (the real per-frame timestamps, so VFR survives; synthesised from
    ``fps`` where the source has none, and nudged to stay strictly increasing).

    Raises :class:`~restore.errors.InputError` when decoding fails part-way ("truncated or corrupt
    video: decoded N frames before error: ...") and, with ``expect_frames``, when the stream ends
    short of the frame count in the header or, without a count, of the stream's duration.
    """

    def __init__(self, path: str | os.PathLike, *, expect_frames: bool = True):
        self.path = Path(path)
        self.info = probe_video(self.path)
        self.expect_frames = expect_frames
        self._container: av.container.InputContainer | None = None

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None

    def __iter__(self) -> Iterator[tuple[torch.Tensor, int]]:
        info = self.info
        self.close()
        self._container = container = _open_input(self.path)
        stream = _video_stream(container, self.path)
        stream.thread_type = "AUTO"
        # one frame interval in time-base units, for sources without timestamps
        step = max(1, round(1 / (info.fps * info.time_base)))
        duration, own_duration = _stream_duration(stream, container)
        end = (stream.start_time or 0) * info.time_base + Fraction(duration or 0)
        decoded, last_pts = 0, None
        frames = container.decode(stream)
        try:
            while True:
                try:
                    frame = next(frames, None)
                except av.FFmpegError as exc:
                    raise InputError(
                        self.path,
                        f"truncated or corrupt video: decoded {decoded} frames before error: {_describe(exc)}",
                    ) from exc
                if frame is None:
                    break
                pts = frame.pts
                if pts is None:
                    pts = 0 if last_pts is None else last_pts + step
                elif last_pts is not None and pts <= last_pts:
                    # duplicated/backwards stamps (broken muxers) would make the encoder fail later
                    logger.debug("%s: pts %d after %d; using %d", self.path, pts, last_pts, last_pts + 1)
                    pts = last_pts + 1
                last_pts = pts
                decoded += 1
                yield frame_to_tensor(frame, info.bit_depth, info.rotation), pts
        finally:
            self.close()
        if not self.expect_frames:
            return
        # the stream's own stored duration says where its last frame should be (the container's
        # may be the audio's, which often runs longer); one frame interval of slack for rounding
        reached_end = own_duration and last_pts is not None and (last_pts + 2 * step) * info.time_base >= end
        if info.frames is not None:
            # AVI counts dropped frames (empty chunks) in its header; their time slot stays a gap
            # in the pts, so a stream whose timestamps run to its end is complete
            if decoded < info.frames and not reached_end:
                raise InputError(self.path, f"truncated or corrupt video: decoded {decoded} of {info.frames} frames")
        elif own_duration and last_pts is not None and not reached_end:
            raise InputError(
                self.path,
                f"truncated or corrupt video: decoded {decoded} of ~{round(duration * info.fps)} frames "
                f"({float((last_pts + step) * info.time_base):.2f} s of {float(end):.2f} s)",
            )


def _open_output(path: Path, format: str | None, time_base: Fraction) -> av.container.OutputContainer:
    """An output container whose video track keeps ``time_base`` (mp4/mov would change it)."""
    if not path.parent.is_dir():  # FFmpeg would only notice at the first packet
        raise OutputError(path, f"folder {path.parent} does not exist")
    try:
        container = av.open(str(path), mode="w", format=format)
    except (av.FFmpegError, OSError) as exc:
        raise OutputError(path, _describe(exc)) from exc
    if container.format.name in _MOV_MUXERS:
        container.options["video_track_timescale"] = str(Fraction(time_base).denominator)
    return container


def _resolve_pix_fmt(path: Path, codec: str, pix_fmt: str | None, bit_depth: int, width: int, height: int) -> str:
    supported = [f.name for f in av.Codec(codec, "w").video_formats]
    if pix_fmt is None:
        pix_fmt = "yuv420p10le" if bit_depth > 8 else "yuv420p"
        if pix_fmt not in supported:
            logger.info("%s: this build of %s has no %s; writing 8-bit yuv420p", path, codec, pix_fmt)
            pix_fmt = "yuv420p"
    elif pix_fmt not in supported:
        raise ValueError(f"pixel format {pix_fmt!r} is not supported by {codec}; use one of {', '.join(supported)}")
    fmt = av.VideoFormat(pix_fmt)
    subsampled = fmt.chroma_width(width) != width or fmt.chroma_height(height) != height
    if (width % 2 or height % 2) and subsampled:
        full = re.sub(r"^yuv(j?)4[12][0-2]p", r"yuv\g<1>444p", pix_fmt)
        if full == pix_fmt or full not in supported:
            raise ValueError(f"{codec} cannot write {width}x{height} (odd size) as {pix_fmt} and has no 4:4:4 variant")
        note = "%s: odd size %dx%d cannot be chroma-subsampled; writing %s instead of %s"
        logger.info(note, path, width, height, full, pix_fmt)
        pix_fmt = full
    return pix_fmt


def check_encoder_options(
    codec: str, crf: int | None, preset: str | None, pix_fmt: str | None, bit_depth: int = 8
) -> None:
    """Raise ``ValueError`` (one line) for encoder settings that cannot work, before any work starts."""
    if codec not in VIDEO_CODECS:
        raise ValueError(f"unknown codec {codec!r}; use one of {', '.join(VIDEO_CODECS)}")
    if not 8 <= bit_depth <= 16:
        raise ValueError(f"bit_depth must be between 8 and 16, got {bit_depth}")
    if codec not in _RATE_CONTROLLED and (crf is not None or preset is not None):
        raise ValueError(f"{codec} is lossless: crf and preset apply to {' and '.join(_RATE_CONTROLLED)} only")
    if crf is not None and not CRF_RANGE[0] <= crf <= CRF_RANGE[1]:
        raise ValueError(f"crf must be between {CRF_RANGE[0]} and {CRF_RANGE[1]}, got {crf}")
    if preset is not None and preset not in X26X_PRESETS:
        raise ValueError(f"unknown preset {preset!r}; use one of {', '.join(X26X_PRESETS)}")
    if codec == "png" and pix_fmt is not None:
        raise ValueError("png frames are RGB (16-bit when bit_depth > 8); pix_fmt does not apply")
    if pix_fmt is not None and pix_fmt not in {f.name for f in av.Codec(codec, "w").video_formats}:
        raise ValueError(f"pixel format {pix_fmt!r} is not supported by {codec}")


class VideoWriter:
    """Encode one video stream (no audio) from RGB frames, keeping the caller's timestamps.

    ``codec`` is ``libx264``, ``libx265``, ``ffv1`` or ``png``; ``png`` writes a folder ``path``
    of ``frame_{index:08d}.png`` files (16-bit when ``bit_depth > 8``), numbered from 0
    (:func:`concat_segments` renumbers the frames of several folders). The container follows the
    extension of ``path`` unless ``format`` (e.g. ``"mp4"``, ``"matroska"``) is given.

    ``time_base`` is the unit of the ``pts`` passed to :meth:`write` (use the source's, so VFR
    timing is kept); ``fps`` is the nominal rate stored in the stream. ``pix_fmt`` defaults to
    ``yuv420p`` (``yuv420p10le`` when ``bit_depth > 8``); an odd width or height switches a
    chroma-subsampled format to its 4:4:4 variant (logged), frames are never resized. Invalid
    codec, pixel format, crf or preset raise ``ValueError``.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        width: int,
        height: int,
        fps: Fraction,
        time_base: Fraction,
        codec: str = "libx264",
        crf: int | None = None,
        preset: str | None = None,
        pix_fmt: str | None = None,
        bit_depth: int = 8,
        format: str | None = None,
    ):
        check_encoder_options(codec, crf, preset, pix_fmt, bit_depth)
        self.path = Path(path)
        self.width, self.height = width, height
        self.codec = codec
        self.bit_depth = bit_depth
        self.frames_written = 0
        self._last_pts: int | None = None
        self._container: av.container.OutputContainer | None = None
        if codec == "png":
            self.pix_fmt = "rgb48" if bit_depth > 8 else "rgb24"
            self.path.mkdir(parents=True, exist_ok=True)
            return
        self.pix_fmt = _resolve_pix_fmt(self.path, codec, pix_fmt, bit_depth, width, height)
        options = {}
        if crf is not None:
            options["crf"] = str(crf)
        if preset is not None:
            options["preset"] = preset
        if codec == "libx265":
            options["x265-params"] = "log-level=error"
            if max(width, height) <= 64:
                # the AVX2 kernels of the x265 bundled with PyAV corrupt the heap on some tiny frames
                # (48x48 and 48x32 seen, 2026-11); SSE4.2 code is correct and tiny frames are cheap
                options["x265-params"] += ":asm=sse4.2"
        self._container = _open_output(self.path, format, time_base)
        try:
            stream = self._container.add_stream(codec, rate=Fraction(fps), options=options)
            stream.width, stream.height, stream.pix_fmt = width, height, self.pix_fmt
            stream.time_base = Fraction(time_base)
            stream.codec_context.time_base = Fraction(time_base)
            stream.thread_type = "AUTO"
            # Y'CbCr targets get an explicit matrix and range, tagged so that players agree;
            # yuvj* formats are full range by definition
            self._yuv = self.pix_fmt.startswith(("yuv", "nv"))
            self._range = ColorRange.JPEG if self.pix_fmt.startswith("yuvj") else ColorRange.MPEG
            if self._yuv:
                stream.codec_context.colorspace = _AVCOL_SPC_BT709
                stream.codec_context.color_range = int(self._range)
            self._stream = stream
            self._max_delay = round(_MAX_REORDER_SECONDS / Fraction(time_base))
        except BaseException:
            self._container.close()
            raise

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def write(self, frame: torch.Tensor, pts: int) -> None:
        """Encode one ``(H, W, 3)`` RGB frame (``uint8``, or ``uint16`` full range) at ``pts``.

        ``pts`` is in ``time_base`` units and must increase strictly. Ignored for ``png``.
        """
        if tuple(frame.shape) != (self.height, self.width, 3) or frame.dtype not in (torch.uint8, torch.uint16):
            raise ValueError(
                f"expected a ({self.height}, {self.width}, 3) uint8 or uint16 frame, "
                f"got {tuple(frame.shape)} {frame.dtype}"
            )
        if self._last_pts is not None and pts <= self._last_pts:
            raise ValueError(f"pts must increase: {pts} after {self._last_pts}")
        self._last_pts = pts
        array = frame.detach().cpu().numpy()
        if self.codec == "png":
            if self.bit_depth > 8 and array.dtype == np.uint8:
                array = array.astype(np.uint16) * 257  # 8-bit content, 16-bit file: scale, don't pad
            elif self.bit_depth <= 8 and array.dtype == np.uint16:
                array = ((array.astype(np.uint32) + 128) // 257).astype(np.uint8)
            write_image(self.path / _FRAME_NAME.format(index=self.frames_written), torch.from_numpy(array))
        else:
            source = av.VideoFrame.from_ndarray(array, format="rgb24" if array.dtype == np.uint8 else _RGB48)
            if self._yuv:
                encoded = source.reformat(
                    format=self.pix_fmt, dst_colorspace=Colorspace.ITU709, dst_color_range=self._range
                )
            else:
                encoded = source.reformat(format=self.pix_fmt)
            encoded.pts = pts
            encoded.time_base = self._stream.codec_context.time_base
            self._mux(self._container, self._stream.encode(encoded))
        self.frames_written += 1

    def _mux(self, container: av.container.OutputContainer, packets: list[av.Packet]) -> None:
        for packet in packets:
            # libx265 hands out uninitialised DTS (around +-1e18) for clips shorter than its
            # lookahead, e.g. a 1-2 frame last segment; those frames are in presentation order
            known = packet.pts is not None and packet.dts is not None
            if known and not 0 <= packet.pts - packet.dts <= self._max_delay:
                packet.dts = packet.pts
            container.mux(packet)

    def close(self) -> None:
        """Flush the encoder and close the file (idempotent)."""
        if self._container is None:
            return
        container, self._container = self._container, None
        try:
            self._mux(container, self._stream.encode(None))
        finally:
            container.close()


# ----------------------------------------------------------------------------- concatenation


def _time(packet: av.Packet) -> Fraction:
    stamp = packet.dts if packet.dts is not None else packet.pts
    return stamp * packet.time_base if stamp is not None else Fraction(0)


def _describe_stream(ctx: av.video.codeccontext.VideoCodecContext) -> str:
    return f"{ctx.name} {ctx.width}x{ctx.height} {ctx.pix_fmt}"


def _segment_packets(segments: list[Path], first: av.container.InputContainer) -> Iterator[av.Packet]:
    """Video packets of every segment in order, DTS kept strictly increasing across the joins."""
    reference = first.streams.video[0].codec_context
    last_dts: Fraction | None = None
    for index, segment in enumerate(segments):
        container = first if index == 0 else _open_input(segment)
        with container:
            if not container.streams.video:
                raise InputError(segment, "segment has no video stream")
            ctx = container.streams.video[0].codec_context
            if _describe_stream(ctx) != _describe_stream(reference):
                raise InputError(
                    segment, f"segment is {_describe_stream(ctx)}, the first one {_describe_stream(reference)}"
                )
            for packet in container.demux(container.streams.video[0]):
                if packet.size == 0:
                    continue  # demuxer flush marker
                if packet.dts is not None and last_dts is not None and packet.dts * packet.time_base <= last_dts:
                    packet.dts = math.floor(last_dts / packet.time_base) + 1
                    if packet.pts is not None and packet.dts > packet.pts:
                        raise InputError(segment, "segments overlap in time (a DTS would pass its PTS)")
                if packet.dts is not None:
                    last_dts = packet.dts * packet.time_base
                yield packet


def _fits(container: av.container.OutputContainer, codec: str) -> bool:
    supported = container.supported_codecs
    # formats without a codec tag table (e.g. mpegts) report nothing and take what FFmpeg can mux
    return not supported or codec in supported


class _Transcoder:
    """Re-encode one source stream that the output container cannot hold."""

    def __init__(self, source: av.stream.Stream, target: av.stream.Stream):
        self.source, self.target = source, target

    def packets(self, packet: av.Packet | None) -> list[av.Packet]:
        if self.source.type == "subtitle":
            subtitle = self.source.decode2(packet) if packet is not None else None
            if subtitle is None:
                return []
            out = self.target.codec_context.encode_subtitle(subtitle)
            out.pts, out.dts, out.duration = packet.pts, packet.dts, packet.duration
            out.time_base = packet.time_base
            return [out]
        frames = self.source.decode(packet) if packet is not None else self.source.decode(None)
        out = []
        for frame in frames:
            if frame.pts is not None:
                # the encoder counts in samples; keep the source start offset (A/V sync)
                frame.pts = round(frame.pts * frame.time_base * frame.sample_rate)
                frame.time_base = Fraction(1, frame.sample_rate)
            out.extend(self.target.encode(frame))
        if packet is None:
            out.extend(self.target.encode(None))
        return out


def _add_source_streams(
    output: av.container.OutputContainer, source: av.container.InputContainer, copy_audio: bool, copy_subtitles: bool
) -> tuple[dict[int, av.stream.Stream], dict[int, _Transcoder]]:
    """Map source audio/subtitle streams to output streams: copied where possible, else converted."""
    copies: dict[int, av.stream.Stream] = {}
    transcoders: dict[int, _Transcoder] = {}
    wanted = [*(source.streams.audio if copy_audio else ()), *(source.streams.subtitles if copy_subtitles else ())]
    for stream in wanted:
        name = stream.codec_context.name
        where = f"{source.name}: {stream.type} stream {stream.index} ({name}) cannot go into {output.format.name}"
        if _fits(output, name):
            target = output.add_stream_from_template(stream)
            copies[stream.index] = target
        elif stream.type == "audio":
            codec = next((c for c in _FALLBACK_AUDIO_CODECS if _fits(output, c)), None)
            if codec is None:
                logger.warning("%s; dropped", where)
                continue
            logger.warning("%s; re-encoding it as %s", where, codec)
            rate = stream.codec_context.sample_rate
            target = output.add_stream(codec, rate=rate)
            # the default layout for the channel count: encoders reject unordered ones ("2 channels")
            target.layout = av.AudioLayout(f"{stream.codec_context.layout.nb_channels}c")
            target.codec_context.time_base = Fraction(1, rate)
            transcoders[stream.index] = _Transcoder(stream, target)
        elif _is_text_subtitle(stream) and _fits(output, _FALLBACK_SUBTITLE_CODEC):
            logger.warning("%s; converting it to %s", where, _FALLBACK_SUBTITLE_CODEC)
            target = output.add_stream(_FALLBACK_SUBTITLE_CODEC)
            stream.codec_context.open(strict=False)  # the decoder makes the ASS header when opened
            target.codec_context.subtitle_header = stream.codec_context.subtitle_header
            target.codec_context.time_base = stream.time_base
            target.time_base = stream.time_base
            transcoders[stream.index] = _Transcoder(stream, target)
        else:
            logger.warning("%s; dropped", where)
            continue
        target.metadata.update(stream.metadata)
        target.disposition = stream.disposition
    return copies, transcoders


def _is_text_subtitle(stream: av.stream.Stream) -> bool:
    return bool(stream.codec_context.codec.properties & av.codec.codec.Properties.TEXT_SUB.value)


def _source_packets(
    source: av.container.InputContainer, copies: dict[int, av.stream.Stream], transcoders: dict[int, _Transcoder]
) -> Iterator[av.Packet]:
    streams = [source.streams[i] for i in (*copies, *transcoders)]
    if not streams:
        return
    for packet in source.demux(streams):
        index = packet.stream.index
        if index in copies:
            if packet.size:
                packet.stream = copies[index]
                yield packet
        elif packet.size or packet.stream.type == "audio":
            # an empty audio packet is the demuxer's end marker: flush the decoder and encoder
            for out in transcoders[index].packets(packet if packet.size else None):
                out.stream = transcoders[index].target
                yield out


def _concat_frame_folders(
    segments: list[Path], output: Path, audio_from: Path | None, copy_audio: bool, copy_subtitles: bool
) -> None:
    if audio_from is not None and (copy_audio or copy_subtitles):
        info = probe_video(audio_from)
        dropped = (info.audio_streams if copy_audio else 0) + (info.subtitle_streams if copy_subtitles else 0)
        if dropped:
            # named by the source: ``output`` is still the temporary folder at this point
            logger.warning(
                "%s: a folder of PNG frames cannot hold audio or subtitles; %d stream(s) dropped", audio_from, dropped
            )
    output.mkdir(parents=True, exist_ok=True)
    frames = (frame for segment in segments for frame in sorted(segment.glob("frame_*.png")))
    for index, frame in enumerate(frames):
        os.replace(frame, output / _FRAME_NAME.format(index=index))


def concat_segments(
    segments: list[Path],
    output: Path,
    *,
    audio_from: Path | None,
    copy_audio: bool = True,
    copy_subtitles: bool = True,
    format: str | None = None,
) -> None:
    """Join segments written by :class:`VideoWriter` into ``output`` without re-encoding video.

    Video packets are copied in segment order with their timestamps (already global: the writer
    got the source pts), DTS kept strictly increasing. The audio (``copy_audio``) and subtitle
    (``copy_subtitles``) streams of ``audio_from`` are copied packet for packet; a stream the
    output container cannot hold is converted (audio to AAC, text subtitles to mov_text) or
    dropped, with a logged warning. ``format`` names the muxer (``"mp4"``, ``"matroska"``) when
    ``output`` carries a temporary suffix. PNG segments (folders) have their frames moved into the
    ``output`` folder and numbered on across segments. ``output`` is written in place; the caller
    renames it when complete.
    """
    segments = [Path(s) for s in segments]
    output = Path(output)
    if not segments:
        raise ValueError("concat_segments needs at least one segment")
    if all(s.is_dir() for s in segments):
        _concat_frame_folders(segments, output, audio_from, copy_audio, copy_subtitles)
        return
    first = _open_input(segments[0])
    source = _open_input(Path(audio_from)) if audio_from is not None else None
    try:
        out = _open_output(output, format, first.streams.video[0].time_base)
        with out:
            video = out.add_stream_from_template(first.streams.video[0])
            copies, transcoders = _add_source_streams(out, source, copy_audio, copy_subtitles) if source else ({}, {})
            streams = [_segment_packets(segments, first)]
            if source is not None:
                streams.append(_source_packets(source, copies, transcoders))
            counter = itertools.count()  # tie-breaker: packets themselves are not comparable
            merged = heapq.merge(*[((_time(p), next(counter), p) for p in gen) for gen in streams])
            for _, _, packet in merged:
                if packet.stream.type == "video":
                    packet.stream = video
                out.mux(packet)
    finally:
        first.close()
        if source is not None:
            source.close()
