"""restore.jobs: one input through the bicubic model into one output, as `restore upscale` runs it,
checked for what must come out as it went in: the clock, how the pixels are shown, the tags."""

from __future__ import annotations

from pathlib import Path

import av
import pytest
from PIL import Image

from restore.io.formats import is_image
from restore.jobs import UpscaleOptions, prepare_model, upscale_image_file, upscale_video_file
from tests.fixtures import FONT, PHOTO_DPI, PHOTO_MAKE, make_hdr10_video, make_photo, make_video, stream_starts

needs_x265 = pytest.mark.skipif("libx265" not in av.codecs_available, reason="this FFmpeg has no libx265")
# the HDR static metadata FFmpeg's decoders attach to frames (from SEI or the container)
HDR_SIDE_DATA = ("MASTERING_DISPLAY_METADATA", "CONTENT_LIGHT_LEVEL")


def upscale(src: Path, dst: Path, **options) -> None:
    """Upscale ``src`` x2 into ``dst`` with the bicubic model on the CPU."""
    opts = UpscaleOptions(model="bicubic", scale=2, device="cpu", **options)
    job = upscale_image_file if is_image(src) else upscale_video_file
    assert job(src, dst, prepare_model(opts), opts).status == "ok"


@pytest.fixture(scope="module")
def broadcast_clip(tmp_path_factory) -> Path:
    """2 s cut from an MPEG-TS broadcast: the first frame at 3601 s, the audio 0.2 s after it."""
    return make_video(tmp_path_factory.mktemp("ts") / "cut.ts", frames=50, first_pts=3601 * 25, audio_delay=0.2).path


def test_a_broadcast_clip_starts_at_zero_with_its_audio_offset(broadcast_clip, tmp_path):
    upscale(broadcast_clip, tmp_path / "out.mp4")
    before, after = stream_starts(broadcast_clip), stream_starts(tmp_path / "out.mp4")
    assert before["video"] == 3601 and after["video"] == 0
    assert after["audio"] == pytest.approx(before["audio"] - before["video"], abs=1e-3)
    with av.open(str(tmp_path / "out.mp4")) as container:
        assert container.duration / av.time_base == pytest.approx(2, abs=0.05)  # not 3603 s


def test_keep_start_time_keeps_the_broadcast_clock(broadcast_clip, tmp_path):
    upscale(broadcast_clip, tmp_path / "out.mp4", keep_start_time=True)
    assert stream_starts(tmp_path / "out.mp4") == pytest.approx(stream_starts(broadcast_clip), abs=1e-3)


def how_shown(path: Path) -> dict:
    """What a player reads about showing the first frame of ``path`` (as ffprobe reports it)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frame = next(container.decode(stream))
        hdr = {d.type.name: bytes(d) for d in frame.side_data if d.type.name in HDR_SIDE_DATA}
        colour = (frame.color_primaries, frame.color_trc, frame.colorspace, frame.color_range)
        return {"sar": stream.sample_aspect_ratio, "colour": colour, "format": frame.format.name, **hdr}


@needs_x265
@pytest.mark.parametrize("codec", ["libx264", "libx265"])
def test_an_anamorphic_hdr10_video_keeps_its_display_metadata_and_10_bits(tmp_path, codec):
    source = make_hdr10_video(tmp_path / "hdr.mkv", frames=4)
    upscale(source.path, tmp_path / "out.mp4", codec=codec)
    # SAR 4:3 (square would show 16:9 as 3:2), BT.2020 PQ (not BT.709), mastering display and
    # content light levels, 10-bit samples
    assert how_shown(tmp_path / "out.mp4") == how_shown(source.path)
    with av.open(str(tmp_path / "out.mp4")) as container:
        tag = container.streams.video[0].codec_context.codec_tag
    assert tag == ("hvc1" if codec == "libx265" else "avc1")  # Apple's players refuse hev1


def test_matroska_output_keeps_frame_rate_chapters_tags_and_attachments(tmp_path):
    source = make_video(
        tmp_path / "film.mkv", frames=50, tags={"title": "Holiday"}, chapters=[(0, 1, "Beach"), (1, 2, "Sunset")],
        attachments=[FONT],
    )
    upscale(source.path, tmp_path / "out.mkv", keep_audio=False)  # --no-audio keeps all but the streams
    with av.open(str(tmp_path / "out.mkv")) as container:
        video = container.streams.video[0]
        assert (video.average_rate, video.base_rate) == (25, 25)  # Matroska's default duration: not 1000 fps
        assert container.metadata["title"] == "Holiday"
        assert [c["metadata"]["title"] for c in container.chapters()] == ["Beach", "Sunset"]
        assert [(a.name, a.mimetype, a.data) for a in container.streams.attachments] == [FONT]
        assert not container.streams.audio


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_an_image_comes_out_upright_with_its_icc_profile_dpi_and_exif(tmp_path, suffix):
    _, profile = make_photo(tmp_path / f"photo{suffix}", height=12, width=20, orientation=6)
    upscale(tmp_path / f"photo{suffix}", tmp_path / f"out{suffix}")
    with Image.open(tmp_path / f"out{suffix}") as out:
        assert out.size == (2 * 12, 2 * 20)  # turned upright: 12 wide, 20 high, then x2
        assert out.info["icc_profile"] == profile
        assert out.info["dpi"] == pytest.approx(PHOTO_DPI, rel=1e-3)
        exif = out.getexif()
        assert exif[0x0112] == 1 and exif[0x010F] == PHOTO_MAKE  # no viewer turns it a second time
