"""One input file -> one output: the video job (chunked, segmented, resumable) and the image job."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from models.ensemble import SelfEnsemble

from .autotile import video_tile
from .devices import PRECISIONS, resolve_device, resolve_precision
from .engine import ChunkPlan, FrameRunner, TilePlan
from .engine.runner import DEFAULT_MAX_PIXELS
from .errors import ModelError, OptionError, OutputError
from .io.formats import ANIMATION_EXTENSIONS, DECODE_ERROR_POLICIES, VIDEO_CODECS, muxer_for
from .options import option, settings_check
from .registry import default_model, load_model
from .segments import MATCHES_ANY, SegmentSink, recorded_settings

if TYPE_CHECKING:  # PyAV is imported with the first video, not with `import restore`
    from .io.video import VideoInfo, VideoReader

logger = logging.getLogger("restore")


@dataclass
class UpscaleOptions:
    """Settings of ``restore upscale`` and of ``restore.upscale()``: each field is the flag of the
    same name (``tile_overlap`` is ``--tile-overlap``, ``keep_audio`` is ``--no-audio``), with its
    help text in the field's metadata, so the command and the library share these defaults.

    ``model=None`` resolves to the registry's default model for video SR at ``scale``
    (:func:`restore.registry.default_model`: a shipped model marked default, else ``bicubic``).
    Encoder settings that cannot work, and an unknown ``on_decode_error``, raise
    :class:`~restore.errors.OptionError` here, before any work starts; chunk and tile settings do
    when the model's plans are made (:meth:`chunk_plan`, :meth:`tile_plan`).
    """

    scale: int = option(4, "upscaling factor (default: %(default)s)", choices=(2, 4))
    model: str | None = option(None, "model name from `restore models` (default: the best shipped model)")
    weights: str | None = option(None, "weights for the model: .safetensors, or a torch checkpoint (loaded weights-only)")
    device: str = option("auto", "auto | cpu | cuda | cuda:N")
    precision: str = option("auto", "auto: bf16 on CUDA (fp16 where bf16 is unsupported), fp32 on CPU", choices=PRECISIONS)
    chunk: int | None = option(None, "frames per model call (default: the model's temporal window)")
    overlap: int | None = option(None, "frames shared by consecutive chunks, cross-faded")
    tile: int | None = option(None, "LR tile side in pixels (default: the fastest of a few timed on the first chunk, within --max-pixels; 0: never tile)")
    tile_overlap: int = option(16, "LR pixels shared by neighbouring tiles")
    max_pixels: int = option(DEFAULT_MAX_PIXELS, "LR pixels per model call before tiling (frames x H x W)")
    self_ensemble: bool = option(False, "average the model over the 8 flips and rotations of each chunk: "
                                 "a little sharper (Set5 x4 +0.1 dB), 8x the time")
    codec: str = option("libx264", "png: a folder of frames", choices=VIDEO_CODECS)
    crf: int | None = option(None, "constant rate factor (libx264/libx265; lower is better quality)")
    preset: str | None = option(None, "encoder preset, e.g. veryfast, medium, slow")
    pix_fmt: str | None = option(None, "output pixel format, e.g. yuv420p, yuv444p, yuv420p10le")
    keep_audio: bool = option(True, "drop audio and subtitle streams", flag="--no-audio")
    keep_start_time: bool = option(False, "keep the input's start time (e.g. 3601 s in a broadcast .ts); default: start at 0")
    on_decode_error: str = option(
        "fail",
        "video data that cannot be decoded: fail (finished segments are kept for --resume), skip its frames, "
        "or repeat the previous frame in their place",
        choices=DECODE_ERROR_POLICIES,
    )
    resume: bool = option(False, "continue an interrupted run; skip finished outputs")
    segment_frames: int = option(240, "frames per resumable segment (the most a crash can lose)")
    overwrite: bool = option(False, "replace existing outputs and partial results")
    devices: int = option(1, "processes per node (GPUs, or CPU ranks sharing the cores); >1 runs Lightning DDP, "
                          "segments of every video shared by the ranks")
    num_nodes: int = option(1, "nodes for DDP (run the command on each, or under torchrun or srun)")
    strategy: str = option("ddp", "Lightning strategy of a --devices/--num-nodes run", choices=("ddp",))

    def __post_init__(self) -> None:
        for name in ("devices", "num_nodes", "segment_frames"):
            if (value := getattr(self, name)) < 1:
                raise OptionError(None, f"--{name.replace('_', '-')} must be at least 1, got {value}")
        if self.distributed and self.device.startswith("cuda:"):
            raise OptionError(None, f"--device {self.device}: a --devices/--num-nodes run takes one GPU per rank; "
                              "pass --device cuda (or choose the GPUs with CUDA_VISIBLE_DEVICES)")
        if self.model is None:
            self.model = default_model("video-sr", self.scale)
        from .io.video import check_encoder_options  # PyAV loads with the first video job, not with `import restore`

        with settings_check():
            check_encoder_options(self.codec, self.crf, self.preset, self.pix_fmt)
        if self.on_decode_error not in DECODE_ERROR_POLICIES:  # the command line has `choices`; the API has not
            raise OptionError(None, f"--on-decode-error must be one of {', '.join(DECODE_ERROR_POLICIES)}, got {self.on_decode_error!r}")

    @property
    def distributed(self) -> bool:
        """Whether the batch runs on Lightning DDP ranks (:mod:`restore.video_distributed`)."""
        return self.devices > 1 or self.num_nodes > 1

    def chunk_plan(self, window: int) -> ChunkPlan:
        """Chunking for a model with a ``window``-frame temporal window (1: a per-frame model).

        ``chunk`` defaults to the window (8 frames for per-frame models), ``overlap`` to a quarter
        of the chunk for temporal models and to 0 for per-frame ones, which need no cross-fade.
        """
        chunk = self.chunk or (window if window > 1 else 8)
        overlap = self.overlap if self.overlap is not None else (chunk // 4 if window > 1 else 0)
        with settings_check():
            return ChunkPlan(chunk, overlap)

    def tile_plan(self) -> TilePlan | None:
        """Fixed tiles from ``tile`` and ``tile_overlap``; None: automatic (a video's are timed once,
        :mod:`restore.autotile`; an image's follow ``max_pixels``)."""
        if self.tile is None:
            return None
        with settings_check():
            return TilePlan(self.tile, self.tile_overlap)


@dataclass
class JobResult:
    """One row of the report. ``status``: ok | failed | skipped | interrupted. ``frames``: frames
    upscaled by this run (not those of segments an earlier run finished); ``concealed``: frames
    of the input that could not be decoded, skipped or repeated as ``--on-decode-error`` says.
    ``ranks``: in a DDP run, what each rank did for this input (``rank``, ``segments`` as
    ``[first, last]``, last None: to the end, ``frames``, ``seconds``, and ``joined``: whether it
    joined the output)."""

    input: str
    status: str
    output: str | None = None
    frames: int = 0
    seconds: float = 0.0
    error: str | None = None
    concealed: int = 0
    ranks: list[dict] | None = None

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


def prepare_model(opts: UpscaleOptions, device: torch.device | None = None) -> LoadedModel:
    """Load the model and work out device, precision, chunking and tiling from ``opts``;
    ``device`` replaces ``opts.device`` (a DDP rank's own)."""
    device = device or resolve_device(opts.device)
    dtype = resolve_precision(opts.precision, device)
    model = load_model(opts.model, opts.weights, scale=opts.scale, device=device, dtype=dtype)
    if opts.self_ensemble:
        model = SelfEnsemble(model)
    if int(model.scale) != opts.scale:
        raise ModelError(opts.weights, f"model {opts.model!r} upscales x{model.scale}, but --scale {opts.scale} was asked for")
    plan = opts.chunk_plan(int(getattr(model, "temporal_window", 1)))
    tiles = opts.tile_plan()
    weights_id = None
    if opts.weights:
        st = os.stat(opts.weights)
        weights_id = f"{Path(opts.weights).resolve()}:{st.st_size}:{st.st_mtime_ns}"
    runner = FrameRunner(model, device, dtype, tiles, opts.max_pixels)
    return LoadedModel(opts.model, runner, plan, weights_id)


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


def _fingerprint(src: Path, model: LoadedModel, opts: UpscaleOptions, tile: int) -> dict:
    """The settings the segments are made with; ``tile`` is the tile side in effect (``--tile``
    or the automatic one, :func:`~restore.autotile.video_tile`)."""
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
        "tile": tile,
        "tile_overlap": opts.tile_overlap,
        "max_pixels": opts.max_pixels,
        "self_ensemble": opts.self_ensemble,
        "precision": str(model.runner.dtype),
        "codec": opts.codec,
        "crf": opts.crf,
        "preset": opts.preset,
        "pix_fmt": opts.pix_fmt,
        "segment_frames": opts.segment_frames,
        # "fail" conceals no frame, so its segments are those of every policy: --resume may change it
        "on_decode_error": MATCHES_ANY if opts.on_decode_error == "fail" else opts.on_decode_error,
    }


def open_video_output(
    src: Path, dst: Path, model: LoadedModel, opts: UpscaleOptions, info: VideoInfo, *, shared: bool = False
) -> SegmentSink | None:
    """The segments of ``dst`` (:class:`~restore.segments.SegmentSink`): a fresh partial folder,
    or the finished segments of an interrupted run; None when ``dst`` is done and ``--resume``
    skips it. ``shared``: join, as one DDP rank of several, the folder that one process opened
    first. Raises ``OutputError`` for an output name we write no container for, an existing output
    or partial results without ``--resume``/``--overwrite``, partial results of other settings."""
    from .io.video import VideoWriter, display_losses

    muxer = muxer_for(dst, opts.codec)
    if not shared:
        if not _check_output(dst, opts):
            return None
        for lost in display_losses(opts.codec, info.display):
            logger.warning("%s: %s output cannot hold the input's %s; it is dropped", src, opts.codec, lost)
    encoder = partial(
        VideoWriter,
        width=info.width * model.scale,
        height=info.height * model.scale,
        fps=info.fps,
        time_base=info.time_base,
        codec=opts.codec,
        crf=opts.crf,
        preset=opts.preset,
        pix_fmt=opts.pix_fmt,
        bit_depth=info.bit_depth,
        display=info.display,
    )
    tile = opts.tile
    if tile is None:  # chosen once per video; resumed or shared segments take the recorded one
        adopt = shared or (opts.resume and not opts.overwrite)
        frames = min(model.plan.chunk, info.frames or model.plan.chunk)  # a clip shorter than a chunk is one call
        tile = video_tile(model.runner, frames, info.height, info.width, overlap=opts.tile_overlap,
                          recorded=recorded_settings(dst) if adopt else {})
    return SegmentSink.open(
        dst,
        _fingerprint(src, model, opts, tile),
        muxer=muxer,
        plan=model.plan,
        segment_frames=opts.segment_frames,
        open_writer=encoder,
        resume=opts.resume or shared,
        overwrite=opts.overwrite and not shared,
        shared=shared,
    )


# all segments from the first of a range to the end of the video, however many there are
TO_THE_END = sys.maxsize


def upscale_segments(
    sink: SegmentSink,
    reader: VideoReader,
    model: LoadedModel,
    segments: range = range(TO_THE_END),
    on_frames: Callable[[int], None] = lambda n: None,
) -> int:
    """Upscale the chunks of the ``segments`` that ``sink`` still needs (the engine also runs the
    chunks before them whose cross-fades reach them, :attr:`~restore.engine.ChunkPlan.context`)
    and let the sink commit each segment; returns the frames upscaled. Reading stops after the
    last chunk of ``segments`` (``range(k, TO_THE_END)``: segment ``k`` and all after it)."""
    frames = 0

    def needs(chunk: int) -> bool:
        return sink.segment_of(chunk) in segments and sink.needs(chunk)

    settings = recorded_settings(sink.output)  # the tile the segments are made with
    runner = replace(model.runner, tiles=TilePlan(settings["tile"], settings["tile_overlap"]))
    for chunk in runner.stream(reader, model.plan, needs=needs):
        sink.write(chunk)
        if chunk.frames is not None:
            frames += len(chunk.pts)
        on_frames(len(chunk.pts))
        if sink.segment_of(chunk.index + 1) >= segments.stop:
            break  # the next chunk is past our share: the rest of the video is not ours to decode
    return frames


def upscale_video_file(
    src: Path,
    dst: Path,
    model: LoadedModel,
    opts: UpscaleOptions,
    on_frames: Callable[[int], None] = lambda n: None,
    info: VideoInfo | None = None,
) -> JobResult:
    """Upscale one video ``src`` into ``dst`` (a file, or a folder for ``--codec png``).

    Frames stream through the model in overlapping chunks and are encoded into resumable segments
    (:class:`~restore.segments.SegmentSink`), which are then stream-copied into ``dst`` with the
    input's audio and subtitles. ``dst`` appears only when complete. ``on_frames(n)`` is called as
    frames are finished (progress). ``info`` is ``src``'s :func:`~restore.io.video.probe_video`
    when the caller has made it (the batch has, for its progress bars), so that the file is
    probed once.
    """
    from .io.video import VideoReader, probe_video

    start = time.perf_counter()
    # 1. Probe the input
    info = info or probe_video(src)
    if dst.suffix.lower() in ANIMATION_EXTENSIONS:
        return _as_animation(src, dst, opts, info.duration,
                             lambda video, lossless: upscale_video_file(src, video, model, lossless, on_frames, info))
    # 2. Open the segments (an output name we write no container for is refused here, before any
    #    work): a fresh partial folder, or the finished segments of an interrupted run
    sink = open_video_output(src, dst, model, opts, info)
    if sink is None:
        return JobResult(str(src), "skipped", str(dst), error="output exists (done in an earlier run)")
    # 3. Upscale the chunks of the missing segments; the sink commits each segment when complete
    with sink, VideoReader(src, info=info, on_error=opts.on_decode_error) as reader:
        frames = upscale_segments(sink, reader, model, on_frames=on_frames)
    warn_concealed(src, reader.concealed, opts)
    # 4. Join the segments, with the input's audio, subtitles, chapters and tags, into dst
    join_video_output(sink, src, opts)
    return JobResult(str(src), "ok", str(dst), frames, time.perf_counter() - start, concealed=reader.concealed)


def warn_concealed(src: Path, concealed: int, opts: UpscaleOptions) -> None:
    """Log how many frames of ``src`` could not be decoded, and what became of them."""
    if concealed:
        done = "left out" if opts.on_decode_error == "skip" else "replaced by the previous frame"
        logger.warning("%s: %d frame(s) could not be decoded and were %s", src, concealed, done)


def join_video_output(sink: SegmentSink, src: Path, opts: UpscaleOptions) -> None:
    """Join the segments, with ``src``'s audio and subtitles (unless ``--no-audio``), chapters and
    tags, into the output, which appears under its name."""
    sink.finish(src, copy_streams=opts.keep_audio, keep_start_time=opts.keep_start_time)


def upscale_image_file(src: Path, dst: Path, model: LoadedModel, opts: UpscaleOptions) -> JobResult:
    """Upscale one image; 16-bit inputs give 16-bit outputs. ``dst`` is written atomically.

    An alpha channel is kept (the runner takes it through bicubic interpolation, not the model).
    The output is upright (the EXIF orientation is applied) and keeps the input's ICC profile, DPI
    and EXIF where its format holds them (:func:`~restore.io.image.write_image`).
    """
    from .io.image import read_image, read_image_metadata, write_image

    start = time.perf_counter()
    image = read_image(src, keep_alpha=True)
    if not _check_output(dst, opts):
        return JobResult(str(src), "skipped", str(dst), error="output exists (done in an earlier run)")
    write_image(dst, model.runner([image])[0], read_image_metadata(src))
    return JobResult(str(src), "ok", str(dst), 1, time.perf_counter() - start)


def _as_animation(
    src: Path, dst: Path, opts: UpscaleOptions, duration: float | None, upscale: Callable[[Path, UpscaleOptions], JobResult]
) -> JobResult:
    """Upscale a video or animation ``src`` into an animated GIF or WebP ``dst``.

    The frames are made as for any video, ``upscale(video, lossless_opts)`` (the video path of
    :func:`upscale_video_file`), into a lossless RGB video beside ``dst`` (hidden, resumable with
    ``--resume``), which is then written as the animation with the timing (``duration``: the
    source's, seconds) and, for
    an animated source, the loop count of ``src`` (a video's loops forever), and removed. ``dst``
    appears only when complete; the encoder options do not apply.
    """
    from .atomic import atomic_path, remove
    from .io.animation import is_animation, loop_count, video_to_animation

    if not _check_output(dst, opts):
        return JobResult(str(src), "skipped", str(dst), error="output exists (done in an earlier run)")
    video = dst.with_name(f".{dst.name}.restore-frames.mkv")
    lossless = replace(opts, codec="ffv1", pix_fmt="bgr0", crf=None, preset=None, keep_audio=False)
    result = upscale(video, lossless)
    with atomic_path(dst) as tmp:
        video_to_animation(video, tmp, duration=duration, loop=loop_count(src) if is_animation(src) else 0)
    remove(video)
    return replace(result, status="ok", output=str(dst), error=None)

