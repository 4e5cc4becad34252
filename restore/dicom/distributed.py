"""Scale ``restore dicom`` across GPUs and nodes with Lightning ``Trainer.predict`` (DDP).

Every rank discovers the same inputs and computes the same assignment of whole series to ranks
(:func:`assign`, greedy by slice count, so ranks finish together); each rank's
:class:`SeriesPredictor` runs the same :class:`~restore.dicom.runner.SeriesRunner` as the
single-process job on its series and an :class:`OutcomeWriter` appends each outcome to
``OUTDIR/.restore-dicom/rank-<r>.jsonl``. After a barrier, global rank 0 reads all ranks'
outcomes (:func:`read_outcomes`), removes that folder and writes the report. Nothing is padded or
duplicated: Lightning's distributed sampler is disabled because it would repeat series to even out
the ranks. Every rank runs the whole command; only global rank 0 speaks (the job's header), and
Lightning's start-up lines (devices found, ranks joining) are not shown.

Multi-node: run the same command on every node with ``--num-nodes`` and the usual
``MASTER_ADDR``/``MASTER_PORT``/``NODE_RANK`` environment (or under SLURM).

Lightning is imported at the top: this module is only imported when a job runs distributed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import BasePredictionWriter
from pytorch_lightning.utilities.warnings import PossibleUserWarning
from torch.utils.data import DataLoader

from restore.dicom.plan import DicomJobConfig, SeriesJob
from restore.dicom.processing import ModelChoice, ProcessingConfig, build_processor
from restore.dicom.runner import SeriesOutcome, SeriesRunner

RESULTS_DIR = ".restore-dicom"


def assign(slices: list[int], world_size: int) -> list[list[int]]:
    """Job indices per rank: largest jobs first, each to the least-loaded rank (deterministic)."""
    load = [0] * world_size
    ranks: list[list[int]] = [[] for _ in range(world_size)]
    for i in sorted(range(len(slices)), key=lambda i: (-slices[i], i)):
        r = min(range(world_size), key=lambda r: (load[r], r))
        ranks[r].append(i)
        load[r] += slices[i]
    return ranks


class SeriesPredictor(pl.LightningModule):
    """One predict step per series of this rank's share of ``jobs``; the step's prediction is the
    outcome as a JSON-ready dict.

    Holds no trainable weights: the restoration model lives in the runner's processor, built in
    :meth:`on_predict_start` on this rank's device. ``announce`` is called there on global rank 0
    only, once every rank has joined (before, each process takes itself for rank 0).
    """

    def __init__(self, config: DicomJobConfig, jobs: list[SeriesJob], choice: ModelChoice, processing: ProcessingConfig,
                 announce: Callable[[], None] = lambda: None):
        super().__init__()
        self.config = config
        self.jobs = jobs
        self.choice = choice
        self.processing = processing
        self.announce = announce
        self.runner: SeriesRunner | None = None

    def on_predict_start(self) -> None:
        if self.global_rank == 0:
            self.announce()
        processor = build_processor(self.config.task, self.choice, weights=self.config.weights,
                                    config=self.processing, device=self.device)
        self.runner = SeriesRunner(self.config, self.choice.name, self.choice.description, processor)

    def predict_dataloader(self) -> DataLoader:
        mine = assign([j.slices for j in self.jobs], self.trainer.world_size)[self.trainer.global_rank]
        # one job index per step, not collated into a tensor; batches of one (not batch_size=None) so
        # that Lightning can track the indices the prediction writer is given
        return DataLoader(mine, batch_size=1, shuffle=False, collate_fn=lambda batch: batch[0])

    def predict_step(self, index: int, batch_idx: int) -> dict:
        return asdict(self.runner(self.jobs[int(index)]))


class OutcomeWriter(BasePredictionWriter):
    """Appends every prediction (an outcome dict) as one line of ``results_dir/rank-<r>.jsonl``,
    synced to disk, so that rank 0 can read them after the barrier."""

    def __init__(self, results_dir: Path):
        super().__init__(write_interval="batch")
        self.results_dir = results_dir

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.results_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.results_dir / f"rank-{trainer.global_rank}.jsonl"
        self.path.write_text("")  # this rank's results of an earlier run are stale

    def write_on_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, prediction: dict,
                           batch_indices, batch, batch_idx: int, dataloader_idx: int) -> None:
        with open(self.path, "a") as fh:
            fh.write(json.dumps(prediction) + "\n")
            fh.flush()
            os.fsync(fh.fileno())


def read_outcomes(results_dir: Path, world_size: int) -> list[SeriesOutcome]:
    """The outcomes every rank's :class:`OutcomeWriter` wrote, rank by rank."""
    outcomes = []
    for r in range(world_size):
        path = results_dir / f"rank-{r}.jsonl"
        outcomes += [SeriesOutcome.from_dict(json.loads(line)) for line in path.read_text().splitlines() if line]
    return outcomes


@contextlib.contextmanager
def _lightning_silenced() -> Iterator[None]:
    """Hide what Lightning says that is not about the series: its info lines (GPU available, tips,
    ranks initialising), its hint that a data loader without workers may be slow (ours loads job
    indices) and the deprecations that Lightning's own code meets in torch."""
    loggers = [logging.getLogger(name) for name in ("pytorch_lightning", "lightning_fabric")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PossibleUserWarning)
            warnings.filterwarnings("ignore", category=FutureWarning, module="pytorch_lightning")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def predict_series(config: DicomJobConfig, jobs: list[SeriesJob], choice: ModelChoice, processing: ProcessingConfig,
                   announce: Callable[[], None] = lambda: None) -> list[SeriesOutcome] | None:
    """Run ``jobs`` on ``config.devices`` x ``config.num_nodes`` processes; ``announce()`` on
    global rank 0 when they start.

    Returns every rank's outcomes on global rank 0, None on the other ranks.
    """
    results_dir = Path(config.outdir) / RESULTS_DIR
    accelerator = "gpu" if config.device in ("auto", "cuda") and torch.cuda.is_available() else "cpu"
    with _lightning_silenced():
        trainer = pl.Trainer(
            accelerator=accelerator, devices=config.devices, num_nodes=config.num_nodes,
            strategy="ddp",
            use_distributed_sampler=False, logger=False, enable_checkpointing=False,
            enable_progress_bar=not config.quiet, enable_model_summary=False, callbacks=[OutcomeWriter(results_dir)],
        )
        trainer.predict(SeriesPredictor(config, jobs, choice, processing, announce), return_predictions=False)
        trainer.strategy.barrier()
    if trainer.global_rank != 0:
        return None
    outcomes = read_outcomes(results_dir, trainer.world_size)
    shutil.rmtree(results_dir)  # every rank is past the barrier: nobody writes there any more
    return outcomes
