"""restore dicom scale-out: a real 2-process DDP (gloo, CPU) run through Lightning Trainer.predict."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pydicom
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from restore.dicom.distributed import OutcomeWriter, SeriesPredictor, assign, read_outcomes
from restore.dicom.plan import DicomJobConfig, series_jobs
from restore.dicom.processing import ProcessingConfig, choose_model
from restore.io.dicom import discover

REPO = Path(__file__).resolve().parents[3]


def test_assign_gives_whole_jobs_to_balanced_ranks_without_repeats():
    ranks = assign([5, 1, 1, 3, 2], 2)
    assert sorted(i for r in ranks for i in r) == [0, 1, 2, 3, 4]
    assert ranks == [[0, 1], [3, 4, 2]]  # loads 6 and 6


def test_two_process_ddp_processes_every_series_once_and_speaks_once(tmp_path):
    """Every series once; the header once (from global rank 0); none of Lightning's start-up lines;
    the ranks' outcome files removed."""
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
         "--model", "identity", "--device", "cpu", "--devices", "2", "--report", str(report)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(report.read_text())
    assert [s["status"] for s in data["series"]] == ["processed"] * 3
    assert len(data["files"]) == 4 and len(list(out.rglob("*.dcm"))) == 3
    assert proc.stdout.count("restore dicom: 3 series") == 1
    chatter = ("GPU available", "Tip:", "Initializing distributed", "processes registered", "deprecated", "Couldn't infer")
    assert [c for c in chatter if c in proc.stdout + proc.stderr] == []
    assert sorted(p.name for p in out.iterdir()) == sorted(s["series_id"] for s in data["series"])


def test_predictor_and_writer_run_a_series_without_a_trainer(tmp_path):
    """The Lightning classes work alone: a predict step writes the series, the writer's line reads back."""
    (tmp_path / "in").mkdir()
    shutil.copy(get_testdata_file("CT_small.dcm"), tmp_path / "in" / "ct")
    config = DicomJobConfig(inputs=[tmp_path / "in"], outdir=tmp_path / "out", task="ct-denoise", model="identity",
                            device="cpu")
    jobs = series_jobs(discover(config.inputs), config.task)
    predictor = SeriesPredictor(config, jobs, choose_model(config.task, "identity"), ProcessingConfig())
    predictor.on_predict_start()
    prediction = predictor.predict_step(0, 0)
    writer, rank = OutcomeWriter(tmp_path / "results"), SimpleNamespace(global_rank=0)
    writer.on_predict_start(rank, predictor)
    writer.write_on_batch_end(rank, predictor, prediction, None, None, 0, 0)
    [outcome] = read_outcomes(tmp_path / "results", world_size=1)
    assert outcome.status == "processed" and outcome.series_id == jobs[0].series_id
    assert outcome.files[0].output == f"{outcome.series_id}/IM00001.dcm"
    assert (config.outdir / outcome.files[0].output).is_file()
