"""Run a batch job on Lightning DDP ranks with ``Trainer.predict``: the part that ``restore dicom``
and ``restore upscale`` share.

A job is a :class:`~pytorch_lightning.LightningModule` whose predict steps each do one unit of
the job and return a JSON-ready dict. :func:`predict` runs it on ``devices`` x ``num_nodes``
processes: a :class:`ResultWriter` appends each rank's dicts to ``results_dir/rank-<r>.jsonl``
(synced, so a crash loses no finished unit's line), and after a barrier global rank 0 reads
every rank's (:func:`read_results`), removes the folder and returns them. Lightning's distributed
sampler is off: it would repeat units to even out the ranks; each job assigns its own units.

A stop signal (Ctrl-C, ``SIGTERM``) stops every rank; global rank 0 then raises
:class:`PredictInterrupted` with the units the ranks had finished, so that the job can still
report what was done (and what ``--resume`` will do).

Every rank runs the whole command (Lightning starts the other processes by running the same
command line again, or ``torchrun`` and SLURM's ``srun`` started them); only global rank 0 should
speak, and Lightning's own start-up lines (devices found, ranks joining) are not shown. CPU ranks
share the cores of their node (``torch`` threads = cores // ranks on the node, unless
``OMP_NUM_THREADS`` says otherwise); GPU ranks take one GPU each (the local rank's).

Lightning is imported at the top: this module is only imported when a job runs distributed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import BasePredictionWriter
from pytorch_lightning.utilities.exceptions import MisconfigurationException
from pytorch_lightning.utilities.warnings import PossibleUserWarning

from .errors import OptionError

# the strategies a predict job may ask for. DDP re-runs the command line for the other local ranks
# (or joins the ranks that torchrun or srun started); each rank holds the whole model, which is
# what inference wants (no gradients to reduce, nothing to shard below ~500 M parameters)
STRATEGIES = ("ddp",)


class PredictInterrupted(KeyboardInterrupt):
    """A stop signal ended :func:`predict`: ``signum`` (``SIGINT`` for Ctrl-C) and, on global rank
    0, ``results``, the predictions the ranks had written (None on the other ranks)."""

    def __init__(self, signum: int, results: list[dict] | None):
        super().__init__(f"signal {signum}")
        self.signum, self.results = signum, results


class ResultWriter(BasePredictionWriter):
    """Appends every prediction (a JSON-ready dict) as one line of ``results_dir/rank-<r>.jsonl``,
    synced to disk, so that rank 0 can read them after the barrier (or after a stop signal:
    ``stop_signal`` is then its number)."""

    def __init__(self, results_dir: Path):
        super().__init__(write_interval="batch")
        self.results_dir = results_dir
        self.stop_signal: int | None = None

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, KeyboardInterrupt):  # restore.errors.Interrupted (SIGTERM) is one too
            self.stop_signal = getattr(exception, "signum", signal.SIGINT)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # every rank, one without any unit too (Lightning skips its predict loop and the hooks
        # in it): an empty file is its answer, and a stale one from a killed run is no answer
        self.on_predict_start(trainer, pl_module)

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


def read_results(results_dir: Path, world_size: int, *, partial: bool = False) -> list[dict]:
    """The dicts every rank's :class:`ResultWriter` wrote, rank by rank, in each rank's order.
    ``partial``: after a stop, a rank's file may be missing or end in a line cut short; those are
    left out."""
    results = []
    for r in range(world_size):
        path = results_dir / f"rank-{r}.jsonl"
        if partial and not path.is_file():
            continue
        lines = [line for line in path.read_text().splitlines() if line]
        for i, line in enumerate(lines):
            try:
                results.append(json.loads(line))
            except json.JSONDecodeError:
                if not (partial and i == len(lines) - 1):
                    raise
    return results


@contextlib.contextmanager
def lightning_silenced() -> Iterator[None]:
    """Hide what Lightning says that is not about the job: its info lines (GPU available, tips,
    ranks initialising), its hint that a data loader without workers may be slow (ours load unit
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


def accelerator_for(device: str) -> str:
    """Lightning's accelerator for a ``--device`` value: ``gpu`` for ``auto``/``cuda`` where CUDA
    is available (one GPU per local rank), else ``cpu``."""
    return "gpu" if device in ("auto", "cuda") and torch.cuda.is_available() else "cpu"


def predict(job: pl.LightningModule, results_dir: Path, *, device: str, devices: int, num_nodes: int,
            strategy: str = "ddp", progress_bar: bool = True) -> list[dict] | None:
    """Run ``job``'s predict steps on ``devices`` processes on each of ``num_nodes`` nodes.

    ``results_dir`` is a folder every rank can write (on a file system that all nodes share);
    it is made and, once read, removed. Returns every rank's predictions on global rank 0 (rank
    by rank), None on the other ranks; raises :class:`PredictInterrupted` on a stop signal.
    """
    writer = ResultWriter(results_dir)
    with lightning_silenced():
        try:
            trainer = pl.Trainer(
                accelerator=accelerator_for(device), devices=devices, num_nodes=num_nodes, strategy=strategy,
                use_distributed_sampler=False, logger=False, enable_checkpointing=False,
                enable_progress_bar=progress_bar, enable_model_summary=False, callbacks=[writer],
            )
        except (RuntimeError, MisconfigurationException) as exc:
            # building the Trainer only reads the launch (devices, SLURM/torchrun variables): what
            # fails here is how the job was started, e.g. `srun --ntasks` instead of --ntasks-per-node
            raise OptionError(None, f"cannot start {devices} x {num_nodes} ranks as launched: {exc}") from None
        try:
            trainer.predict(job, return_predictions=False)
            trainer.strategy.barrier()
        except SystemExit:
            # Lightning turns a KeyboardInterrupt into sys.exit(1), after killing the ranks it
            # started: no barrier is possible any more; rank 0 reads what was written
            if writer.stop_signal is None:
                raise
            finished = read_results(results_dir, trainer.world_size, partial=True) if trainer.global_rank == 0 else None
            raise PredictInterrupted(writer.stop_signal, finished) from None
    if trainer.global_rank != 0:
        return None
    results = read_results(results_dir, trainer.world_size)
    shutil.rmtree(results_dir)  # every rank is past the barrier: nobody writes there any more
    return results
