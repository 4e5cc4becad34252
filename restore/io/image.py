"""Still images with OpenCV: read as ``(H, W, C)`` RGB tensors, write atomically.

Images are ``uint8`` or ``uint16`` with ``C`` in {1, 3} (grey or RGB), plus an alpha channel
(``C`` in {2, 4}) when read with ``keep_alpha``. The EXIF orientation is applied (OpenCV ignores it
when reading unchanged depth and channels, so we read the tag from the header with Pillow and
transpose ourselves).
"""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path

import cv2
import numpy as np
import torch

from ..errors import InputError, OutputError

logger = logging.getLogger("restore.io")

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp"}
VIDEO_EXTENSIONS = {".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v", ".ts", ".mts", ".mpg", ".mpeg", ".wmv", ".flv"}
# formats whose OpenCV encoders take 16-bit samples
_DEEP_EXTENSIONS = {".png", ".tif", ".tiff"}
# formats without an alpha channel
_NO_ALPHA_EXTENSIONS = {".jpg", ".jpeg"}
_EXIF_ORIENTATION = 0x0112
_JPEG_QUALITY = 95


def is_image(path: str | os.PathLike) -> bool:
    """Whether ``path`` has an image extension (case-insensitive); the file is not opened."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def is_video(path: str | os.PathLike) -> bool:
    """Whether ``path`` has a video extension (case-insensitive); the file is not opened."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def _exif_orientation(data: bytes) -> int:
    """EXIF orientation tag (1-8; 1 when absent), read from the header without decoding pixels."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            return int(image.getexif().get(_EXIF_ORIENTATION, 1))
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return 1


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
    array = _orient(array, _exif_orientation(data))
    return torch.from_numpy(np.ascontiguousarray(array))


def write_image(path: str | os.PathLike, image: torch.Tensor) -> None:
    """Write ``(H, W, C)`` ``uint8``/``uint16`` to ``path``, atomically.

    ``C`` is 1 (grey), 2 (grey + alpha, written as RGBA: OpenCV has no grey-alpha encoder),
    3 (RGB) or 4 (RGBA); alpha needs a format that holds it (not JPEG).

    The file is encoded in memory, written under a temporary name in the destination folder and
    renamed over ``path``, so a reader never sees a partial image. 16-bit needs ``.png`` or
    ``.tif`` and alpha a format other than JPEG (else :class:`~restore.errors.OutputError`); wrong
    shapes or types raise ``ValueError``, an unwritable destination ``OutputError``.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in IMAGE_EXTENSIONS:
        raise ValueError(f"{path}: unsupported image type {suffix or '(no extension)'!r}")
    if image.ndim != 3 or image.shape[2] not in (1, 2, 3, 4) or image.dtype not in (torch.uint8, torch.uint16):
        raise ValueError(f"{path}: expected (H, W, 1|2|3|4) uint8 or uint16, got {tuple(image.shape)} {image.dtype}")
    # a format that cannot hold the image is a fault of the output name, reported as such
    if image.shape[2] in (2, 4) and suffix in _NO_ALPHA_EXTENSIONS:
        raise OutputError(path, f"{suffix} cannot hold an alpha channel; use .png or .tif")
    if image.dtype == torch.uint16 and suffix not in _DEEP_EXTENSIONS:
        raise OutputError(path, f"16-bit images need .png or .tif, not {suffix}")
    array = image.detach().cpu().numpy()
    if array.shape[2] == 2:
        array = array[:, :, [0, 0, 0, 1]]
    array = np.concatenate([array[:, :, 2::-1], array[:, :, 3:]], axis=2) if array.shape[2] >= 3 else array[:, :, 0]
    params = [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY] if suffix in (".jpg", ".jpeg") else []
    ok, encoded = cv2.imencode(suffix, np.ascontiguousarray(array), params)
    if not ok:
        raise OutputError(path, f"OpenCV could not encode {suffix}")
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temporary.write_bytes(encoded.tobytes())
        os.replace(temporary, path)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise OutputError(path, exc.strerror or str(exc)) from exc
