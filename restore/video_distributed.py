"""Scale ``restore upscale`` across GPUs and nodes with Lightning ``Trainer.predict`` (DDP).

The unit of work is a (video, segment) pair (an image, or a video made into an animation, is a
unit of its own): one long film is shared by all ranks, a folder of short clips is balanced by
frames, not by file count. In steps:

1. Global rank 0 prepares every output as the single-process job would (:func:`plan_units`):
   existing outputs, ``--resume``/``--overwrite``, settings of partial results; it opens each
   video's ``.NAME.restore-partial`` folder (:class:`~restore.segments.SegmentSink`) and lists the
   segments still missing, weighed by their frames (from the probe; where the container stores
   no count, the last unit is "this segment and all after it", so an estimate that is short still
   covers the video). The plan is broadcast, so every rank works from the same one and no rank
   writes before the folders are ready.
2. :func:`assign` cuts the list of units into ``world_size`` consecutive runs of about equal
   frames; each rank's consecutive segments of one video are one :class:`Task`, one predict step,
   so a rank decodes a video once, up to the end of its share, and runs the model only on its
   segments and the :attr:`~restore.engine.ChunkPlan.context` chunks before them, whose
   cross-fades reach them: the frames are those of a single-process run, and each segment's
   encoder sees the same frames, so the packets are too where the encoder is deterministic.
3. A rank writes its segments into the shared folder; after each task it asks the folder whether
   every segment is in (:meth:`~restore.segments.SegmentSink.claim_join`): the first rank to see
   it complete joins and muxes the output, while the others go on with their work.
4. Every step's outcome (a JSON dict) reaches global rank 0 through
   :func:`restore.distributed.predict`; rank 0 builds the :class:`~restore.batch.BatchReport`
   (which rank did which segments, frames/s of each rank), written once. A file that fails on a
   rank is its ``failed`` row; the other files go on.

A stop signal (Ctrl-C, ``SIGTERM``) stops every rank; rank 0 still writes the report, from the
outcomes the ranks had written: the files no rank joined are ``interrupted`` (exit code 128 +
the signal), and their committed segments are kept for ``--resume``.

``--resume`` works across rank counts: segments are defined by the chunk plan and
``--segment-frames`` alone, so any number of ranks (one included) continues a folder that any
other number left.
"""

from __future__ import annotations

import logging
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from .batch import RESULTS_DIR, BatchReport, WorkItem, describe_failure, estimated_frames, signal_name
from .distributed import PredictInterrupted, predict
from .jobs import (
    TO_THE_END, JobResult, LoadedModel, UpscaleOptions, join_video_output, open_video_output, prepare_model,
    upscale_image_file, upscale_segments, upscale_video_file, warn_concealed,
)
from .io.formats import ANIMATION_EXTENSIONS
from .segments import segment_lengths

log = logging.getLogger("restore")


@dataclass(frozen=True)
class Unit:
    """One (video, segment) pair still to write, or one whole file (an image or an animation,
    ``segment`` 0), with its weight in
    ``frames`` (0: nothing to upscale, only the join of a video whose segments are all in).
    ``to_the_end``: this segment and every one after it."""

    item: int
    segment: int
    frames: int
    to_the_end: bool = False


@dataclass(frozen=True)
class Task:
    """One predict step: segments ``[first, stop)`` of input ``item`` (``stop`` may be
    :data:`~restore.jobs.TO_THE_END`; a whole file is ``[0, 1)``; an empty range only joins a video
    whose segments an earlier run finished)."""

    item: int
    first: int
    stop: int


def plan_units(items: list[WorkItem], model: LoadedModel, opts: UpscaleOptions) -> tuple[list[Unit], dict[int, dict]]:
    """Prepare every output (global rank 0 only: it creates, resumes or replaces the partial folders)
    and list the units of work, in input order.

    Returns the units and, by item index, the rows decided here (``JobResult.as_dict()``: skipped
    as done, failed up front or on opening its output).
    """
    from .io.video import probe_video

    units: list[Unit] = []
    decided: dict[int, dict] = {}
    for i, item in enumerate(items):
        if item.verdict is not None:
            decided[i] = JobResult(str(item.src), item.verdict, error=item.reason).as_dict()
        elif _whole(item):
            units.append(Unit(i, 0, max(1, estimated_frames(item))))
        else:
            try:
                # a file the batch could not probe is probed again, to raise what WorkItem.info kept back;
                # kept on the item, which travels to the other ranks with the plan
                item.info = item.info or probe_video(item.src)
                sink = open_video_output(item.src, item.dst, model, opts, item.info)
            except Exception as exc:  # noqa: BLE001 - no file stops the batch
                message, bug = describe_failure(exc, item.src)
                if bug:
                    log.error("the internal error on %s, to report:", item.src, exc_info=exc)
                decided[i] = {**JobResult(str(item.src), "failed", str(item.dst), error=message).as_dict(), "bug": bug}
                continue
            if sink is None:
                decided[i] = JobResult(str(item.src), "skipped", str(item.dst),
                                       error="output exists (done in an earlier run)").as_dict()
                continue
            units += _video_units(i, sink.completed(), sink.segment_count(),
                                  segment_lengths(model.plan, opts.segment_frames, max(1, estimated_frames(item))))
    return units, decided


def _whole(item: WorkItem) -> bool:
    """Whether ``item`` is one unit, run by the single-process job: an image, or a video made into
    an animation (GIF, WebP), which is written in one piece, not in segments."""
    return item.kind == "image" or item.dst.suffix.lower() in ANIMATION_EXTENSIONS


def _video_units(item: int, done: set[int], count: int | None, lengths: list[int]) -> list[Unit]:
    """The missing segments of one video. ``count``: its segment count, when a run has met its
    end; else ``lengths`` (frames per segment, from the probe) is an estimate and the last unit
    runs to the end. A video with every segment in gets one unit that only joins it."""
    if count is not None:
        units = [Unit(item, k, lengths[min(k, len(lengths) - 1)]) for k in range(count) if k not in done]
        return units or [Unit(item, count, 0)]
    last = len(lengths) - 1
    return [Unit(item, k, lengths[k]) for k in range(last) if k not in done] + [Unit(item, last, lengths[last], True)]


def assign(units: list[Unit], world_size: int) -> list[list[Task]]:
    """Tasks per rank: the units cut, in order, into ``world_size`` runs of about equal frames
    (a unit goes to the rank whose share of the total holds its middle), each rank's consecutive
    segments of one input merged into one task. Deterministic."""
    weights = [max(1, u.frames) for u in units]  # a join-only unit still has to go somewhere
    total = sum(weights)
    tasks: list[list[Task]] = [[] for _ in range(world_size)]
    before = 0
    for unit, weight in zip(units, weights):
        rank = min(world_size - 1, world_size * (2 * before + weight) // (2 * total))
        before += weight
        stop = TO_THE_END if unit.to_the_end else unit.segment + (1 if unit.frames else 0)
        mine = tasks[rank]
        if mine and mine[-1].item == unit.item:
            mine[-1] = Task(unit.item, mine[-1].first, stop)
        else:
            mine.append(Task(unit.item, unit.segment, stop))
    return tasks


class SegmentPredictor(pl.LightningModule):
    """One predict step per :class:`Task` of this rank; the prediction is its outcome, a JSON-ready
    dict (``item``, ``rank``, ``status``, ``frames``, ``seconds``, ``joined``, ...).

    Holds no trainable weights: the model (:func:`~restore.jobs.prepare_model`) is loaded in
    :meth:`setup` on this rank's device. Global rank 0 plans (:func:`plan_units`) in
    :meth:`predict_dataloader` and broadcasts the plan; ``announce`` is called there, on global
    rank 0 only, once every rank has joined (before, each process takes itself for rank 0).
    """

    def __init__(self, items: list[WorkItem], opts: UpscaleOptions, announce: Callable[[], None] = lambda: None):
        super().__init__()
        self.items = items
        self.opts = opts
        self.announce = announce
        self.loaded: LoadedModel | None = None
        self.tasks: list[Task] = []
        self.decided: dict[int, dict] = {}

    def setup(self, stage: str) -> None:
        self.loaded = prepare_model(self.opts, self.trainer.strategy.root_device)

    def predict_dataloader(self) -> DataLoader:
        plan = None
        if self.trainer.global_rank == 0:
            self.announce()
            units, decided = plan_units(self.items, self.loaded, self.opts)
            plan = (self.items, assign(units, self.trainer.world_size), decided)
        self.items, tasks, self.decided = self.trainer.strategy.broadcast(plan, src=0)
        self.tasks = tasks[self.trainer.global_rank]
        # one task index per step, not collated into a tensor; batches of one (not batch_size=None)
        # so that Lightning can track the indices the prediction writer is given
        return DataLoader(range(len(self.tasks)), batch_size=1, shuffle=False, collate_fn=lambda batch: batch[0])

    def predict_step(self, index: int, batch_idx: int) -> dict:
        return run_task(self.tasks[int(index)], self.items, self.loaded, self.opts, self.trainer.global_rank)


def run_task(task: Task, items: list[WorkItem], model: LoadedModel, opts: UpscaleOptions, rank: int) -> dict:
    """Do one task on this rank and describe what happened (never raises, but for an interrupt)."""
    from .io.video import VideoReader

    item = items[task.item]
    start = time.perf_counter()
    # [first, last] (last None: to the end), [] for a task that only joins
    segments = [task.first, None if task.stop == TO_THE_END else task.stop - 1] if task.first < task.stop else []
    outcome = {"item": task.item, "rank": rank, "host": socket.gethostname(), "device": str(model.runner.device),
               "threads": torch.get_num_threads(), "segments": segments, "status": "ok", "frames": 0,
               "concealed": 0, "joined": False, "error": None, "bug": False}
    try:
        if _whole(item):
            job = upscale_image_file if item.kind == "image" else partial(upscale_video_file, info=item.info)
            result = job(item.src, item.dst, model, opts)
            # ok, or skipped as done in an earlier run
            outcome.update(status=result.status, frames=result.frames, error=result.error, concealed=result.concealed)
        else:
            sink = open_video_output(item.src, item.dst, model, opts, item.info, shared=True)
            if task.first < task.stop:
                with sink, VideoReader(item.src, info=item.info, on_error=opts.on_decode_error) as reader:
                    outcome["frames"] = upscale_segments(sink, reader, model, range(task.first, task.stop))
                outcome["concealed"] = reader.concealed
            if sink.claim_join():
                join_video_output(sink, item.src, opts)
                outcome["joined"] = True
    except Exception as exc:  # noqa: BLE001 - no file stops the batch, not even one that meets a bug
        outcome["error"], outcome["bug"] = describe_failure(exc, item.src)
        outcome["status"] = "failed"
        if outcome["bug"]:
            log.error("the internal error on %s (rank %d), to report:", item.src, rank, exc_info=exc)
    outcome["seconds"] = round(time.perf_counter() - start, 3)
    return outcome


def build_report(items: list[WorkItem], decided: dict[int, dict], outcomes: list[dict], opts: UpscaleOptions,
                 world_size: int, stop_signal: int | None = None) -> BatchReport:
    """One row per input, in input order, from the rows rank 0 decided and the ranks' outcomes;
    the ``ranks`` summary (frames, busy seconds and frames/s of each rank). ``stop_signal``: the
    run was stopped by it, and the files not finished are ``interrupted``."""
    report = BatchReport(model=opts.model, scale=opts.scale, stop_signal=stop_signal)
    by_item: dict[int, list[dict]] = {}
    for out in outcomes:
        by_item.setdefault(out["item"], []).append(out)
    for i, item in enumerate(items):
        if i in decided:
            row = dict(decided[i])
            report.bugs += row.pop("bug", False)
            report.results.append(JobResult(**row))
            continue
        done = by_item.get(i, [])
        failed = [o for o in done if o["status"] == "failed"]
        if failed:
            status, error, bug = "failed", failed[0]["error"], any(o["bug"] for o in failed)
        elif _whole(item) and done:
            status, error, bug = done[0]["status"], done[0]["error"], False
        elif any(o["joined"] for o in done):
            status, error, bug = "ok", None, False
        elif stop_signal is not None:
            status, bug = "interrupted", False
            error = f"interrupted ({signal_name(stop_signal)}); continue with --resume" if done else "not started (interrupted)"
        else:
            error = f"{item.src}: internal error (please report): no rank joined its segments"
            status, bug = "failed", True
        report.bugs += bug
        concealed = max((o["concealed"] for o in done), default=0)  # the rank that read to the end saw them all
        if concealed:
            warn_concealed(item.src, concealed, opts)
        ranks = [{k: o[k] for k in ("rank", "segments", "frames", "seconds", "joined")} for o in done]
        report.results.append(JobResult(
            str(item.src), status, str(item.dst), sum(o["frames"] for o in done),
            round(sum(o["seconds"] for o in done), 3), error, concealed, ranks,
        ))
    for r in range(world_size):
        mine = [o for o in outcomes if o["rank"] == r]
        frames, seconds = sum(o["frames"] for o in mine), sum(o["seconds"] for o in mine)
        first = mine[0] if mine else {}
        report.ranks.append({
            "rank": r, "host": first.get("host"), "device": first.get("device"), "threads": first.get("threads"),
            "tasks": len(mine), "frames": frames, "seconds": round(seconds, 3),
            "frames_per_s": round(frames / seconds, 3) if seconds else None,
        })
    return report


def predict_batch(items: list[WorkItem], folder: Path, opts: UpscaleOptions, *, quiet: bool = False,
                  announce: Callable[[], None] = lambda: None) -> BatchReport | None:
    """Run the batch ``items`` on ``opts.devices`` x ``opts.num_nodes`` DDP ranks; ``folder`` is
    where the outputs go (every rank's outcomes pass through a hidden folder in it, so it must be
    on a file system that all nodes share, as the outputs must). ``announce()`` on global rank 0
    once the ranks have joined.

    Returns the report on global rank 0, None on the other ranks. Errors are printed there as one
    line each (``error: PATH: cause``).
    """
    predictor = SegmentPredictor(items, opts, announce)
    stop_signal = None
    try:
        outcomes = predict(predictor, folder / RESULTS_DIR, device=opts.device, devices=opts.devices,
                           num_nodes=opts.num_nodes, strategy=opts.strategy, progress_bar=not quiet)
    except PredictInterrupted as stop:
        if stop.results is None:  # not global rank 0
            raise
        outcomes, stop_signal = stop.results, stop.signum
    if outcomes is None:
        return None
    report = build_report(predictor.items, predictor.decided, outcomes, opts, opts.devices * opts.num_nodes, stop_signal)
    for row in report.failed:
        print(f"error: {row.error}", file=sys.stderr)
    return report
