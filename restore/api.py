"""Python API mirroring ``restore upscale``: the same settings with the same defaults (the fields of
:class:`UpscaleOptions`). The web demo calls these; ``restore upscale`` runs the same batch."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from .batch import BatchReport, run_batch
from .jobs import JobResult, LoadedModel, UpscaleOptions, prepare_model, upscale_image_file, upscale_video_file


def _options(model: str | LoadedModel | None, options: dict) -> tuple[UpscaleOptions, LoadedModel | None]:
    """``model`` is a name from ``restore models`` (an option like any other) or a model already
    loaded by :func:`prepare_model` (reused, not loaded again)."""
    if isinstance(model, str):
        return UpscaleOptions(model=model, **options), None
    return UpscaleOptions(**options), model


def upscale(
    inputs: Sequence[str | Path],
    output: str | Path,
    *,
    report: str | Path | None = None,
    quiet: bool = True,
    model: str | LoadedModel | None = None,
    **options,
) -> BatchReport:
    """Upscale videos, images and folders into ``output`` (a file for one input, else a folder).

    ``options`` are the fields of :class:`UpscaleOptions` (``scale``, ``model``, ``weights``,
    ``codec``, ``crf``, ``chunk``, ``tile``, ``resume``, ...); those not given take the defaults of
    ``restore upscale`` (``model``: the registry's default for video SR at ``scale``). Bad inputs
    are reported, not raised; settings that cannot work raise ``OptionError``, and destinations
    that cannot (an unwritable folder or ``report``, an output folder inside an input folder)
    ``OutputError``, before any work.
    """
    opts, loaded = _options(model, options)
    return run_batch(list(inputs), output, opts, report_path=report, quiet=quiet, model=loaded)


def upscale_video(
    input: str | Path,
    output: str | Path,
    *,
    model: str | LoadedModel | None = None,
    on_frames: Callable[[int], None] = lambda n: None,
    **options,
) -> JobResult:
    """Upscale one video file into ``output``; raises ``RestoreError`` on bad input or output.

    ``model``: a model name, or a model from :func:`prepare_model` to reuse.
    ``on_frames(n)`` reports progress in frames.
    """
    opts, loaded = _options(model, options)
    return upscale_video_file(Path(input), Path(output), loaded or prepare_model(opts), opts, on_frames)


def upscale_image(
    input: str | Path, output: str | Path, *, model: str | LoadedModel | None = None, **options
) -> JobResult:
    """Upscale one image file (PNG/JPEG/TIFF, 8 or 16 bit) into ``output``; ``model`` as in
    :func:`upscale_video`."""
    opts, loaded = _options(model, options)
    return upscale_image_file(Path(input), Path(output), loaded or prepare_model(opts), opts)


__all__ = ["UpscaleOptions", "prepare_model", "upscale", "upscale_image", "upscale_video"]
