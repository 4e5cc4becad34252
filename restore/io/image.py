"""Still images with OpenCV: read as ``(H, W, C)`` RGB tensors, write atomically.

Images are ``uint8`` or ``uint16`` with ``C`` in {1, 3} (grey or RGB), plus an alpha channel
(``C`` in {2, 4}) when read with ``keep_alpha``. The EXIF orientation is applied (OpenCV ignores it
when reading unchanged depth and channels, so we read the tag from the header with Pillow and
transpose ourselves). :func:`read_image_metadata` reads what else the file says (ICC profile,
DPI, EXIF), for :func:`write_image` to put into an output made from it.
"""

from __future__ import annotations

import io
import logging
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from ..errors import InputError, OutputError
from .formats import (
    DEEP_IMAGE_EXTENSIONS, DPI_EXTENSIONS, EMBEDDED_METADATA_EXTENSIONS, IMAGE_EXTENSIONS, JPEG_EXTENSIONS,
    TIFF_EXTENSIONS,
)

logger = logging.getLogger("restore.io")

_EXIF_ORIENTATION = 0x0112
_JPEG_QUALITY = 95
# Pillow's EXIF bytes start with JPEG's APP1 signature; OpenCV takes the TIFF structure after it
_EXIF_SIGNATURE = b"Exif\x00\x00"
_INCHES_PER_METRE = 1 / 0.0254
# a PNG starts with its 8-byte signature and the IHDR chunk (length, type, 13 bytes, CRC)
_PNG_HEADER_END = 8 + 4 + 4 + 13 + 4
_METADATA_NAMES = {cv2.IMAGE_METADATA_ICCP: "ICC profile", cv2.IMAGE_METADATA_EXIF: "EXIF"}


@dataclass(frozen=True)
class ImageMetadata:
    """What an image file says beside its pixels, for an upscaled copy to say too.

    ``icc_profile`` is the embedded ICC profile (None: none; viewers assume sRGB). ``dpi`` is the
    (x, y) resolution in pixels per inch (None: not stated); it is carried as it is, so an image
    upscaled x4 prints four times as large, as when an image editor resamples. ``exif`` is the EXIF
    block as a TIFF structure with its orientation set to 1 (normal), because :func:`read_image`
    has already turned the pixels upright (None: no EXIF).
    """

    icc_profile: bytes | None = None
    dpi: tuple[float, float] | None = None
    exif: bytes | None = None


def _read_header(data: bytes) -> tuple[int, ImageMetadata]:
    """The EXIF orientation (1-8; 1 when absent) and the metadata of an encoded image, read with
    Pillow from the header without decoding pixels; a header Pillow cannot parse gives neither."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            exif = image.getexif()
            orientation = int(exif.get(_EXIF_ORIENTATION, 1))
            # only a separate EXIF block (JPEG, PNG, WebP) is carried: a TIFF's own tags describe
            # its strips and size, not the photo
            carried = None
            if image.info.get("exif"):
                exif[_EXIF_ORIENTATION] = 1
                carried = exif.tobytes()[len(_EXIF_SIGNATURE):]
            dpi = image.info.get("dpi")
            return orientation, ImageMetadata(
                icc_profile=image.info.get("icc_profile") or None,
                dpi=(float(dpi[0]), float(dpi[1])) if dpi and all(dpi) else None,
                exif=carried,
            )
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, struct.error):
        return 1, ImageMetadata()


def _orient(array: np.ndarray, orientation: int) -> np.ndarray:
    """Transform stored pixels to display orientation (EXIF 2-8: mirrors and quarter turns)."""
    if orientation in (5, 6, 7, 8):
        array = array.swapaxes(0, 1)  # transpose; combined with the flips below gives the turns
    flip_rows = orientation in (3, 4, 7, 8)
    flip_cols = orientation in (2, 3, 6, 7)
    return array[:: -1 if flip_rows else 1, :: -1 if flip_cols else 1]


def read_image(path: str | os.PathLike, *, keep_alpha: bool = False) -> torch.Tensor:
    """Read an image as ``(H, W, C)`` RGB (``C`` = 3) or grey (``C`` = 1), ``uint8`` or ``uint16``.

    With ``keep_alpha`` an alpha channel is kept as the last channel (``C`` = 4 or 2); otherwise
    it is dropped (with a logged note).

    Raises :class:`~restore.errors.InputError` for a missing, empty, corrupt or unsupported file
    (unknown extension, float or signed samples).
    """
    path = Path(path)
    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        raise InputError(path, f"unsupported image type {path.suffix or '(no extension)'!r}")
    if not path.exists():
        raise InputError(path, "file not found")
    if path.is_dir():
        raise InputError(path, "is a folder, not an image file")
    data = path.read_bytes()
    if not data:
        raise InputError(path, "empty file")
    # imdecode rather than imread: no path-encoding issues and the bytes are read only once
    array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if array is None:
        raise InputError(path, "corrupt or unreadable image")
    if array.dtype not in (np.uint8, np.uint16):
        raise InputError(path, f"unsupported sample type {array.dtype} (only 8- and 16-bit integer images)")
    if array.ndim == 2:
        array = array[:, :, None]
    channels = array.shape[2]
    if channels not in (1, 2, 3, 4):
        raise InputError(path, f"unsupported channel count {channels}")
    if channels in (2, 4) and not keep_alpha:
        logger.info("%s: alpha channel dropped", path)
        array = array[:, :, : channels - 1]
    if array.shape[2] >= 3:
        array = np.concatenate([array[:, :, 2::-1], array[:, :, 3:]], axis=2)  # OpenCV is BGR(A)
    array = _orient(array, _read_header(data)[0])
    return torch.from_numpy(np.ascontiguousarray(array))


def read_image_metadata(path: str | os.PathLike) -> ImageMetadata:
    """The ICC profile, DPI and EXIF (orientation reset, see :class:`ImageMetadata`) of an image
    file that :func:`read_image` reads; empty when the header cannot be parsed."""
    return _read_header(Path(path).read_bytes())[1]


def _stamp_dpi(data: bytes, suffix: str, dpi: tuple[float, float]) -> bytes:
    """PNG or JPEG ``data`` as OpenCV encodes it, stating ``dpi`` (OpenCV has no setting for it
    there): a pHYs chunk after IHDR, or the density of the JFIF segment libjpeg writes first."""
    if suffix == ".png":
        ppm = struct.pack(">IIB", *(round(d * _INCHES_PER_METRE) for d in dpi), 1)  # unit 1: metre
        chunk = struct.pack(">I", len(ppm)) + b"pHYs" + ppm + struct.pack(">I", zlib.crc32(b"pHYs" + ppm))
        return data[:_PNG_HEADER_END] + chunk + data[_PNG_HEADER_END:]
    # SOI, APP0 marker and length, "JFIF\0", version (2 bytes), then units (1: inch) and densities
    if data[2:4] == b"\xff\xe0" and data[6:11] == b"JFIF\x00":
        density = struct.pack(">BHH", 1, *(min(round(d), 0xFFFF) for d in dpi))
        return data[:13] + density + data[18:]
    return data


def _encode(path: Path, array: np.ndarray, metadata: ImageMetadata) -> bytes:
    """``array`` (OpenCV's BGR(A) order) encoded as ``path``'s format, with what of ``metadata`` it holds."""
    suffix = path.suffix.lower()
    blobs = {cv2.IMAGE_METADATA_ICCP: metadata.icc_profile, cv2.IMAGE_METADATA_EXIF: metadata.exif}
    blobs = {kind: blob for kind, blob in blobs.items() if blob}
    dpi, lost = metadata.dpi, []
    if blobs and suffix not in EMBEDDED_METADATA_EXTENSIONS:
        lost, blobs = [_METADATA_NAMES[kind] for kind in blobs], {}
    if dpi and suffix not in DPI_EXTENSIONS:
        lost, dpi = [*lost, "DPI"], None
    if lost:
        logger.warning("%s: %s cannot hold the input's %s; dropped", path, suffix, " and ".join(lost))
    params = [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY] if suffix in JPEG_EXTENSIONS else []
    if dpi and suffix in TIFF_EXTENSIONS:
        x, y = (round(d) for d in dpi)
        params += [cv2.IMWRITE_TIFF_RESUNIT, 2, cv2.IMWRITE_TIFF_XDPI, x, cv2.IMWRITE_TIFF_YDPI, y]  # unit 2: inch
    chunks = [np.frombuffer(blob, np.uint8) for blob in blobs.values()]
    ok, encoded = cv2.imencodeWithMetadata(suffix, array, list(blobs), chunks, params)
    if not ok:
        raise OutputError(path, f"OpenCV could not encode {suffix}")
    data = encoded.tobytes()
    return data if not dpi or suffix in TIFF_EXTENSIONS else _stamp_dpi(data, suffix, dpi)


def write_image(path: str | os.PathLike, image: torch.Tensor, metadata: ImageMetadata | None = None) -> None:
    """Write ``(H, W, C)`` ``uint8``/``uint16`` to ``path``, atomically.

    ``C`` is 1 (grey), 2 (grey + alpha, written as RGBA: OpenCV has no grey-alpha encoder),
    3 (RGB) or 4 (RGBA); alpha needs a format that holds it (not JPEG). ``metadata`` (the input's
    :func:`read_image_metadata`) is written with the pixels: ICC profile and EXIF into PNG, JPEG
    and WebP, DPI into PNG, JPEG and TIFF; what the format cannot hold is dropped with a warning.

    The file is encoded in memory, written under a temporary name in the destination folder and
    renamed over ``path``, so a reader never sees a partial image. ``path`` needs an image suffix,
    16-bit ``.png`` or ``.tif`` and alpha a format other than JPEG (else
    :class:`~restore.errors.OutputError`); wrong shapes or types raise ``ValueError``, an
    unwritable destination ``OutputError``.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in IMAGE_EXTENSIONS:
        raise OutputError(path, f"cannot write an image as {suffix or 'a file without extension'}; use one of {', '.join(sorted(IMAGE_EXTENSIONS))}")
    if image.ndim != 3 or image.shape[2] not in (1, 2, 3, 4) or image.dtype not in (torch.uint8, torch.uint16):
        raise ValueError(f"{path}: expected (H, W, 1|2|3|4) uint8 or uint16, got {tuple(image.shape)} {image.dtype}")
    # a format that cannot hold the image is a fault of the output name, reported as such
    if image.shape[2] in (2, 4) and suffix in JPEG_EXTENSIONS:
        raise OutputError(path, f"{suffix} cannot hold an alpha channel; use .png or .tif")
    if image.dtype == torch.uint16 and suffix not in DEEP_IMAGE_EXTENSIONS:
        raise OutputError(path, f"16-bit images need .png or .tif, not {suffix}")
    array = image.detach().cpu().numpy()
    if array.shape[2] == 2:
        array = array[:, :, [0, 0, 0, 1]]
    array = np.concatenate([array[:, :, 2::-1], array[:, :, 3:]], axis=2) if array.shape[2] >= 3 else array[:, :, 0]
    data = _encode(path, np.ascontiguousarray(array), metadata or ImageMetadata())
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temporary.write_bytes(data)
        os.replace(temporary, path)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise OutputError(path, exc.strerror or str(exc)) from exc
