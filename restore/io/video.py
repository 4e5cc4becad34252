"""Streaming video I/O with PyAV: probe, decode, encode, and remux segments with the source audio.

* :func:`probe_video` reads the headers (and decodes one frame for the display rotation, which
  PyAV 18 exposes on frames only) into a :class:`VideoInfo`.
* :class:`VideoReader` yields ``(frame, pts)`` one frame at a time: ``(H, W, 3)`` RGB, ``uint8``
  for 8-bit sources and ``uint16`` (full 16-bit range) for deeper ones, display rotation applied,
  ``pts`` in the source stream's time base. It never drops frames silently: a short or corrupt
  stream raises :class:`~restore.errors.InputError` naming how many frames were decoded, unless
  told to conceal what cannot be decoded (``on_error``), which it then counts.
* :class:`VideoWriter` encodes one video stream (libx264, libx265, ffv1, or a folder of PNG
  frames) at the source time base, so timestamps (VFR included) pass through unchanged.
* :func:`concat_segments` joins segment files written by :class:`VideoWriter` without re-encoding
  and muxes the audio and subtitle streams of the source in, untouched where the container allows,
  with the source's chapters, tags and attachments; timestamps start at 0 unless told to keep the
  source's start.

Colour: sources are converted to RGB with the matrix and range they are tagged with (BT.601 when
untagged, FFmpeg's default). The writer converts RGB back to Y'CbCr with the source's matrix and
range (:class:`DisplayMetadata`; BT.709, limited range, for untagged sources or matrices swscale
cannot convert with) and tags the stream with them and with the source's primaries, transfer,
sample aspect ratio and HDR static metadata, so players show it the way the source was shown. The
RGB in between keeps the source's transfer (PQ stays PQ): nothing is tone-mapped.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import os
import re
import shutil
import struct
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import TracebackType

import av
import numpy as np
import torch
from av.sidedata.sidedata import Type as SideDataType
from av.video.reformatter import ColorRange, Colorspace

from ..errors import InputError, OptionError, OutputError
from .formats import (
    ATTACHMENT_MUXERS, CRF_RANGE, FALLBACK_AUDIO_CODECS, FALLBACK_SUBTITLE_CODEC, HDR_SEI_OPTIONS, MOV_CODEC_TAGS,
    MOV_MUXERS, RATE_CONTROLLED_CODECS, SAR_CODECS, VIDEO_CODECS, X26X_PRESETS,
)
from .animation import is_animation, probe_animation, read_animation
from .image import write_image

logger = logging.getLogger("restore.io")

# native-endian 16-bit RGB, the form numpy hands over without a byte swap
_RGB48 = "rgb48le" if sys.byteorder == "little" else "rgb48be"
# AVCOL_* "unspecified" codes: primaries, transfer and matrix use 2, range 0
_UNSPECIFIED, _RANGE_UNSPECIFIED = 2, 0
# Y'CbCr matrices (AVCOL_SPC_*) swscale converts RGB with: BT.709, FCC, BT.470BG, SMPTE 170M,
# SMPTE 240M, BT.2020 non-constant luminance; others (and untagged sources) are written as BT.709
_SWSCALE_MATRICES = frozenset({int(Colorspace.ITU709), 4, 5, 6, 7, int(Colorspace.BT2020)})
# FFmpeg's AVMasteringDisplayMetadata: 10 AVRationals (R, G, B and white point x/y; min and max
# luminance), then has_primaries and has_luminance; AVContentLightMetadata: MaxCLL and MaxFALL.
# PyAV hands side data over as bytes only
_MASTERING_LAYOUT = struct.Struct("=20i2i")
_CONTENT_LIGHT_LAYOUT = struct.Struct("=2I")
# units of the ST 2086 SEI syntax x264 and x265 take: chromaticity 1/50000, luminance 1/10000 cd/m2
_SEI_CHROMATICITY, _SEI_LUMINANCE = 50000, 10000
# float sample formats (grayf32le, gbrpf16le, ...): VideoFormat does not expose the float flag
_FLOAT_PIX_FMT = re.compile(r"f(16|32|64)(le|be)?$")
# no encoder reorders frames further than this; a larger PTS-DTS gap is garbage (VideoWriter._mux)
_MAX_REORDER_SECONDS = 10
# file names of PNG frames (codec "png"); zero-padded so that they sort in frame order
_FRAME_NAME = "frame_{index:08d}.png"


@dataclass(frozen=True)
class MasteringDisplay:
    """SMPTE ST 2086 mastering display colour volume of HDR video.

    ``primaries`` are the CIE 1931 (x, y) chromaticities of the red, green and blue primaries,
    ``white_point`` the white point's, ``luminance`` the display's (min, max) in cd/m^2.
    """

    primaries: tuple[tuple[Fraction, Fraction], tuple[Fraction, Fraction], tuple[Fraction, Fraction]]
    white_point: tuple[Fraction, Fraction]
    luminance: tuple[Fraction, Fraction]

    def sei(self) -> str:
        """x264's and x265's syntax: ``G(x,y)B(x,y)R(x,y)WP(x,y)L(max,min)`` in SEI units."""

        def xy(point: tuple[Fraction, Fraction]) -> str:
            return ",".join(str(round(c * _SEI_CHROMATICITY)) for c in point)

        (red, green, blue), (low, high) = self.primaries, self.luminance
        luminance = f"{round(high * _SEI_LUMINANCE)},{round(low * _SEI_LUMINANCE)}"
        return f"G({xy(green)})B({xy(blue)})R({xy(red)})WP({xy(self.white_point)})L({luminance})"


@dataclass(frozen=True)
class DisplayMetadata:
    """How a stream's pixels are meant to be shown; :class:`VideoWriter` writes it into its stream.

    ``sample_aspect_ratio`` is the width / height of one pixel in display orientation (e.g. 4/3 for
    anamorphic 16:9 stored as 1440x1080; None: not stated, square). ``primaries``, ``transfer``,
    ``matrix`` and ``range`` are FFmpeg's AVCOL_* codes (PyAV's ``ColorPrimaries``, ``ColorTrc``,
    ``Colorspace``, ``ColorRange``): 2 is unspecified for the first three, 0 for ``range``.
    ``mastering`` and ``content_light`` (MaxCLL, MaxFALL in cd/m^2) are the HDR static metadata,
    None when the source has none.
    """

    sample_aspect_ratio: Fraction | None = None
    primaries: int = _UNSPECIFIED
    transfer: int = _UNSPECIFIED
    matrix: int = _UNSPECIFIED
    range: int = _RANGE_UNSPECIFIED
    mastering: MasteringDisplay | None = None
    content_light: tuple[int, int] | None = None


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe_video` learns about a video file.

    ``width``/``height`` are the display size (after rotation). ``frames`` is the count stored in
    the container or stream header (mp4 has it, Matroska usually not) and None when unknown.
    ``fps`` is the average frame rate; ``time_base`` is the unit of the ``pts`` the reader yields.
    ``rotation`` is the counter-clockwise rotation in degrees (0, 90, 180, 270) that the reader
    applies to every decoded frame, taken from the display matrix (PyAV's ``frame.rotation``).
    ``duration`` is in seconds (the video stream's when known, else the container's). ``display``
    is what the output must say about the pixels to be shown the same way (aspect, colour, HDR).
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
    display: DisplayMetadata = DisplayMetadata()


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
    except OSError as exc:  # FFmpeg's errors of the file system (no permission, I/O error) are OSErrors too
        raise InputError(path, f"cannot read: {_describe(exc)}") from exc
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


def _mastering(data: bytes) -> MasteringDisplay | None:
    values = _MASTERING_LAYOUT.unpack_from(data)
    has_primaries, has_luminance = values[20:]
    if not (has_primaries and has_luminance):  # the SEI syntax needs both
        return None
    ratios = [Fraction(num, den) if den else Fraction(0) for num, den in zip(values[0:20:2], values[1:20:2])]
    points = list(zip(ratios[0:10:2], ratios[1:10:2]))  # (x, y) of R, G, B, white point, then the luminances
    return MasteringDisplay((points[0], points[1], points[2]), points[3], (ratios[8], ratios[9]))


def _display_metadata(stream: av.video.stream.VideoStream, first: av.VideoFrame, rotation: int) -> DisplayMetadata:
    """Aspect, colour tags and HDR metadata from the stream and its first frame (FFmpeg puts the
    container's HDR metadata on frames too, so the frame's side data covers both)."""
    aspect = stream.sample_aspect_ratio or stream.codec_context.sample_aspect_ratio
    aspect = Fraction(aspect) if aspect and aspect != 1 else None
    if aspect is not None and rotation in (90, 270):
        aspect = 1 / aspect  # the reader turns the pixels, and with them their shape
    side = {data.type: bytes(data) for data in first.side_data}
    mastering = side.get(SideDataType.MASTERING_DISPLAY_METADATA)
    light = side.get(SideDataType.CONTENT_LIGHT_LEVEL)
    return DisplayMetadata(
        sample_aspect_ratio=aspect,
        primaries=int(first.color_primaries),
        transfer=int(first.color_trc),
        matrix=int(first.colorspace),
        range=int(first.color_range),
        mastering=_mastering(mastering) if mastering else None,
        content_light=_CONTENT_LIGHT_LAYOUT.unpack_from(light) if light else None,
    )


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Read a video's geometry, timing and streams.

    Decodes the first frame (PyAV exposes the display rotation on frames only). Raises
    :class:`~restore.errors.InputError` for a missing or empty file, a file FFmpeg cannot open
    ("not a video: ..."), a file without video ("no video stream (audio-only file)"), an
    unsupported pixel format (float or deeper than 16 bits) and a stream with no decodable frame.
    GIF and animated WebP files are probed by :func:`~restore.io.animation.probe_animation`.
    """
    path = Path(path)
    if is_animation(path):
        return probe_animation(path)
    with _open_input(path) as container:
        stream = _video_stream(container, path)
        ctx = stream.codec_context
        if ctx is None:  # PyAV makes no codec context for a codec FFmpeg does not know
            raise InputError(path, "unknown video codec (FFmpeg has no decoder for it)")
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
            display=_display_metadata(stream, first, rotation),
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

    ``on_error`` says what to do with a packet the decoder refuses (one of
    :data:`~restore.io.formats.DECODE_ERROR_POLICIES`): ``"fail"`` raises
    :class:`~restore.errors.InputError` ("truncated or corrupt video: decoded N frames before
    error: ..."), ``"skip"`` leaves its frame out (the next frame keeps its own pts, so timing is
    kept), ``"repeat"`` yields the previous frame at its pts instead; :attr:`concealed` counts
    those frames. With ``expect_frames``, a stream that ends short of the frame count in the
    header or, without a count, of the stream's duration raises ``InputError`` under ``"fail"``
    and is logged as a warning under the others. A container the demuxer cannot read on raises
    ``InputError`` under every policy.

    ``info`` is the file's :func:`probe_video` when the caller has it already; without it the
    file is probed here (probing opens the file and decodes its first frame).

    A GIF or animated WebP is decoded by Pillow (:mod:`restore.io.animation`): RGB with alpha
    composited over black, pts in milliseconds; a frame it cannot decode raises ``InputError``
    under every ``on_error``.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        expect_frames: bool = True,
        info: VideoInfo | None = None,
        on_error: str = "fail",
    ):
        self.path = Path(path)
        self.info = info or probe_video(self.path)
        self.expect_frames = expect_frames
        self.on_error = on_error
        self.concealed = 0  # frames of the last pass that could not be decoded
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
        self.concealed = 0
        if is_animation(self.path):  # Pillow's frames, each with its own duration; pts in ms
            yield from read_animation(self.path)
            return
        self._container = container = _open_input(self.path)
        stream = _video_stream(container, self.path)
        stream.thread_type = "AUTO"
        # one frame interval in time-base units, for sources without timestamps
        step = max(1, round(1 / (info.fps * info.time_base)))
        duration, own_duration = _stream_duration(stream, container)
        end = (stream.start_time or 0) * info.time_base + Fraction(duration or 0)
        decoded, last_pts, previous = 0, None, None
        pending: list[int] = []  # heap: pts of the packets sent to the decoder whose frame is still to come
        filled = 0  # refused packets whose frame "repeat" has filled in (or found no place for)
        try:
            for frame in itertools.chain(self._decode(container, stream, pending), [None]):
                # a refused packet's frame never comes out: its slot is the pts of its packet left
                # behind when a later frame (or the end) comes, one slot per refused packet (a
                # frame-threaded decoder reports the error a few packets after the bad one)
                for slot in _left_behind(pending, math.inf if frame is None else frame.pts):
                    if filled == self.concealed:
                        continue  # a packet without a frame of its own on a clean stretch (a field of a pair)
                    filled += 1
                    if self.on_error == "repeat" and previous is not None and (last_pts is None or slot > last_pts):
                        last_pts = slot
                        yield previous, slot
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
                previous = frame_to_tensor(frame, info.bit_depth, info.rotation)
                yield previous, pts
        except av.FFmpegError as exc:  # the demuxer's: no packet to go past, the container is broken from here
            raise InputError(
                self.path, f"truncated or corrupt video: decoded {decoded} frames before error: {_describe(exc)}"
            ) from exc
        finally:
            self.close()
        if not self.expect_frames:
            return
        # the stream's own stored duration says where its last frame should be (the container's
        # may be the audio's, which often runs longer); one frame interval of slack for rounding
        reached_end = own_duration and last_pts is not None and (last_pts + 2 * step) * info.time_base >= end
        accounted = decoded + self.concealed
        short = None
        if info.frames is not None:
            # AVI counts dropped frames (empty chunks) in its header; their time slot stays a gap
            # in the pts, so a stream whose timestamps run to its end is complete
            if accounted < info.frames and not reached_end:
                short = f"truncated or corrupt video: decoded {accounted} of {info.frames} frames"
        elif own_duration and last_pts is not None and not reached_end:
            short = (
                f"truncated or corrupt video: decoded {accounted} of ~{round(duration * info.fps)} frames "
                f"({float((last_pts + step) * info.time_base):.2f} s of {float(end):.2f} s)"
            )
        if short is not None and self.on_error == "fail":
            raise InputError(self.path, short)
        if short is not None:
            logger.warning("%s: %s; the output ends there (--on-decode-error %s)", self.path, short, self.on_error)

    def _decode(
        self, container: av.container.InputContainer, stream: av.video.stream.VideoStream, pending: list[int]
    ) -> Iterator[av.VideoFrame]:
        """The frames of ``stream``, decoded packet by packet so that decoding can go on after a
        packet the decoder refuses (counted in :attr:`concealed`; under "fail" it raises), with
        the pts of every packet sent pushed on the heap ``pending``."""
        decoded = 0
        for packet in container.demux(stream):
            if packet.size and packet.pts is not None:
                heapq.heappush(pending, packet.pts)
            try:
                frames = stream.decode(packet)
            except av.FFmpegError as exc:
                cause = f"truncated or corrupt video: decoded {decoded} frames before error: {_describe(exc)}"
                if self.on_error == "fail":
                    raise InputError(self.path, f"{cause}; --on-decode-error skip or repeat goes on") from exc
                logger.debug("%s: %s (packet pts %s)", self.path, cause, packet.pts)
                self.concealed += 1
                continue
            decoded += len(frames)
            yield from frames


def _left_behind(pending: list[int], pts: float | None) -> list[int]:
    """Pop from the heap ``pending`` the packet pts up to ``pts`` (the frame at hand; inf: the end)
    and return those before it, in order: packets whose frame never came out. None (a frame
    without pts) pops nothing."""
    behind = []
    while pending and pts is not None and pending[0] <= pts:
        slot = heapq.heappop(pending)
        if slot != pts:
            behind.append(slot)
    return behind


def _open_output(path: Path, format: str | None, time_base: Fraction) -> av.container.OutputContainer:
    """An output container whose video track keeps ``time_base`` (mp4/mov would change it)."""
    if not path.parent.is_dir():  # FFmpeg would only notice at the first packet
        raise OutputError(path, f"folder {path.parent} does not exist")
    try:
        container = av.open(str(path), mode="w", format=format)
    except (av.FFmpegError, OSError) as exc:
        raise OutputError(path, _describe(exc)) from exc
    if container.format.name in MOV_MUXERS:
        container.options["video_track_timescale"] = str(Fraction(time_base).denominator)
    return container


def _resolve_pix_fmt(path: Path, codec: str, pix_fmt: str | None, bit_depth: int, width: int, height: int) -> str:
    supported = [f.name for f in av.Codec(codec, "w").video_formats]
    if pix_fmt is None:
        pix_fmt = "yuv420p10le" if bit_depth > 8 else "yuv420p"
        if pix_fmt not in supported:
            logger.warning("%s: this build of %s has no %s; writing 8-bit yuv420p", path, codec, pix_fmt)
            pix_fmt = "yuv420p"
    elif pix_fmt not in supported:
        raise OptionError(None, f"pixel format {pix_fmt!r} is not supported by {codec}; use one of {', '.join(supported)}")
    fmt = av.VideoFormat(pix_fmt)
    subsampled = fmt.chroma_width(width) != width or fmt.chroma_height(height) != height
    if (width % 2 or height % 2) and subsampled:
        full = re.sub(r"^yuv(j?)4[12][0-2]p", r"yuv\g<1>444p", pix_fmt)
        if full == pix_fmt or full not in supported:
            raise OptionError(None, f"{codec} cannot write {width}x{height} (odd size) as {pix_fmt} and has no 4:4:4 variant")
        note = "%s: odd size %dx%d cannot be chroma-subsampled; writing %s instead of %s"
        logger.info(note, path, width, height, full, pix_fmt)
        pix_fmt = full
    return pix_fmt


def _add_hdr_sei(options: dict[str, str], codec: str, display: DisplayMetadata) -> None:
    """Ask the encoder (x264, x265) to write the HDR static metadata of ``display`` as SEI."""
    if codec not in HDR_SEI_OPTIONS:
        return
    key, mastering, light = HDR_SEI_OPTIONS[codec]
    params = [options[key]] if key in options else []
    if display.mastering is not None:
        params.append(f"{mastering}={display.mastering.sei()}")
    if display.content_light is not None:
        params.append(f"{light}={display.content_light[0]},{display.content_light[1]}")
    if params:
        options[key] = ":".join(params)


def display_losses(codec: str, display: DisplayMetadata) -> list[str]:
    """What of ``display`` a :class:`VideoWriter` with ``codec`` cannot write (for a warning), e.g.
    ``["HDR mastering metadata"]`` for ffv1: it has no SEI, and PyAV cannot set the container's
    stream side data (nor the stream's aspect ratio, which Matroska stores)."""
    lost = []
    if display.sample_aspect_ratio is not None and codec not in SAR_CODECS:
        lost.append("sample aspect ratio")
    # PNG frames are RGB without colour chunks; the others carry the tags in the stream
    if codec == "png" and (display.primaries != _UNSPECIFIED or display.transfer != _UNSPECIFIED):
        lost.append("colour tags")
    if (display.mastering is not None or display.content_light is not None) and codec not in HDR_SEI_OPTIONS:
        lost.append("HDR mastering metadata")
    return lost


def check_encoder_options(
    codec: str, crf: int | None, preset: str | None, pix_fmt: str | None, bit_depth: int = 8
) -> None:
    """Raise ``ValueError`` (one line) for encoder settings that cannot work, before any work starts."""
    if codec not in VIDEO_CODECS:
        raise ValueError(f"unknown codec {codec!r}; use one of {', '.join(VIDEO_CODECS)}")
    if not 8 <= bit_depth <= 16:
        raise ValueError(f"bit_depth must be between 8 and 16, got {bit_depth}")
    if codec not in RATE_CONTROLLED_CODECS and (crf is not None or preset is not None):
        raise ValueError(f"{codec} is lossless: crf and preset apply to {' and '.join(RATE_CONTROLLED_CODECS)} only")
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

    ``display`` (the source's :attr:`VideoInfo.display`) says how the frames are meant to be shown:
    its matrix and range are used for the RGB -> Y'CbCr conversion, and it is written into the
    stream (what ``codec`` cannot hold is listed by :func:`display_losses`). None: square pixels,
    BT.709 limited range, primaries and transfer unspecified.
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
        display: DisplayMetadata | None = None,
    ):
        check_encoder_options(codec, crf, preset, pix_fmt, bit_depth)
        display = display or DisplayMetadata()
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
        _add_hdr_sei(options, codec, display)
        self._container = _open_output(self.path, format, time_base)
        try:
            stream = self._container.add_stream(codec, rate=Fraction(fps), options=options)
            stream.width, stream.height, stream.pix_fmt = width, height, self.pix_fmt
            stream.time_base = Fraction(time_base)
            stream.codec_context.time_base = Fraction(time_base)
            stream.thread_type = "AUTO"
            ctx = stream.codec_context
            if display.sample_aspect_ratio is not None:
                ctx.sample_aspect_ratio = display.sample_aspect_ratio
            ctx.color_primaries, ctx.color_trc = display.primaries, display.transfer
            # Y'CbCr targets get an explicit matrix and range, tagged so that players agree: the
            # source's where swscale can convert with them; yuvj* formats are full range by definition
            self._yuv = self.pix_fmt.startswith(("yuv", "nv"))
            self._matrix = display.matrix if display.matrix in _SWSCALE_MATRICES else int(Colorspace.ITU709)
            full = self.pix_fmt.startswith("yuvj") or display.range == ColorRange.JPEG
            self._range = ColorRange.JPEG if full else ColorRange.MPEG
            if self._yuv:
                ctx.colorspace, ctx.color_range = self._matrix, int(self._range)
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
                    format=self.pix_fmt, dst_colorspace=self._matrix, dst_color_range=self._range
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
            codec = next((c for c in FALLBACK_AUDIO_CODECS if _fits(output, c)), None)
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
        elif _is_text_subtitle(stream) and _fits(output, FALLBACK_SUBTITLE_CODEC):
            logger.warning("%s; converting it to %s", where, FALLBACK_SUBTITLE_CODEC)
            target = output.add_stream(FALLBACK_SUBTITLE_CODEC)
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


def _add_video_stream(out: av.container.OutputContainer, template: av.video.stream.VideoStream) -> av.stream.Stream:
    """The output's copy of the segments' video stream, stating their nominal frame rate (Matroska
    stores it as the default duration; the template's own is the bitstream's tick rate, 1000 fps for
    x264 at a 1/1000 time base) and the sample entry tag the mov muxers need (``hvc1``)."""
    video = out.add_stream_from_template(template)
    if template.average_rate:
        video.codec_context.framerate = template.average_rate
    tag = MOV_CODEC_TAGS.get(template.codec_context.name)
    if tag is not None and out.format.name in MOV_MUXERS:
        video.codec_context.codec_tag = tag
    return video


def _start_offset(streams: list[av.stream.Stream]) -> Fraction:
    """Seconds of the source that become the output's 0: the earliest start of ``streams`` when it
    is after 0 (a source starting before 0, e.g. by AAC priming, is left as it is)."""
    starts = [stream.start_time * stream.time_base for stream in streams if stream.start_time is not None]
    return max(Fraction(0), min(starts, default=Fraction(0)))


def _shift(packet: av.Packet, offset: Fraction) -> None:
    """Move ``packet`` ``offset`` seconds earlier, to the tick of its time base."""
    ticks = round(offset / packet.time_base) if offset else 0
    if packet.pts is not None:
        packet.pts -= ticks
    if packet.dts is not None:
        packet.dts -= ticks


def _copy_container_metadata(
    out: av.container.OutputContainer, source: av.container.InputContainer, offset: Fraction
) -> None:
    """The source's tags (title, ...), chapters (moved back by ``offset`` seconds, as the streams
    are) and attachments, which only some muxers hold (dropped with a warning by the others)."""
    # the muxer names itself as the encoder; the source's would misattribute the file
    out.metadata.update({key: value for key, value in source.metadata.items() if key.lower() != "encoder"})
    chapters = source.chapters()
    for chapter in chapters:
        ticks = round(offset / chapter["time_base"]) if chapter["time_base"] else 0
        chapter["start"], chapter["end"] = max(0, chapter["start"] - ticks), max(0, chapter["end"] - ticks)
    out.set_chapters(chapters)
    attachments = source.streams.attachments
    if attachments and out.format.name not in ATTACHMENT_MUXERS:
        names = ", ".join(a.name or "?" for a in attachments)
        logger.warning("%s: %s cannot hold attachments; dropped %s", source.name, out.format.name, names)
        return
    for attachment in attachments:
        out.add_attachment(attachment.name, attachment.mimetype, attachment.data)


def _concat_frame_folders(
    segments: list[Path], output: Path, source_path: Path | None, copy_audio: bool, copy_subtitles: bool
) -> None:
    if source_path is not None and (copy_audio or copy_subtitles):
        with _open_input(source_path) as source:  # only the stream counts: no frame to decode
            streams = source.streams
            dropped = (len(streams.audio) if copy_audio else 0) + (len(streams.subtitles) if copy_subtitles else 0)
        if dropped:
            # named by the source: ``output`` is still the temporary folder at this point
            logger.warning(
                "%s: a folder of PNG frames cannot hold audio or subtitles; %d stream(s) dropped", source_path, dropped
            )
    output.mkdir(parents=True, exist_ok=True)
    frames = (frame for segment in segments for frame in sorted(segment.glob("frame_*.png")))
    for index, frame in enumerate(frames):
        # linked, not moved: until the output folder is renamed into place, every segment is
        # whole, so an interruption here loses no frame
        target = output / _FRAME_NAME.format(index=index)
        try:
            os.link(frame, target)
        except OSError:  # a file system without hard links (FAT, some network shares)
            shutil.copyfile(frame, target)


def concat_segments(
    segments: list[Path],
    output: Path,
    *,
    source: Path | None,
    copy_audio: bool = True,
    copy_subtitles: bool = True,
    keep_start_time: bool = False,
    format: str | None = None,
) -> None:
    """Join segments written by :class:`VideoWriter` into ``output`` without re-encoding video.

    Video packets are copied in segment order with their timestamps (already global: the writer
    got the source pts), DTS kept strictly increasing. The audio (``copy_audio``) and subtitle
    (``copy_subtitles``) streams of ``source`` (the video the segments were made from) are copied
    packet for packet; a stream the output container cannot hold is converted (audio to AAC, text
    subtitles to mov_text) or dropped, with a logged warning. The source's tags, chapters and
    attachments (e.g. the fonts of ASS subtitles) are kept where the container holds them.

    The output starts at 0: every stream moves back by the earliest start among the streams
    written, so a clip cut from a broadcast at 3601 s starts at 0 and its audio keeps its offset to
    the video. ``keep_start_time`` keeps the source's timestamps instead.

    ``format`` names the muxer (``"mp4"``, ``"matroska"``) when ``output`` carries a temporary
    suffix. PNG segments (folders) have their frames linked (copied where the file system has no
    hard links) into the ``output`` folder and numbered on across segments; the segments are left
    whole. ``output`` is written in place; the caller renames it when complete.
    """
    segments = [Path(s) for s in segments]
    output = Path(output)
    if source is not None and is_animation(source):
        source = None  # no audio, subtitles, tags or chapters to carry over (and FFmpeg cannot read animated WebP)
    if not segments:
        raise ValueError("concat_segments needs at least one segment")
    if all(s.is_dir() for s in segments):
        _concat_frame_folders(segments, output, source, copy_audio, copy_subtitles)
        return
    first = _open_input(segments[0])
    origin = _open_input(Path(source)) if source is not None else None
    try:
        template = first.streams.video[0]
        out = _open_output(output, format, template.time_base)
        with out:
            video = _add_video_stream(out, template)
            copies, transcoders = _add_source_streams(out, origin, copy_audio, copy_subtitles) if origin else ({}, {})
            written = [template, *(origin.streams[i] for i in (*copies, *transcoders))]
            offset = Fraction(0) if keep_start_time else _start_offset(written)
            streams = [_segment_packets(segments, first)]
            if origin is not None:
                _copy_container_metadata(out, origin, offset)
                streams.append(_source_packets(origin, copies, transcoders))
            counter = itertools.count()  # tie-breaker: packets themselves are not comparable
            merged = heapq.merge(*[((_time(p), next(counter), p) for p in gen) for gen in streams])
            for _, _, packet in merged:
                if packet.stream.type == "video":
                    packet.stream = video
                _shift(packet, offset)
                out.mux(packet)
    finally:
        first.close()
        if origin is not None:
            origin.close()
