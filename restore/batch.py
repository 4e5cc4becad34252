"""Batch upscaling: expand inputs, plan outputs, run each job, account for every file in a report."""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .atomic import write_json_atomic
from .errors import InputError, OutputError, RestoreError
from .jobs import JobResult, LoadedModel, UpscaleOptions, output_suffix, prepare_model, upscale_image_file, upscale_video_file

log = logging.getLogger("restore")


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


@dataclass
class BatchReport:
    """Every input with its status; ``interrupted`` when Ctrl-C stopped the batch."""

    results: list[JobResult] = field(default_factory=list)
    model: str = ""
    scale: int = 0
    interrupted: bool = False

    @property
    def failed(self) -> list[JobResult]:
        return [r for r in self.results if r.status == "failed"]

    def exit_code(self) -> int:
        if self.interrupted:
            return 130
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
        }


def _kind(path: Path) -> str:
    from .io.image import is_image, is_video

    return "video" if is_video(path) else "image" if is_image(path) else "other"


def plan_outputs(inputs: list[Path], output: Path, codec: str) -> list[WorkItem]:
    """Map inputs to outputs.

    One input file: ``output`` is the output file (or a folder if it is an existing folder).
    Otherwise ``output`` is a folder; files found in an input folder keep their path relative to
    it. Files of unknown type inside folders are listed as skipped; files named explicitly are
    tried as videos. Two inputs mapping to the same output is an error for the second.
    """
    single_file = len(inputs) == 1 and not inputs[0].is_dir()
    found: list[tuple[Path, Path, bool]] = []  # (src, relative output name, named explicitly)
    for inp in inputs:
        if inp.is_dir():
            for f in sorted(p for p in inp.rglob("*") if p.is_file() and not p.name.startswith(".")):
                found.append((f, f.relative_to(inp), False))
        else:
            found.append((inp, Path(inp.name), True))
    items: list[WorkItem] = []
    taken: dict[Path, Path] = {}
    for src, rel, explicit in found:
        kind = _kind(src)
        if kind == "other" and not explicit:
            items.append(WorkItem(src, None, kind, "skipped", "not a video or image (by extension)"))
            continue
        kind = "image" if kind == "image" else "video"
        if single_file and not output.is_dir():
            dst = output
        else:
            suffix = src.suffix if kind == "image" else output_suffix(src, codec)
            dst = output / rel.with_suffix(suffix)
        if dst in taken:
            items.append(WorkItem(src, None, kind, "failed", f"{src}: output {dst} collides with the output of {taken[dst]}"))
            continue
        taken[dst] = src
        items.append(WorkItem(src, dst, kind))
    return items


def _count_frames(item: WorkItem) -> int:
    """Frames to process, for the overall progress bar (0 if unknown)."""
    if item.kind == "image":
        return 1
    from .io.video import probe_video

    try:
        info = probe_video(item.src)
    except RestoreError:
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
    """Upscale every input; a bad file is reported and the batch goes on. Ctrl-C stops cleanly.

    Returns the report (also written to ``report_path`` as JSON, atomically). Errors are printed
    as one line each: ``PATH: cause``.
    """
    from tqdm import tqdm

    from .io.video import check_encoder_options

    check_encoder_options(opts.codec, opts.crf, opts.preset, opts.pix_fmt)
    items = plan_outputs([Path(p) for p in inputs], Path(output), opts.codec)
    model = model or prepare_model(opts)
    report = BatchReport(model=model.name, scale=model.scale)
    if model.name == "bicubic" and not quiet:
        print("restore: using the built-in bicubic baseline (no trained model is the default yet)", file=sys.stderr)
    frame_counts = {id(i): _count_frames(i) for i in items if i.verdict is None}
    total_frames = sum(frame_counts.values())
    # None: bars only on a terminal; redirected to a file they would be a wall of \r and escape codes
    bars_off = True if quiet else None
    overall = tqdm(total=total_frames or None, unit="frame", desc="total", disable=bars_off, position=0, dynamic_ncols=True)
    try:
        for item in items:
            if item.verdict is not None:
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
                    result = upscale_video_file(item.src, item.dst, model, opts, on_frames=advance)
            except KeyboardInterrupt:
                report.results.append(JobResult(str(item.src), "interrupted", str(item.dst), error="interrupted (Ctrl-C); continue with --resume"))
                report.interrupted = True
                break
            except (RestoreError, ValueError, OSError) as exc:
                message = _one_line(exc, item.src)
                tqdm.write(f"error: {message}", file=sys.stderr)
                result = JobResult(str(item.src), "failed", str(item.dst), error=message, seconds=time.perf_counter() - start)
            finally:
                bar.close()
            report.results.append(result)
    finally:
        overall.close()
        if report.interrupted:
            done = {r.input for r in report.results}
            report.results += [JobResult(str(i.src), "interrupted", error="not started (interrupted)") for i in items if str(i.src) not in done]
        if report_path is not None:
            write_json_atomic(Path(report_path), report.as_dict())
    if report.interrupted:  # like an error, shown even with --quiet: the user must know how to go on
        print("restore: interrupted; run the same command with --resume to continue", file=sys.stderr)
    if not quiet:
        _print_summary(report)
    return report


def _one_line(exc: BaseException, src: Path) -> str:
    """``PATH: cause`` on one line, whatever the exception type."""
    if isinstance(exc, RestoreError):
        text = str(exc)
    elif isinstance(exc, OSError):
        where = exc.filename or src
        text = f"{where}: {exc.strerror or exc}"
    else:
        text = f"{src}: {exc}"
    return " ".join(text.split())


def _print_summary(report: BatchReport) -> None:
    counts = report.as_dict()["summary"]
    parts = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    print(f"restore: {parts}", file=sys.stderr)
    for r in report.results:
        if r.status == "ok":
            print(r.output)
