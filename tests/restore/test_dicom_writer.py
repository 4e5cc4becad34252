"""restore.dicom.writer: stored-value encoding with clipping, derived tags, verified atomic writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from restore.dicom.writer import Derivation, check_written, derive, encode_stored, write_verified
from restore.errors import OutputError


def ct() -> pydicom.Dataset:
    return pydicom.dcmread(get_testdata_file("CT_small.dcm"))


def test_encode_clips_to_the_stored_range_and_counts():
    ds = ct()  # int16, BitsStored 16, slope 1, intercept -1024
    hu = np.array([[[-1024.0, 0.0, 40000.0, -40000.0, np.nan]]], dtype=np.float32)
    stored, clipped = encode_stored(hu, ds, "HU")
    assert stored.dtype == np.int16 and clipped == 3
    assert stored.tolist() == [[[0, 1024, 32767, -32768, -32768]]]


def test_derived_file_is_verified_and_written_atomically(tmp_path):
    ds = ct()
    original_uid = ds.SOPInstanceUID
    stored = ds.pixel_array[None].copy()
    out = derive(ds, stored, series_uid=pydicom.uid.generate_uid(),
                 derivation=Derivation("ct-denoise", "identity", "test"), clipped=0)
    path = tmp_path / "IM00001.dcm"
    write_verified(out, path, stored)
    back = pydicom.dcmread(path)
    assert back.SourceImageSequence[0].ReferencedSOPInstanceUID == original_uid
    assert back.SeriesNumber == int(ct().SeriesNumber) + 5000 and "identity" in back.DerivationDescription
    assert sorted(p.name for p in tmp_path.iterdir()) == ["IM00001.dcm"]
    with pytest.raises(OutputError, match="pixel data differ"):
        check_written(path, out, stored + 1)
