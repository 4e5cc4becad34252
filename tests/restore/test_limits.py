"""Declared sizes are read and refused before anything is decoded (decompression bombs)."""

from __future__ import annotations

import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from restore.errors import InputError
from restore.limits import Limits, check_dicom_upload, check_image


def png_bomb(path: Path, side: int) -> Path:
    """A valid grey PNG of ``side`` x ``side`` black pixels, a few hundred KB on disk."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    deflate, row = zlib.compressobj(9), bytes(side + 1)  # filter byte + one row of zeros
    idat = b"".join(deflate.compress(row) for _ in range(side)) + deflate.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def dicom_declaring(path: Path, rows: int, columns: int, frames: int = 1, deflated_bytes: int = 0) -> Path:
    """A CT file whose header declares ``rows x columns x frames`` (its pixel data is tiny and
    encapsulated, so nothing is allocated until someone decodes it). ``deflated_bytes``: instead, a
    deflated-syntax file whose data set inflates to that many bytes."""
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.encaps import encapsulate
    from pydicom.uid import DeflatedExplicitVRLittleEndian, RLELossless

    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    if deflated_bytes:
        ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
        ds.add_new(0x00291010, "OB", bytes(deflated_bytes))  # private padding: zeros deflate a thousandfold
        ds.save_as(path, enforce_file_format=True)
        return path
    ds.Rows, ds.Columns, ds.NumberOfFrames = rows, columns, frames
    ds.file_meta.TransferSyntaxUID = RLELossless
    ds.PixelData = encapsulate([b"\x00" * 64] * frames)
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    return path


def test_image_header_size_refused_without_decoding(tmp_path):
    bomb = png_bomb(tmp_path / "bomb.png", 12000)
    assert bomb.stat().st_size < 400_000
    with pytest.raises(InputError, match="12000x12000"):
        check_image(bomb, Limits())


def test_image_within_limits_passes(tmp_path):
    import cv2

    cv2.imwrite(str(tmp_path / "ok.png"), np.zeros((20, 30, 3), np.uint8))
    assert check_image(tmp_path / "ok.png", Limits()) == (30, 20)


def test_dicom_declared_voxels_refused(tmp_path):
    big = dicom_declaring(tmp_path / "big.dcm", 4096, 4096, frames=8)
    with pytest.raises(InputError, match="voxels"):
        check_dicom_upload(big, Limits(max_pixel_frames=1 << 26))
    assert check_dicom_upload(dicom_declaring(tmp_path / "small.dcm", 64, 64), Limits()) == 64 * 64


def test_zip_member_count_and_inflated_size_refused(tmp_path):
    many = tmp_path / "many.zip"
    with zipfile.ZipFile(many, "w") as zf:
        for n in range(11):
            zf.writestr(f"IM{n}.dcm", b"")
    with pytest.raises(InputError, match="11 files"):
        check_dicom_upload(many, Limits(max_zip_members=10))
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("IM0.dcm", bytes(64 << 20))
    assert bomb.stat().st_size < 200_000
    with pytest.raises(InputError, match="MiB"):
        check_dicom_upload(bomb, Limits(max_zip_bytes=32 << 20))


def test_deflated_dicom_inflation_is_counted_not_kept(tmp_path):
    bomb = dicom_declaring(tmp_path / "deflated.dcm", 0, 0, deflated_bytes=40 << 20)
    assert bomb.stat().st_size < 200_000
    with pytest.raises(InputError, match="inflates"):
        check_dicom_upload(bomb, Limits(max_inflated_bytes=16 << 20))
    assert check_dicom_upload(bomb, Limits(max_inflated_bytes=64 << 20)) == 128 * 128
