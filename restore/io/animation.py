"""GIF and animated WebP as videos: probed, decoded and written with Pillow.

FFmpeg decodes GIF but has no decoder for animated WebP, so both go through Pillow, the same way:

* timing: each frame keeps its own duration; ``pts`` are milliseconds (time base 1/1000) from 0.
  A duration of 10 ms or less is played as 100 ms, as browsers and FFmpeg play it (many GIFs
  say 0 and mean "default speed");
* loop count: a video output plays once; :func:`write_animation` is given one (``restore
  upscale`` gives the source's, :func:`loop_count`, so ``in.gif -o out.gif`` loops as ``in.gif``
  does, and a video made into a GIF or WebP loops forever);
* alpha: composited over black (GIF transparency is one bit, and video outputs have no alpha);
  written GIF and WebP files are opaque.

A GIF of one frame is a one-frame video; a WebP of one frame is a still image (:func:`is_animation`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image, ImageSequence, UnidentifiedImageError

from ..errors import InputError
from .formats import ANIMATION_EXTENSIONS, IMAGE_EXTENSIONS, VIDEO_EXTENSIONS

if TYPE_CHECKING:
    from .video import VideoInfo

TIME_BASE = Fraction(1, 1000)  # Pillow states durations in milliseconds
# what a frame of DEFAULT_MS or less is shown for (WebKit, Blink and FFmpeg's gif demuxer agree)
DEFAULT_MS, SHORTEST_MS = 100, 10
_FORMATS = {"GIF": "gif", "WEBP": "webp"}
_UNREADABLE = (OSError, EOFError, SyntaxError, ValueError, UnidentifiedImageError)


def is_animation(path: str | os.PathLike) -> bool:
    """Whether ``path`` holds a GIF (any number of frames) or a WebP of several frames, by its
    content. Files named like other videos or still images are not opened; an unreadable file is
    not an animation (the video reader then says what is wrong with it)."""
    suffix = Path(path).suffix.lower()
    if suffix not in ANIMATION_EXTENSIONS and (suffix in VIDEO_EXTENSIONS or suffix in IMAGE_EXTENSIONS):
        return False
    try:
        with Image.open(path) as image:
            return image.format == "GIF" or (image.format == "WEBP" and bool(getattr(image, "is_animated", False)))
    except _UNREADABLE:
        return False


def _duration_ms(image: Image.Image) -> int:
    duration = int(image.info.get("duration") or 0)
    return DEFAULT_MS if duration <= SHORTEST_MS else duration


def _rgb(frame: Image.Image) -> torch.Tensor:
    """A Pillow frame (any mode) -> ``(H, W, 3)`` uint8 RGB, alpha composited over black."""
    rgba = np.asarray(frame.convert("RGBA"), dtype=np.uint16)
    rgb = (rgba[..., :3] * rgba[..., 3:] + 127) // 255
    return torch.from_numpy(rgb.astype(np.uint8))


def _frames(path: Path) -> Iterator[tuple[Image.Image, int]]:
    """``(frame, pts in ms)`` of the animation at ``path``; InputError for what Pillow cannot read."""
    decoded = 0
    try:
        with Image.open(path) as image:
            if image.format not in _FORMATS:
                raise InputError(path, f"not a GIF or WebP animation ({image.format})")
            pts = 0
            for frame in ImageSequence.Iterator(image):
                frame.load()  # WebP states a frame's duration once it is decoded
                yield frame, pts
                decoded += 1
                pts += _duration_ms(frame)
    except _UNREADABLE as exc:
        cause = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(path, f"truncated or corrupt animation: decoded {decoded} frames before error: {cause}") from exc


def probe_animation(path: str | os.PathLike) -> VideoInfo:
    """The :class:`~restore.io.video.VideoInfo` of a GIF or animated WebP (every frame is decoded
    once, for the durations): 8-bit RGB, time base 1/1000, ``fps`` the average rate, no audio."""
    from .video import VideoInfo

    path = Path(path)
    count, end, size, kind = 0, 0, (0, 0), ""
    with Image.open(path) as image:
        size, kind = image.size, _FORMATS.get(image.format, "")
    for frame, pts in _frames(path):
        count, end = count + 1, pts + _duration_ms(frame)
    if not count:
        raise InputError(path, "animation has no frames")
    return VideoInfo(
        path=path,
        width=size[0],
        height=size[1],
        frames=count,
        fps=Fraction(count * 1000, end).limit_denominator(1001),
        time_base=TIME_BASE,
        pix_fmt="rgb24",
        bit_depth=8,
        rotation=0,
        duration=end / 1000,
        audio_streams=0,
        subtitle_streams=0,
        codec=kind,
    )


def read_animation(path: str | os.PathLike) -> Iterator[tuple[torch.Tensor, int]]:
    """Yield ``(frame (H, W, 3) uint8 RGB, pts in ms)``, one frame decoded at a time."""
    for frame, pts in _frames(Path(path)):
        yield _rgb(frame), pts


def loop_count(path: str | os.PathLike) -> int | None:
    """The loop count the animation at ``path`` states (0: forever), None when it states none."""
    with Image.open(path) as image:
        loop = image.info.get("loop")
    return None if loop is None else int(loop)


def write_animation(
    path: str | os.PathLike,
    frames: Iterable[tuple[torch.Tensor, int]],
    *,
    time_base: Fraction,
    fps: Fraction,
    duration: float | None = None,
    loop: int | None = 0,
) -> None:
    """Write ``frames`` (``(H, W, 3)`` uint8 RGB at ``pts`` in ``time_base`` units, increasing,
    from 0) as an animated GIF or WebP (by ``path``'s suffix), each frame shown until the next
    one's pts, the last until ``duration`` seconds (None, or not after the last pts: for one frame
    at ``fps``). ``loop``: 0 loops forever, None plays once. WebP is lossless; GIF frames get a
    256-colour palette each, and durations in whole centiseconds of at least 20 ms (players show
    shorter ones at 100 ms). The frames are held in memory until written (a GIF's as palette
    images, a byte a pixel). Written in place: the caller renames it when complete."""
    path = Path(path)
    gif = path.suffix.lower() == ".gif"
    images, stamps = [], []
    for frame, pts in frames:
        image = Image.fromarray(frame.numpy())
        # the palette Pillow would make when saving, made now so that a frame costs a byte a pixel
        images.append(image.convert("P", palette=Image.Palette.ADAPTIVE) if gif else image)
        stamps.append(Fraction(pts) * time_base)
    if not images:
        raise ValueError("write_animation needs at least one frame")
    end = Fraction(duration) if duration and Fraction(duration) > stamps[-1] else stamps[-1] + 1 / Fraction(fps)
    durations = [float(b - a) * 1000 for a, b in zip(stamps, [*stamps[1:], end])]
    if gif:
        options = {"disposal": 1} if loop is None else {"disposal": 1, "loop": loop}
        durations = [max(round(d / 10) * 10, 2 * SHORTEST_MS) for d in durations]
    else:
        options = {"lossless": True, "loop": 1 if loop is None else loop}
        durations = [max(round(d), 1) for d in durations]
    images[0].save(path, format="GIF" if gif else "WEBP", save_all=True, append_images=images[1:], duration=durations, **options)


def video_to_animation(video: str | os.PathLike, path: str | os.PathLike, *, duration: float | None, loop: int | None) -> None:
    """Write the frames of ``video`` (a file :class:`~restore.io.video.VideoReader` reads) as the
    animation ``path`` (:func:`write_animation`), the last frame shown until ``duration`` seconds."""
    from .video import VideoReader

    with VideoReader(video) as reader:
        write_animation(path, reader, time_base=reader.info.time_base, fps=reader.info.fps, duration=duration, loop=loop)
