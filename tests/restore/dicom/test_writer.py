"""restore.dicom.writer: stored-value encoding with clipping, derived tags, verified atomic writes."""

from __future__ import annotations

import copy
from datetime import datetime, timedelta, timezone

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from restore.dicom.writer import (
    Derivation, check_written, derive, encode_stored, output_syntax, resample_refusal, write_verified,
)
from restore.errors import OutputError
from restore.io.dicom import frame_attribute
from tests.dicom_study import bundled, cr, enhanced, us_regions


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


def _derived(ds: pydicom.Dataset, task: str = "sr-x2", **fields) -> pydicom.Dataset:
    """``ds`` through :func:`derive` as the runner writes it, pixels zero at the task's scale."""
    scale = 2 if task == "sr-x2" else 1
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    shape = (frames, ds.Rows * scale, ds.Columns * scale) + ((3,) if ds.SamplesPerPixel == 3 else ())
    stored = np.zeros(shape, ds.pixel_array.dtype)
    return derive(ds, stored, series_uid=pydicom.uid.generate_uid(),
                  derivation=Derivation(task, "bicubic", "test", scale, **fields), clipped=0)


def test_sr_x2_halves_every_spatial_calibration():
    # only PixelSpacing was halved: CR ImagerPixelSpacing, SC NominalScannedPixelSpacing and
    # enhanced per-frame Pixel Measures stayed, so measurements came out 2x too long
    assert [float(v) for v in _derived(cr()).ImagerPixelSpacing] == [0.1, 0.1]
    sc = bundled("SC_rgb_rle.dcm")
    sc.NominalScannedPixelSpacing = [0.5, 0.25]
    assert [float(v) for v in _derived(sc).NominalScannedPixelSpacing] == [0.25, 0.125]

    ct = enhanced("CT")
    spacing = [float(v) for v in ct.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing]
    per_frame = enhanced("CT")  # Pixel Measures per frame instead of shared
    measures = per_frame.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence
    del per_frame.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence
    for group in per_frame.PerFrameFunctionalGroupsSequence:
        group.PixelMeasuresSequence = pydicom.sequence.Sequence([copy.deepcopy(measures[0])])
    for derived in (_derived(ct), _derived(per_frame)):
        for f in range(2):
            got = frame_attribute(derived, f, "PixelMeasuresSequence", "PixelSpacing")
            assert [float(v) for v in got] == pytest.approx([v / 2 for v in spacing])


def test_sr_x2_maps_ultrasound_regions_onto_the_new_grid():
    # SequenceOfUltrasoundRegions stayed as it was: a distance measured in the derived image came
    # out 2x too long and the regions covered a quarter of the image
    us = us_regions()
    source = us.SequenceOfUltrasoundRegions[0]
    source.ReferencePixelX0, source.ReferencePixelPhysicalValueX = 10, 0.0  # depth 0 at column 94
    old = {k: source.get(k) for k in ("RegionLocationMinX0", "RegionLocationMaxX1", "RegionLocationMinY0",
                                      "RegionLocationMaxY1", "ReferencePixelX0", "ReferencePixelPhysicalValueX",
                                      "PhysicalDeltaX", "PhysicalDeltaY")}
    (region,) = _derived(us).SequenceOfUltrasoundRegions
    assert (region.RegionLocationMinX0, region.RegionLocationMaxX1) == (2 * old["RegionLocationMinX0"],
                                                                         2 * old["RegionLocationMaxX1"] + 1)
    assert (region.RegionLocationMinY0, region.RegionLocationMaxY1) == (2 * old["RegionLocationMinY0"],
                                                                         2 * old["RegionLocationMaxY1"] + 1)
    assert region.PhysicalDeltaY == old["PhysicalDeltaY"] / 2

    def physical(item, x: float) -> float:
        """The physical x of image column ``x`` (a pixel centre); the reference pixel is relative to the region."""
        return item.get("ReferencePixelPhysicalValueX") + (
            x - item.get("RegionLocationMinX0") - item.get("ReferencePixelX0")) * item.get("PhysicalDeltaX")

    for column in (84, 100, 300):  # old pixel centre c is new coordinate 2c + 0.5
        assert physical(region, 2 * column + 0.5) == pytest.approx(physical(old, column), abs=1e-12)


def test_objects_with_other_pixel_coordinates_are_refused_for_sr_x2():
    assert resample_refusal(cr()) is None
    shuttered = cr()
    shuttered.ShutterShape = "RECTANGULAR"
    shuttered.ShutterLeftVerticalEdge, shuttered.ShutterRightVerticalEdge = 5, 60
    shuttered.ShutterUpperHorizontalEdge, shuttered.ShutterLowerHorizontalEdge = 5, 60
    assert resample_refusal(shuttered) == (
        "not resampled: its display shutter (ShutterShape) is in pixels of the original image and would no longer match")


@pytest.mark.parametrize("modality", ["CT", "MR"])
def test_enhanced_objects_are_derived_frame_by_frame_and_in_their_functional_groups(modality):
    # ImageType became DERIVED\SECONDARY while every FrameType stayed ORIGINAL\PRIMARY, and the
    # derivation sat at top level, outside the Derivation Image functional group
    source = enhanced(modality)
    source_uid, source_series = source.SOPInstanceUID, source.SeriesInstanceUID
    ds = _derived(source, f"{modality.lower()}-denoise")
    assert list(ds.ImageType) == ["DERIVED", "PRIMARY", "AXIAL", "NONE"]
    frame_types = [item.FrameType for group in ds.SharedFunctionalGroupsSequence
                   for item in group[f"{modality}ImageFrameTypeSequence"].value]
    assert frame_types and all(list(t) == list(ds.ImageType) for t in frame_types)
    for keyword in ("DerivationDescription", "DerivationCodeSequence", "SourceImageSequence"):
        assert keyword not in ds
    (derivation,) = ds.SharedFunctionalGroupsSequence[0].DerivationImageSequence
    assert "with model bicubic" in derivation.DerivationDescription
    assert derivation.DerivationCodeSequence[0].CodeValue == "113087"  # Smoothing
    (ref,) = derivation.SourceImageSequence
    assert ref.ReferencedSOPInstanceUID == source_uid
    assert ref.PurposeOfReferenceCodeSequence[0].CodeValue == "121322"
    (evidence,) = ds.SourceImageEvidenceSequence
    assert evidence.ReferencedSeriesSequence[0].SeriesInstanceUID == source_series
    assert evidence.ReferencedSeriesSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == source_uid


def test_derived_instances_are_dated_and_coded_for_what_this_tool_did():
    # ContentDate/Time were the source's, InstanceCreationDate/Time never set, and a J2K source's
    # "Lossy Compression" derivation code was kept as if it described this derivation
    created = datetime(2026, 3, 4, 17, 5, 6, 123456, tzinfo=timezone.utc)
    denoised = _derived(ct(), "ct-denoise", created=created)  # TimezoneOffsetFromUTC -0500
    assert (denoised.InstanceCreationDate, denoised.InstanceCreationTime) == ("20260304", "120506.123456")
    assert (denoised.ContentDate, denoised.ContentTime) == ("20260304", "120506.123456")
    assert [(c.CodingSchemeDesignator, c.CodeValue, c.CodeMeaning) for c in denoised.DerivationCodeSequence] == [
        ("DCM", "113087", "Smoothing")]
    nm = bundled("JPEG2000.dcm")
    assert [c.CodeMeaning for c in nm.DerivationCodeSequence] == ["Lossy Compression"]
    nm = _derived(nm, created=created.astimezone(timezone(timedelta(hours=9))))  # the same instant
    assert (nm.ContentDate, nm.ContentTime) == ("20260304", "130506.123456")  # in its -0400
    assert [(c.CodeValue, c.CodeMeaning) for c in nm.DerivationCodeSequence] == [("113085", "Spatial resampling")]
    assert nm.LossyImageCompression == "01"  # what the source went through stays said


def test_output_syntax_keeps_a_lossless_input_syntax_and_never_re_encodes_a_lossy_one():
    # every output was Explicit VR Little Endian, 1.5x to 5.6x the size of a compressed input
    uid = pydicom.uid
    for kept in (uid.RLELossless, uid.JPEGLSLossless, uid.JPEG2000Lossless, uid.DeflatedExplicitVRLittleEndian):
        assert output_syntax(kept, "keep") == (kept, None)
    for native in (uid.ImplicitVRLittleEndian, uid.ExplicitVRLittleEndian, uid.ExplicitVRBigEndian):
        assert output_syntax(native, "keep") == (uid.ExplicitVRLittleEndian, None)
    for lossy in (uid.JPEGBaseline8Bit, uid.JPEG2000, uid.JPEGLSNearLossless):
        assert output_syntax(lossy, "keep") == (
            uid.ExplicitVRLittleEndian, f"written uncompressed: the input's transfer syntax {lossy.name} is (or may be) lossy")
    syntax, why = output_syntax(uid.JPEGLosslessSV1, "keep")
    assert syntax == uid.ExplicitVRLittleEndian and why.endswith("has no encoder in pydicom")
    for compress, syntax in (("none", uid.ExplicitVRLittleEndian), ("rle", uid.RLELossless),
                             ("jpeg-ls", uid.JPEGLSLossless), ("j2k", uid.JPEG2000Lossless)):
        assert output_syntax(uid.JPEGBaseline8Bit, compress) == (syntax, None)  # lossless, whatever the input
