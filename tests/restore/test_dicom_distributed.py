"""restore dicom scale-out: a real 2-process DDP (gloo, CPU) run through Lightning Trainer.predict."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pydicom
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from restore.dicom.distributed import assign

REPO = Path(__file__).resolve().parents[2]


def test_assign_gives_whole_jobs_to_balanced_ranks_without_repeats():
    ranks = assign([5, 1, 1, 3, 2], 2)
    assert sorted(i for r in ranks for i in r) == [0, 1, 2, 3, 4]
    assert ranks == [[0, 1], [3, 4, 2]]  # loads 6 and 6


def test_two_process_ddp_processes_every_series_once(tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for n in range(3):  # three one-slice series
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        ds.SeriesInstanceUID = generate_uid()
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.save_as(inputs / f"ct{n}")
    shutil.copy(get_testdata_file("rtplan.dcm"), inputs / "plan")
    out, report = tmp_path / "out", tmp_path / "report.json"
    env = {**os.environ, "PL_DISABLE_FORK": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "cli", "dicom", str(inputs), "-o", str(out), "--task", "ct-denoise",
         "--model", "identity", "--device", "cpu", "--devices", "2", "--report", str(report), "-q"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(report.read_text())
    assert [s["status"] for s in data["series"]] == ["processed"] * 3
    assert len(data["files"]) == 4 and len(list(out.rglob("*.dcm"))) == 3
    ranks = [json.loads(line) for p in (out / ".restore-dicom").glob("rank-*.jsonl") for line in p.read_text().splitlines()]
    assert len(ranks) == 3 and len(list((out / ".restore-dicom").glob("rank-*.jsonl"))) == 2
