"""restore.dicom.runner: the slices of a series go to the model in batches."""

from __future__ import annotations

import pytest

import restore.dicom.job as job
from restore.dicom.job import DicomJobConfig, run_dicom_job
from tests.dicom_study import ct_stack


@pytest.mark.parametrize(("batch_size", "calls"), [(4, [3]), (2, [2, 1]), (1, [1, 1, 1])])
def test_single_frame_slices_of_a_series_share_model_calls_up_to_the_batch_size(tmp_path, monkeypatch, batch_size,
                                                                                 calls):
    # each single-frame file was one model call whatever --batch-size said (3 calls for 3 slices)
    folder = tmp_path / "in"
    folder.mkdir()
    for n, ds in enumerate(ct_stack([(0.0, 0.0, z) for z in (0.0, 2.5, 5.0)])):
        ds.save_as(folder / f"{n}.dcm", enforce_file_format=True)
    seen = []
    build = job.build_processor

    def counting(*args, **kwargs):
        processor = build(*args, **kwargs)
        model = processor.model
        processor.model = lambda x, **kw: (seen.append(x.shape[0]), model(x, **kw))[1]
        return processor

    monkeypatch.setattr(job, "build_processor", counting)
    report = run_dicom_job(DicomJobConfig(inputs=[folder], outdir=tmp_path / "out", task="ct-denoise",
                                          model="identity", batch_size=batch_size, quiet=True))
    assert report.exit_code == 0 and [f.status for f in report.files] == ["processed"] * 3
    assert seen == calls  # one 128 px window per slice: slices per call
