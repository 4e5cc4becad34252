"""Read DICOM exports: discover files, group them into series, sort slices, decode pixels.

The reading half of ``restore dicom`` and the DICOM data modules. Nothing here writes.

* :func:`discover` walks folders recursively (any file name; links to folders followed, each
  real folder once; DICOMDIR cross-checked, its file IDs matched without regard to case), takes a
  DICOMDIR given as input for the files it lists, reads ``.zip`` archives in memory (never
  extracted, so no path traversal), and returns every image series plus every file it could not
  use (broken links included), with the reason. Series are grouped by
  SeriesInstanceUID and split into stacks when one UID mixes orientations, image sizes, or repeats
  positions (echoes, time points). Slices are sorted by ImagePositionPatient projected on the
  slice normal (cross product of the two ImageOrientationPatient vectors); gaps, duplicates and
  uneven spacing are reported in :class:`Geometry`.
* :func:`read_instance_frames` / :func:`read_series_volume` decode pixels (every transfer syntax
  pydicom has a decoder for: native, deflate, RLE; JPEG, JPEG-LS and JPEG 2000 through the
  pylibjpeg plugins) into ``float32``: CT in Hounsfield units (modality LUT applied, per frame for
  enhanced objects), other grey-scale modalities in stored units, colour images as RGB.
  :func:`padding_mask` marks the pixels that are padding (PixelPaddingValue), in those units.

A file is opened read-only and only read; a zip member is read into memory.
"""

from __future__ import annotations

import io
import math
import os
import warnings
import zipfile
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import UID

from ..errors import InputError

# SOP classes that hold no image to restore (plans, structures, reports, segmentations, dose grids,
# waveforms, media directories, presentation states, raw data, ...): reported, never processed.
DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
NON_IMAGE_SOP_CLASSES: dict[str, str] = {
    DICOMDIR_SOP_CLASS: "DICOMDIR (media directory, used for discovery)",
    "1.2.840.10008.5.1.4.1.1.481.2": "RTDOSE (dose grid, not an image)",
    "1.2.840.10008.5.1.4.1.1.481.3": "RTSTRUCT",
    "1.2.840.10008.5.1.4.1.1.481.5": "RTPLAN",
    "1.2.840.10008.5.1.4.1.1.481.8": "RTPLAN (ion)",
    "1.2.840.10008.5.1.4.1.1.481.4": "RT beams treatment record",
    "1.2.840.10008.5.1.4.1.1.66.4": "SEG (segmentation)",
    "1.2.840.10008.5.1.4.1.1.66": "raw data",
    "1.2.840.10008.5.1.4.1.1.66.1": "spatial registration",
    "1.2.840.10008.5.1.4.1.1.104.1": "encapsulated PDF",
    "1.2.840.10008.5.1.4.1.1.11.1": "presentation state",
}
_NON_IMAGE_PREFIXES: dict[str, str] = {
    "1.2.840.10008.5.1.4.1.1.88.": "SR (structured report)",
    "1.2.840.10008.5.1.4.1.1.9.": "waveform",
    "1.2.840.10008.5.1.4.1.1.11.": "presentation state",
    "1.2.840.10008.5.1.4.1.1.481.": "RT object",
}
SUPPORTED_PHOTOMETRIC = ("MONOCHROME1", "MONOCHROME2", "RGB", "YBR_FULL", "YBR_FULL_422", "YBR_RCT", "YBR_ICT")

# Tolerances: orientations equal to 1e-3 (direction cosines), positions equal to 1e-3 mm; a step
# more than 1.5x the median is a gap; steps differing from the median by more than 1 % are uneven.
ORIENTATION_TOL = 1e-3
POSITION_TOL_MM = 1e-3
GAP_FACTOR = 1.5
UNEVEN_REL_TOL = 0.01
# zip members larger than this are not read into memory (a compressed "zip bomb" guard)
MAX_ZIP_MEMBER_BYTES = 2 << 30


@dataclass(frozen=True, order=True)
class FileRef:
    """Where one input file's bytes live: a path on disk, or ``member`` inside the zip at ``path``."""

    path: Path
    member: str | None = None

    def __str__(self) -> str:
        return f"{self.path}!/{self.member}" if self.member is not None else str(self.path)

    def read(self, *, stop_before_pixels: bool = False) -> Dataset:
        """Parse the file (read-only) -> pydicom Dataset; raises ``InputError`` when it is not DICOM."""
        try:
            if self.member is None:
                with open(self.path, "rb") as fh:
                    return _parse(fh, stop_before_pixels)
            with zipfile.ZipFile(self.path) as zf:
                return _parse(io.BytesIO(zf.read(self.member)), stop_before_pixels)
        except InputError:
            raise
        except Exception as exc:  # noqa: BLE001 - any parse failure makes this file unusable
            raise InputError(str(self), f"corrupt or not DICOM ({_first_line(exc)})") from None


def _parse(fh, stop_before_pixels: bool) -> Dataset:
    with warnings.catch_warnings():
        # pydicom warns about every oddity of real-world files; problems surface as reasons instead
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(fh, force=True, stop_before_pixels=stop_before_pixels)
    if "SOPClassUID" not in ds and "DirectoryRecordSequence" in ds:
        ds.SOPClassUID = DICOMDIR_SOP_CLASS  # a media directory carries its class only in the meta
    if "SOPClassUID" not in ds:
        raise InputError(None, "not a DICOM file (no SOP Class UID)")
    if "TransferSyntaxUID" not in getattr(ds, "file_meta", Dataset()):
        # meta-less files (pydicom guessed the encoding): record the guess so writers know it
        ds.file_meta = getattr(ds, "file_meta", None) or pydicom.dataset.FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = _guessed_syntax(ds)
    return ds


def _guessed_syntax(ds: Dataset) -> UID:
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    if not ds.original_encoding[1]:
        return ExplicitVRBigEndian
    return ImplicitVRLittleEndian if ds.original_encoding[0] else ExplicitVRLittleEndian


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


@dataclass(frozen=True)
class Instance:
    """Header facts of one image SOP instance (no pixels).

    ``positions`` holds one ImagePositionPatient (mm) per frame, or None when the object has no
    patient geometry (secondary capture, pathology); ``orientation`` is the 6 direction cosines.
    """

    ref: FileRef
    sop_class_uid: str
    sop_instance_uid: str
    series_uid: str
    study_uid: str
    modality: str
    transfer_syntax: str
    rows: int
    columns: int
    samples_per_pixel: int
    photometric: str
    n_frames: int
    instance_number: int | None
    orientation: tuple[float, ...] | None
    positions: tuple[tuple[float, float, float], ...] | None
    pixel_spacing: tuple[float, float] | None
    split_keys: tuple[tuple[str, object], ...] = ()

    @property
    def units(self) -> str:
        """``"HU"`` for CT, ``"RGB"`` for colour, else ``"stored"`` (stored pixel values)."""
        if self.samples_per_pixel == 3:
            return "RGB"
        return "HU" if self.modality == "CT" else "stored"


@dataclass(frozen=True)
class SliceRef:
    """One 2-D slice: ``frame`` (0-based) of ``instance``."""

    instance: Instance
    frame: int = 0

    @property
    def position(self) -> tuple[float, float, float] | None:
        return None if self.instance.positions is None else self.instance.positions[self.frame]


@dataclass
class Geometry:
    """Slice spacing facts of a sorted stack (mm). Empty lists mean nothing to report."""

    has_positions: bool = False
    spacing_mm: float | None = None
    gaps: list[int] = field(default_factory=list)  # index i: step between slice i and i+1 is a gap
    duplicates: list[int] = field(default_factory=list)  # index i: slice i+1 repeats slice i's position
    uneven: bool = False
    notes: list[str] = field(default_factory=list)

    def summary(self) -> list[str]:
        """Human-readable findings (no identifying values)."""
        out = list(self.notes)
        if self.gaps:
            out.append(f"{len(self.gaps)} gap(s) in slice positions")
        if self.duplicates:
            out.append(f"{len(self.duplicates)} duplicate slice position(s)")
        if self.uneven:
            out.append("uneven slice spacing")
        return out


@dataclass
class Series:
    """One stack of an image series, slices sorted along the slice normal.

    ``stack`` is 0 unless the SeriesInstanceUID was split (orientations, sizes, echoes, times);
    ``key`` names the stack uniquely within a discovery.
    """

    series_uid: str
    stack: int
    slices: list[SliceRef]
    geometry: Geometry

    @property
    def key(self) -> str:
        return self.series_uid if self.stack == 0 else f"{self.series_uid}#{self.stack}"

    @property
    def instances(self) -> list[Instance]:
        """Distinct instances, in the order their first slice appears."""
        seen: dict[str, Instance] = {}
        for s in self.slices:
            seen.setdefault(s.instance.sop_instance_uid, s.instance)
        return list(seen.values())

    @property
    def first(self) -> Instance:
        return self.slices[0].instance

    @property
    def modality(self) -> str:
        return self.first.modality

    @property
    def units(self) -> str:
        return self.first.units


# Skip reasons by kind. "lost" kinds are image data that could not be processed (the job exits 2;
# a conflict: another version of an instance that was used); the others are files that hold
# nothing to restore, or a copy of an instance.
LOST_KINDS = ("unsupported", "corrupt", "geometry", "conflict")


def skip_kind(reason: str) -> str:
    """Classify a skip reason: non-image, not-dicom, broken-link, duplicate, conflict, no-pixels,
    unsupported, corrupt, geometry."""
    for prefix, kind in (
        ("non-image", "non-image"), ("not a DICOM", "not-dicom"), ("not a regular file", "not-dicom"),
        ("broken symbolic link", "broken-link"), ("duplicate", "duplicate"), ("conflicting", "conflict"),
        ("no pixel data", "no-pixels"), ("referenced by DICOMDIR", "corrupt"),
        ("inconsistent geometry", "geometry"), ("unsupported", "unsupported"), ("float pixel", "unsupported"),
        ("unsafe", "unsupported"), ("encrypted", "unsupported"), ("zip member larger", "unsupported"),
        ("nested zip", "unsupported"),
    ):
        if reason.startswith(prefix):
            return kind
    return "corrupt"  # truncated, unreadable, undecodable, missing required attributes


@dataclass(frozen=True)
class SkippedFile:
    """An input file that is not processed, and why (never contains identifying values)."""

    ref: FileRef
    reason: str

    @property
    def kind(self) -> str:
        return skip_kind(self.reason)


@dataclass
class DiscoveryResult:
    """Everything found under the inputs: image series, and skipped files with their reasons.

    Every input file appears exactly once: in one series' instances or in ``skipped``.
    """

    series: list[Series]
    skipped: list[SkippedFile]

    @property
    def files(self) -> list[FileRef]:
        refs = [i.ref for s in self.series for i in s.instances] + [k.ref for k in self.skipped]
        return sorted(refs)


@dataclass
class VolumeInfo:
    """Geometry and units of a volume from :func:`read_series_volume`.

    ``positions``: (Z, 3) mm or None; ``orientation``: 6 direction cosines or None;
    ``pixel_spacing``: (row spacing, column spacing) mm or None; ``slice_spacing``: mm or None.
    """

    series_uid: str
    modality: str
    units: str
    positions: np.ndarray | None
    orientation: tuple[float, ...] | None
    pixel_spacing: tuple[float, float] | None
    slice_spacing: float | None


# ---------------------------------------------------------------------------------------- discovery


def discover(paths: Sequence[str | Path]) -> DiscoveryResult:
    """Find every image series under ``paths`` (folders, files, ``.zip`` archives).

    Raises ``InputError`` for an input path that does not exist. Unusable files (non-image SOP
    classes, unsupported transfer syntaxes, truncated or corrupt files, no pixel data, inconsistent
    geometry, duplicates) are returned in ``skipped`` with a one-line reason.
    """
    refs, skipped = _list_files(paths)
    instances: list[Instance] = []
    for ref in refs:
        try:
            instances.append(inspect_file(ref))
        except InputError as exc:
            skipped.append(SkippedFile(ref, exc.cause))
    instances, dup_skips = _drop_duplicate_instances(instances)
    skipped.extend(dup_skips)
    series: list[Series] = []
    by_uid: dict[str, list[Instance]] = defaultdict(list)
    for inst in instances:
        by_uid[inst.series_uid].append(inst)
    for uid in sorted(by_uid):
        stacks, geo_skips = _split_and_sort(uid, by_uid[uid])
        series.extend(stacks)
        skipped.extend(geo_skips)
    return DiscoveryResult(series=series, skipped=sorted(skipped, key=lambda s: s.ref))


def _list_files(paths: Sequence[str | Path]) -> tuple[list[FileRef], list[SkippedFile]]:
    refs: list[FileRef] = []
    skipped: list[SkippedFile] = []
    for p in map(Path, paths):
        if not p.exists():
            raise InputError(p, "broken symbolic link" if p.is_symlink() else "no such file or folder")
        if p.is_dir():
            files, skips = _walk(p)
            skips += _dicomdir_references(files, files)[1]
        elif p.name.upper() == "DICOMDIR":  # the media's index: what it lists, found beside it
            files, skips = _dicomdir_references([p], _walk(p.parent)[0])
            files.insert(0, p)
        else:
            files, skips = [p], []
        skipped.extend(skips)
        for f in files:
            if zipfile.is_zipfile(f):
                zrefs, zskips = _zip_members(f)
                refs.extend(zrefs)
                skipped.extend(zskips)
            else:
                refs.append(FileRef(f))
    # the same file given twice (overlapping inputs) counts once
    return sorted(set(refs)), skipped


def _walk(folder: Path) -> tuple[list[Path], list[SkippedFile]]:
    """The files under ``folder``, and a skip for every entry that is no file (a broken link, a
    pipe). Links to folders are followed; a real folder reached again (through a second link, or
    a link to a folder above it) is not walked again, so a link loop ends and no file counts twice."""
    files, skipped, walked = [], [], set()
    for root, dirs, names in os.walk(folder, followlinks=True):
        if (real := os.path.realpath(root)) in walked:
            dirs.clear()
            continue
        walked.add(real)
        dirs.sort()
        for path in (Path(root, n) for n in sorted(names)):
            if path.is_file():
                files.append(path)
            elif path.is_symlink() and not path.exists():
                skipped.append(SkippedFile(FileRef(path), "broken symbolic link (its target does not exist)"))
            else:
                skipped.append(SkippedFile(FileRef(path), "not a regular file (a pipe, socket or device)"))
    return files, skipped


def _zip_members(archive: Path) -> tuple[list[FileRef], list[SkippedFile]]:
    refs, skipped = [], []
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError) as exc:
        return [], [SkippedFile(FileRef(archive), f"corrupt zip archive ({_first_line(exc)})")]
    for info in infos:
        if info.is_dir():
            continue
        ref = FileRef(archive, info.filename)
        name = PurePosixPath(info.filename.replace("\\", "/"))
        if name.is_absolute() or ".." in name.parts or ":" in info.filename:
            skipped.append(SkippedFile(ref, "unsafe path in zip archive (absolute or '..'); not read"))
        elif info.flag_bits & 0x1:
            skipped.append(SkippedFile(ref, "encrypted zip member; not read"))
        elif info.file_size > MAX_ZIP_MEMBER_BYTES:
            skipped.append(SkippedFile(ref, f"zip member larger than {MAX_ZIP_MEMBER_BYTES >> 20} MiB; not read"))
        elif name.suffix.lower() == ".zip":
            skipped.append(SkippedFile(ref, "nested zip archive; extract it first"))
        else:
            refs.append(ref)
    return refs, skipped


def _dicomdir_references(files: list[Path], present: list[Path]) -> tuple[list[Path], list[SkippedFile]]:
    """The files that the DICOMDIRs among ``files`` reference, found in ``present``, and a skip for
    each one referenced but absent (a DICOMDIR itself is reported as non-image when inspected).

    File IDs are matched without regard to case: media write them in upper case, and a copy on a
    case-sensitive disk often has them in lower case; matched exactly, such a file would be listed
    twice, as processed and as missing.
    """
    by_name = {str(f.resolve()).casefold(): f for f in present}
    found: list[Path] = []
    missing: list[SkippedFile] = []
    for f in files:
        if f.name.upper() != "DICOMDIR":
            continue
        try:
            ds = pydicom.dcmread(f, force=True)
            referenced = [
                f.parent.joinpath(*r.ReferencedFileID) if isinstance(r.ReferencedFileID, Sequence)
                and not isinstance(r.ReferencedFileID, str) else f.parent / r.ReferencedFileID
                for r in ds.get("DirectoryRecordSequence", [])
                if "ReferencedFileID" in r
            ]
        except Exception:  # noqa: BLE001 - a broken DICOMDIR is reported when inspected
            continue
        for p in referenced:
            if (match := by_name.get(str(p.resolve()).casefold())) is not None:
                found.append(match)
            else:
                missing.append(SkippedFile(FileRef(p), "referenced by DICOMDIR but missing"))
    return found, missing


def inspect_file(ref: FileRef) -> Instance:
    """Read one file and check that it is a decodable image -> :class:`Instance`.

    Raises ``InputError`` with the reason when it is not (non-image SOP class, no pixel data,
    unsupported transfer syntax naming the missing plugin, truncated pixel data, bad geometry).
    """
    ds = ref.read()
    sop_class = str(ds.SOPClassUID)
    reason = NON_IMAGE_SOP_CLASSES.get(sop_class) or next(
        (v for k, v in _NON_IMAGE_PREFIXES.items() if sop_class.startswith(k)), None
    )
    if reason:
        raise InputError(str(ref), f"non-image SOP class: {reason}")
    if "PixelData" not in ds:
        kind = "float pixel data is not supported" if ("FloatPixelData" in ds or "DoubleFloatPixelData" in ds) else "no pixel data"
        raise InputError(str(ref), kind)
    for tag in ("SeriesInstanceUID", "SOPInstanceUID", "Rows", "Columns", "BitsAllocated"):
        if tag not in ds:
            raise InputError(str(ref), f"missing required attribute {tag}")
    syntax = UID(ds.file_meta.TransferSyntaxUID)
    _check_decodable(ref, ds, syntax)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip()
    if photometric not in SUPPORTED_PHOTOMETRIC:
        raise InputError(str(ref), f"unsupported photometric interpretation {photometric}")
    if int(ds.BitsAllocated) not in (8, 16):
        raise InputError(str(ref), f"unsupported BitsAllocated {ds.BitsAllocated} (8 or 16 supported)")
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    orientation, positions = _geometry(ref, ds, n_frames)
    spacing = _pixel_spacing(ds)
    return Instance(
        ref=ref,
        sop_class_uid=sop_class,
        sop_instance_uid=str(ds.SOPInstanceUID),
        series_uid=str(ds.SeriesInstanceUID),
        study_uid=str(ds.get("StudyInstanceUID", "")),
        modality=str(ds.get("Modality", "OT")),
        transfer_syntax=str(syntax),
        rows=int(ds.Rows),
        columns=int(ds.Columns),
        samples_per_pixel=int(ds.get("SamplesPerPixel", 1)),
        photometric=photometric,
        n_frames=n_frames,
        instance_number=_int_or_none(ds.get("InstanceNumber")),
        orientation=orientation,
        positions=positions,
        pixel_spacing=spacing,
        split_keys=tuple(
            (k, str(ds.get(k))) for k in ("EchoNumbers", "TemporalPositionIdentifier", "AcquisitionNumber") if k in ds
        ),
    )


def _check_decodable(ref: FileRef, ds: Dataset, syntax: UID) -> None:
    from pydicom.pixels import get_decoder

    if syntax.is_encapsulated:
        try:
            decoder = get_decoder(syntax)
        except NotImplementedError:
            raise InputError(str(ref), f"unsupported transfer syntax {syntax.name} (no decoder exists)") from None
        if not decoder.is_available:
            needs = "; ".join(decoder.missing_dependencies) or "a decoder plugin"
            raise InputError(str(ref), f"unsupported transfer syntax {syntax.name}: install {needs}")
        try:
            from pydicom.encaps import generate_fragmented_frames

            n = sum(1 for _ in generate_fragmented_frames(ds.PixelData, number_of_frames=int(ds.get("NumberOfFrames", 1) or 1)))
        except Exception as exc:  # noqa: BLE001 - broken encapsulation
            raise InputError(str(ref), f"truncated or corrupt compressed pixel data ({_first_line(exc)})") from None
        if n == 0:
            raise InputError(str(ref), "truncated or corrupt compressed pixel data (no fragments)")
        return
    expected = (
        int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1)) * int(ds.get("NumberOfFrames", 1) or 1)
        * int(ds.BitsAllocated) // 8
    )
    if len(ds.PixelData) < expected:
        raise InputError(str(ref), f"truncated pixel data ({len(ds.PixelData)} of {expected} bytes)")


def _int_or_none(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _floats(value, n: int) -> tuple[float, ...] | None:
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return out if len(out) == n and all(math.isfinite(v) for v in out) else None


def frame_attribute(ds: Dataset, frame: int, sequence: str, attribute: str):
    """``attribute`` from the per-frame, else shared, functional group ``sequence`` (enhanced objects)."""
    for groups, index in (("PerFrameFunctionalGroupsSequence", frame), ("SharedFunctionalGroupsSequence", 0)):
        seq = ds.get(groups)
        if seq is not None and len(seq) > index and sequence in seq[index] and len(seq[index][sequence].value):
            item = seq[index][sequence][0]
            if attribute in item:
                return item[attribute].value
    return None


def _geometry(ref: FileRef, ds: Dataset, n_frames: int):
    """-> (orientation, per-frame positions) or (None, None) for objects without patient geometry."""
    raw_iop = ds.get("ImageOrientationPatient") or frame_attribute(ds, 0, "PlaneOrientationSequence", "ImageOrientationPatient")
    raw_ipps = []
    for f in range(n_frames):
        raw = frame_attribute(ds, f, "PlanePositionSequence", "ImagePositionPatient")
        raw_ipps.append(raw if raw is not None else (ds.get("ImagePositionPatient") if f == 0 else None))
    if raw_iop is None and all(p is None for p in raw_ipps):
        return None, None
    iop = _floats(raw_iop, 6) if raw_iop is not None else None
    if iop is None:
        raise InputError(str(ref), "inconsistent geometry: ImageOrientationPatient missing or malformed")
    r, c = np.array(iop[:3]), np.array(iop[3:])
    if abs(np.linalg.norm(r) - 1) > 1e-2 or abs(np.linalg.norm(c) - 1) > 1e-2 or abs(r @ c) > 1e-2:
        raise InputError(str(ref), "inconsistent geometry: ImageOrientationPatient is not two orthonormal vectors")
    if n_frames > 1 and any(p is None for p in raw_ipps[1:]):
        # legacy multi-frame (one position for the object): frames keep their file order
        return iop, None
    positions = tuple(_floats(p, 3) for p in raw_ipps)
    if any(p is None for p in positions):
        raise InputError(str(ref), "inconsistent geometry: ImagePositionPatient missing or malformed")
    return iop, positions


def _pixel_spacing(ds: Dataset) -> tuple[float, float] | None:
    raw = ds.get("PixelSpacing") or frame_attribute(ds, 0, "PixelMeasuresSequence", "PixelSpacing")
    return _floats(raw, 2) if raw is not None else None


def _drop_duplicate_instances(instances: list[Instance]) -> tuple[list[Instance], list[SkippedFile]]:
    """One SOPInstanceUID in several files: the first by path is used. Another file is a duplicate
    when it holds the same instance (:func:`_same_content`), else a conflict: two versions of one
    instance, of which the report names the one used."""
    kept: dict[str, Instance] = {}
    skipped = []
    for inst in sorted(instances, key=lambda i: i.ref):
        first = kept.setdefault(inst.sop_instance_uid, inst)
        if first is inst:
            continue
        if _same_content(first, inst):
            reason = f"duplicate SOP instance (same SOPInstanceUID and content as {first.ref})"
        else:
            reason = f"conflicting SOP instance: same SOPInstanceUID as {first.ref}, which was used, but other content"
        skipped.append(SkippedFile(inst.ref, reason))
    return list(kept.values()), skipped


# what another transfer syntax of the same instance may change besides the pixel data's encoding
_ENCODING_ATTRIBUTES = ("PixelData", "PhotometricInterpretation", "PlanarConfiguration")


def _same_content(a: Instance, b: Instance) -> bool:
    """Whether two files hold the same SOP instance: every attribute equal but those of the pixel
    data's encoding, and the same decoded pixels (a copy, or the instance in another transfer syntax)."""
    try:
        datasets = [a.ref.read(), b.ref.read()]
        pixels = [stored_frames(ds, inst.ref) for ds, inst in zip(datasets, (a, b))]
    except InputError:
        return False  # one of them cannot be decoded: nothing says they agree
    for ds in datasets:
        for keyword in _ENCODING_ATTRIBUTES:
            ds.pop(keyword, None)
    return datasets[0] == datasets[1] and np.array_equal(pixels[0], pixels[1])


def _normal(orientation: Sequence[float]) -> np.ndarray:
    return np.cross(np.asarray(orientation[:3]), np.asarray(orientation[3:]))


def _stack_key(inst: Instance) -> tuple:
    orient = None if inst.orientation is None else tuple(round(v / ORIENTATION_TOL) for v in inst.orientation)
    return (inst.positions is not None, orient, inst.rows, inst.columns, inst.samples_per_pixel)


def _split_and_sort(uid: str, instances: list[Instance]) -> tuple[list[Series], list[SkippedFile]]:
    """Split one SeriesInstanceUID into consistent stacks and sort each along its normal."""
    groups: dict[tuple, list[Instance]] = defaultdict(list)
    for inst in instances:
        groups[_stack_key(inst)].append(inst)
    skipped: list[SkippedFile] = []
    if len(groups) > 1:
        # a few slices without geometry among many with it are broken files, not a second stack
        with_geo = [k for k in groups if k[0]]
        for k in [k for k in groups if not k[0]] if with_geo else []:
            skipped += [
                SkippedFile(i.ref, "inconsistent geometry: no ImagePositionPatient while the rest of its series has one")
                for i in groups.pop(k)
            ]
    stacks: list[list[Instance]] = []
    for key in sorted(groups, key=lambda k: min(i.ref for i in groups[k])):
        stacks.extend(_split_repeats(groups[key]))
    out = []
    for n, members in enumerate(stacks):
        slices = [SliceRef(i, f) for i in members for f in range(i.n_frames)]
        slices, geometry = sort_slices(slices)
        if len(stacks) > 1:
            geometry.notes.insert(0, f"stack {n + 1} of {len(stacks)} split from one SeriesInstanceUID")
        out.append(Series(series_uid=uid, stack=n if len(stacks) > 1 else 0, slices=slices, geometry=geometry))
    return out, skipped


def _split_repeats(instances: list[Instance]) -> list[list[Instance]]:
    """Repeated positions (several echoes or time points in one UID) -> one stack per echo/time."""
    if instances[0].positions is None or len(instances) < 2:
        return [instances]
    if not _has_repeats(instances):
        return [instances]
    for attr in ("EchoNumbers", "TemporalPositionIdentifier", "AcquisitionNumber"):
        parts: dict[object, list[Instance]] = defaultdict(list)
        for inst in instances:
            parts[dict(inst.split_keys).get(attr)].append(inst)
        if len(parts) > 1 and not any(_has_repeats(p) for p in parts.values()):
            return [parts[k] for k in sorted(parts, key=str)]
    return [instances]  # reported as duplicate positions


def _has_repeats(instances: Iterable[Instance]) -> bool:
    seen = set()
    for inst in instances:
        for p in inst.positions or ():
            key = tuple(round(v / POSITION_TOL_MM / 10) for v in p)
            if key in seen:
                return True
            seen.add(key)
    return False


def sort_slices(slices: list[SliceRef]) -> tuple[list[SliceRef], Geometry]:
    """Sort slices by position along the slice normal (ties: InstanceNumber, frame) and check spacing.

    Slices without positions keep InstanceNumber / file order and get an empty :class:`Geometry`.
    """
    def tie(s: SliceRef):
        n = s.instance.instance_number
        return (n is None, n if n is not None else 0, s.instance.ref, s.frame)

    if any(s.position is None for s in slices):
        return sorted(slices, key=tie), Geometry(has_positions=False)
    normal = _normal(slices[0].instance.orientation)
    depth = {id(s): float(np.dot(normal, s.position)) for s in slices}
    ordered = sorted(slices, key=lambda s: (depth[id(s)], *tie(s)))
    geometry = Geometry(has_positions=True)
    if len(ordered) < 2:
        return ordered, geometry
    d = np.array([depth[id(s)] for s in ordered])
    steps = np.diff(d)
    geometry.duplicates = [int(i) for i in np.flatnonzero(steps < POSITION_TOL_MM)]
    real = steps[steps >= POSITION_TOL_MM]
    if real.size:
        spacing = float(np.median(real))
        geometry.spacing_mm = round(spacing, 6)
        geometry.gaps = [int(i) for i in np.flatnonzero(steps > GAP_FACTOR * spacing)]
        geometry.uneven = bool(np.any(np.abs(real - spacing) > UNEVEN_REL_TOL * spacing + POSITION_TOL_MM))
        # positions off the normal line: gantry tilt or a shifted stack (kept, but reported)
        first = np.asarray(ordered[0].position)
        offsets = [np.linalg.norm(np.asarray(s.position) - first - normal * (depth[id(s)] - d[0])) for s in ordered]
        if max(offsets) > max(0.5 * spacing, 0.1):
            geometry.notes.append("slice positions are not collinear with the slice normal (gantry tilt?)")
    return ordered, geometry


# ------------------------------------------------------------------------------------------- pixels


def rescale(ds: Dataset, frame: int = 0) -> tuple[float, float]:
    """(RescaleSlope, RescaleIntercept) of ``frame``: top level, else the enhanced functional groups."""
    slope = ds.get("RescaleSlope")
    intercept = ds.get("RescaleIntercept")
    if slope is None:
        slope = frame_attribute(ds, frame, "PixelValueTransformationSequence", "RescaleSlope")
        intercept = frame_attribute(ds, frame, "PixelValueTransformationSequence", "RescaleIntercept")
    return float(slope if slope is not None else 1.0), float(intercept if intercept is not None else 0.0)


def stored_frames(ds: Dataset, ref: FileRef | str = "") -> np.ndarray:
    """Stored pixel values, always ``(F, H, W)`` or ``(F, H, W, 3)`` (YBR converted to RGB)."""
    try:
        arr = ds.pixel_array
    except Exception as exc:  # noqa: BLE001 - decoder errors of every plugin
        raise InputError(str(ref), f"cannot decode pixel data ({_first_line(exc)})") from None
    spp = int(ds.get("SamplesPerPixel", 1))
    frame_dims = 3 if spp > 1 else 2
    return arr[None] if arr.ndim == frame_dims else arr


def to_units(ds: Dataset, stored: np.ndarray, units: str) -> np.ndarray:
    """Stored values ``(F, H, W[, 3])`` -> float32 in ``units``: ``"HU"`` (CT) and ``"rescaled"``
    (any grey-scale modality) through the modality LUT or rescale slope/intercept, per frame for
    enhanced objects; ``"stored"`` and ``"RGB"`` as they are."""
    if units not in ("HU", "rescaled"):
        return stored.astype(np.float32)
    if "ModalityLUTSequence" in ds:
        from pydicom.pixels import apply_modality_lut

        return np.asarray(apply_modality_lut(stored, ds), dtype=np.float32)
    out = np.empty(stored.shape, np.float32)
    for f in range(stored.shape[0]):
        slope, intercept = rescale(ds, f)
        out[f] = stored[f].astype(np.float64) * slope + intercept
    return out


def padding_mask(ds: Dataset, frames: np.ndarray, units: str) -> np.ndarray | None:
    """``(F, H, W)`` bool, True where a pixel of ``frames`` (from :func:`to_units`, in ``units``)
    is padding: PixelPaddingValue, or the range from it to PixelPaddingRangeLimit (stored values,
    mapped like the pixels); None when the object declares none or is colour."""
    if "PixelPaddingValue" not in ds or frames.ndim != 3:
        return None
    limits = np.array([ds.PixelPaddingValue, ds.get("PixelPaddingRangeLimit", ds.PixelPaddingValue)])
    # the same mapping as the pixels, frame by frame, so that equal stored values compare equal
    ends = to_units(ds, np.broadcast_to(limits[None, :, None], (frames.shape[0], 2, 1)), units)
    lo, hi = ends.min(axis=1, keepdims=True), ends.max(axis=1, keepdims=True)
    return (frames >= lo) & (frames <= hi)


def read_instance_frames(instance: Instance) -> tuple[np.ndarray, Dataset]:
    """Decode all frames of one instance -> (``(F, H, W[, 3])`` float32 in ``instance.units``, dataset)."""
    ds = instance.ref.read()
    return to_units(ds, stored_frames(ds, instance.ref), instance.units), ds


def read_series_volume(series: Series, units: str | None = None) -> tuple[np.ndarray, VolumeInfo]:
    """Decode a series into a volume in slice order.

    Returns ``(Z, H, W)`` float32 in ``units`` (see :func:`to_units`; None: the series' own, HU for
    CT, stored units otherwise) or ``(Z, H, W, 3)`` for colour, and a :class:`VolumeInfo` with
    positions (Z, 3) mm, orientation, pixel and slice spacing.
    """
    units = units or series.units
    frames: dict[str, np.ndarray] = {}
    for inst in series.instances:
        ds = inst.ref.read()
        frames[inst.sop_instance_uid] = to_units(ds, stored_frames(ds, inst.ref), units)
    volume = np.stack([frames[s.instance.sop_instance_uid][s.frame] for s in series.slices])
    first = series.first
    positions = (
        np.array([s.position for s in series.slices], dtype=np.float64) if series.geometry.has_positions else None
    )
    return volume, VolumeInfo(
        series_uid=series.series_uid,
        modality=series.modality,
        units=units,
        positions=positions,
        orientation=first.orientation,
        pixel_spacing=first.pixel_spacing,
        slice_spacing=series.geometry.spacing_mm,
    )
