"""File formats in one place: which suffixes are images and videos, and the policy for video
output (codecs and their settings, containers, muxers, and what replaces streams a container
cannot hold).

Only facts and small lookups live here, no codec library is imported, so ``datasets``, the batch
planner and the CLI can ask "is this a video?" or "which muxer writes .mkv?" cheaply. Suffixes are
lower case with the dot (``".mp4"``); lookups lower-case the name they are given.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import OutputError

# ----------------------------------------------------------------------------- still images

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp"})
TIFF_EXTENSIONS = frozenset({".tif", ".tiff"})
# formats whose OpenCV encoders take 16-bit samples
DEEP_IMAGE_EXTENSIONS = frozenset({".png", *TIFF_EXTENSIONS})
# JPEG: no alpha channel, and a quality setting
JPEG_EXTENSIONS = frozenset({".jpg", ".jpeg"})
# formats OpenCV writes an ICC profile and EXIF into (cv2.imencodeWithMetadata)
EMBEDDED_METADATA_EXTENSIONS = frozenset({".png", ".webp", *JPEG_EXTENSIONS})
# formats whose files we state a resolution in (PNG pHYs, JFIF density, TIFF tags); WebP and BMP as
# OpenCV writes them have no place for it
DPI_EXTENSIONS = frozenset({".png", *JPEG_EXTENSIONS, *TIFF_EXTENSIONS})

# ----------------------------------------------------------------------------- videos

# animations, upscaled as videos (restore.io.animation, by content: GIF always, WebP when it has
# several frames, else it is a still image) and written when an output is named so
ANIMATION_EXTENSIONS = frozenset({".gif", ".webp"})

# containers FFmpeg reads that we treat as video inputs (upscaling, training data, calibration)
VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v", ".ts", ".mts", ".mpg", ".mpeg", ".wmv", ".flv", ".y4m"}
)
# what the video reader does with a packet it cannot decode: stop with an error, leave the frame
# out, or show the previous frame in its place (restore.io.video.VideoReader)
DECODE_ERROR_POLICIES = ("fail", "skip", "repeat")

VIDEO_CODECS = ("libx264", "libx265", "ffv1", "png")  # "png": a folder of PNG frames, no container
# codecs that take crf and preset (the others are lossless)
RATE_CONTROLLED_CODECS = ("libx264", "libx265")
X26X_PRESETS = (
    "ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow", "placebo"
)
CRF_RANGE = (0, 51)
# the container each codec's output gets when the input's container cannot be kept
CODEC_SUFFIX = {"libx264": ".mp4", "libx265": ".mp4", "ffv1": ".mkv", "png": ""}
# output containers we write, by suffix -> FFmpeg muxer (in the order the error message lists them)
CONTAINER_MUXERS = {".mp4": "mp4", ".mkv": "matroska", ".mov": "mov", ".m4v": "mp4"}
# muxers built on FFmpeg's mov muxer, which otherwise rounds the video time base up to >= 1/10000
MOV_MUXERS = frozenset({"mp4", "mov", "ipod", "3gp", "3g2", "psp", "ismv", "f4v"})
# audio codecs tried, in order, when the output container cannot hold the source audio codec
FALLBACK_AUDIO_CODECS = ("aac", "opus")
# text subtitle codec mp4/mov can hold after conversion; bitmap subtitles are dropped instead
FALLBACK_SUBTITLE_CODEC = "mov_text"
# sample entries the mov muxers must write instead of their default: FFmpeg tags HEVC `hev1`, which
# Apple's players refuse; `hvc1` is the same stream with its parameter sets in the sample entry
MOV_CODEC_TAGS = {"hevc": "hvc1"}
# muxers that hold attached files (the fonts of ASS subtitles, cover art); others drop them with a warning
ATTACHMENT_MUXERS = frozenset({"matroska"})
# encoders that write the sample aspect ratio into their bitstream (the VUI); FFV1 has no place for
# it but the container's stream field, which PyAV cannot set, and PNG frames have none
SAR_CODECS = frozenset({"libx264", "libx265"})
# encoders that write HDR static metadata as SEI: (their private-options key, the option for the
# SMPTE ST 2086 mastering display, the option for the content light level)
HDR_SEI_OPTIONS = {
    "libx264": ("x264-params", "mastering-display", "cll"),
    "libx265": ("x265-params", "master-display", "max-cll"),
}


def is_image(path: str | os.PathLike) -> bool:
    """Whether ``path`` has an image extension (case-insensitive); the file is not opened."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def is_video(path: str | os.PathLike) -> bool:
    """Whether ``path`` has a video extension (case-insensitive); the file is not opened."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def output_suffix(src: Path, codec: str) -> str:
    """Output suffix for a video: the input's container when it can hold ``codec``, else the codec's."""
    if codec in RATE_CONTROLLED_CODECS and src.suffix.lower() in CONTAINER_MUXERS:
        return src.suffix.lower()
    return CODEC_SUFFIX[codec]


def muxer_for(dst: Path, codec: str) -> str | None:
    """The FFmpeg muxer that writes ``dst`` (None for ``png``, a folder of frames).

    Raises :class:`~restore.errors.OutputError` for a suffix we write no container for, so that it
    is caught before any work (a .avi or .webm name would otherwise get MP4 content or fail at the
    first segment).
    """
    if codec == "png":
        return None
    muxer = CONTAINER_MUXERS.get(dst.suffix.lower())
    if muxer is None:
        what = f"a {dst.suffix} file" if dst.suffix else "a file without extension"
        *others, last = CONTAINER_MUXERS
        raise OutputError(dst, f"cannot write {codec} video as {what}; name it {', '.join(others)} or {last}")
    return muxer
