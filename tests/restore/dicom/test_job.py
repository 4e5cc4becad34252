"""restore dicom end to end (restore.dicom.job through the CLI), with the identity model."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from cli import main
from tests.dicom_study import bundled as bundled_dataset
from tests.dicom_study import cr, ct_with_padding, enhanced, write_study

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
    # --compress keep (the default): a lossless input syntax is kept, a lossy one is written
    # uncompressed with the reason; every output decodes to the values written (checked on write)
    uid = pydicom.uid
    syntax = {Path(f["path"]).name: (f["transfer_syntax"], f["note"]) for f in report["files"] if f["output"]}
    lossy = "written uncompressed: the input's transfer syntax {} is (or may be) lossy"
    assert syntax == {
        "1": (uid.ExplicitVRLittleEndian.name, None), "2": (uid.ExplicitVRLittleEndian.name, None),
        "3": (uid.ExplicitVRLittleEndian.name, None), "us_bigendian": (uid.ExplicitVRLittleEndian.name, None),
        "mr_j2k": (uid.JPEG2000Lossless.name, None), "rgb_rle": (uid.RLELossless.name, None),
        "jpeg": (uid.ExplicitVRLittleEndian.name, lossy.format(uid.JPEGExtended12Bit.name)),
        "multiframe_ybr_jpeg": (uid.ExplicitVRLittleEndian.name, lossy.format(uid.JPEGBaseline8Bit.name)),
    }
    assert lossy.format(uid.JPEGBaseline8Bit.name) in console.out
    written_syntax = {f["output"]: f["transfer_syntax"] for f in report["files"] if f["output"]}
    sop_uids = set()
    for path in written:
        ds = pydicom.dcmread(path)
        source_uid = ds.SourceImageSequence[0].ReferencedSOPInstanceUID
        assert ds.file_meta.TransferSyntaxUID.name == written_syntax[str(path.relative_to(out))]
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


def test_sr_x2_refuses_an_object_it_cannot_resample_with_its_reason(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    cr().save_as(folder / "plain", enforce_file_format=True)
    shuttered = cr()
    shuttered.ShutterShape = "CIRCULAR"
    shuttered.CenterOfCircularShutter, shuttered.RadiusOfCircularShutter = [32, 32], 30
    shuttered.save_as(folder / "shuttered", enforce_file_format=True)
    report_path = tmp_path / "r.json"
    assert run([folder, "-o", tmp_path / "out", "--task", "sr-x2", "-q", "--report", report_path]) == 2
    report = json.loads(report_path.read_text())
    status = {Path(f["path"]).name: (f["status"], f["kind"], f["reason"]) for f in report["files"]}
    assert status["plain"] == ("processed", None, None)
    reason = "not resampled: its display shutter (ShutterShape) is in pixels of the original image and would no longer match"
    assert status["shuttered"] == ("skipped", "unsupported", reason)
    assert sorted((s["status"], s["reason"]) for s in report["series"]) == [("processed", None), ("skipped", reason)]


def _dciodvfy(path: Path) -> set[str]:
    """dciodvfy's errors and warnings about ``path``, without the values they quote."""
    result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=120)
    lines = (result.stdout + result.stderr).splitlines()
    return {re.sub(r"\[\d+\] = <.*?>", "", line).strip() for line in lines if line.startswith(("Error", "Warning"))}


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="needs dciodvfy (Debian dicom3tools: `make dicom3tools`)")
@pytest.mark.parametrize(("task", "compress"), [("ct-denoise", "keep"), ("sr-x2", "keep"), ("ct-denoise", "rle"),
                                                ("ct-denoise", "jpeg-ls"), ("ct-denoise", "j2k")])
def test_outputs_add_no_dciodvfy_error_or_warning_over_their_inputs(tmp_path, task, compress):
    """Every object of a small study (CT with padding, MR, NM, CR, multi-frame US with regions,
    Enhanced CT and MR, RGB secondary capture) through `restore dicom`, in every --compress
    syntax: what dciodvfy finds in each output, it already found in its input."""
    paths = write_study(tmp_path / "in")
    out, report_path = tmp_path / "out", tmp_path / "r.json"
    model = ["--model", "identity"] if task != "sr-x2" else []
    assert run([tmp_path / "in", "-o", out, "--task", task, *model, "--modalities", "any", "--compress", compress,
                "-q", "--report", report_path]) == 0
    report = json.loads(report_path.read_text())
    assert sorted(Path(f["path"]).stem for f in report["files"] if f["status"] == "processed") == sorted(paths)
    added = {Path(f["path"]).stem: sorted(_dciodvfy(out / f["output"]) - _dciodvfy(Path(f["path"])))
             for f in report["files"]}
    assert added == {name: [] for name in paths}


@pytest.mark.parametrize("content", ["ct, --modalities XYZ", "empty folder", "no DICOM"])
def test_a_job_that_processes_nothing_exits_1(tmp_path, content, capsys):
    folder, options = tmp_path / "in", []
    folder.mkdir()
    if content.startswith("ct"):
        write_ct_series(folder, [0.0], [1])
        options = ["--modalities", "XYZ"]
    elif content == "no DICOM":
        (folder / "notes.txt").write_text("not an image")
    report = tmp_path / "r.json"
    assert run([folder, "-o", tmp_path / "out", "--task", "ct-denoise", "--model", "identity", "--report", report,
                *options]) == 1
    assert json.loads(report.read_text())["exit_code"] == 1
    assert "nothing processed: " in capsys.readouterr().out


@pytest.mark.parametrize("case", ["OUTDIR is a file", "--report folder missing", "--batch-size 0"])
def test_unusable_destinations_and_settings_are_one_line_errors_before_any_work(tmp_path, case, capsys, monkeypatch):
    import restore.dicom.job as job

    write_ct_series(tmp_path / "in", [0.0], [1])
    out, options = tmp_path / "out", []
    if case == "OUTDIR is a file":
        out.write_text("")
        message = f"{out}: is a file, not a folder"
    elif case == "--report folder missing":
        options = ["--report", tmp_path / "absent" / "r.json"]
        message = f"{tmp_path / 'absent' / 'r.json'}: --report: folder {tmp_path / 'absent'} does not exist"
    else:
        options = ["--batch-size", "0"]
        message = "--batch-size must be at least 1, got 0"

    def no_work(*args, **kwargs):
        raise AssertionError("the inputs were read before the settings were checked")

    monkeypatch.setattr(job, "discover", no_work)
    assert run([tmp_path / "in", "-o", out, "--task", "ct-denoise", "--model", "identity", "-q", *options]) == 1
    assert capsys.readouterr().err == f"restore: error: {message}\n"
    assert out.is_file() if case == "OUTDIR is a file" else not out.exists()


def test_ctrl_c_is_one_line_and_exit_code_130(tmp_path, capsys, monkeypatch):
    import restore.dicom.runner as runner

    def interrupted(instance):
        raise KeyboardInterrupt

    write_ct_series(tmp_path / "in", [0.0], [1])
    monkeypatch.setattr(runner, "read_instance_frames", interrupted)
    try:
        code = run([tmp_path / "in", "-o", tmp_path / "out", "--task", "ct-denoise", "--model", "identity", "-q"])
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C escaped as a traceback")
    assert code == 130 and capsys.readouterr().err == "restore: interrupted\n"


def derived_uids(out: Path) -> set[tuple[str, str]]:
    return {(str(d.SeriesInstanceUID), str(d.SOPInstanceUID)) for d in map(pydicom.dcmread, out.rglob("*.dcm"))}


def test_derived_uids_are_the_same_in_every_run_of_the_same_settings(tmp_path):
    write_ct_series(tmp_path / "in", [0.0, 2.5], [1, 2])
    args = [tmp_path / "in", "--task", "ct-denoise", "--model", "identity", "-q"]
    for out in ("a", "b", "other-tile"):
        assert run([*args, "-o", tmp_path / out, *(["--tile", "256"] if out == "other-tile" else [])]) == 0
    first = derived_uids(tmp_path / "a")
    assert len(first) == 2 and derived_uids(tmp_path / "b") == first
    assert not {s for s, _ in derived_uids(tmp_path / "other-tile")} & {s for s, _ in first}


def test_two_tasks_share_one_outdir(tmp_path):
    write_ct_series(tmp_path / "in", [0.0], [1])
    out = tmp_path / "out"
    for task, model in (("ct-denoise", "identity"), ("sr-x2", "bicubic")):
        assert run([tmp_path / "in", "-o", out, "--task", task, "--model", model, "-q"]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert len(names) == 2 and names[0].endswith("-ct-denoise") and names[1].endswith("-sr-x2")


def test_resume_with_other_settings_refuses_and_keeps_the_earlier_series(tmp_path, capsys):
    write_ct_series(tmp_path / "in", [0.0], [1])
    out = tmp_path / "out"
    args = [tmp_path / "in", "-o", out, "--task", "ct-denoise", "-q"]
    assert run([*args, "--model", "identity"]) == 0
    before = hashes([out])
    capsys.readouterr()
    assert run([*args, "--model", "nlm", "--resume"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "made with other settings (model identity (now nlm))" in err
    assert hashes([out]) == before


def test_the_progress_bar_counts_only_the_series_asked_for(tmp_path, capsys):
    write_ct_series(tmp_path / "in", [0.0, 2.5, 5.0], [1, 2, 3])
    shutil.copy(bundled("MR_small.dcm"), tmp_path / "in" / "mr")  # excluded by ct-denoise
    assert run([tmp_path / "in", "-o", tmp_path / "out", "--task", "ct-denoise", "--model", "identity"]) == 0
    console = capsys.readouterr()
    assert "restore dicom: 1 series, 3 slices (1 series excluded" in console.out
    assert "series 1/1" in console.err and "3/3" in console.err and "/4" not in console.err


def test_compress_writes_each_lossless_syntax_decoding_to_the_values_written(tmp_path):
    """--compress rle|jpeg-ls|j2k|none on signed 16-bit CT with padding, 16-bit MR, 12-bit CR,
    multi-frame Enhanced CT and RGB: every output is in the syntax asked for, decodes to exactly the
    values of the uncompressed output, and keeps its UIDs (a lossless re-encoding is the same instance)."""
    folder = tmp_path / "in"
    folder.mkdir()
    for name, ds in (("ct", ct_with_padding()), ("mr", bundled_dataset("MR_small.dcm")), ("cr", cr()),
                     ("enhanced_ct", enhanced("CT")), ("sc_rgb", bundled_dataset("SC_rgb_rle.dcm"))):
        ds.save_as(folder / name, enforce_file_format=True)
    syntaxes = {"none": pydicom.uid.ExplicitVRLittleEndian, "rle": pydicom.uid.RLELossless,
                "jpeg-ls": pydicom.uid.JPEGLSLossless, "j2k": pydicom.uid.JPEG2000Lossless}
    written = {}
    for compress, syntax in syntaxes.items():
        out, report_path = tmp_path / compress, tmp_path / f"{compress}.json"
        assert run([folder, "-o", out, "--task", "ct-denoise", "--model", "identity", "--modalities", "any",
                    "--compress", compress, "-q", "--report", report_path]) == 0
        for f in json.loads(report_path.read_text())["files"]:
            ds = pydicom.dcmread(out / f["output"])
            assert ds.file_meta.TransferSyntaxUID == syntax and f["transfer_syntax"] == syntax.name
            written[compress, Path(f["path"]).name] = (ds.SOPInstanceUID, ds.pixel_array)
    for (compress, name), (sop_uid, pixels) in written.items():
        plain_uid, plain = written["none", name]
        assert sop_uid == plain_uid and pixels.dtype == plain.dtype and np.array_equal(pixels, plain), (compress, name)
    assert np.array_equal(written["none", "ct"][1], ct_with_padding().pixel_array)  # identity: the input's values
