"""A small DICOM study for tests, built from pydicom's bundled test files (import as ``tests.dicom_study``).

pydicom ships classic CT, MR, NM, US and secondary-capture files but no CR and no enhanced
(functional-group) objects: :func:`cr` and :func:`enhanced` build them from those files' pixels and
patient/study attributes. Plain functions returning datasets, so any test can write what it needs
into ``tmp_path``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

# pydicom's stored padding value of CT_small.dcm: -2000 stored, -3024 HU with its intercept -1024
CT_PADDING = -2000
_COMMON = (
    "SpecificCharacterSet", "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID",
    "StudyDate", "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName", "Manufacturer",
    "FrameOfReferenceUID", "PositionReferenceIndicator",
)


def bundled(name: str) -> pydicom.Dataset:
    return pydicom.dcmread(get_testdata_file(name))


def ct_with_padding() -> pydicom.Dataset:
    """CT_small (128 x 128, int16, HU = stored - 1024) whose outer 16 pixels are padding (-3024 HU),
    with air below -1024 HU and metal above 3071 HU inside the field of view."""
    ds = bundled("CT_small.dcm")
    pixels = ds.pixel_array.copy()
    pixels[:16], pixels[-16:], pixels[:, :16], pixels[:, -16:] = (CT_PADDING,) * 4
    pixels[40:44, 40:44] = -60  # -1084 HU
    pixels[80:84, 80:84] = 4600  # 3576 HU
    ds.PixelData = pixels.tobytes()
    return ds


def _new(source: pydicom.Dataset, sop_class: str, modality: str) -> Dataset:
    """A dataset of ``sop_class`` with the patient, study and equipment attributes of ``source``."""
    ds = Dataset()
    for keyword in _COMMON:
        if keyword in source:
            setattr(ds, keyword, source.data_element(keyword).value)
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, generate_uid()
    ds.Modality, ds.SeriesInstanceUID, ds.SeriesNumber, ds.InstanceNumber = modality, generate_uid(), 1, 1
    ds.ContentDate, ds.ContentTime = source.get("ContentDate", "20240101"), source.get("ContentTime", "120000")
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = sop_class, ds.SOPInstanceUID
    return ds


def cr() -> Dataset:
    """A computed radiograph (MR_small's 64 x 64 pixels as 12-bit unsigned) with ImagerPixelSpacing
    and a saturated marker (15 pixels at 4095, as lead letters come out)."""
    source = bundled("MR_small.dcm")
    pixels = source.pixel_array.astype(np.uint16)
    pixels[4:7, 4:9] = 4095
    ds = _new(source, "1.2.840.10008.5.1.4.1.1.1", "CR")
    ds.BodyPartExamined, ds.ViewPosition, ds.PatientOrientation, ds.ImageType = "CHEST", "PA", ["L", "F"], ["ORIGINAL", "PRIMARY"]
    ds.ImagerPixelSpacing = [0.2, 0.2]
    ds.PresentationLUTShape = "IDENTITY"
    ds.set_pixel_data(pixels, "MONOCHROME2", 12)
    return ds


def enhanced(modality: str, frames: int = 2) -> Dataset:
    """An Enhanced CT or MR image of ``frames`` frames (CT_small / MR_small shifted 5 mm apart):
    per-frame FrameContent and PlanePosition, shared PixelMeasures, PlaneOrientation, FrameType,
    VOI LUT and (CT) PixelValueTransformation."""
    source = bundled({"CT": "CT_small.dcm", "MR": "MR_small.dcm"}[modality])
    sop_class = {"CT": "1.2.840.10008.5.1.4.1.1.2.1", "MR": "1.2.840.10008.5.1.4.1.1.4.1"}[modality]
    ds = _new(source, sop_class, modality)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL", "NONE"]
    ds.AcquisitionNumber, ds.AcquisitionDateTime, ds.AcquisitionDuration = 1, f"{ds.ContentDate}{ds.ContentTime}", 1.0
    ds.ContentQualification, ds.BurnedInAnnotation, ds.LossyImageCompression = "PRODUCT", "NO", "00"
    ds.PixelPresentation, ds.VolumetricProperties, ds.VolumeBasedCalculationTechnique = "MONOCHROME", "VOLUME", "NONE"
    ds.ManufacturerModelName, ds.DeviceSerialNumber, ds.SoftwareVersions = "model", "1", "1"
    ds.PresentationLUTShape = "IDENTITY"
    if modality == "MR":
        ds.ComplexImageComponent, ds.AcquisitionContrast = "MAGNITUDE", "T1"
        ds.ImagingFrequency, ds.ResonantNucleus, ds.MagneticFieldStrength = 63.9, "1H", 1.5
        ds.KSpaceFiltering, ds.ApplicableSafetyStandardAgency = "NONE", "IEC"
    else:
        ds.KVP = 120
    pixels = source.pixel_array
    ds.set_pixel_data(np.stack([pixels] * frames), "MONOCHROME2", int(source.BitsStored))
    ds.NumberOfFrames = frames

    shared = Dataset()
    measures = Dataset()
    measures.PixelSpacing, measures.SliceThickness = source.PixelSpacing, 5.0
    orientation = Dataset()
    orientation.ImageOrientationPatient = source.ImageOrientationPatient
    frame_type = Dataset()
    frame_type.FrameType = ds.ImageType
    frame_type.PixelPresentation, frame_type.VolumetricProperties = "MONOCHROME", "VOLUME"
    frame_type.VolumeBasedCalculationTechnique = "NONE"
    if modality == "MR":
        frame_type.ComplexImageComponent, frame_type.AcquisitionContrast = "MAGNITUDE", "T1"
    voi = Dataset()
    voi.WindowCenter, voi.WindowWidth = 400, 1000
    shared.PixelMeasuresSequence = Sequence([measures])
    shared.PlaneOrientationSequence = Sequence([orientation])
    shared.FrameVOILUTSequence = Sequence([voi])
    setattr(shared, f"{modality}ImageFrameTypeSequence", Sequence([frame_type]))
    if modality == "CT":
        transform = Dataset()
        transform.RescaleIntercept, transform.RescaleSlope, transform.RescaleType = -1024, 1, "HU"
        shared.PixelValueTransformationSequence = Sequence([transform])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])

    stack = str(generate_uid())
    dimension = Dataset()
    dimension.DimensionOrganizationUID = stack
    ds.DimensionOrganizationSequence = Sequence([dimension])
    index = Dataset()
    index.DimensionOrganizationUID = stack
    index.DimensionIndexPointer, index.FunctionalGroupPointer = 0x00209057, 0x00209111  # InStackPositionNumber in FrameContent
    ds.DimensionIndexSequence = Sequence([index])
    per_frame = []
    for f in range(frames):
        group = Dataset()
        content = Dataset()
        content.StackID, content.InStackPositionNumber, content.DimensionIndexValues = "1", f + 1, [f + 1]
        content.FrameAcquisitionDateTime = content.FrameReferenceDateTime = ds.AcquisitionDateTime
        content.FrameAcquisitionDuration = 1.0
        position = Dataset()
        x, y, z = (float(v) for v in source.ImagePositionPatient)
        position.ImagePositionPatient = [x, y, z + 5.0 * f]
        group.FrameContentSequence = Sequence([content])
        group.PlanePositionSequence = Sequence([position])
        per_frame.append(group)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    return ds


def us_regions() -> pydicom.Dataset:
    """pydicom's multi-frame ultrasound (30 frames, 240 x 320, YBR JPEG) with one calibrated region."""
    return bundled("examples_ybr_color.dcm")


def write_study(folder: Path) -> dict[str, Path]:
    """Write one file of each kind into ``folder`` -> ``{name: path}`` (names as the keys below)."""
    folder.mkdir(parents=True, exist_ok=True)
    study = {
        "ct": ct_with_padding(), "mr": bundled("MR_small.dcm"), "nm": bundled("JPEG2000.dcm"),
        "cr": cr(), "us": us_regions(), "enhanced_ct": enhanced("CT"), "enhanced_mr": enhanced("MR"),
        "sc_rgb": bundled("SC_rgb_rle.dcm"),
    }
    paths = {}
    for name, ds in study.items():
        paths[name] = folder / f"{name}.dcm"
        ds.save_as(paths[name], enforce_file_format=True)
    return paths


def ct_stack(positions, orientation=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0), pixel_spacing=(0.7, 0.9)) -> list[pydicom.Dataset]:
    """One CT series of CT_small slices (128 x 128), one per ImagePositionPatient of ``positions``
    (mm), with ``orientation`` and ``pixel_spacing`` (row, column mm); slice ``k``'s pixels are
    CT_small's plus ``10 * k`` HU, InstanceNumber counts down, so that neither file order nor
    InstanceNumber gives the slice order."""
    series = generate_uid()
    slices = []
    for k, position in enumerate(positions):
        ds = bundled("CT_small.dcm")
        ds.PixelData = (ds.pixel_array + 10 * k).astype(np.int16).tobytes()
        ds.SeriesInstanceUID = series
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.ImagePositionPatient = [float(v) for v in position]
        ds.ImageOrientationPatient = [float(v) for v in orientation]
        ds.PixelSpacing = [float(v) for v in pixel_spacing]
        ds.InstanceNumber = len(positions) - k
        slices.append(ds)
    return slices
