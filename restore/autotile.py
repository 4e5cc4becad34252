"""Choose the spatial tile of a video from timings on the real model and device.

A pixel budget alone picks the wrong tile: a model with clip-wide attention costs more per pixel
the larger its input (oasis-s-x4 on a 1280x720 chunk: 52 s/frame whole, 28.5 s/frame in 128 px
tiles), while a convolutional one on a GPU gets cheaper per pixel until memory runs out. So
:func:`choose_tiles` times a model call per candidate tile side (the least of three when it is
quick, so that noise matters less) on a synthetic clip of the chunk's shape (these models' cost
does not depend on the pixel values), from the smallest side up, and keeps the side with the
fewest seconds per frame once the tiles of a frame are counted. It stops at the first candidate
slower than the best so far (the cost is U-shaped: overlap overhead on the left, attention or
cache misses on the right), at the memory budget (CUDA: peak memory of the trials, projected to
the next side, against the free device memory; every device: ``max_pixels`` LR pixels per call,
the ``--max-pixels`` budget), and at an out-of-memory error. The choice is cached per (model,
device, precision, chunk shape) for the process, so a batch of same-sized videos calibrates once.
Still images keep the pixel budget alone: one call is not worth timing several.

Timings vary between machines and runs, so the chosen side is recorded with a video's segments
(:mod:`restore.segments`) and reused on ``--resume``: tile seams change pixels, and resumed frames
must be made the way the first ones were. ``--tile N`` skips all of this.
"""

from __future__ import annotations

import logging
import math
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from .engine import FrameRunner, TilePlan

logger = logging.getLogger("restore")

# tile sides tried besides the pixel budget's own (LR pixels); a side at or above the frame's
# longer side is the whole frame, which is tried last
CANDIDATE_SIDES = (64, 128, 256, 512, 1024, 2048)
# of the free device memory, what the trials may project to use: the allocator fragments and the
# rest of the pipeline (decoded frames, the cross-fade) needs some too
_MEMORY_HEADROOM = 0.8
# a trial faster than this is repeated (up to _REPEATS runs, the least kept)
_QUICK_SECONDS, _REPEATS = 0.5, 3

_CHOSEN: weakref.WeakKeyDictionary[nn.Module, dict[tuple, int]] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class TileTrial:
    """One timed candidate: ``tile`` LR side (0: whole frame), ``seconds_per_frame`` for a whole
    frame cut into such tiles, ``peak_bytes`` of device memory in the call (None off CUDA)."""

    tile: int
    seconds_per_frame: float
    peak_bytes: int | None = None


def tiles_per_frame(height: int, width: int, tile: int, overlap: int) -> int:
    """How many model calls :func:`~restore.engine.run_tiled` makes for one ``height x width``
    frame with ``tile`` px tiles sharing ``overlap`` px (MONAI's sliding-window scan); 1 if ``tile``
    is 0 or covers the frame."""
    if not tile:
        return 1
    count = 1
    for size in (height, width):
        roi = min(tile, size)
        # the same arithmetic as monai.inferers.utils._get_scan_interval, so the count is exact
        interval = int(roi * (1 - min(overlap / roi, 0.99))) if roi < size else roi
        count *= math.ceil((size - roi) / max(interval, 1)) + 1
    return count


def candidate_tiles(frames: int, height: int, width: int, max_pixels: int, overlap: int) -> list[int]:
    """Tile sides worth timing, smallest first, within ``max_pixels`` LR pixels per call; 0 (the
    whole frame) last when it fits. The pixel budget's own side (:meth:`TilePlan.auto`) is always
    among them, so that a frame is never left without a tile that fits."""
    smallest = 2 * overlap + 16  # what TilePlan.auto allows: the overlap must stay under the tile
    sides = {s for s in CANDIDATE_SIDES if smallest <= s < max(height, width) and frames * min(s, height) * min(s, width) <= max_pixels}
    budget = TilePlan.auto(frames, height, width, max_pixels, overlap).tile
    sides.add(budget)  # 0 when the whole frame fits
    return sorted(sides - {0}) + ([0] if 0 in sides else [])


def _memory_budget(device: torch.device) -> int | None:
    """Bytes the trials may use on ``device``: free memory plus what torch holds cached; None off CUDA."""
    if device.type != "cuda":
        return None
    free, _ = torch.cuda.mem_get_info(device)
    cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return int((free + cached) * _MEMORY_HEADROOM)


def _projected_peak(trials: list[TileTrial], pixels: Callable[[int], int], tile: int) -> int | None:
    """Peak memory of ``tile`` extrapolated from the last two trials' growth with pixels (an
    exponent between 1, convolutions, and 2, dense attention); 2 when only one trial is known."""
    known = [t for t in trials if t.peak_bytes]
    if not known:
        return None
    last = known[-1]
    exponent = 2.0
    if len(known) > 1 and pixels(last.tile) > pixels(known[-2].tile):
        growth = math.log(last.peak_bytes / known[-2].peak_bytes) / math.log(pixels(last.tile) / pixels(known[-2].tile))
        exponent = min(max(growth, 1.0), 2.0)
    return int(last.peak_bytes * (pixels(tile) / pixels(last.tile)) ** exponent)


def _best_time(fn: Callable[[], None], clock: Callable[[], float]) -> float:
    """Seconds of ``fn()``: the least of up to ``_REPEATS`` runs while they stay under
    ``_QUICK_SECONDS`` (a quick call is noisy and cheap to repeat; a slow one is neither)."""
    best = math.inf
    for _ in range(_REPEATS):
        start = clock()
        fn()
        best = min(best, clock() - start)
        if best >= _QUICK_SECONDS:
            break
    return best


def time_tiles(
    runner: FrameRunner,
    frames: int,
    height: int,
    width: int,
    candidates: list[int],
    overlap: int,
    clock: Callable[[], float] = time.perf_counter,
) -> list[TileTrial]:
    """Time ``runner``'s model on one tile of each of ``candidates`` (smallest first) for a chunk of
    ``frames`` RGB frames ``height x width``; stops at the first slower than the best so far, at
    the memory budget and at running out of memory. -> the trials made, in order."""
    device, cuda = runner.device, runner.device.type == "cuda"
    generator = torch.Generator().manual_seed(0)

    def roi(tile: int) -> tuple[int, int]:
        return (min(tile, height), min(tile, width)) if tile else (height, width)

    def pixels(tile: int) -> int:
        return frames * math.prod(roi(tile))

    def call(tile: int) -> None:
        clip = torch.rand(1, frames, 3, *roi(tile), generator=generator).to(device=device, dtype=runner.dtype)
        runner.model(clip)
        if cuda:
            torch.cuda.synchronize(device)

    budget = _memory_budget(device)
    trials: list[TileTrial] = []
    with torch.inference_mode():
        try:
            call(candidates[0])  # warm-up: lazy initialisation (kernels, allocator) is no tile's cost
        except (torch.OutOfMemoryError, MemoryError):
            return trials
        for tile in candidates:
            projected = _projected_peak(trials, pixels, tile)
            if budget is not None and projected is not None and projected > budget:
                logger.debug("tile %d: projected %.1f GB, over the %.1f GB free; not tried", tile, projected / 1e9, budget / 1e9)
                break
            if cuda:
                torch.cuda.reset_peak_memory_stats(device)
                base = torch.cuda.memory_allocated(device)
            try:
                seconds = _best_time(lambda: call(tile), clock)
            except (torch.OutOfMemoryError, MemoryError):
                logger.debug("tile %d: out of memory; not used", tile)
                if cuda:
                    torch.cuda.empty_cache()
                break
            peak = torch.cuda.max_memory_allocated(device) - base if cuda else None
            trials.append(TileTrial(tile, seconds * tiles_per_frame(height, width, tile, overlap) / frames, peak))
            if trials[-1].seconds_per_frame > min(t.seconds_per_frame for t in trials):
                break  # past the minimum
    return trials


def choose_tiles(
    runner: FrameRunner,
    frames: int,
    height: int,
    width: int,
    *,
    overlap: int = 16,
    clock: Callable[[], float] = time.perf_counter,
) -> TilePlan:
    """The fastest tiling of ``frames``-frame chunks of ``height x width`` RGB frames for ``runner``
    (its model, device, precision and ``max_pixels``), measured once per process (see the module
    docstring). A frame with one candidate (it fits the smallest tile, or only the budget's
    side fits) is not timed."""
    key = (str(runner.device), runner.dtype, frames, height, width, overlap, runner.max_pixels)
    chosen = _CHOSEN.setdefault(runner.model, {})
    if key not in chosen:
        candidates = candidate_tiles(frames, height, width, runner.max_pixels, overlap)
        if len(candidates) == 1:
            chosen[key] = candidates[0]
        else:
            trials = time_tiles(runner, frames, height, width, candidates, overlap, clock)
            best = min(trials, key=lambda t: t.seconds_per_frame) if trials else None
            # nothing could be timed (the smallest tile ran out of memory): the budget's side, as before
            chosen[key] = best.tile if best else TilePlan.auto(frames, height, width, runner.max_pixels, overlap).tile
            measured = ", ".join(f"{t.tile or 'whole'}: {t.seconds_per_frame:.3g}" for t in trials)
            logger.info("%dx%d frames: tiles of %s px (s/frame by tile: %s)", width, height, chosen[key] or "whole-frame", measured)
    return TilePlan(chosen[key], overlap)


def video_tile(runner: FrameRunner, frames: int, height: int, width: int, *, overlap: int, recorded: dict) -> int:
    """The tile side for a video's chunks (``frames`` frames of ``height x width``) when ``--tile``
    is not given: the side an interrupted run recorded with its segments (``recorded``, their
    settings, when the ``--resume`` shall match them), else the fastest measured
    (:func:`choose_tiles`)."""
    if isinstance(recorded.get("tile"), int) and recorded.get("tile_overlap") == overlap:
        return recorded["tile"]
    return choose_tiles(runner, frames, height, width, overlap=overlap).tile
