"""Scale ``restore dicom`` across GPUs and nodes with Lightning ``Trainer.predict`` (DDP).

Every rank discovers the same inputs and computes the same assignment of whole series to ranks
(:func:`assign`, greedy by slice count, so ranks finish together); each rank's
:class:`SeriesPredictor` runs the same :class:`~restore.dicom.runner.SeriesRunner` as the
single-process job on its series and an :class:`OutcomeWriter` appends each outcome to
``OUTDIR/.restore-dicom/rank-<r>.jsonl``. After a barrier, global rank 0 reads all ranks'
outcomes (:func:`read_outcomes`), removes that folder and writes the report; the Trainer, the
writer and the barrier are :func:`restore.distributed.predict`, which ``restore upscale`` runs
too. Nothing is padded or duplicated: Lightning's distributed sampler is disabled because it
would repeat series to even out the ranks. Every rank runs the whole command; only global rank 0 speaks (the job's header), and
Lightning's start-up lines (devices found, ranks joining) are not shown.

Multi-node: run the same command on every node with ``--num-nodes`` and the usual
``MASTER_ADDR``/``MASTER_PORT``/``NODE_RANK`` environment (or under SLURM).

Lightning is imported at the top: this module is only imported when a job runs distributed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import pytorch_lightning as pl
from torch.utils.data import DataLoader

from restore.dicom.plan import DicomJobConfig, SeriesJob
from restore.dicom.processing import ModelChoice, ProcessingConfig, build_processor
from restore.dicom.runner import SeriesOutcome, SeriesRunner
from restore.distributed import ResultWriter as OutcomeWriter  # noqa: F401 - the name this job and its tests know
from restore.distributed import predict, read_results

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


def read_outcomes(results_dir: Path, world_size: int) -> list[SeriesOutcome]:
    """The outcomes every rank's :class:`OutcomeWriter` wrote, rank by rank."""
    return [SeriesOutcome.from_dict(data) for data in read_results(results_dir, world_size)]


def predict_series(config: DicomJobConfig, jobs: list[SeriesJob], choice: ModelChoice, processing: ProcessingConfig,
                   announce: Callable[[], None] = lambda: None) -> list[SeriesOutcome] | None:
    """Run ``jobs`` on ``config.devices`` x ``config.num_nodes`` processes; ``announce()`` on
    global rank 0 when they start.

    Returns every rank's outcomes on global rank 0, None on the other ranks.
    """
    results = predict(SeriesPredictor(config, jobs, choice, processing, announce), Path(config.outdir) / RESULTS_DIR,
                      device=config.device, devices=config.devices, num_nodes=config.num_nodes,
                      progress_bar=not config.quiet)
    return None if results is None else [SeriesOutcome.from_dict(data) for data in results]
