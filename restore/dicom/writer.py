"""Write derived DICOM instances and verify them by reading them back.

A derived instance is the source dataset with:

* new SOPInstanceUID and MediaStorageSOPInstanceUID, the series' new SeriesInstanceUID;
* ImageType ``DERIVED\\SECONDARY\\<original values 3+>``; SeriesDescription suffixed with
  ``[restore TASK]``; SeriesNumber plus the task's offset (:data:`SERIES_NUMBER_OFFSETS`);
* DerivationDescription (task, model, clipped count) and a Source Image Sequence pointing at the
  original instance;
* pixels in the original representation: same BitsAllocated/BitsStored/PixelRepresentation and
  rescale slope/intercept (per frame for enhanced objects), values rounded and clipped to the
  representable range (the count is returned); colour written as RGB;
* Explicit VR Little Endian, whatever the input syntax.

Patient, study, frame-of-reference, position and orientation tags are kept. For super-resolution
(``scale > 1``) Rows/Columns grow, PixelSpacing shrinks and ImagePositionPatient moves to the
centre of the new first pixel (half-pixel-centre convention), so the image covers the same
patient space; overlays and icons, which no longer match the pixel grid, are dropped.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom import dcmread, dcmwrite
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID, generate_uid

from restore.errors import OutputError
from restore.io.dicom import frame_attribute, rescale

SERIES_NUMBER_OFFSETS: dict[str, int] = {"ct-denoise": 5000, "mr-denoise": 6000, "sr-x2": 7000}
# lossy transfer syntaxes: once an image went through one, LossyImageCompression stays "01"
_LOSSY_SYNTAXES = {
    "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.81", "1.2.840.10008.1.2.4.91",
    "1.2.840.10008.1.2.4.203",
}


@dataclass(frozen=True)
class Derivation:
    """What produced the derived series: ``task`` (e.g. ``ct-denoise``), ``model`` name and a
    one-line ``method`` description; ``scale`` is the output/input size ratio."""

    task: str
    model: str
    method: str
    scale: int = 1


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


def derive(source: Dataset, stored: np.ndarray, *, series_uid: str, derivation: Derivation, clipped: int) -> Dataset:
    """Turn ``source`` (a dataset read from an input file; modified in place) into the derived
    instance holding ``stored`` (``(F, H, W[, 3])``, from :func:`encode_stored`)."""
    ds = source
    original_class, original_uid = str(ds.SOPClassUID), str(ds.SOPInstanceUID)
    lossy = str(ds.file_meta.TransferSyntaxUID) in _LOSSY_SYNTAXES
    if derivation.scale != 1:
        _rescale_grid(ds, derivation.scale)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    samples = stored.shape[-1] if stored.ndim == 4 else 1
    photometric = "RGB" if samples == 3 else str(ds.PhotometricInterpretation)
    frames = stored if int(ds.get("NumberOfFrames", 1) or 1) > 1 else stored[0]
    ds.set_pixel_data(frames, photometric, int(ds.BitsStored), generate_instance_uid=False)
    for tag in ("SmallestImagePixelValue", "LargestImagePixelValue"):  # stale after processing
        ds.pop(tag, None)
    if lossy:
        ds.LossyImageCompression = "01"

    ds.SOPInstanceUID = generate_uid()
    ds.SeriesInstanceUID = series_uid
    image_type = list(ds.get("ImageType", []) or [])
    ds.ImageType = ["DERIVED", "SECONDARY", *image_type[2:]]
    _mark_frame_types(ds)
    suffix = f" [restore {derivation.task}]"
    ds.SeriesDescription = (str(ds.get("SeriesDescription", "")) or ds.get("Modality", "image"))[: 64 - len(suffix)] + suffix
    ds.SeriesNumber = int(ds.get("SeriesNumber") or 0) + SERIES_NUMBER_OFFSETS[derivation.task]
    ds.DerivationDescription = (
        f"restore {derivation.task} with model {derivation.model} ({derivation.method}); "
        f"{clipped} value(s) clipped to the stored range"
    )[:1024]
    ref = Dataset()
    ref.ReferencedSOPClassUID = original_class
    ref.ReferencedSOPInstanceUID = original_uid
    ds.SourceImageSequence = Sequence([ref])

    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    return ds


def _rescale_grid(ds: Dataset, scale: int) -> None:
    """Pixel spacing / scale; IPP moved to the centre of the new first pixel; drop overlays/icons."""
    shift = (1.0 / scale - 1.0) / 2.0  # in old pixels: -0.25 for x2

    def update(item: Dataset) -> None:
        if "PixelSpacing" in item:
            row_mm, col_mm = (float(v) for v in item.PixelSpacing)
            item.PixelSpacing = [round(row_mm / scale, 10), round(col_mm / scale, 10)]

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
    update(ds)
    for f, group in enumerate(ds.get("PerFrameFunctionalGroupsSequence", [])):
        for pos in group.get("PlanePositionSequence", []):
            move(pos, old_spacing[f], iops[f])
    for seq_name in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        for group in ds.get(seq_name, []):
            for measures in group.get("PixelMeasuresSequence", []):
                update(measures)
    for tag in [t for t in ds.keys() if 0x6000 <= t.group <= 0x601E and t.group % 2 == 0]:
        del ds[tag]
    ds.pop("IconImageSequence", None)


def _mark_frame_types(ds: Dataset) -> None:
    """Enhanced objects repeat ImageType as FrameType in functional groups; keep them consistent."""
    for seq_name in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        for group in ds.get(seq_name, []):
            for elem in group:
                if elem.VR == "SQ" and elem.keyword.endswith("FrameTypeSequence"):
                    for item in elem.value:
                        if "FrameType" in item:
                            item.FrameType = ["DERIVED", *list(item.FrameType)[1:]]


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
    if back.file_meta.TransferSyntaxUID != ExplicitVRLittleEndian:
        problems.append("transfer syntax is not Explicit VR Little Endian")
    if back.file_meta.MediaStorageSOPInstanceUID != back.SOPInstanceUID or back.SOPInstanceUID != expected.SOPInstanceUID:
        problems.append("SOP Instance UID mismatch")
    if back.SeriesInstanceUID != expected.SeriesInstanceUID:
        problems.append("Series Instance UID mismatch")
    if list(back.ImageType)[:2] != ["DERIVED", "SECONDARY"] or "SourceImageSequence" not in back:
        problems.append("derivation tags missing")
    if pixels.size != stored.size or not np.array_equal(pixels.reshape(stored.shape), stored):
        problems.append("pixel data differ from what was written")
    if problems:
        raise OutputError(path, "verification failed: " + "; ".join(problems))
