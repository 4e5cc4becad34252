"""Scale ``restore dicom`` across GPUs and nodes with Lightning ``Trainer.predict`` (DDP).

Every rank discovers the same inputs and computes the same assignment of whole series to ranks
(greedy by slice count, so ranks finish together); each rank runs the same :class:`SeriesRunner`
as the single-process job on its series and a :class:`BasePredictionWriter` appends each outcome
to ``OUTDIR/.restore-dicom/rank-<r>.jsonl``. After a barrier, global rank 0 reads all ranks'
outcomes and writes the report. Nothing is padded or duplicated: Lightning's distributed sampler
is disabled because it would repeat series to even out the ranks.

Multi-node: run the same command on every node with ``--num-nodes`` and the usual
``MASTER_ADDR``/``MASTER_PORT``/``NODE_RANK`` environment (or under SLURM).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

import torch

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


def predict_series(config, jobs, choice, processing):
    """Run ``jobs`` on ``config.devices`` x ``config.num_nodes`` processes.

    Returns the list of :class:`SeriesOutcome` on global rank 0, None on the other ranks.
    """
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import BasePredictionWriter
    from torch.utils.data import DataLoader

    from restore.dicom.processing import build_processor
    from restore.dicom_job import SeriesOutcome, SeriesRunner

    results_dir = Path(config.outdir) / RESULTS_DIR

    class SeriesPredictor(pl.LightningModule):
        """Holds no trainable weights: the restoration model lives in the runner's processor."""

        def __init__(self):
            super().__init__()
            self.runner: SeriesRunner | None = None

        def on_predict_start(self) -> None:
            processor = build_processor(config.task, choice, weights=config.weights, config=processing,
                                        device=self.device)
            self.runner = SeriesRunner(config, choice.name, choice.description, processor)

        def predict_dataloader(self):
            mine = assign([j.slices for j in jobs], self.trainer.world_size)[self.trainer.global_rank]
            # batch_size=None: one job index per step, no collation into tensors
            return DataLoader(mine, batch_size=None, shuffle=False)

        def predict_step(self, index, batch_idx):
            return asdict(self.runner(jobs[int(index)]))

    class OutcomeWriter(BasePredictionWriter):
        def __init__(self):
            super().__init__(write_interval="batch")

        def on_predict_start(self, trainer, pl_module) -> None:
            results_dir.mkdir(parents=True, exist_ok=True)
            self.path = results_dir / f"rank-{trainer.global_rank}.jsonl"
            self.path.write_text("")  # this rank's results of an earlier run are stale

        def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx):
            with open(self.path, "a") as fh:
                fh.write(json.dumps(prediction) + "\n")
                fh.flush()
                os.fsync(fh.fileno())

    accelerator = "gpu" if config.device in ("auto", "cuda") and torch.cuda.is_available() else "cpu"
    trainer = pl.Trainer(
        accelerator=accelerator, devices=config.devices, num_nodes=config.num_nodes,
        strategy="ddp",
        use_distributed_sampler=False, logger=False, enable_checkpointing=False,
        enable_progress_bar=not config.quiet, enable_model_summary=False, callbacks=[OutcomeWriter()],
    )
    trainer.predict(SeriesPredictor(), return_predictions=False)
    trainer.strategy.barrier()
    if trainer.global_rank != 0:
        return None
    outcomes = []
    for r in range(trainer.world_size):
        path = results_dir / f"rank-{r}.jsonl"
        outcomes += [SeriesOutcome(**json.loads(line)) for line in path.read_text().splitlines() if line]
    return outcomes
