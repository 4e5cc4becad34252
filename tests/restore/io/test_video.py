"""restore.io.video on real PyAV-encoded clips (tiny: 64x48, a dozen frames, AAC audio)."""

from __future__ import annotations

import dataclasses
import logging
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from restore.errors import InputError, OutputError
from restore.io.image import read_image
from restore.io.video import VideoReader, VideoWriter, concat_segments, display_losses, probe_video
from tests.fixtures import (
    CONTENT_LIGHT, FONT, MASTER_DISPLAY, SUBTITLE_CUES, corrupt_packet, make_audio_only, make_frames,
    make_hdr10_video, make_video, packet_bytes, stream_starts, truncate, unknown_codec,
)

needs_x265 = pytest.mark.skipif("libx265" not in av.codecs_available, reason="this FFmpeg has no libx265")


def read_all(path: Path) -> tuple[list[np.ndarray], list[int]]:
    with VideoReader(path) as reader:
        pairs = [(frame.numpy(), pts) for frame, pts in reader]
    return [f for f, _ in pairs], [p for _, p in pairs]


def encode(path: Path, frames, pts, *, fps=Fraction(25), time_base=Fraction(1, 25), **kwargs) -> VideoWriter:
    height, width = frames[0].shape[:2]
    with VideoWriter(path, width=width, height=height, fps=fps, time_base=time_base, **kwargs) as writer:
        for frame, stamp in zip(frames, pts):
            writer.write(torch.from_numpy(np.ascontiguousarray(frame)), stamp)
    return writer


def write_segments(folder: Path, frames, pts, parts: int, suffix: str, **kwargs) -> list[Path]:
    bounds = np.linspace(0, len(frames), parts + 1).astype(int)
    segments = []
    for k, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
        segments.append(folder / f"seg{k}{suffix}")
        encode(segments[-1], frames[lo:hi], pts[lo:hi], **kwargs)
    return segments


def decoded_samples(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(frame.samples for frame in container.decode(audio=0))


def video_packets(path: Path) -> list[tuple[int, int]]:
    with av.open(str(path)) as container:
        return [(p.pts, p.dts) for p in container.demux(container.streams.video[0]) if p.size]


def video_tag(path: Path) -> str:
    with av.open(str(path)) as container:
        return container.streams.video[0].codec_context.codec_tag


def chapter_list(container: av.container.InputContainer) -> list[tuple[Fraction, str]]:
    """(start in seconds, title) of each chapter."""
    return [(c["start"] * c["time_base"], c["metadata"].get("title")) for c in container.chapters()]


# ----------------------------------------------------------------------------- probe


def test_probe_reports_geometry_timing_and_streams(tmp_path):
    make_video(tmp_path / "a.mp4", frames=12, fps=25, subtitles=True)
    info = probe_video(tmp_path / "a.mp4")
    assert (info.width, info.height, info.frames) == (64, 48, 12)
    assert info.fps == 25 and info.time_base == Fraction(1, 12800)  # mp4 muxer's 25 fps timescale
    assert (info.pix_fmt, info.bit_depth, info.codec, info.rotation) == ("yuv420p", 8, "h264", 0)
    assert (info.audio_streams, info.subtitle_streams) == (1, 1)
    assert info.duration == pytest.approx(12 / 25)


def test_probe_matroska_has_no_frame_count_but_a_duration(tmp_path):
    make_video(tmp_path / "a.mkv", frames=10, codec="ffv1")
    info = probe_video(tmp_path / "a.mkv")
    assert info.frames is None and info.duration == pytest.approx(10 / 25)


@needs_x265
def test_probe_reads_aspect_colour_tags_and_hdr_metadata(tmp_path):
    make_hdr10_video(tmp_path / "hdr.mkv", frames=3, audio=False)
    display = probe_video(tmp_path / "hdr.mkv").display
    assert display.sample_aspect_ratio == Fraction(4, 3)
    assert (display.primaries, display.transfer, display.matrix) == (9, 16, 9)
    assert display.mastering.sei() == MASTER_DISPLAY and display.content_light == CONTENT_LIGHT


def test_probe_of_an_untagged_clip_has_square_pixels_and_no_colour_tags(tmp_path):
    make_video(tmp_path / "a.mkv", frames=2, audio=False)
    display = probe_video(tmp_path / "a.mkv").display
    assert display.sample_aspect_ratio is None and display.mastering is None
    assert (display.primaries, display.transfer, display.matrix) == (2, 2, 2)  # unspecified


# ----------------------------------------------------------------------------- round trips


def test_ffv1_round_trip_is_frame_exact_8bit(tmp_path):
    frames = make_frames(6, 48, 64)
    pts = list(range(6))
    encode(tmp_path / "o.mkv", frames, pts, codec="ffv1", pix_fmt="bgr0")  # lossless RGB
    decoded, stamps = read_all(tmp_path / "o.mkv")
    assert len(decoded) == 6 and all(d.dtype == np.uint8 for d in decoded)
    assert all(np.array_equal(a, b) for a, b in zip(decoded, frames))
    assert stamps == [p * 40 for p in pts]  # Matroska stores milliseconds


@pytest.mark.parametrize("pix_fmt", ["gbrp16le", "gbrp10le"])
def test_ffv1_round_trip_is_frame_exact_deep(tmp_path, pix_fmt):
    depth = int(pix_fmt[4:6])
    # content that the pixel format holds exactly: `depth` significant bits, bit-replicated to 16
    values = [f >> (16 - depth) for f in make_frames(5, 48, 64, deep=True)]
    frames = [(v << (16 - depth)) | (v >> (2 * depth - 16)) for v in values]
    encode(tmp_path / "o.mkv", frames, range(5), codec="ffv1", pix_fmt=pix_fmt, bit_depth=depth)
    info = probe_video(tmp_path / "o.mkv")
    assert (info.pix_fmt, info.bit_depth) == (pix_fmt, depth)
    decoded, _ = read_all(tmp_path / "o.mkv")
    assert all(d.dtype == np.uint16 for d in decoded)
    assert all(np.array_equal(a, b) for a, b in zip(decoded, frames))


def test_10bit_source_is_decoded_to_16bit_without_truncation(tmp_path):
    make_video(tmp_path / "s.mkv", frames=3, codec="ffv1", pix_fmt="yuv420p10le", audio=False)
    frame = read_all(tmp_path / "s.mkv")[0][0]
    assert frame.dtype == np.uint16
    # an 8-bit path would leave at most 256 levels per channel, all multiples of 257 or 256
    assert len(np.unique(frame[..., 1])) > 256
    assert np.any(frame % 256 != frame // 256)


def test_default_deep_pixel_format_is_10bit(tmp_path):
    frames = make_frames(3, 48, 64, deep=True)
    writer = encode(tmp_path / "o.mkv", frames, range(3), codec="ffv1", bit_depth=10)
    assert writer.pix_fmt == "yuv420p10le"
    assert probe_video(tmp_path / "o.mkv").bit_depth == 10


@pytest.mark.parametrize("suffix", [".mkv", ".mp4"])
def test_vfr_timestamps_and_time_base_survive_a_reencode(tmp_path, suffix):
    source = make_video(tmp_path / f"s{suffix}", frames=10, vfr=True, audio=False)
    info = probe_video(source.path)
    frames, pts = read_all(source.path)
    assert pts == [round(p * source.time_base / info.time_base) for p in source.pts]
    out = tmp_path / f"o{suffix}"
    encode(out, frames, pts, fps=info.fps, time_base=info.time_base, preset="ultrafast", crf=30)
    assert probe_video(out).time_base == info.time_base
    assert read_all(out)[1] == pts


@pytest.mark.parametrize("suffix", [".mkv", ".mp4"])
def test_stream_starting_late_keeps_its_offset_and_is_complete(tmp_path, suffix):
    # e.g. a clip cut from a broadcast: the first frame at 2 s (Matroska stores the end time)
    source = make_video(tmp_path / f"s{suffix}", frames=6, first_pts=50, audio=False)
    info = probe_video(source.path)
    assert info.duration == pytest.approx(6 / 25)
    pts = read_all(source.path)[1]
    assert len(pts) == 6 and pts[0] * info.time_base == 2


def test_mp4_keeps_a_coarse_time_base(tmp_path):
    # FFmpeg's mov muxer would turn 1/30 into 1/15360 unless told the track timescale
    frames = make_frames(3, 48, 64)
    encode(tmp_path / "o.mp4", frames, [0, 1, 2], fps=Fraction(30), time_base=Fraction(1, 30), preset="ultrafast")
    info = probe_video(tmp_path / "o.mp4")
    assert (info.time_base, info.fps, info.frames) == (Fraction(1, 30), 30, 3)
    assert read_all(tmp_path / "o.mp4")[1] == [0, 1, 2]


@pytest.mark.parametrize(
    ("suffix", "codec", "pix_fmt"),
    [(".mp4", "libx264", None), (".mp4", "libx264", "yuvj420p"), (".mkv", "ffv1", None), (".mp4", "libx265", None)],
)
def test_colours_survive_the_yuv_round_trip(tmp_path, suffix, codec, pix_fmt):
    # writer (BT.709 tagged) and reader (tag honoured) must agree; a 601/709 mix-up shifts this by >10
    colour = torch.tensor([200, 30, 90], dtype=torch.uint8).expand(48, 64, 3).contiguous()
    encode(tmp_path / f"o{suffix}", [colour.numpy()] * 2, [0, 1], codec=codec, pix_fmt=pix_fmt)
    decoded = read_all(tmp_path / f"o{suffix}")[0][1]
    assert np.abs(decoded[8:40, 8:56].astype(int) - [200, 30, 90]).max() <= 2


@pytest.mark.parametrize("count", [1, 2, 1, 2, 1, 2])
def test_libx265_very_short_clip_gets_valid_dts(tmp_path, count):
    # libx265 sometimes reports garbage DTS for 1-2 frame clips (a short last segment); the mov
    # muxer then fails with "pts/dts pair unsupported". Repeated: the garbage is not deterministic.
    frames = make_frames(count, 48, 64)
    encode(tmp_path / "o.mp4", frames, range(count), codec="libx265")
    assert read_all(tmp_path / "o.mp4")[1] == list(range(count))
    assert all(0 <= pts - dts < 10 for pts, dts in video_packets(tmp_path / "o.mp4"))


@pytest.mark.parametrize("rotation", [90, 270])
def test_display_rotation_is_applied(tmp_path, rotation):
    # mp4 keeps the display matrix that PyAV writes; ffv1 in RGB makes the comparison exact
    source = make_video(tmp_path / "r.mp4", frames=2, codec="ffv1", pix_fmt="bgr0", rotation=rotation, audio=False)
    info = probe_video(source.path)
    assert (info.rotation, info.width, info.height) == (rotation, 48, 64)
    decoded, _ = read_all(source.path)
    assert decoded[0].shape == (64, 48, 3)
    assert np.array_equal(decoded[0], np.rot90(source.frames[0], k=rotation // 90))


def test_odd_size_switches_to_444_and_keeps_every_pixel(tmp_path, caplog):
    source = make_video(tmp_path / "s.mkv", frames=4, width=63, height=47, codec="ffv1", pix_fmt="bgr0", audio=False)
    frames, pts = read_all(source.path)
    assert frames[0].shape == (47, 63, 3)
    with caplog.at_level(logging.INFO, logger="restore.io"):
        writer = encode(tmp_path / "o.mp4", frames, pts, time_base=Fraction(1, 1000), crf=0, preset="ultrafast")
    assert writer.pix_fmt == "yuv444p" and "yuv444p" in caplog.text
    info = probe_video(tmp_path / "o.mp4")
    assert (info.width, info.height, info.frames, info.pix_fmt) == (63, 47, 4, "yuv444p")
    decoded, _ = read_all(tmp_path / "o.mp4")
    assert np.abs(decoded[0].astype(int) - frames[0]).mean() < 2  # crf 0 4:4:4: only YUV rounding


@needs_x265
@pytest.mark.parametrize(("codec", "suffix"), [("libx265", ".mp4"), ("libx264", ".mkv"), ("ffv1", ".mkv")])
def test_writer_carries_the_display_metadata_and_converts_with_its_matrix(tmp_path, codec, suffix):
    display = probe_video(make_hdr10_video(tmp_path / "hdr.mkv", frames=2, audio=False).path).display
    colour = np.array([50000, 20000, 30000], np.uint16)  # a PQ-coded colour, RGB over 16 bits
    out = tmp_path / f"o{suffix}"
    encode(out, [np.broadcast_to(colour, (48, 64, 3))] * 2, [0, 1], codec=codec, bit_depth=10, display=display)

    info = probe_video(out)
    if codec == "ffv1":  # FFV1 in Matroska: the colour tags only
        assert display_losses(codec, display) == ["sample aspect ratio", "HDR mastering metadata"]
        display = dataclasses.replace(display, sample_aspect_ratio=None, mastering=None, content_light=None)
    else:
        assert display_losses(codec, display) == []
    assert info.bit_depth == 10 and info.display == display
    # converted with the BT.2020 matrix it is tagged with (a BT.709 conversion is off by thousands)
    assert np.abs(read_all(out)[0][1][8:40, 8:56].astype(int) - colour).max() <= 3 * 64


# ----------------------------------------------------------------------------- concatenation


def test_concat_of_segments_equals_one_piece_ffv1_with_audio_and_subtitles(tmp_path):
    source = make_video(tmp_path / "s.mkv", frames=12, codec="ffv1", subtitles=True)
    frames, pts = read_all(source.path)
    info = probe_video(source.path)
    opts = dict(fps=info.fps, time_base=info.time_base, codec="ffv1")
    encode(tmp_path / "one.mkv", frames, pts, **opts)
    segments = write_segments(tmp_path, frames, pts, 3, ".mkv", **opts)
    concat_segments(segments, tmp_path / "out.mkv", source=source.path)

    joined, joined_pts = read_all(tmp_path / "out.mkv")
    whole, whole_pts = read_all(tmp_path / "one.mkv")
    assert len(joined) == len(whole) == 12 and joined_pts == whole_pts == pts
    assert all(np.array_equal(a, b) for a, b in zip(joined, whole))
    assert packet_bytes(tmp_path / "out.mkv", "audio") == packet_bytes(source.path, "audio")
    assert packet_bytes(tmp_path / "out.mkv", "subtitle") == packet_bytes(source.path, "subtitle")
    out = probe_video(tmp_path / "out.mkv")
    assert (out.audio_streams, out.subtitle_streams) == (1, 1)


def test_concat_libx264_with_bframes_is_decodable_with_increasing_dts(tmp_path):
    source = make_video(tmp_path / "s.mp4", frames=24)
    frames, pts = read_all(source.path)
    info = probe_video(source.path)
    segments = write_segments(tmp_path, frames, pts, 3, ".mp4", fps=info.fps, time_base=info.time_base, crf=23)
    assert any(p != d for p, d in video_packets(segments[0])), "expected B-frames (reordered pts/dts)"
    concat_segments(segments, tmp_path / "out.part", source=source.path, format="mp4")

    dts = [d for _, d in video_packets(tmp_path / "out.part")]
    assert all(b > a for a, b in zip(dts, dts[1:]))
    decoded, decoded_pts = read_all(tmp_path / "out.part")
    assert len(decoded) == 24 and decoded_pts == pts
    assert np.abs(decoded[5].astype(int) - frames[5]).mean() < 8
    assert packet_bytes(tmp_path / "out.part", "audio") == packet_bytes(source.path, "audio")


def test_concat_converts_what_mp4_cannot_hold(tmp_path, caplog):
    source = make_video(tmp_path / "s.mkv", frames=6, codec="ffv1", audio_codec="pcm_u8", subtitles=True)
    frames, pts = read_all(source.path)
    info = probe_video(source.path)
    opts = dict(fps=info.fps, time_base=info.time_base, preset="ultrafast")
    segments = write_segments(tmp_path, frames, pts, 2, ".mkv", **opts)
    with caplog.at_level(logging.WARNING, logger="restore.io"):
        concat_segments(segments, tmp_path / "out.mp4", source=source.path)
    assert "re-encoding it as aac" in caplog.text and "converting it to mov_text" in caplog.text
    with av.open(str(tmp_path / "out.mp4")) as container:
        assert container.streams.audio[0].codec_context.name == "aac"
        subs = container.streams.subtitles[0]
        assert subs.codec_context.name == "mov_text"
        cues = [subs.decode2(p) for p in container.demux(subs) if p.size]
        text = b"".join(rect.ass for cue in cues if cue is not None for rect in cue)
    assert all(cue in text for cue in SUBTITLE_CUES)
    # every source sample arrives (the encoder was flushed), padded to whole 1024-sample AAC frames
    source_samples, out_samples = (decoded_samples(p) for p in (source.path, tmp_path / "out.mp4"))
    assert source_samples <= out_samples < source_samples + 1024
    assert len(read_all(tmp_path / "out.mp4")[0]) == 6


def test_concat_starts_at_zero_and_keeps_the_audio_offset(tmp_path):
    # a clip cut from a broadcast: the first frame at 3601 s, the audio 0.2 s after it
    source = make_video(tmp_path / "s.ts", frames=50, first_pts=3601 * 25, audio_delay=0.2)
    frames, pts = read_all(source.path)
    info = probe_video(source.path)
    segments = write_segments(tmp_path, frames, pts, 2, ".mp4", fps=info.fps, time_base=info.time_base, preset="ultrafast")
    concat_segments(segments, tmp_path / "out.mp4", source=source.path)

    before, after = stream_starts(source.path), stream_starts(tmp_path / "out.mp4")
    assert before["video"] == 3601 and after["video"] == 0
    assert after["audio"] == pytest.approx(before["audio"] - before["video"], abs=1e-3)
    with av.open(str(tmp_path / "out.mp4")) as container:
        assert container.duration / av.time_base == pytest.approx(2, abs=0.05)
        assert next(container.decode(video=0)).time == 0


def test_concat_can_keep_the_start_time(tmp_path):
    source = make_video(tmp_path / "s.mkv", frames=10, first_pts=50, audio_delay=0.2)
    frames, pts = read_all(source.path)
    segments = write_segments(tmp_path, frames, pts, 2, ".mkv", time_base=Fraction(1, 1000), preset="ultrafast")
    concat_segments(segments, tmp_path / "out.mkv", source=source.path, keep_start_time=True)
    assert stream_starts(tmp_path / "out.mkv") == pytest.approx(stream_starts(source.path), abs=1e-3)
    assert read_all(tmp_path / "out.mkv")[1] == pts


def test_concat_states_the_nominal_frame_rate_in_matroska(tmp_path):
    # x264 at Matroska's 1/1000 time base signals a 1000 Hz tick, which the muxer took as the rate
    source = make_video(tmp_path / "s.mkv", frames=6, audio=False)
    frames, pts = read_all(source.path)
    info = probe_video(source.path)
    segments = write_segments(tmp_path, frames, pts, 2, ".mkv", fps=info.fps, time_base=info.time_base, preset="ultrafast")
    concat_segments(segments, tmp_path / "out.mkv", source=source.path)
    with av.open(str(tmp_path / "out.mkv")) as container:
        video = container.streams.video[0]
        # the average rate a demuxer reports (ffprobe's avg_frame_rate) is Matroska's default duration
        assert (video.average_rate, video.guessed_rate, video.base_rate) == (25, 25, 25)


@needs_x265
def test_concat_tags_hevc_in_mp4_as_hvc1(tmp_path):
    segments = write_segments(tmp_path, make_frames(4, 48, 64), [0, 1, 2, 3], 2, ".mp4", codec="libx265")
    assert video_tag(segments[0]) == "hev1"  # FFmpeg's default, which Apple's players refuse
    concat_segments(segments, tmp_path / "out.mp4", source=None)
    assert video_tag(tmp_path / "out.mp4") == "hvc1"
    assert len(read_all(tmp_path / "out.mp4")[0]) == 4


def test_concat_keeps_tags_chapters_and_attachments(tmp_path, caplog):
    source = make_video(
        tmp_path / "s.mkv", frames=50, subtitles=True, tags={"title": "Holiday", "ARTIST": "Me"},
        chapters=[(0, 1, "Beach"), (1, 2, "Sunset")], attachments=[FONT],
    )
    frames, pts = read_all(source.path)
    segments = write_segments(tmp_path, frames, pts, 2, ".mkv", time_base=Fraction(1, 1000), preset="ultrafast")
    concat_segments(segments, tmp_path / "out.mkv", source=source.path)
    with av.open(str(tmp_path / "out.mkv")) as container:
        assert container.metadata["title"] == "Holiday" and container.metadata["ARTIST"] == "Me"
        assert chapter_list(container) == [(0, "Beach"), (1, "Sunset")]
        [font] = container.streams.attachments
        assert (font.name, font.mimetype, font.data) == FONT

    with caplog.at_level(logging.WARNING, logger="restore.io"):
        concat_segments(segments, tmp_path / "out.mp4", source=source.path)
    assert "mp4 cannot hold attachments; dropped DejaVuSans.ttf" in caplog.text
    with av.open(str(tmp_path / "out.mp4")) as container:
        assert container.metadata["title"] == "Holiday"
        assert chapter_list(container) == [(0, "Beach"), (1, "Sunset")]


def test_concat_without_audio(tmp_path):
    source = make_video(tmp_path / "s.mkv", frames=4, codec="ffv1")
    frames, pts = read_all(source.path)
    segments = write_segments(tmp_path, frames, pts, 2, ".mkv", time_base=Fraction(1, 1000), codec="ffv1")
    concat_segments(segments, tmp_path / "out.mkv", source=source.path, copy_audio=False)
    assert probe_video(tmp_path / "out.mkv").audio_streams == 0
    assert read_all(tmp_path / "out.mkv")[1] == pts


def test_png_frames_are_16bit_and_concat_moves_them(tmp_path, caplog):
    source = make_video(tmp_path / "s.mkv", frames=5, codec="ffv1", pix_fmt="yuv444p10le")
    frames, pts = read_all(source.path)
    segments = write_segments(tmp_path, frames, pts, 2, "_png", codec="png", bit_depth=10)
    with caplog.at_level(logging.WARNING, logger="restore.io"):
        concat_segments(segments, tmp_path / ".out.partial", source=source.path)
    # named by the source, not by the temporary folder the caller renames afterwards
    assert f"{source.path}: a folder of PNG frames cannot hold audio" in caplog.text
    (tmp_path / ".out.partial").rename(tmp_path / "out")
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == [f"frame_{i:08d}.png" for i in range(5)]
    for i in (0, 4):
        image = read_image(tmp_path / "out" / names[i])
        assert image.dtype == torch.uint16 and np.array_equal(image.numpy(), frames[i])


# ----------------------------------------------------------------------------- writer validation


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"codec": "vp9"}, "unknown codec"),
        ({"pix_fmt": "rgb24"}, "not supported by libx264"),
        ({"crf": 60}, "crf must be between"),
        ({"preset": "turbo"}, "unknown preset"),
        ({"codec": "ffv1", "crf": 10}, "lossless"),
        ({"codec": "png", "pix_fmt": "rgb24"}, "pix_fmt does not apply"),
    ],
)
def test_writer_rejects_invalid_options(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        VideoWriter(tmp_path / "o.mp4", width=64, height=48, fps=Fraction(25), time_base=Fraction(1, 25), **kwargs)


def test_writer_into_missing_folder_is_an_output_error(tmp_path):
    with pytest.raises(OutputError, match="does not exist"):
        VideoWriter(tmp_path / "nope" / "o.mp4", width=64, height=48, fps=Fraction(25), time_base=Fraction(1, 25))


def test_writer_rejects_wrong_frames_and_backward_pts(tmp_path):
    size = dict(width=64, height=48, fps=Fraction(25), time_base=Fraction(1, 25))
    with VideoWriter(tmp_path / "o.mkv", codec="ffv1", **size) as writer:
        with pytest.raises(ValueError, match=r"\(48, 64, 3\)"):
            writer.write(torch.zeros(64, 48, 3, dtype=torch.uint8), 0)
        writer.write(torch.zeros(48, 64, 3, dtype=torch.uint8), 1)
        with pytest.raises(ValueError, match="pts must increase"):
            writer.write(torch.zeros(48, 64, 3, dtype=torch.uint8), 1)


# ----------------------------------------------------------------------------- bad input


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(InputError, match="file not found") as missing:
        probe_video(tmp_path / "nope.mp4")
    assert str(missing.value).startswith(str(tmp_path / "nope.mp4"))
    (tmp_path / "empty.mp4").touch()
    with pytest.raises(InputError, match="empty file"):
        VideoReader(tmp_path / "empty.mp4")


def test_text_file_named_mp4_is_not_a_video(tmp_path):
    (tmp_path / "notes.mp4").write_text("these are not the frames you are looking for\n" * 20)
    with pytest.raises(InputError, match="not a video"):
        probe_video(tmp_path / "notes.mp4")


def test_audio_only_file(tmp_path):
    make_audio_only(tmp_path / "a.m4a")
    with pytest.raises(InputError, match=r"no video stream \(audio-only file\)"):
        probe_video(tmp_path / "a.m4a")


def test_unsupported_pixel_format(tmp_path):
    # OpenEXR in QuickTime: 32-bit float RGB, which has no integer RGB form without tone mapping
    make_video(tmp_path / "f.mov", frames=2, codec="exr", pix_fmt="gbrpf32le", audio=False)
    with pytest.raises(InputError, match="unsupported pixel format gbrpf32le"):
        probe_video(tmp_path / "f.mov")


def test_truncated_mp4_reports_decoded_count(tmp_path):
    # moov at the front (faststart) so the cut file still opens and promises 24 frames
    make_video(tmp_path / "s.mp4", frames=24, container_options={"movflags": "+faststart"})
    cut = truncate(tmp_path / "s.mp4", 0.6, tmp_path / "cut.mp4")
    reader = VideoReader(cut)
    assert reader.info.frames == 24
    with pytest.raises(InputError, match=r"truncated or corrupt video: decoded \d+ of 24 frames"):
        list(reader)
    assert len(list(VideoReader(cut, expect_frames=False))) < 24


def test_truncated_mkv_reports_decoded_count(tmp_path):
    make_video(tmp_path / "s.mkv", frames=24)
    cut = truncate(tmp_path / "s.mkv", 0.6, tmp_path / "cut.mkv")
    with pytest.raises(InputError, match=r"truncated or corrupt video: decoded \d+ of ~24 frames"):
        list(VideoReader(cut))


def test_avi_with_a_dropped_frame_is_complete(tmp_path):
    # the AVI muxer writes an empty chunk for a skipped timestamp and counts it in the header's
    # frame count; the stream is complete (b.avi in gradio's media assets is such a file)
    stamps = [0, 2, 3, 4, 5]
    with av.open(str(tmp_path / "gap.avi"), "w") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for image, pts in zip(make_frames(len(stamps), 48, 64), stamps):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = pts, Fraction(1, 25)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    reader = VideoReader(tmp_path / "gap.avi")
    assert reader.info.frames == len(stamps) + 1
    assert [pts for _, pts in reader] == stamps
    # a cut download (the index at the end is lost) still fails loudly
    cut = truncate(tmp_path / "gap.avi", 0.95, tmp_path / "cut.avi")
    with pytest.raises(InputError, match=r"truncated or corrupt video: decoded [0-4] of 6 frames"):
        list(VideoReader(cut))


def test_libx265_tiny_frames_do_not_corrupt_the_heap(tmp_path):
    """x265's AVX2 kernels (as bundled with PyAV) crash on 48x48 frames; the writer avoids them there.

    In a subprocess: heap corruption aborts the process instead of failing an assertion.
    """
    import subprocess
    import sys

    code = f"""
from fractions import Fraction
import torch
from restore.io.video import VideoWriter
for rep in range(20):
    with VideoWriter({str(tmp_path / "tiny.mp4")!r}, width=48, height=48, fps=Fraction(25),
                     time_base=Fraction(1, 25), codec="libx265", crf=28) as writer:
        for i in range(4):
            writer.write(torch.randint(0, 255, (48, 48, 3), dtype=torch.uint8), i)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-500:]


def test_reader_conceals_a_corrupt_packet_as_told(tmp_path):
    made = make_video(tmp_path / "c.mkv", frames=30, codec="mjpeg", pix_fmt="yuvj420p", audio=False)
    bad = corrupt_packet(made.path, 12, tmp_path / "bad.mkv")
    clean = list(VideoReader(made.path))
    stamps = [pts for _, pts in clean]
    with pytest.raises(InputError, match=r"decoded \d+ frames before error: .*--on-decode-error skip or repeat"):
        list(VideoReader(bad))

    skipping = VideoReader(bad, on_error="skip")
    kept = list(skipping)
    assert skipping.concealed == 1
    assert [pts for _, pts in kept] == stamps[:12] + stamps[13:]  # the others keep their time
    assert all(torch.equal(a, b) for (a, _), (b, _) in zip(kept, clean[:12] + clean[13:]))

    repeating = VideoReader(bad, on_error="repeat")
    filled = list(repeating)
    assert repeating.concealed == 1
    assert [pts for _, pts in filled] == stamps
    assert torch.equal(filled[12][0], clean[11][0]) and torch.equal(filled[13][0], clean[13][0])


def test_probe_of_a_codec_ffmpeg_does_not_know(tmp_path):
    made = make_video(tmp_path / "c.mkv", frames=2, codec="ffv1", audio=False)
    with pytest.raises(InputError, match="unknown video codec"):
        probe_video(unknown_codec(made.path, tmp_path / "unknown.mkv"))
