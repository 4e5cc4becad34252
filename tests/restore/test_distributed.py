"""The Trainer.predict runner that restore upscale and restore dicom share (restore/distributed.py),
in one process; the multi-process runs are in test_video_distributed.py and test_dicom_distributed.py."""

from __future__ import annotations

import json
import signal

import pytest
import pytorch_lightning as pl
from torch.utils.data import DataLoader

from restore.distributed import PredictInterrupted, predict, read_results
from restore.errors import Interrupted


# one process without a process group ("ddp" would start one in pytest's process and leave
# MASTER_PORT in its environment, where the multi-process tests' ranks would find it taken)
ONE_PROCESS = {"device": "cpu", "devices": 1, "num_nodes": 1, "strategy": "auto", "progress_bar": False}


class _CountingJob(pl.LightningModule):
    """Predicts {"unit": i} for units 0..3; at ``stop_at`` raises ``stop`` instead."""

    def __init__(self, stop_at: int | None = None, stop: BaseException | None = None):
        super().__init__()
        self.stop_at, self.stop = stop_at, stop

    def predict_dataloader(self) -> DataLoader:
        return DataLoader(list(range(4)), batch_size=1, collate_fn=lambda batch: batch[0])

    def predict_step(self, unit: int, batch_idx: int) -> dict:
        if unit == self.stop_at:
            raise self.stop
        return {"unit": unit}


def test_predict_returns_every_prediction_and_removes_its_folder(tmp_path):
    results = predict(_CountingJob(), tmp_path / "results", **ONE_PROCESS)
    assert results == [{"unit": u} for u in range(4)] and not (tmp_path / "results").exists()


@pytest.mark.parametrize("stop, signum", [(KeyboardInterrupt(), signal.SIGINT), (Interrupted(signal.SIGTERM), signal.SIGTERM)])
def test_a_stop_signal_raises_with_the_units_finished_before_it(tmp_path, stop, signum):
    with pytest.raises(PredictInterrupted) as caught:
        predict(_CountingJob(stop_at=2, stop=stop), tmp_path / "results", **ONE_PROCESS)
    assert caught.value.signum == signum and caught.value.results == [{"unit": 0}, {"unit": 1}]
    assert isinstance(caught.value, KeyboardInterrupt)  # uncaught, the command stops as on Ctrl-C


def test_partial_results_leave_out_a_line_cut_short_and_a_rank_that_wrote_nothing(tmp_path):
    (tmp_path / "rank-0.jsonl").write_text(json.dumps({"unit": 0}) + "\n" + '{"unit": 1, "fr')
    assert read_results(tmp_path, 2, partial=True) == [{"unit": 0}]
    with pytest.raises(json.JSONDecodeError):
        read_results(tmp_path, 1)
    (tmp_path / "rank-0.jsonl").write_text(json.dumps({"unit": 0}) + "\n")
    with pytest.raises(FileNotFoundError):  # after a finished run every rank has its file
        read_results(tmp_path, 2)
