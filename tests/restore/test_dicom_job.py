"""restore dicom end to end (restore.dicom_job through the CLI), with the identity model."""

from __future__ import annotations

import hashlib
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from cli import main

PHI = {"PatientName": "Doe^Jane", "PatientID": "PID-884422", "PatientBirthDate": "19700101"}


def bundled(name: str) -> Path:
    return Path(get_testdata_file(name))


def write_ct_series(folder: Path, depths, instance_numbers) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    uid = generate_uid()
    for z, n in zip(depths, instance_numbers):
        ds = pydicom.dcmread(bundled("CT_small.dcm"))
        for k, v in PHI.items():
            setattr(ds, k, v)
        ds.SeriesInstanceUID = uid
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.ImagePositionPatient = [-100.0, -100.0, float(z)]
        ds.InstanceNumber = n
        ds.save_as(folder / f"{n}")
    return uid


@pytest.fixture
def mixed_inputs(tmp_path):
    """A CT series (InstanceNumber against position), compressed MR, RGB, big-endian, RT, a bad file, a zip."""
    root = tmp_path / "in"
    ct_uid = write_ct_series(root / "ct", [5.0, 0.0, 2.5], [1, 2, 3])
    shutil.copy(bundled("MR_small_jp2klossless.dcm"), root / "mr_j2k")
    shutil.copy(bundled("SC_rgb_rle.dcm"), root / "rgb_rle")
    shutil.copy(bundled("ExplVR_BigEnd.dcm"), root / "us_bigendian")
    shutil.copy(bundled("examples_ybr_color.dcm"), root / "multiframe_ybr_jpeg")
    shutil.copy(bundled("rtplan.dcm"), root / "plan")
    shutil.copy(bundled("MR_truncated.dcm"), root / "truncated")
    with zipfile.ZipFile(tmp_path / "export.zip", "w") as zf:
        zf.write(bundled("JPGExtended.dcm"), "DIR/jpeg")
    return [root, tmp_path / "export.zip"], ct_uid


def hashes(paths) -> dict[str, str]:
    files = [p for root in paths for p in ([root] if root.is_file() else root.rglob("*")) if p.is_file()]
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def run(args) -> int:
    return main(["dicom", *map(str, args)])


def test_mixed_folder_identity_round_trip(tmp_path, mixed_inputs, capsys):
    inputs, ct_uid = mixed_inputs
    before = hashes(inputs)
    out, report_path = tmp_path / "out", tmp_path / "report.json"
    code = run([*inputs, "-o", out, "--task", "ct-denoise", "--model", "identity", "--modalities", "any",
                "--report", report_path])
    console = capsys.readouterr()
    assert code == 2  # the truncated MR file is image data that could not be processed
    assert hashes(inputs) == before  # inputs byte-identical

    report = json.loads(report_path.read_text())
    status = {Path(f["path"]).name: (f["status"], f["kind"]) for f in report["files"]}
    assert status["truncated"] == ("skipped", "corrupt") and status["plan"] == ("skipped", "non-image")
    for name in ("1", "2", "3", "mr_j2k", "rgb_rle", "us_bigendian", "jpeg", "multiframe_ybr_jpeg"):
        assert status[name] == ("processed", None), name
    assert len(report["files"]) == len(before) and report["exit_code"] == 2
    assert report["model"] == {"name": "identity", "description": "baseline: identity (output equals input)",
                               "baseline": True}
    assert {s["status"] for s in report["series"]} == {"processed"} and len(report["series"]) == 6

    written = sorted(out.rglob("*.dcm"))
    assert len(written) == 8 and not list(out.glob(".*partial"))
    sop_uids = set()
    for path in written:
        ds = pydicom.dcmread(path)
        source_uid = ds.SourceImageSequence[0].ReferencedSOPInstanceUID
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        assert ds.SOPInstanceUID == ds.file_meta.MediaStorageSOPInstanceUID != source_uid
        assert pydicom.uid.UID(ds.SOPInstanceUID).is_valid and pydicom.uid.UID(ds.SeriesInstanceUID).is_valid
        assert list(ds.ImageType)[:2] == ["DERIVED", "SECONDARY"] and "ct-denoise" in ds.SeriesDescription
        sop_uids.add(ds.SOPInstanceUID)
    assert len(sop_uids) == 8

    # the CT series: order by position, HU exact through identity, patient/study/geometry kept
    (ct,) = [s for s in report["series"] if s["input_series_uid"] == ct_uid]
    assert ct["output_series_uid"] != ct_uid and ct["clipped"] == 0
    files = sorted((out / ct["output_dir"]).glob("*.dcm"))
    derived = [pydicom.dcmread(p) for p in files]
    assert [float(d.ImagePositionPatient[2]) for d in derived] == [0.0, 2.5, 5.0]
    assert [int(d.InstanceNumber) for d in derived] == [2, 3, 1]
    original = pydicom.dcmread(bundled("CT_small.dcm"))
    for d in derived:
        assert np.array_equal(d.pixel_array, original.pixel_array) and d.pixel_array.dtype == np.int16
        assert d.RescaleIntercept == original.RescaleIntercept and d.RescaleSlope == original.RescaleSlope
        assert d.PatientID == PHI["PatientID"] and d.StudyInstanceUID == original.StudyInstanceUID
        assert d.FrameOfReferenceUID == original.FrameOfReferenceUID
        assert d.ImageOrientationPatient == original.ImageOrientationPatient
        assert d.SeriesInstanceUID == ct["output_series_uid"]
    # compressed MR decoded and stored exactly
    (mr,) = [s for s in report["series"] if s["modality"] == "MR"]
    (mr_file,) = (out / mr["output_dir"]).glob("*.dcm")
    assert np.array_equal(pydicom.dcmread(mr_file).pixel_array, pydicom.dcmread(bundled("MR_small.dcm")).pixel_array)

    # no patient-identifying values on the console
    for value in PHI.values():
        assert value not in console.out and value not in console.err
    assert "identity" in console.out and "baseline" in console.out


def test_resume_keeps_verified_series_and_redoes_broken_ones(tmp_path, mixed_inputs):
    inputs, ct_uid = mixed_inputs
    out = tmp_path / "out"
    args = [*inputs, "-o", out, "--task", "ct-denoise", "--model", "identity", "--modalities", "any", "-q"]
    assert run(args) == 2
    assert run(args) == 1  # existing outputs without --resume: refused, nothing touched
    report = tmp_path / "r.json"
    first = {p: p.stat().st_mtime_ns for p in out.rglob("*.dcm")}
    victim = sorted(first)[0]
    victim.write_bytes(b"broken")
    assert run([*args, "--resume", "--report", report]) == 2
    series = json.loads(report.read_text())["series"]
    statuses = sorted(s["status"] for s in series)
    assert statuses == ["processed"] + ["resumed"] * 5
    assert pydicom.dcmread(victim).pixel_array.size > 0  # the broken series was rewritten
    kept = [p for p in first if p.parent != victim.parent]
    assert all(p.stat().st_mtime_ns == first[p] for p in kept)


def test_sr_x2_halves_pixel_spacing_and_keeps_patient_space(tmp_path):
    write_ct_series(tmp_path / "in", [0.0], [1])
    out, report = tmp_path / "out", tmp_path / "r.json"
    assert run([tmp_path / "in", "-o", out, "--task", "sr-x2", "-q", "--report", report]) == 0
    assert json.loads(report.read_text())["model"]["name"] == "bicubic"
    (path,) = out.rglob("*.dcm")
    ds, src = pydicom.dcmread(path), pydicom.dcmread(bundled("CT_small.dcm"))
    assert (ds.Rows, ds.Columns) == (256, 256)
    assert [float(v) for v in ds.PixelSpacing] == pytest.approx([float(v) / 2 for v in src.PixelSpacing])
    # centre of the first pixel moves by a quarter of an old pixel towards the corner
    assert float(ds.ImagePositionPatient[0]) == pytest.approx(-100.0 - 0.25 * float(src.PixelSpacing[1]))


def test_dry_run_writes_nothing(tmp_path, mixed_inputs):
    inputs, _ = mixed_inputs
    out, report = tmp_path / "out", tmp_path / "r.json"
    assert run([*inputs, "-o", out, "--task", "mr-denoise", "--dry-run", "-q", "--report", report]) == 2
    assert not out.exists()
    data = json.loads(report.read_text())
    status = {s["status"] for s in data["series"] if s["modality"] == "MR"}
    assert status == {"planned"} and data["model"]["name"] == "nlm"
    assert {s["status"] for s in data["series"] if s["modality"] != "MR"} == {"excluded"}


def test_series_a_region_model_cannot_take_are_skipped_and_the_rest_processed(tmp_path, mixed_inputs):
    """A 1-channel RAT with HU regions on a mixed folder: CT is processed, MR (not HU) and RGB
    (3 channels) series are skipped with a one-line reason, exit code 2 (used to abort the job)."""
    import torch
    from safetensors.torch import save_file

    from models.rat import PRESETS, RAT

    inputs, ct_uid = mixed_inputs
    weights = tmp_path / "rat.safetensors"
    save_file(RAT.from_config(PRESETS["rat-t"]["config"]).state_dict(), str(weights))
    out, report_path = tmp_path / "out", tmp_path / "r.json"
    code = run([*inputs, "-o", out, "--task", "ct-denoise", "--model", "rat-t", "--weights", weights,
                "--regions", "hu", "--modalities", "any", "-q", "--report", report_path])
    assert code == 2
    report = json.loads(report_path.read_text())
    assert report["model"]["description"] == "rat model (weights rat.safetensors)"
    by_status = {}
    for s in report["series"]:
        by_status.setdefault(s["status"], []).append(s)
    assert [s["input_series_uid"] for s in by_status["processed"]] == [ct_uid]
    reasons = {s["modality"]: s["reason"] for s in by_status["skipped"]}
    assert "'hu' needs single-channel CT" in reasons["MR"]
    assert any("takes 1-channel slices, the series has 3" in r for r in reasons.values())
    status = {Path(f["path"]).name: (f["status"], f["kind"]) for f in report["files"]}
    assert status["mr_j2k"] == status["rgb_rle"] == ("skipped", "unsupported")
    assert len(list(out.rglob("*.dcm"))) == 3 and torch.isfinite(torch.tensor(
        pydicom.dcmread(next(out.rglob("*.dcm"))).pixel_array.astype("float32"))).all()


def test_a_task_processes_its_own_modality_and_excludes_the_others(tmp_path, mixed_inputs):
    """ct-denoise on a mixed folder: CT series are processed; MR/US/other series are reported as
    excluded (not asked for), which alone does not make the exit code non-zero."""
    inputs, ct_uid = mixed_inputs
    out, report_path = tmp_path / "out", tmp_path / "r.json"
    run([*inputs, "-o", out, "--task", "ct-denoise", "--model", "identity", "-q", "--report", report_path])
    report = json.loads(report_path.read_text())
    processed = [s for s in report["series"] if s["status"] == "processed"]
    assert [s["input_series_uid"] for s in processed] == [ct_uid]
    excluded = [s for s in report["series"] if s["status"] == "excluded"]
    assert excluded and all(s["modality"] != "CT" for s in excluded)
    assert all("not processed by --task ct-denoise" in s["reason"] for s in excluded)
    status = {Path(f["path"]).name: (f["status"], f["kind"]) for f in report["files"]}
    assert status["mr_j2k"] == ("skipped", "modality")
    ct_only = tmp_path / "ct_only"
    ct_only.mkdir()
    for f in report["files"]:
        if f["status"] == "processed":
            shutil.copy(f["path"], ct_only / Path(f["path"]).name)
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(get_testdata_file("MR_small.dcm"), other / "mr")
    assert run([ct_only, other, "-o", tmp_path / "out2", "--task", "ct-denoise", "--model", "identity", "-q"]) == 0
