"""Refuse inputs that are too big *before* decoding them (the web demo's decompression-bomb guard).

A small file can declare an enormous picture: a 161 KB PNG of 12000x12000 pixels, a DICOM whose
JPEG or deflated data expands a thousandfold, a zip whose members inflate to gigabytes. Every
check here reads only what the file declares (an image header, a video stream's frame size, DICOM
``Rows x Columns x NumberOfFrames x SamplesPerPixel``, a zip's central directory, the length a
deflated data set inflates to, counted without keeping it) and raises
:class:`~restore.errors.InputError` when it exceeds a :class:`Limits` field. Decoding happens
only afterwards, elsewhere.
"""

from __future__ import annotations

import struct
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from .errors import InputError

DEFLATED_SYNTAX = b"1.2.840.10008.1.2.1.99"


@dataclass(frozen=True)
class Limits:
    """What one input may declare.

    ``max_pixels``: pixels of one image or video frame; ``max_pixel_frames``: pixels x frames of
    one job (a video's whole length, a DICOM upload's voxels); ``max_zip_members`` and
    ``max_zip_bytes``: members of an archive and their uncompressed total; ``max_inflated_bytes``:
    what one deflated DICOM data set may inflate to.
    """

    max_pixels: int = 4096 * 4096
    max_pixel_frames: int = 1 << 24
    max_zip_members: int = 2000
    max_zip_bytes: int = 1 << 30
    max_inflated_bytes: int = 1 << 28


def _mega(n: float) -> str:
    return f"{n / 1e6:.1f} M"


def check_image(path: str | Path, limits: Limits) -> tuple[int, int]:
    """Width and height from the image header -> ``(width, height)``; refuses more than ``max_pixels``."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None  # we compare ourselves; open() reads the header only
    try:
        with Image.open(path) as image:
            width, height = image.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InputError(path, f"corrupt or unreadable image ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = saved
    if width * height > limits.max_pixels:
        raise InputError(path, f"{width}x{height} is {_mega(width * height)}pixels, more than the {_mega(limits.max_pixels)}pixels "
                               "allowed here")
    return width, height


def check_video_frame(path: str | Path, limits: Limits) -> tuple[int, int]:
    """The first video stream's declared frame size (nothing decoded) -> ``(width, height)``."""
    import av

    path = Path(path)
    try:
        with av.open(str(path)) as container:
            streams = container.streams.video
            if not streams:
                raise InputError(path, "no video stream")
            width, height = streams[0].codec_context.width, streams[0].codec_context.height
    except av.FFmpegError as exc:
        raise InputError(path, f"not a video ({str(exc).splitlines()[0]})") from None
    if width * height > limits.max_pixels:
        raise InputError(path, f"{width}x{height} frames are {_mega(width * height)}pixels, more than the "
                               f"{_mega(limits.max_pixels)}pixels allowed here")
    return width, height


def check_dicom_upload(path: str | Path, limits: Limits) -> int:
    """A ``.dcm`` file or a ``.zip`` of them: refuse too many or too large members, deflated data
    sets that inflate past ``max_inflated_bytes`` and more than ``max_pixel_frames`` declared
    voxels in all -> the declared voxel count. Files that are not DICOM count as 0 (the reader
    reports them)."""
    path = Path(path)
    total = 0
    for name, opener in _members(path, limits):
        total += _declared_voxels(opener, limits, path if name is None else Path(name))
        if total > limits.max_pixel_frames:
            raise InputError(path, f"declares more than {_mega(limits.max_pixel_frames)} voxels, more than allowed here "
                                   "(run `restore dicom` on your own machine instead)")
    return total


def _members(path: Path, limits: Limits) -> Iterator[tuple[str | None, Callable[[], BinaryIO]]]:
    if not zipfile.is_zipfile(path):
        yield None, lambda: open(path, "rb")
        return
    try:
        with zipfile.ZipFile(path) as archive:
            infos = [i for i in archive.infolist() if not i.is_dir()]
            if len(infos) > limits.max_zip_members:
                raise InputError(path, f"{len(infos)} files in the archive, more than the {limits.max_zip_members} allowed here")
            size = sum(i.file_size for i in infos)  # zipfile never inflates a member past its declared size
            if size > limits.max_zip_bytes:
                raise InputError(path, f"unpacks to {size / 2**20:.0f} MiB, more than the {limits.max_zip_bytes / 2**20:.0f} MiB "
                                       "allowed here")
            for info in infos:
                yield info.filename, lambda info=info: archive.open(info)
    except zipfile.BadZipFile as exc:
        raise InputError(path, f"corrupt zip archive ({exc})") from None


def _declared_voxels(opener, limits: Limits, where: Path) -> int:
    import pydicom

    with opener() as fh:
        deflated = DEFLATED_SYNTAX in fh.read(1 << 12)  # the file meta (never deflated) names the syntax
    if deflated:
        _check_inflated(opener(), limits, where)
    with opener() as fh:
        try:
            ds = pydicom.dcmread(fh, force=True, stop_before_pixels=True)
            rows, columns = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
            frames = int(ds.get("NumberOfFrames", 1) or 1)
            samples = int(ds.get("SamplesPerPixel", 1) or 1)
        except Exception:  # noqa: BLE001 - not DICOM (or no sizes): the reader says so later
            return 0
    if rows * columns > limits.max_pixels:
        raise InputError(where, f"{columns}x{rows} slices are more than the {_mega(limits.max_pixels)}pixels allowed here")
    return rows * columns * frames * samples


def _check_inflated(fh: BinaryIO, limits: Limits, where: Path) -> None:
    """Inflate a deflated-syntax data set in chunks, counting bytes only; refuse past the limit."""
    with fh:
        head = fh.read(132 + 12)
        if head[128:132] != b"DICM" or head[132:136] != b"\x02\x00\x00\x00":
            return  # no standard file meta: pydicom will not inflate it either
        (group_length,) = struct.unpack("<I", head[140:144])
        fh.read(group_length)
        inflater, inflated = zlib.decompressobj(-zlib.MAX_WBITS), 0
        while not inflater.eof and (chunk := fh.read(1 << 16)):
            while chunk and not inflater.eof:
                out = inflater.decompress(chunk, 1 << 20)
                if not out and inflater.unconsumed_tail == chunk:
                    return  # no progress: corrupt stream, pydicom will say so
                inflated += len(out)
                chunk = inflater.unconsumed_tail
                if inflated > limits.max_inflated_bytes:
                    raise InputError(where, f"deflated data inflates past {limits.max_inflated_bytes >> 20} MiB, more than "
                                            "allowed here")
