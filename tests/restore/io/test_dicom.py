"""restore.io.dicom: discovery, grouping, splitting, sorting, geometry checks, pixel decoding."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from restore.errors import InputError
from restore.io.dicom import (
    FileRef, discover, inspect_file, padding_mask, read_instance_frames, read_series_volume, stored_frames, to_units,
)
from tests.dicom_study import CT_PADDING, ct_with_padding


def bundled(name: str) -> Path:
    return Path(get_testdata_file(name))


def write_ct_series(folder: Path, depths, instance_numbers=None, *, series_uid=None, orientation=None) -> str:
    """CT_small copies at z = ``depths`` mm (files named in InstanceNumber order, no extension)."""
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid()
    instance_numbers = instance_numbers or list(range(1, len(depths) + 1))
    for z, n in zip(depths, instance_numbers):
        ds = pydicom.dcmread(bundled("CT_small.dcm"))
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.ImageOrientationPatient = orientation or [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [-100.0, -100.0, float(z)]
        ds.InstanceNumber = n
        ds.save_as(folder / f"IMG{n:04d}")
    return series_uid


def test_sorts_by_position_along_normal_not_instance_number(tmp_path):
    uid = write_ct_series(tmp_path / "s", [10.0, 0.0, 5.0, 15.0], instance_numbers=[1, 2, 3, 4])
    found = discover([tmp_path])
    (series,) = found.series
    assert series.series_uid == uid
    assert [s.position[2] for s in series.slices] == [0.0, 5.0, 10.0, 15.0]
    assert [s.instance.instance_number for s in series.slices] == [2, 3, 1, 4]
    assert series.geometry.spacing_mm == 5.0 and not series.geometry.gaps and not series.geometry.uneven


def test_reports_gaps_duplicates_and_uneven_spacing(tmp_path):
    write_ct_series(tmp_path / "s", [0.0, 2.0, 4.0, 10.0, 12.0, 12.0, 13.0])
    (series,) = discover([tmp_path]).series
    geo = series.geometry
    assert geo.gaps == [2] and geo.duplicates == [4] and geo.uneven
    assert any("gap" in line for line in geo.summary())


def test_splits_series_that_mixes_orientations(tmp_path):
    uid = generate_uid()
    write_ct_series(tmp_path / "axial", [0.0, 1.0, 2.0], series_uid=uid)
    write_ct_series(tmp_path / "coronal", [0.0, 1.0], instance_numbers=[7, 8], series_uid=uid,
                    orientation=[1, 0, 0, 0, 0, -1])
    found = discover([tmp_path])
    assert [len(s.slices) for s in found.series] == [3, 2]
    assert {s.key for s in found.series} == {uid, f"{uid}#1"}


def test_bundled_files_classified_with_reasons(tmp_path):
    for name in ("CT_small.dcm", "rtplan.dcm", "rtstruct.dcm", "test-SR.dcm", "MR_truncated.dcm", "liver_1frame.dcm"):
        shutil.copy(bundled(name), tmp_path / name)
    (tmp_path / "notes.txt").write_text("not dicom")
    found = discover([tmp_path])
    reasons = {k.ref.path.name: (k.kind, k.reason) for k in found.skipped}
    assert [s.modality for s in found.series] == ["CT"]
    assert reasons["rtplan.dcm"] == ("non-image", "non-image SOP class: RTPLAN")
    assert reasons["rtstruct.dcm"][0] == reasons["test-SR.dcm"][0] == reasons["liver_1frame.dcm"][0] == "non-image"
    assert reasons["MR_truncated.dcm"][0] == "corrupt" and "truncated" in reasons["MR_truncated.dcm"][1]
    assert reasons["notes.txt"][0] == "not-dicom"
    assert len(found.files) == 7  # every file accounted for exactly once


@pytest.mark.parametrize(
    "name",
    ["MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm", "MR_small_bigendian.dcm",
     "MR_small_implicit.dcm"],
)
def test_compressed_and_big_endian_syntaxes_decode_to_the_same_values(name):
    reference, _ = read_instance_frames(inspect_file(FileRef(bundled("MR_small.dcm"))))
    frames, _ = read_instance_frames(inspect_file(FileRef(bundled(name))))
    assert frames.shape == (1, 64, 64) and np.array_equal(frames, reference)


def test_deflate_jpeg_and_rgb_decode():
    deflated, _ = read_instance_frames(inspect_file(FileRef(bundled("image_dfl.dcm"))))
    assert deflated.ndim == 3 and deflated.std() > 0
    rgb = inspect_file(FileRef(bundled("SC_rgb_rle_2frame.dcm")))
    frames, _ = read_instance_frames(rgb)
    assert rgb.units == "RGB" and frames.shape == (2, 100, 100, 3)


def test_ct_volume_is_in_hounsfield_units(tmp_path):
    write_ct_series(tmp_path, [0.0, 2.5])
    (series,) = discover([tmp_path]).series
    volume, info = read_series_volume(series)
    ds = pydicom.dcmread(bundled("CT_small.dcm"))
    expected = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    assert volume.dtype == np.float32 and volume.shape == (2, 128, 128)
    assert np.array_equal(volume[1], expected) and info.units == "HU" and info.slice_spacing == 2.5
    assert info.positions[:, 2].tolist() == [0.0, 2.5]


def test_unsupported_transfer_syntax_is_named(tmp_path):
    ds = pydicom.dcmread(bundled("JPEG2000.dcm"))
    ds.file_meta.TransferSyntaxUID = pydicom.uid.MPEG2MPML
    ds.save_as(tmp_path / "video.dcm")
    with pytest.raises(InputError, match="unsupported transfer syntax MPEG2"):
        inspect_file(FileRef(tmp_path / "video.dcm"))


def test_zip_read_in_memory_and_traversal_members_refused(tmp_path):
    archive = tmp_path / "export.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(bundled("CT_small.dcm"), "study/1")
        zf.write(bundled("CT_small.dcm"), "../evil")
    found = discover([archive])
    assert [str(i.ref) for s in found.series for i in s.instances] == [f"{archive}!/study/1"]
    (bad,) = found.skipped
    assert bad.ref.member == "../evil" and "unsafe path" in bad.reason
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export.zip"]  # nothing extracted


def test_dicomdir_series_found_and_missing_references_reported(tmp_path):
    source = Path(get_testdata_file("CT_small.dcm")).parent / "dicomdirtests"
    shutil.copy(source / "DICOMDIR", tmp_path / "DICOMDIR")
    shutil.copytree(source / "98892003", tmp_path / "98892003")  # the other patients' files are absent
    found = discover([tmp_path])
    kinds = {}
    for k in found.skipped:
        kinds.setdefault(k.kind, []).append(k)
    assert {s.modality for s in found.series} == {"MR"} and sum(len(s.slices) for s in found.series) == 17
    assert [k.ref.path.name for k in kinds["non-image"]] == ["DICOMDIR"]
    missing = [k for k in kinds["corrupt"] if "referenced by DICOMDIR" in k.reason]
    assert missing and all("98892003" not in str(k.ref) for k in missing)


def test_duplicate_instances_in_another_syntax_kept_once(tmp_path):
    shutil.copy(bundled("MR_small.dcm"), tmp_path / "a")
    shutil.copy(bundled("MR_small_RLE.dcm"), tmp_path / "b")  # same SOP instance, other syntax
    found = discover([tmp_path])
    assert len(found.series) == 1
    (dup,) = found.skipped
    assert dup.kind == "duplicate" and dup.ref.path.name == "b"


def test_missing_input_raises(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        discover([tmp_path / "absent"])


def test_links_to_folders_are_followed_without_loops_and_broken_links_reported(tmp_path):
    write_ct_series(tmp_path / "elsewhere" / "ct", [0.0, 2.5, 5.0])
    root = tmp_path / "in"
    root.mkdir()
    (root / "ct").symlink_to(tmp_path / "elsewhere" / "ct", target_is_directory=True)
    (root / "again").symlink_to(tmp_path / "elsewhere", target_is_directory=True)  # the same files a second way
    (root / "loop").symlink_to(root, target_is_directory=True)
    (root / "gone").symlink_to(tmp_path / "deleted.dcm")
    found = discover([root])
    assert [len(s.slices) for s in found.series] == [3]  # each file once, through the first link
    (broken,) = found.skipped
    assert broken.ref.path == root / "gone" and broken.kind == "broken-link"


def _dicomdir_copy(folder: Path) -> Path:
    """pydicom's DICOMDIR and one patient's 17 MR files, the folder of 7 of them in lower case
    (as a copy of a CD on a case-sensitive disk); the other patients' files are absent."""
    source = bundled("CT_small.dcm").parent / "dicomdirtests"
    shutil.copy(source / "DICOMDIR", folder / "DICOMDIR")
    shutil.copytree(source / "98892003", folder / "98892003")
    (folder / "98892003" / "MR700").rename(folder / "98892003" / "mr700")
    return folder / "DICOMDIR"


def test_a_dicomdir_given_as_input_brings_the_files_it_lists(tmp_path):
    found = discover([_dicomdir_copy(tmp_path)])
    assert {s.modality for s in found.series} == {"MR"} and sum(len(s.slices) for s in found.series) == 17
    assert [k.ref.path.name for k in found.skipped if k.kind == "non-image"] == ["DICOMDIR"]
    assert all("98892003" not in str(k.ref) for k in found.skipped)


def test_dicomdir_file_ids_in_another_case_are_listed_once(tmp_path):
    _dicomdir_copy(tmp_path)
    found = discover([tmp_path])
    assert sum(len(s.slices) for s in found.series) == 17
    listed = [str(r).casefold() for r in found.files]
    assert len(listed) == len(set(listed))  # no file both processed and "referenced by DICOMDIR but missing"


def test_the_same_uid_with_other_content_is_a_conflict_not_a_duplicate(tmp_path):
    shutil.copy(bundled("CT_small.dcm"), tmp_path / "a")
    ds = pydicom.dcmread(bundled("CT_small.dcm"))
    ds.PixelData = (ds.pixel_array + 1).tobytes()  # another version of the instance
    ds.save_as(tmp_path / "b")
    shutil.copy(bundled("MR_small.dcm"), tmp_path / "c")
    shutil.copy(bundled("MR_small_jp2klossless.dcm"), tmp_path / "d")  # the same instance, other syntax
    found = discover([tmp_path])
    assert sorted(i.ref.path.name for s in found.series for i in s.instances) == ["a", "c"]
    kinds = {k.ref.path.name: k.kind for k in found.skipped}
    assert kinds == {"b": "conflict", "d": "duplicate"}


def test_padding_mask_marks_padding_in_the_units_of_the_pixels():
    ds = ct_with_padding()
    stored = stored_frames(ds)
    hu = to_units(ds, stored, "HU")
    assert np.array_equal(padding_mask(ds, hu, "HU"), stored == CT_PADDING)
    ds.PixelPaddingRangeLimit = 200  # padding from -2000 to 200 stored: also the dimmest tissue
    assert np.array_equal(padding_mask(ds, hu, "HU"), (stored >= CT_PADDING) & (stored <= 200))
    del ds.PixelPaddingValue
    assert padding_mask(ds, hu, "HU") is None


def test_rescaled_units_apply_the_rescale_of_any_grey_scale_modality():
    # what `restore dicom --nifti` writes for a non-CT series (a PET/MR slope, per frame when enhanced)
    ds = pydicom.dcmread(bundled("MR_small.dcm"))
    ds.RescaleSlope, ds.RescaleIntercept = 0.5, -10
    stored = stored_frames(ds)
    assert np.array_equal(to_units(ds, stored, "stored"), stored.astype(np.float32))
    assert np.array_equal(to_units(ds, stored, "rescaled"), (stored * 0.5 - 10).astype(np.float32))
