"""One input file -> one output: the video job (chunked, segmented, resumable) and the image job."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from .atomic import atomic_path
from .devices import resolve_device, resolve_precision
from .engine import ChunkPlan, FrameRunner, TilePlan, stream_chunks
from .engine.runner import DEFAULT_MAX_PIXELS, to_float, to_integer
from .errors import InputError, OutputError
from .registry import load_model

CODEC_SUFFIX = {"libx264": ".mp4", "libx265": ".mp4", "ffv1": ".mkv", "png": ""}
# Output containers by suffix -> FFmpeg muxer. x264/x265 outputs keep their input's container
# when it is one of these; anything else becomes .mp4.
CONTAINER_MUXERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}


@dataclass
class UpscaleOptions:
    """Settings of ``restore upscale`` (see ``restore upscale --help`` for each)."""

    scale: int = 4
    model: str = "bicubic"
    weights: str | None = None
    device: str = "auto"
    precision: str = "auto"
    chunk: int | None = None  # None: the model's temporal window (8 frames for per-frame models)
    overlap: int | None = None  # None: a quarter of the chunk for temporal models, 0 otherwise
    tile: int | None = None  # None: automatic from max_pixels; 0: never tile
    tile_overlap: int = 16
    max_pixels: int = DEFAULT_MAX_PIXELS
    codec: str = "libx264"
    crf: int | None = None
    preset: str | None = None
    pix_fmt: str | None = None
    keep_audio: bool = True
    resume: bool = False
    overwrite: bool = False
    segment_frames: int = 240  # frames per resumable segment: the most work a crash can lose


@dataclass
class JobResult:
    """One row of the report. ``status``: ok | failed | skipped | interrupted."""

    input: str
    status: str
    output: str | None = None
    frames: int = 0
    seconds: float = 0.0
    error: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class LoadedModel:
    """A model ready to run, with the facts the jobs need."""

    name: str
    runner: FrameRunner
    plan: ChunkPlan
    weights_id: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def scale(self) -> int:
        return self.runner.scale


def prepare_model(opts: UpscaleOptions) -> LoadedModel:
    """Load the model and work out device, precision, chunking and tiling from ``opts``."""
    device = resolve_device(opts.device)
    dtype = resolve_precision(opts.precision, device)
    model = load_model(opts.model, opts.weights, scale=opts.scale, device=device, dtype=dtype)
    if int(model.scale) != opts.scale:
        raise ValueError(f"model {opts.model!r} upscales x{model.scale}, but --scale {opts.scale} was asked for")
    window = int(getattr(model, "temporal_window", 1))
    chunk = opts.chunk or (window if window > 1 else 8)
    overlap = opts.overlap if opts.overlap is not None else (chunk // 4 if window > 1 else 0)
    plan = ChunkPlan(chunk, overlap)
    tiles = None if opts.tile is None else TilePlan(opts.tile, opts.tile_overlap)
    weights_id = None
    if opts.weights:
        st = os.stat(opts.weights)
        weights_id = f"{Path(opts.weights).resolve()}:{st.st_size}:{st.st_mtime_ns}"
    runner = FrameRunner(model, device, dtype, tiles, opts.max_pixels)
    return LoadedModel(opts.model, runner, plan, weights_id)


def output_suffix(src: Path, codec: str) -> str:
    """Output suffix for a video: the input's container when it can hold ``codec``, else the codec's."""
    if codec in ("libx264", "libx265") and src.suffix.lower() in CONTAINER_MUXERS:
        return src.suffix.lower()
    return CODEC_SUFFIX[codec]


def _check_output(dst: Path, opts: UpscaleOptions) -> bool:
    """Return False if ``dst`` is already complete and ``--resume`` says to skip it."""
    if dst.exists():
        if opts.resume and not opts.overwrite:
            return False
        if not opts.overwrite:
            raise OutputError(dst, "output exists; pass --overwrite to replace it")
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(dst.parent, f"cannot create output folder ({exc.strerror})") from None
    if not os.access(dst.parent, os.W_OK):
        raise OutputError(dst.parent, "output folder is not writable")
    return True


def _fingerprint(src: Path, model: LoadedModel, opts: UpscaleOptions) -> dict:
    st = src.stat()
    return {
        "input": str(src.resolve()),
        "input_size": st.st_size,
        "input_mtime_ns": st.st_mtime_ns,
        "model": model.name,
        "weights": model.weights_id,
        "scale": model.scale,
        "chunk": model.plan.chunk,
        "overlap": model.plan.overlap,
        "tile": opts.tile,
        "tile_overlap": opts.tile_overlap,
        "max_pixels": opts.max_pixels,
        "precision": str(model.runner.dtype),
        "codec": opts.codec,
        "crf": opts.crf,
        "preset": opts.preset,
        "pix_fmt": opts.pix_fmt,
        "segment_frames": opts.segment_frames,
    }


def upscale_video_file(
    src: Path,
    dst: Path,
    model: LoadedModel,
    opts: UpscaleOptions,
    on_frames: Callable[[int], None] = lambda n: None,
) -> JobResult:
    """Upscale one video ``src`` into ``dst`` (a file, or a folder for ``--codec png``).

    Frames stream through the model in overlapping chunks and are encoded into resumable segments,
    which are then stream-copied into ``dst`` with the input's audio and subtitles. ``dst``
    appears only when complete. ``on_frames(n)`` is called as frames are finished (progress).
    """
    from .io.video import VideoReader, VideoWriter, concat_segments, probe_video
    from .resume import PartialState

    start = time.perf_counter()
    muxer = _muxer_for(dst, opts.codec)
    info = probe_video(src)
    if not _check_output(dst, opts):
        return JobResult(str(src), "skipped", str(dst), error="output exists (done in an earlier run)")
    # Segments use the output's own container, so its time base (and so every timestamp) is kept.
    suffix = "" if opts.codec == "png" else dst.suffix
    state = PartialState.open(
        dst, _fingerprint(src, model, opts), segment_suffix=suffix, resume=opts.resume, overwrite=opts.overwrite
    )
    per_segment = max(1, math.ceil(opts.segment_frames / model.plan.stride))
    done = state.completed()
    out_dtype = torch.uint16 if info.bit_depth > 8 else torch.uint8
    writer = None
    frames = 0
    segments = 0
    try:
        with VideoReader(src) as reader:
            chunks = stream_chunks(reader, model.plan, model.runner, needs=lambda c: c // per_segment not in done)
            for chunk in chunks:
                segment = chunk.index // per_segment
                if chunk.frames is not None:
                    if writer is None:
                        writer = VideoWriter(
                            state.temporary_segment_path(segment),
                            width=info.width * model.scale,
                            height=info.height * model.scale,
                            fps=info.fps,
                            time_base=info.time_base,
                            codec=opts.codec,
                            crf=opts.crf,
                            preset=opts.preset,
                            pix_fmt=opts.pix_fmt,
                            bit_depth=info.bit_depth,
                        )
                    for frame, pts in zip(to_integer(chunk.frames, out_dtype), chunk.pts):
                        writer.write(frame, pts)
                frames += len(chunk.pts)
                on_frames(len(chunk.pts))
                if writer is not None and (chunk.is_last or (chunk.index + 1) % per_segment == 0):
                    writer.close()
                    writer = None
                    state.commit(segment)
                segments = segment + 1
    except InputError:
        _close_quietly(writer)
        state.cleanup()  # a corrupt input cannot be resumed
        raise
    except OSError as exc:  # disk full, quota, I/O error: finished segments stay for --resume
        _close_quietly(writer)
        state.discard_temporary()
        raise OutputError(dst, f"writing failed ({exc.strerror or exc}); finished segments kept for --resume") from None
    except BaseException:
        _close_quietly(writer)
        state.discard_temporary()
        raise
    try:
        with atomic_path(dst) as tmp:
            concat_segments(
                [state.segment_path(i) for i in range(segments)],
                tmp,
                audio_from=src if opts.keep_audio else None,
                format=muxer,
            )
    except OSError as exc:
        raise OutputError(dst, f"writing failed ({exc.strerror or exc}); finished segments kept for --resume") from None
    state.cleanup()
    return JobResult(str(src), "ok", str(dst), frames, time.perf_counter() - start)


def _muxer_for(dst: Path, codec: str) -> str | None:
    """The muxer for ``dst``; OutputError, before any work, for a suffix we write no container for
    (a .avi or .webm name would otherwise get MP4 content or fail at the first segment)."""
    if codec == "png":
        return None
    muxer = CONTAINER_MUXERS.get(dst.suffix.lower())
    if muxer is None:
        what = f"a {dst.suffix} file" if dst.suffix else "a file without extension"
        raise OutputError(dst, f"cannot write {codec} video as {what}; name it .mp4, .mkv, .mov or .m4v")
    return muxer


def _close_quietly(writer) -> None:
    if writer is not None:
        try:
            writer.close()
        except Exception:  # noqa: BLE001 - already failing; the original error is what matters
            pass


def upscale_image_file(src: Path, dst: Path, model: LoadedModel, opts: UpscaleOptions) -> JobResult:
    """Upscale one image; 16-bit inputs give 16-bit outputs. ``dst`` is written atomically.

    An alpha channel is kept: the colours go through the model, the alpha through bicubic
    interpolation (a restoration model is trained on pictures, not on masks).
    """
    from .io.image import read_image, write_image

    start = time.perf_counter()
    image = read_image(src, keep_alpha=True)
    if not _check_output(dst, opts):
        return JobResult(str(src), "skipped", str(dst), error="output exists (done in an earlier run)")
    has_alpha = image.shape[2] in (2, 4)
    colour = image[:, :, :-1] if has_alpha else image
    out = to_integer(model.runner([colour]), image.dtype)[0]
    if has_alpha:
        alpha = to_float([image[:, :, -1:]])
        alpha = torch.nn.functional.interpolate(alpha, scale_factor=model.scale, mode="bicubic").clamp_(0, 1)
        out = torch.cat([out, to_integer(alpha, image.dtype)[0]], dim=2)
    write_image(dst, out)
    return JobResult(str(src), "ok", str(dst), 1, time.perf_counter() - start)
