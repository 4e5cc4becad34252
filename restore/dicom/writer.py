"""Write derived DICOM instances and verify them by reading them back.

A derived instance is the source dataset with:

* new SOPInstanceUID and MediaStorageSOPInstanceUID (derived from the new SeriesInstanceUID and
  the source's SOPInstanceUID, so the same in every run of the same settings), the series' new
  SeriesInstanceUID;
* ImageType value 1 ``DERIVED`` (and per-frame FrameType of enhanced objects with it); value 2
  ``SECONDARY``, except for enhanced (functional-group) objects, whose IODs allow only
  ``PRIMARY``; SeriesDescription suffixed with ``[restore TASK]``; SeriesNumber plus the task's
  offset (:data:`SERIES_NUMBER_OFFSETS`);
* InstanceCreationDate/Time and ContentDate/Time of the derivation (in the source's
  TimezoneOffsetFromUTC when it has one);
* the derivation: DerivationDescription (task, model, clipped count), DerivationCodeSequence
  (:data:`DERIVATION_CODES`, CID 7203) and a Source Image Sequence pointing at the original
  instance (purpose: source image for image processing operation, CID 7202) -- at top level, or
  for enhanced objects in the Derivation Image functional group (shared by all frames);
* pixels in the original representation: same BitsAllocated/BitsStored/PixelRepresentation and
  rescale slope/intercept (per frame for enhanced objects), values rounded and clipped to the
  representable range (the count is returned); colour written as RGB (as YBR_RCT in JPEG 2000);
* the transfer syntax :func:`output_syntax` chooses for ``--compress``: lossless only (RLE,
  JPEG-LS, JPEG 2000, through pydicom's encoders), by default the input's when it is lossless
  and pydicom can encode it, else Explicit VR Little Endian; what is written decodes back to
  exactly the stored values (:func:`check_written`).

Patient, study, frame-of-reference, position and orientation tags are kept. For super-resolution
(``scale > 1``) Rows/Columns grow, every spatial calibration shrinks (:data:`PER_PIXEL_SPACINGS`,
at top level and in functional groups; ultrasound regions: bounds, reference pixel and physical
deltas) and ImagePositionPatient moves to the centre of the new first pixel (half-pixel-centre
convention), so the image covers the same patient space and measures the same; overlays and icons,
which no longer match the pixel grid, are dropped; an object with other attributes in pixels of
the original grid (:data:`PIXEL_BOUND`) is refused (:func:`resample_refusal`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
from pydicom import dcmread, dcmwrite
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID, UID, DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, JPEG2000Lossless,
    JPEGLSLossless, RLELossless, generate_uid,
)
from pydicom.valuerep import DSfloat

from restore.errors import OptionError, OutputError
from restore.io.dicom import frame_attribute, rescale

SERIES_NUMBER_OFFSETS: dict[str, int] = {"ct-denoise": 5000, "mr-denoise": 6000, "sr-x2": 7000}
# CID 7203 (Image Derivation) has no "denoising": smoothing is its nearest concept
DERIVATION_CODES: dict[str, Code] = {
    "ct-denoise": codes.DCM.Smoothing, "mr-denoise": codes.DCM.Smoothing, "sr-x2": codes.DCM.SpatialResampling,
}
# CID 7202 (Source Image Purposes of Reference)
SOURCE_PURPOSE: Code = codes.DCM.SourceImageForImageProcessingOperation
# distances between pixel centres (mm), divided by the scale wherever they appear
PER_PIXEL_SPACINGS = (
    "PixelSpacing", "ImagerPixelSpacing", "NominalScannedPixelSpacing", "ObjectPixelSpacingInCenterOfBeam",
    "ReconstructionPixelSpacing",
)
# attributes in pixels of the original grid that resampling does not update: the object is refused
PIXEL_BOUND: dict[str, str] = {
    "ShutterShape": "display shutter", "CollimatorShape": "collimator outline",
    "CenterOfCircularOutline": "circular outline", "VerticesOfThePolygonalOutline": "polygonal outline",
    "ExposureControlSensingRegionsSequence": "exposure control sensing regions",
    "MaskSubPixelShift": "mask pixel shift", "PixelShiftSequence": "pixel shift",
    "RegionPixelShiftSequence": "region pixel shift", "FramePixelShiftSequence": "frame pixel shift",
    "PixelDataAreaOriginRelativeToFOV": "pixel data area origin", "TotalPixelMatrixColumns": "tiled total pixel matrix",
    "ReferenceCoordinates": "ophthalmic frame location", "VerticesOfTheOutlineOfPupil": "pupil outline",
    "GraphicAnnotationSequence": "graphic annotation",
}
# lossy transfer syntaxes: once an image went through one, LossyImageCompression stays "01"
_LOSSY_SYNTAXES = {
    "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.81", "1.2.840.10008.1.2.4.91",
    "1.2.840.10008.1.2.4.203",
}
# ``--compress`` choices -> the lossless transfer syntax written ("keep": see output_syntax)
COMPRESSIONS: dict[str, UID | None] = {
    "keep": None, "none": ExplicitVRLittleEndian, "rle": RLELossless, "jpeg-ls": JPEGLSLossless, "j2k": JPEG2000Lossless,
}
# lossless syntaxes that "keep" writes again when the input has one (JPEG 2000 .90 and JPEG-LS .80
# are lossless by definition; .91 and .81 may be lossy)
_KEPT_SYNTAXES = (RLELossless, JPEGLSLossless, JPEG2000Lossless, DeflatedExplicitVRLittleEndian)


@dataclass(frozen=True)
class Derivation:
    """What produced the derived series: ``task`` (e.g. ``ct-denoise``), ``model`` name and a
    one-line ``method`` description; ``scale`` is the output/input size ratio; ``created``: when
    (every instance of a series gets the same InstanceCreation and Content date/time)."""

    task: str
    model: str
    method: str
    scale: int = 1
    created: datetime = field(default_factory=lambda: datetime.now().astimezone())  # aware


def output_syntax(source: UID, compress: str) -> tuple[UID, str | None]:
    """The transfer syntax a derived instance of a ``source``-syntax input is written in for
    ``--compress`` (a key of :data:`COMPRESSIONS`), and, when ``keep`` cannot keep the input's,
    why (one line for the report). Raises ``OptionError`` when the chosen encoder is not installed."""
    from pydicom.pixels import get_encoder

    if compress != "keep":
        syntax = COMPRESSIONS[compress]
        if syntax.is_compressed and not (encoder := get_encoder(syntax)).is_available:
            raise OptionError(None, f"--compress {compress}: install {'; '.join(encoder.missing_dependencies)}")
        return syntax, None
    source = UID(source)
    if not (source.is_compressed or source.is_deflated):
        return ExplicitVRLittleEndian, None  # uncompressed in, uncompressed out
    if source in _KEPT_SYNTAXES:
        if not source.is_compressed or (encoder := get_encoder(source)).is_available:
            return source, None
        why = f"needs an encoder that is not installed ({'; '.join(encoder.missing_dependencies)})"
    else:
        why = "is (or may be) lossy" if str(source) in _LOSSY_SYNTAXES else "has no encoder in pydicom"
    return ExplicitVRLittleEndian, f"written uncompressed: the input's transfer syntax {source.name} {why}"


def value_range(ds: Dataset) -> tuple[int, int]:
    """Smallest and largest stored value the dataset's BitsStored / PixelRepresentation allow."""
    bits = int(ds.BitsStored)
    if int(ds.get("PixelRepresentation", 0)):
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def encode_stored(values: np.ndarray, ds: Dataset, units: str) -> tuple[np.ndarray, int]:
    """Physical values ``(F, H, W[, 3])`` -> (stored array in the original dtype, number clipped).

    HU are mapped back through each frame's rescale slope/intercept; other units are stored
    values already. NaN counts as clipped (stored as the range minimum).
    """
    v = values.astype(np.float64)
    if units == "HU":
        for f in range(v.shape[0]):
            slope, intercept = rescale(ds, f)
            v[f] = (v[f] - intercept) / slope
    v = np.rint(v)
    lo, hi = value_range(ds)
    bad = ~np.isfinite(v)
    clipped = int(bad.sum() + (v[~bad] < lo).sum() + (v[~bad] > hi).sum())
    v[bad] = lo
    signed = bool(int(ds.get("PixelRepresentation", 0)))
    dtype = {(8, False): np.uint8, (8, True): np.int8, (16, False): np.uint16, (16, True): np.int16}[
        (int(ds.BitsAllocated), signed)
    ]
    return np.clip(v, lo, hi).astype(dtype), clipped


def derive(source: Dataset, stored: np.ndarray, *, series_uid: str, derivation: Derivation, clipped: int,
           syntax: UID = ExplicitVRLittleEndian) -> Dataset:
    """Turn ``source`` (a dataset read from an input file; modified in place) into the derived
    instance holding ``stored`` (``(F, H, W[, 3])``, from :func:`encode_stored`), its pixels
    encoded in ``syntax`` (from :func:`output_syntax`)."""
    ds = source
    original_class, original_uid = str(ds.SOPClassUID), str(ds.SOPInstanceUID)
    original_series = str(ds.SeriesInstanceUID)
    lossy = str(ds.file_meta.TransferSyntaxUID) in _LOSSY_SYNTAXES
    if derivation.scale != 1:
        _rescale_grid(ds, derivation.scale)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    samples = stored.shape[-1] if stored.ndim == 4 else 1
    photometric = "RGB" if samples == 3 else str(ds.PhotometricInterpretation)
    frames = stored if int(ds.get("NumberOfFrames", 1) or 1) > 1 else stored[0]
    ds.set_pixel_data(frames, photometric, int(ds.BitsStored), generate_instance_uid=False)
    if syntax.is_compressed:
        if syntax == JPEG2000Lossless and samples == 3:
            # the reversible colour transform, which the ultrasound IODs require of lossless JPEG 2000
            # colour; pixels go in (and decode back) as RGB
            ds.PhotometricInterpretation = "YBR_RCT"
        ds.compress(syntax, frames, generate_instance_uid=False)  # lossless: every syntax COMPRESSIONS names
    else:
        ds.file_meta.TransferSyntaxUID = syntax
    for tag in ("SmallestImagePixelValue", "LargestImagePixelValue"):  # stale after processing
        ds.pop(tag, None)
    if lossy:
        ds.LossyImageCompression = "01"

    ds.SOPInstanceUID = generate_uid(entropy_srcs=[series_uid, original_uid])
    ds.SeriesInstanceUID = series_uid
    enhanced = "SharedFunctionalGroupsSequence" in ds or "PerFrameFunctionalGroupsSequence" in ds
    image_type = list(ds.get("ImageType", []) or [])
    # enhanced IODs allow only PRIMARY as value 2; their frames repeat value 1 as FrameType
    ds.ImageType = ["DERIVED", "PRIMARY" if enhanced else "SECONDARY", *image_type[2:]]
    for item in _functional_group_items(ds):
        if "FrameType" in item:
            item.FrameType = ["DERIVED", *list(item.FrameType)[1:]]
    suffix = f" [restore {derivation.task}]"
    ds.SeriesDescription = (str(ds.get("SeriesDescription", "")) or ds.get("Modality", "image"))[: 64 - len(suffix)] + suffix
    ds.SeriesNumber = int(ds.get("SeriesNumber") or 0) + SERIES_NUMBER_OFFSETS[derivation.task]
    when = derivation.created.astimezone(_source_timezone(ds))
    ds.InstanceCreationDate = ds.ContentDate = when.strftime("%Y%m%d")
    ds.InstanceCreationTime = ds.ContentTime = when.strftime("%H%M%S.%f")

    _record_derivation(ds, derivation, clipped, (original_class, original_uid, original_series), enhanced)

    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    return ds


def _record_derivation(ds: Dataset, derivation: Derivation, clipped: int, source: tuple[str, str, str],
                       enhanced: bool) -> None:
    """Say in ``ds`` what produced it from ``source`` (its SOP Class, SOP Instance and Series UIDs):
    at top level, or for ``enhanced`` objects in the shared Derivation Image functional group, with
    the Source Image Evidence Sequence those IODs require."""
    sop_class, sop_uid, series_uid = source
    item = Dataset()
    item.DerivationDescription = (
        f"restore {derivation.task} with model {derivation.model} ({derivation.method}); "
        f"{clipped} value(s) clipped to the stored range"
    )[:1024]
    item.DerivationCodeSequence = Sequence([_code_item(DERIVATION_CODES[derivation.task])])
    ref = _reference(sop_class, sop_uid)
    ref.PurposeOfReferenceCodeSequence = Sequence([_code_item(SOURCE_PURPOSE)])
    item.SourceImageSequence = Sequence([ref])
    for keyword in ("DerivationDescription", "DerivationCodeSequence", "SourceImageSequence"):
        ds.pop(keyword, None)
    if enhanced:
        for group in ds.get("PerFrameFunctionalGroupsSequence", []):
            group.pop("DerivationImageSequence", None)
        if not ds.get("SharedFunctionalGroupsSequence"):
            ds.SharedFunctionalGroupsSequence = Sequence([Dataset()])
        ds.SharedFunctionalGroupsSequence[0].DerivationImageSequence = Sequence([item])
        # the IODs list every instance the Source Image Sequences name, study and series first
        series = Dataset()
        series.SeriesInstanceUID = series_uid
        series.ReferencedSOPSequence = Sequence([_reference(sop_class, sop_uid)])
        evidence = Dataset()
        evidence.StudyInstanceUID = ds.StudyInstanceUID
        evidence.ReferencedSeriesSequence = Sequence([series])
        ds.SourceImageEvidenceSequence = Sequence([evidence])
    else:
        ds.update(item)


def derivation_item(ds: Dataset) -> Dataset:
    """The dataset that holds a derived instance's DerivationDescription, DerivationCodeSequence and
    SourceImageSequence: ``ds``, or for enhanced objects its shared Derivation Image functional group."""
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared and shared[0].get("DerivationImageSequence"):
        return shared[0].DerivationImageSequence[0]
    return ds


def _reference(sop_class: str, sop_uid: str) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = sop_class, sop_uid
    return item


def _code_item(code: Code) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = code.value, code.scheme_designator, code.meaning
    return item


def _source_timezone(ds: Dataset) -> timezone | None:
    """The source's TimezoneOffsetFromUTC (``+HHMM``/``-HHMM``) -> timezone; None (local) if absent or malformed."""
    raw = str(ds.get("TimezoneOffsetFromUTC", "")).strip()
    if len(raw) != 5 or raw[0] not in "+-" or not raw[1:].isdigit():
        return None
    minutes = int(raw[1:3]) * 60 + int(raw[3:])
    return timezone(timedelta(minutes=minutes if raw[0] == "+" else -minutes))


def _functional_group_items(ds: Dataset) -> Iterator[Dataset]:
    """The items of every functional group macro (shared and per frame) of an enhanced object."""
    for seq_name in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        for group in ds.get(seq_name, []):
            for elem in group:
                if elem.VR == "SQ":
                    yield from elem.value


def resample_refusal(ds: Dataset) -> str | None:
    """Why ``ds`` cannot be written at another scale (an attribute in pixels of the original grid
    that :func:`derive` does not update), or None."""
    for elem in ds.iterall():
        if elem.keyword in PIXEL_BOUND:
            return (f"not resampled: its {PIXEL_BOUND[elem.keyword]} ({elem.keyword}) is in pixels of the original "
                    "image and would no longer match")
    return None


def _rescale_grid(ds: Dataset, scale: int) -> None:
    """Spacings / scale, ultrasound regions onto the new grid, IPP moved to the centre of the new
    first pixel; overlays and icons dropped."""
    shift = (1.0 / scale - 1.0) / 2.0  # in old pixels: -0.25 for x2

    def move(item: Dataset, spacing, iop) -> None:
        if "ImagePositionPatient" in item and spacing is not None and iop is not None:
            row_dir, col_dir = np.array(iop[:3], float), np.array(iop[3:], float)
            row_mm, col_mm = spacing
            ipp = np.array(item.ImagePositionPatient, float) + shift * (col_mm * row_dir + row_mm * col_dir)
            item.ImagePositionPatient = [round(float(v), 6) for v in ipp]

    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    old_spacing = [
        tuple(float(v) for v in s) if (s := ds.get("PixelSpacing") or frame_attribute(ds, f, "PixelMeasuresSequence", "PixelSpacing")) else None
        for f in range(n_frames)
    ]
    iops = [ds.get("ImageOrientationPatient") or frame_attribute(ds, f, "PlaneOrientationSequence", "ImageOrientationPatient") for f in range(n_frames)]
    move(ds, old_spacing[0], iops[0])
    for f, group in enumerate(ds.get("PerFrameFunctionalGroupsSequence", [])):
        for pos in group.get("PlanePositionSequence", []):
            move(pos, old_spacing[f], iops[f])
    for item in (ds, *_functional_group_items(ds)):
        for keyword in PER_PIXEL_SPACINGS:
            if item.get(keyword):
                item[keyword].value = [DSfloat(float(v) / scale, auto_format=True) if item[keyword].VR == "DS"
                                       else float(v) / scale for v in item[keyword].value]
    for region in ds.get("SequenceOfUltrasoundRegions", []):
        _rescale_region(region, scale)
    for tag in [t for t in ds.keys() if 0x6000 <= t.group <= 0x601E and t.group % 2 == 0]:
        del ds[tag]
    ds.pop("IconImageSequence", None)


def _rescale_region(region: Dataset, scale: int) -> None:
    """One item of the Sequence of Ultrasound Regions onto the grid ``scale`` times finer.

    Old pixel ``i`` becomes new pixels ``s*i .. s*i + s - 1``: a region's first pixel is ``s*i``,
    its last ``s*i + s - 1``; a point (pixel centre) lands at ``s*i + (s - 1) / 2``, stored as the
    integer ``s*i + (s - 1) // 2``; the reference pixel's physical value absorbs the difference
    (0 when absent, as viewers read it), so every pixel keeps its physical coordinate.
    """
    for axis in "XY":
        first, last = f"RegionLocationMin{axis}0", f"RegionLocationMax{axis}1"
        if first in region:
            region[first].value = scale * int(region[first].value)
        if last in region:
            region[last].value = scale * int(region[last].value) + scale - 1
        points = (f"ReferencePixel{axis}0", f"DopplerSampleVolume{axis}Position", f"DopplerSampleVolume{axis}PositionRetired",
                  f"TMLinePosition{axis}0", f"TMLinePosition{axis}1", f"TMLinePosition{axis}0Retired", f"TMLinePosition{axis}1Retired")
        for keyword in points:
            if keyword in region:
                region[keyword].value = scale * int(region[keyword].value) + (scale - 1) // 2
        delta = f"PhysicalDelta{axis}"
        if delta in region:
            region[delta].value = float(region[delta].value) / scale
            if f"ReferencePixel{axis}0" in region:
                offset = (scale - 1) // 2 - (scale - 1) / 2  # new pixels from the point to where it is stored
                physical = f"ReferencePixelPhysicalValue{axis}"
                setattr(region, physical, float(region.get(physical, 0.0)) + offset * float(region[delta].value))


def write_verified(ds: Dataset, path: Path, stored: np.ndarray) -> None:
    """Write ``ds`` to ``path`` atomically (temporary name, then rename) after re-reading the
    temporary file and checking UIDs, syntax, derivation tags and that the pixels equal ``stored``.

    Raises ``OutputError(path, cause)``; nothing is left at ``path`` when a check fails.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial")
    try:
        # explicit encoding arguments: a dataset read from a big-endian file is re-encoded, not refused
        dcmwrite(tmp, ds, implicit_vr=False, little_endian=True, enforce_file_format=True)
        check_written(tmp, ds, stored)
        os.replace(tmp, path)
    except OutputError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputError(path, exc.cause) from None
    except Exception as exc:  # noqa: BLE001 - disk full, permissions, encoder errors
        tmp.unlink(missing_ok=True)
        raise OutputError(path, f"cannot write ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None


def check_written(path: Path, expected: Dataset, stored: np.ndarray) -> None:
    """Re-read ``path`` strictly (no ``force``) and compare it with what was meant to be written."""
    try:
        back = dcmread(path)
        pixels = back.pixel_array
    except Exception as exc:  # noqa: BLE001 - anything unreadable fails verification
        raise OutputError(path, f"written file does not read back ({type(exc).__name__})") from None
    problems = []
    if back.file_meta.TransferSyntaxUID != expected.file_meta.TransferSyntaxUID:
        problems.append(f"transfer syntax is not {expected.file_meta.TransferSyntaxUID.name}")
    if back.file_meta.MediaStorageSOPInstanceUID != back.SOPInstanceUID or back.SOPInstanceUID != expected.SOPInstanceUID:
        problems.append("SOP Instance UID mismatch")
    if back.SeriesInstanceUID != expected.SeriesInstanceUID:
        problems.append("Series Instance UID mismatch")
    if list(back.ImageType)[:1] != ["DERIVED"] or "SourceImageSequence" not in derivation_item(back):
        problems.append("derivation tags missing")
    if pixels.size != stored.size or not np.array_equal(pixels.reshape(stored.shape), stored):
        problems.append("pixel data differ from what was written")
    if problems:
        raise OutputError(path, "verification failed: " + "; ".join(problems))
