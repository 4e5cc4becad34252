"""GIF and animated WebP, made here with Pillow, read as videos and written back."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

import cli
from restore.io.animation import is_animation, loop_count
from restore.io.video import VideoReader, probe_video

# flat colours, so that a GIF palette holds them exactly
COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (220, 220, 40)]
# as stated in the files; 0 ms is played (and read) as 100 ms
DURATIONS = [40, 80, 120, 0]
PLAYED = [40, 80, 120, 100]


def _frame(colour, size=(24, 16), alpha: int | None = None) -> Image.Image:
    array = np.zeros((size[1], size[0], 3), np.uint8)
    array[:, :] = colour
    array[: size[1] // 2, : size[0] // 2] = (255, 255, 255)  # a corner, so that frames are not flat
    if alpha is None:
        return Image.fromarray(array)
    rgba = np.dstack([array, np.full(array.shape[:2], 255, np.uint8)])
    rgba[-4:, -4:, 3] = alpha  # a transparent corner
    return Image.fromarray(rgba)


def make_animation(path: Path, *, alpha: int | None = None, loop: int | None = 2) -> Path:
    frames = [_frame(c, alpha=alpha) for c in COLOURS]
    options = {"lossless": True} if path.suffix == ".webp" else {}
    if loop is not None:
        options["loop"] = loop
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=DURATIONS, **options)
    return path


@pytest.mark.parametrize("suffix", [".gif", ".webp"])
def test_an_animation_is_a_video_with_its_own_frame_durations(tmp_path, suffix):
    # before: a GIF was "not a video" and an animated WebP an image (its first frame only)
    path = make_animation(tmp_path / f"a{suffix}")
    assert is_animation(path)
    info = probe_video(path)
    assert (info.width, info.height, info.frames) == (24, 16, 4)
    assert info.time_base == Fraction(1, 1000) and info.duration == pytest.approx(sum(PLAYED) / 1000)
    assert info.audio_streams == 0
    with VideoReader(path) as reader:
        frames, pts = zip(*[(f.numpy(), p) for f, p in reader])
    assert list(pts) == [0, 40, 120, 240]
    for frame, colour in zip(frames, COLOURS):
        assert frame.shape == (16, 24, 3) and frame.dtype == np.uint8
        assert tuple(frame[-1, -1]) == colour and tuple(frame[0, 0]) == (255, 255, 255)


def test_alpha_is_composited_over_black(tmp_path):
    path = make_animation(tmp_path / "a.webp", alpha=0)
    with VideoReader(path) as reader:
        frame, _ = next(iter(reader))
    assert tuple(frame[-1, -1].tolist()) == (0, 0, 0), "transparent: black"
    assert tuple(frame[-5, -5].tolist()) == COLOURS[0], "opaque: unchanged"


def test_a_still_webp_stays_an_image(tmp_path):
    still = tmp_path / "still.webp"
    _frame(COLOURS[0]).save(still, lossless=True)
    assert not is_animation(still)
    assert not is_animation(tmp_path / "missing.mp4"), "files named as videos are not opened"


def _decoded_times(path: Path) -> list[float]:
    with av.open(str(path)) as c:
        return [f.time for f in c.decode(video=0)]


def test_in_a_folder_a_gif_is_a_video_and_a_still_webp_an_image(tmp_path):
    # before: the GIF was skipped as "not a video or image (by extension)"
    folder = tmp_path / "in"
    folder.mkdir()
    make_animation(folder / "a.gif")
    _frame(COLOURS[0]).save(folder / "still.webp", lossless=True)
    out = tmp_path / "out"
    assert cli.main(["upscale", str(folder), "-o", str(out), "--scale", "2", "-q"]) == 0
    with av.open(str(out / "a.mp4")) as c:
        assert (c.streams.video[0].width, c.streams.video[0].height) == (48, 32)
    np.testing.assert_allclose(_decoded_times(out / "a.mp4"), [0, 0.04, 0.12, 0.24], atol=1e-3)
    with Image.open(out / "still.webp") as image:
        assert image.size == (48, 32)


@pytest.mark.parametrize("suffix", [".gif", ".webp"])
def test_an_animation_output_keeps_durations_and_loop_count(tmp_path, suffix):
    src = make_animation(tmp_path / "in.webp", loop=3)
    out = tmp_path / f"out{suffix}"
    assert cli.main(["upscale", str(src), "-o", str(out), "--scale", "2", "-q"]) == 0
    with Image.open(out) as image:
        assert image.size == (48, 32) and image.n_frames == 4
        durations = []
        for index in range(image.n_frames):
            image.seek(index)
            image.load()
            durations.append(image.info["duration"])
    assert durations == PLAYED
    assert loop_count(out) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.webp", f"out{suffix}"], "no intermediate left"


def test_a_video_becomes_a_looping_gif(tmp_path):
    from restore.io.samples import make_sample_video

    src = make_sample_video(tmp_path / "clip.mp4", frames=5, width=32, height=16, fps=25)
    out = tmp_path / "out.gif"
    assert cli.main(["upscale", str(src), "-o", str(out), "--scale", "2", "-q"]) == 0
    with Image.open(out) as image:
        assert image.n_frames == 5 and image.info["duration"] == 40 and image.info["loop"] == 0
