"""Batch upscaling: expand inputs, plan outputs, probe each video once, run each job, account for
every file in a report.

No file stops the batch: whatever goes wrong with one (a bad file, a full disk, running out of
memory, a bug in restore) becomes its ``failed`` row and one line ``PATH: cause``, and the next
file starts. What would make the whole batch fail is refused before any work: an output folder
inside an input folder, an output folder or ``--report`` path that cannot be written.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .atomic import remove, write_json_atomic
from .errors import OutputError, RestoreError
from .io.animation import is_animation
from .io.formats import is_image, is_video, output_suffix
from .io.pipes import is_piped, run_piped
from .jobs import JobResult, LoadedModel, UpscaleOptions, prepare_model, upscale_image_file, upscale_video_file
from .registry import default_model

if TYPE_CHECKING:
    from .io.video import VideoInfo

log = logging.getLogger("restore")

# the folder, inside the output folder, through which the outcomes of DDP ranks reach rank 0
RESULTS_DIR = ".restore-upscale"


@dataclass
class WorkItem:
    """One input file and where its output goes.

    ``verdict`` (``skipped`` or ``failed``) and ``reason`` are set when it is decided up front.
    """

    src: Path
    dst: Path | None
    kind: str  # "video" | "image" | "other"
    verdict: str | None = None
    reason: str | None = None

    @cached_property
    def info(self) -> VideoInfo | None:
        """The video's probe, made once: the progress bars and the job both use it. None for an
        image, and for a file that cannot be probed (its job probes again and reports why)."""
        if self.kind != "video":
            return None
        from .io.video import probe_video

        try:
            return probe_video(self.src)
        except Exception:  # noqa: BLE001 - whatever it is, the file's own job meets it again and reports it
            return None


@dataclass
class BatchReport:
    """Every input with its status.

    ``stop_signal`` is the signal that stopped the batch (``SIGINT`` for Ctrl-C, ``SIGTERM``),
    None when it ran to the end; ``bugs`` counts the files that failed on a bug in restore rather
    than on their input, output or memory (their rows say "internal error"). ``ranks``: in a DDP
    run (``--devices``/``--num-nodes``), one entry per rank: ``rank``, ``host``, ``device``,
    ``threads``, ``tasks``, ``frames`` upscaled, busy ``seconds`` and ``frames_per_s``.
    """

    results: list[JobResult] = field(default_factory=list)
    model: str = ""
    scale: int = 0
    stop_signal: int | None = None
    bugs: int = 0
    ranks: list[dict] = field(default_factory=list)

    @property
    def interrupted(self) -> bool:
        return self.stop_signal is not None

    @property
    def failed(self) -> list[JobResult]:
        return [r for r in self.results if r.status == "failed"]

    def exit_code(self) -> int:
        """128 + the signal when interrupted (130: Ctrl-C, 143: SIGTERM), 1 if any file failed, else 0."""
        if self.stop_signal is not None:
            return 128 + self.stop_signal
        return 1 if self.failed else 0

    def as_dict(self) -> dict:
        counts: dict[str, int] = {}
        for r in self.results:
            counts[r.status] = counts.get(r.status, 0) + 1
        return {
            "model": self.model,
            "scale": self.scale,
            "interrupted": self.interrupted,
            "summary": counts,
            "inputs": [r.as_dict() for r in self.results],
            "ranks": self.ranks,
        }


def _kind(path: Path) -> str:
    # a GIF or animated WebP is a video (a still WebP an image): the one kind decided by content
    return "video" if is_video(path) or is_animation(path) else "image" if is_image(path) else "other"


def plan_outputs(inputs: list[Path], output: Path, codec: str) -> list[WorkItem]:
    """Map inputs to outputs.

    One input file: ``output`` is the output file (or a folder if it is an existing folder).
    Otherwise ``output`` is a folder; files found in an input folder keep their path relative to
    it. Files of unknown type inside folders are listed as skipped; files named explicitly are
    tried as videos. Failed up front: an output that is one of the inputs (``--overwrite`` would
    replace it, ``--resume`` would take it for a finished output), and the second of two inputs
    mapping to the same output.
    """
    single_file = _single_file(inputs, output)
    found: list[tuple[Path, Path, bool]] = []  # (src, relative output name, named explicitly)
    for inp in inputs:
        if inp.is_dir():
            for f in sorted(p for p in inp.rglob("*") if p.is_file() and not p.name.startswith(".")):
                found.append((f, f.relative_to(inp), False))
        else:
            found.append((inp, Path(inp.name), True))
    items: list[WorkItem] = []
    taken: dict[Path, Path] = {}  # absolute output -> the input it is for
    input_files = {_file_id(src) for src, _, _ in found} - {None}
    for src, rel, explicit in found:
        kind = _kind(src)
        if kind == "other" and not explicit:
            items.append(WorkItem(src, None, kind, "skipped", "not a video or image (by extension)"))
            continue
        kind = "image" if kind == "image" else "video"
        if single_file:
            dst = output
        else:
            suffix = src.suffix if kind == "image" else output_suffix(src, codec)
            dst = output / rel.with_suffix(suffix)
        if _file_id(dst) in input_files:
            items.append(WorkItem(src, None, kind, "failed", f"{src}: the output {dst} is an input; choose another output"))
            continue
        if dst.absolute() in taken:
            reason = f"{src}: output {dst} collides with the output of {taken[dst.absolute()]}"
            items.append(WorkItem(src, None, kind, "failed", reason))
            continue
        taken[dst.absolute()] = src
        items.append(WorkItem(src, dst, kind))
    return items


def _single_file(inputs: list[Path], output: Path) -> bool:
    """Whether ``output`` names the output file itself: one input file, and no folder at ``output``."""
    return len(inputs) == 1 and not inputs[0].is_dir() and not output.is_dir()


def _file_id(path: Path) -> tuple[int, int] | None:
    """(device, inode) of an existing file, the same through links and aliases; None if there is none."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


def check_destinations(inputs: list[Path], output: Path, report_path: Path | None) -> None:
    """Refuse, before any work, destinations that would make the whole batch fail or loop.

    Raises :class:`~restore.errors.OutputError` for an output folder inside an input folder (its
    outputs would be found as inputs by ``--resume`` or the next run, and upscaled again), and for
    an output folder or ``report_path`` that cannot be written (found when the batch is done, all
    its work would be lost).
    """
    folder = output.parent if _single_file(inputs, output) else output
    where = folder.resolve()
    for inp in inputs:
        if inp.is_dir() and inp.resolve() in (where, *where.parents):
            raise OutputError(
                output, f"is inside the input folder {inp}: its outputs would be upscaled again on --resume; "
                "choose an output folder outside it"
            )
    _check_writable(folder)
    if report_path is not None:
        if report_path.is_dir():
            raise OutputError(report_path, "the --report path is a folder; name a file")
        _check_writable(report_path.parent)


def _check_writable(folder: Path) -> None:
    """Raise ``OutputError`` unless a file can be made in ``folder``, or in its nearest existing
    parent when it is still to be made. A real attempt, not the permission bits: root ignores
    those, and a read-only mount or ``/proc`` refuses everyone."""
    try:
        existing = folder
        while not existing.exists():
            existing = existing.parent
        if not existing.is_dir():
            raise OutputError(folder, f"cannot be made: {existing} is a file")
        os.rmdir(tempfile.mkdtemp(prefix=".restore-check-", dir=existing))
    except OSError as exc:
        raise OutputError(folder, f"cannot write here ({exc.strerror or exc})") from None


def estimated_frames(item: WorkItem) -> int:
    """Frames to process, for the progress bars and the sharing of work between DDP ranks (0 if
    unknown)."""
    if item.kind == "image":
        return 1
    info = item.info
    if info is None:
        return 0
    if info.frames:
        return info.frames
    # Matroska and WebM store no frame count: estimate it, so that the bars show a percentage and ETA
    return round(info.duration * info.fps) if info.duration else 0


def run_batch(
    inputs: list[str | Path],
    output: str | Path,
    opts: UpscaleOptions,
    *,
    report_path: str | Path | None = None,
    quiet: bool = False,
    model: LoadedModel | None = None,
) -> BatchReport:
    """Upscale every input; a file that fails is reported and the batch goes on. Ctrl-C (or a
    ``KeyboardInterrupt`` raised for another signal, see :class:`~restore.errors.Interrupted`)
    stops it cleanly: the open output keeps its finished segments for ``--resume``.

    Returns the report (also written to ``report_path`` as JSON, atomically). Errors are printed
    as one line each: ``PATH: cause``; a bug in restore met by one file also logs its traceback.
    Destinations that cannot work raise :class:`~restore.errors.OutputError` before any work
    (:func:`check_destinations`).
    """
    from tqdm import tqdm

    if is_piped(inputs, output):  # `-`: stdin spooled to a file, stdout written from one (restore.io.pipes)
        return run_piped(run_batch, inputs, output, opts, report_path=report_path, quiet=quiet, model=model)
    sources, output = [Path(p) for p in inputs], Path(output)
    report_path = None if report_path is None else Path(report_path)
    check_destinations(sources, output, report_path)
    items = plan_outputs(sources, output, opts.codec)
    folder = output.parent if _single_file(sources, output) else output
    if opts.distributed:
        return _run_distributed(items, folder, opts, report_path, quiet)
    remove(folder / RESULTS_DIR)  # what the ranks of a killed DDP run left
    model = model or prepare_model(opts)
    report = BatchReport(model=model.name, scale=model.scale)
    _baseline_notice(model.name, model.scale, quiet)
    frame_counts = {id(i): estimated_frames(i) for i in items if i.verdict is None}
    total_frames = sum(frame_counts.values())
    # None: bars only on a terminal; redirected to a file they would be a wall of \r and escape codes
    bars_off = True if quiet else None
    overall = tqdm(total=total_frames or None, unit="frame", desc="total", disable=bars_off, position=0, dynamic_ncols=True)
    try:
        for item in items:
            if item.verdict is not None:
                if item.verdict == "failed":
                    tqdm.write(f"error: {item.reason}", file=sys.stderr)
                report.results.append(JobResult(str(item.src), item.verdict, error=item.reason))
                continue
            bar = tqdm(total=frame_counts[id(item)] or None, unit="frame", desc=item.src.name[:30], disable=bars_off, position=1, leave=False, dynamic_ncols=True)
            start = time.perf_counter()

            def advance(n: int) -> None:
                bar.update(n)
                overall.update(n)

            try:
                if item.kind == "image":
                    result = upscale_image_file(item.src, item.dst, model, opts)
                    advance(1)
                else:
                    result = upscale_video_file(item.src, item.dst, model, opts, on_frames=advance, info=item.info)
            except KeyboardInterrupt as exc:
                report.stop_signal = getattr(exc, "signum", signal.SIGINT)
                how = signal_name(report.stop_signal)
                report.results.append(JobResult(str(item.src), "interrupted", str(item.dst), error=f"interrupted ({how}); continue with --resume"))
                break
            except Exception as exc:  # noqa: BLE001 - no file stops the batch, not even one that meets a bug
                message, bug = describe_failure(exc, item.src)
                tqdm.write(f"error: {message}", file=sys.stderr)
                if bug:
                    report.bugs += 1
                    log.error("the internal error on %s, to report:", item.src, exc_info=exc)
                result = JobResult(str(item.src), "failed", str(item.dst), error=message, seconds=time.perf_counter() - start)
            finally:
                bar.close()
            report.results.append(result)
    finally:
        overall.close()
        if report.interrupted:
            done = {r.input for r in report.results}
            report.results += [JobResult(str(i.src), "interrupted", error="not started (interrupted)") for i in items if str(i.src) not in done]
        _write_report(report_path, report)
    _say_how_to_go_on(report)
    if not quiet:
        _print_summary(report)
    return report


def _say_how_to_go_on(report: BatchReport) -> None:
    if report.stop_signal is not None:  # like an error, shown even with --quiet: the user must know how to go on
        how = "" if report.stop_signal == signal.SIGINT else f" ({signal_name(report.stop_signal)})"
        print(f"restore: interrupted{how}; run the same command with --resume to continue", file=sys.stderr)


def _run_distributed(items: list[WorkItem], folder: Path, opts: UpscaleOptions, report_path: Path | None,
                     quiet: bool) -> BatchReport:
    """The batch on Lightning DDP ranks (:mod:`restore.video_distributed`), outputs in ``folder``:
    the report on global rank 0, which writes and prints it; an empty one on the other ranks. Each
    rank loads its own model on its own device."""
    from .video_distributed import predict_batch

    report = predict_batch(items, folder, opts, quiet=quiet, announce=lambda: _baseline_notice(opts.model, opts.scale, quiet))
    if report is None:
        return BatchReport(model=opts.model, scale=opts.scale)  # global rank 0 reports
    _write_report(report_path, report)
    _say_how_to_go_on(report)
    if not quiet:
        _print_summary(report)
    return report


def _baseline_notice(model: str, scale: int, quiet: bool) -> None:
    if model == "bicubic" and default_model("video-sr", scale) == "bicubic" and not quiet:
        print(f"restore: using the built-in bicubic baseline (no trained x{scale} model is the default yet)",
              file=sys.stderr)


def _write_report(report_path: Path | None, report: BatchReport) -> None:
    if report_path is not None:
        report_path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(report_path, report.as_dict())


def signal_name(signum: int) -> str:
    """``Ctrl-C`` for ``SIGINT``, else the signal's name (``SIGTERM``)."""
    return "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name


def describe_failure(exc: Exception, src: Path) -> tuple[str, bool]:
    """``PATH: cause`` on one line, whatever the exception type, and whether it is a bug in restore.

    The user's to fix: a :class:`RestoreError` (one raised without a path, such as an encoder
    setting this file's size cannot take, is about ``src``), an ``OSError`` (permissions, a full
    disk) and running out of memory. Anything else is a bug, reported as an internal error.
    """
    if isinstance(exc, RestoreError):
        text, bug = (str(exc) if exc.path is not None else f"{src}: {exc}"), False
    elif isinstance(exc, (MemoryError, torch.OutOfMemoryError)):
        cause = next(iter(str(exc).splitlines()), "") or type(exc).__name__
        text, bug = f"{src}: out of memory ({cause}); a smaller --tile or --max-pixels needs less", False
    elif isinstance(exc, OSError):
        text, bug = f"{exc.filename or src}: {exc.strerror or exc}", False
    else:
        text, bug = f"{src}: internal error (please report): {type(exc).__name__}: {exc}", True
    return " ".join(text.split()), bug


def _print_summary(report: BatchReport) -> None:
    counts = report.as_dict()["summary"]
    parts = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    print(f"restore: {parts}", file=sys.stderr)
    for r in report.results:
        if r.status == "ok":
            print(r.output)
