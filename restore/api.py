"""Python API mirroring ``restore upscale``; the CLI and the web demo call these."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from .batch import BatchReport, run_batch
from .jobs import JobResult, LoadedModel, UpscaleOptions, prepare_model, upscale_image_file, upscale_video_file


def upscale(
    inputs: Sequence[str | Path],
    output: str | Path,
    *,
    report: str | Path | None = None,
    quiet: bool = True,
    model: LoadedModel | None = None,
    **options,
) -> BatchReport:
    """Upscale videos, images and folders into ``output`` (a file for one input, else a folder).

    ``options`` are the fields of :class:`UpscaleOptions` (``scale``, ``model``, ``weights``,
    ``codec``, ``crf``, ``chunk``, ``tile``, ``resume``, ...). Bad inputs are reported, not raised.
    """
    return run_batch(list(inputs), output, UpscaleOptions(**options), report_path=report, quiet=quiet, model=model)


def upscale_video(
    input: str | Path,
    output: str | Path,
    *,
    model: LoadedModel | None = None,
    on_frames: Callable[[int], None] = lambda n: None,
    **options,
) -> JobResult:
    """Upscale one video file into ``output``; raises ``RestoreError`` on bad input or output.

    ``model`` reuses a model from :func:`prepare_model`; otherwise ``options`` choose one.
    ``on_frames(n)`` reports progress in frames.
    """
    opts = UpscaleOptions(**options)
    return upscale_video_file(Path(input), Path(output), model or prepare_model(opts), opts, on_frames)


def upscale_image(input: str | Path, output: str | Path, *, model: LoadedModel | None = None, **options) -> JobResult:
    """Upscale one image file (PNG/JPEG/TIFF, 8 or 16 bit) into ``output``."""
    opts = UpscaleOptions(**options)
    return upscale_image_file(Path(input), Path(output), model or prepare_model(opts), opts)


__all__ = ["UpscaleOptions", "prepare_model", "upscale", "upscale_image", "upscale_video"]
