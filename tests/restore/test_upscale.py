"""End-to-end tests of `restore upscale` (the CLI in a subprocess or in-process) on real encoded clips."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

import cli
from restore.io.samples import make_sample_video
from tests.fixtures import corrupt_packet, make_video, unknown_codec
from tests.processes import default_sigint

ROOT = Path(__file__).resolve().parents[2]


def restore_cmd(*args: str) -> list[str]:
    return [sys.executable, "-c", "import sys, cli; sys.exit(cli.main())", *args]


def decoded_frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def audio_packets(path: Path) -> list[bytes]:
    with av.open(str(path)) as c:
        if not c.streams.audio:
            return []
        return [bytes(p) for p in c.demux(audio=0) if p.size]


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return make_sample_video(tmp_path_factory.mktemp("clips") / "clip.mp4", frames=20, width=48, height=32)


def test_upscale_keeps_frames_fps_timestamps_and_audio(clip, tmp_path):
    out = tmp_path / "out.mp4"
    assert cli.main(["upscale", str(clip), "-o", str(out), "--scale", "4", "--quiet"]) == 0
    with av.open(str(clip)) as a, av.open(str(out)) as b:
        va, vb = a.streams.video[0], b.streams.video[0]
        assert (vb.width, vb.height) == (4 * va.width, 4 * va.height)
        pts_a = [f.time for f in a.decode(video=0)]
        pts_b = [f.time for f in b.decode(video=0)]
    assert len(pts_b) == len(pts_a) == 20
    np.testing.assert_allclose(pts_b, pts_a, atol=1e-3)
    assert audio_packets(out) == audio_packets(clip)
    assert not list(tmp_path.glob(".*")), "no partial files left behind"


def test_no_audio_drops_audio(clip, tmp_path):
    out = tmp_path / "out.mkv"
    assert cli.main(["upscale", str(clip), "-o", str(out), "--scale", "2", "--codec", "ffv1", "--no-audio", "-q"]) == 0
    with av.open(str(out)) as c:
        assert not c.streams.audio and c.streams.video[0].width == 96


def test_png_codec_writes_a_frame_folder(clip, tmp_path):
    out = tmp_path / "frames"
    assert cli.main(["upscale", str(clip), "-o", str(out), "--scale", "2", "--codec", "png", "-q"]) == 0
    assert len(list(out.glob("*.png"))) == 20


def test_existing_output_needs_overwrite_and_resume_skips_it(clip, tmp_path):
    out = tmp_path / "out.mp4"
    out.write_bytes(b"keep me")
    report = tmp_path / "r.json"
    assert cli.main(["upscale", str(clip), "-o", str(out), "-q", "--report", str(report)]) == 1
    assert out.read_bytes() == b"keep me"
    assert "--overwrite" in json.loads(report.read_text())["inputs"][0]["error"]
    assert cli.main(["upscale", str(clip), "-o", str(out), "-q", "--resume", "--report", str(report)]) == 0
    assert json.loads(report.read_text())["inputs"][0]["status"] == "skipped"
    assert cli.main(["upscale", str(clip), "-o", str(out), "-q", "--overwrite"]) == 0
    assert len(decoded_frames(out)) == 20


def test_folder_input_is_recursive_and_mirrors_layout(clip, tmp_path):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    (src / "a.mp4").write_bytes(clip.read_bytes())
    (src / "sub" / "b.mp4").write_bytes(clip.read_bytes())
    (src / "notes.txt").write_text("not media")
    report = tmp_path / "r.json"
    rc = cli.main(["upscale", str(src), "-o", str(tmp_path / "out"), "--scale", "2", "-q", "--report", str(report)])
    assert rc == 0
    assert (tmp_path / "out" / "a.mp4").is_file() and (tmp_path / "out" / "sub" / "b.mp4").is_file()
    statuses = {Path(r["input"]).name: r["status"] for r in json.loads(report.read_text())["inputs"]}
    assert statuses == {"a.mp4": "ok", "b.mp4": "ok", "notes.txt": "skipped"}


def test_a_temporal_model_with_user_weights_runs_through_the_chunked_pipeline(clip, tmp_path):
    from safetensors.torch import save_file

    from restore.registry import build_model, get_entry

    net = build_model("oasis", get_entry("oasis-t").config)
    weights = tmp_path / "oasis-t.safetensors"
    save_file(net.state_dict(), str(weights))
    out = tmp_path / "out.mp4"
    args = ["upscale", str(clip), "-o", str(out), "--model", "oasis-t", "--weights", str(weights), "--chunk", "6", "--overlap", "2", "-q"]
    assert cli.main(args) == 0
    with av.open(str(out)) as c:
        assert (c.streams.video[0].width, c.streams.video[0].height) == (192, 128)
    assert len(decoded_frames(out)) == 20 and audio_packets(out) == audio_packets(clip)


def test_self_ensemble_runs_the_model_in_eight_orientations(clip, tmp_path):
    import cv2
    import torch
    from safetensors.torch import save_file

    from restore.registry import build_model, get_entry

    torch.manual_seed(0)
    weights = tmp_path / "oasis-t.safetensors"
    # perturbed: the random model's zero-initialised output layers would make it equivariant to flips
    state = {k: v + 0.05 * torch.randn_like(v) for k, v in build_model("oasis", get_entry("oasis-t").config).state_dict().items()}
    save_file(state, str(weights))
    common = [str(clip), "--model", "oasis-t", "--weights", str(weights), "--codec", "png", "-q"]
    assert cli.main(["upscale", *common, "-o", str(tmp_path / "plain")]) == 0
    assert cli.main(["upscale", *common, "-o", str(tmp_path / "plus"), "--self-ensemble"]) == 0
    plain, plus = (sorted((tmp_path / name).glob("*.png")) for name in ("plain", "plus"))
    assert len(plain) == len(plus) == 20
    a, b = (cv2.imread(str(path)) for path in (plain[5], plus[5]))
    assert a.shape == b.shape == (128, 192, 3) and (a != b).any()


@pytest.mark.parametrize("deep", [False, True])
def test_images_keep_their_bit_depth(tmp_path, deep):
    import cv2

    rng = np.random.default_rng(0)
    dtype, peak = (np.uint16, 65535) if deep else (np.uint8, 255)
    img = (rng.random((17, 23, 3)) * peak).astype(dtype)
    cv2.imwrite(str(tmp_path / "in.png"), img)
    assert cli.main(["upscale", str(tmp_path / "in.png"), "-o", str(tmp_path / "out.png"), "--scale", "2", "-q"]) == 0
    out = cv2.imread(str(tmp_path / "out.png"), cv2.IMREAD_UNCHANGED)
    assert out.shape == (34, 46, 3) and out.dtype == dtype


def test_output_redirected_to_a_file_has_no_progress_bars(clip, tmp_path, capsys):
    out = tmp_path / "out.mp4"
    assert cli.main(["upscale", str(clip), "-o", str(out), "--scale", "2"]) == 0
    captured = capsys.readouterr()
    assert "\r" not in captured.err and "\x1b" not in captured.err  # bars only on a terminal
    assert captured.err.splitlines()[-1] == "restore: 1 ok" and captured.out == f"{out}\n"


@pytest.mark.parametrize("channels", [2, 4])
def test_images_keep_their_alpha_channel(tmp_path, capsys, channels):
    import cv2

    rng = np.random.default_rng(0)
    img = (rng.random((9, 11, channels)) * 255).astype(np.uint8)
    img[..., -1] = 200  # a uniform alpha stays uniform through interpolation
    cv2.imwrite(str(tmp_path / "in.png"), img if channels == 4 else img[..., [0, 0, 0, 1]])
    assert cli.main(["upscale", str(tmp_path / "in.png"), "-o", str(tmp_path / "out.png"), "--scale", "2", "-q"]) == 0
    out = cv2.imread(str(tmp_path / "out.png"), cv2.IMREAD_UNCHANGED)
    assert out.shape == (18, 22, 4) and (out[..., 3] == 200).all()
    # a format without alpha is refused with one line naming the output
    assert cli.main(["upscale", str(tmp_path / "in.png"), "-o", str(tmp_path / "out.jpg"), "-q"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"error: {tmp_path / 'out.jpg'}: .jpg cannot hold an alpha channel; use .png or .tif"


def _bad_inputs(folder: Path, clip: Path) -> dict[str, str]:
    """Bad files -> a fragment the one-line error must contain."""
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "text.mp4").write_text("this is not a video\n" * 50)
    data = clip.read_bytes()
    (folder / "truncated.mp4").write_bytes(data[: len(data) // 2])
    with av.open(str(folder / "audio_only.m4a"), "w") as c:
        s = c.add_stream("aac", rate=48000)
        for i in range(10):
            f = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            f.sample_rate, f.pts = 48000, i * 1024
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return {
        "missing.mp4": "not found",
        "empty.mp4": "empty",
        "text.mp4": "not a video",
        "truncated.mp4": "truncated or corrupt mp4/mov: decoded 0 frames",
        "audio_only.m4a": "no video stream",
    }


def test_bad_inputs_fail_one_line_each_and_the_batch_goes_on(clip, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    expected = _bad_inputs(bad, clip)
    inputs = [str(bad / name) for name in expected] + [str(clip)]
    report = tmp_path / "r.json"
    proc = subprocess.run(
        restore_cmd("upscale", *inputs, "-o", str(tmp_path / "out"), "--scale", "2", "-q", "--report", str(report)),
        capture_output=True, text=True, cwd=ROOT,
    )
    assert proc.returncode == 1
    rows = {Path(r["input"]).name: r for r in json.loads(report.read_text())["inputs"]}
    assert rows["clip.mp4"]["status"] == "ok"
    for name, fragment in expected.items():
        row = rows[name]
        assert row["status"] == "failed", name
        assert name in row["error"] and fragment in row["error"].lower(), row["error"]
        assert "\n" not in row["error"]
        assert any(name in line for line in proc.stderr.splitlines()), proc.stderr
    assert "Traceback" not in proc.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["clip.mp4"]


@pytest.mark.parametrize("options,fragment", [
    (["--codec", "ffv1", "--crf", "20"], "lossless"),
    (["--crf", "99"], "crf must be between"),
    (["--pix-fmt", "nv99"], "not supported by libx264"),
])
def test_impossible_encoder_settings_stop_before_any_work(clip, tmp_path, capsys, options, fragment):
    assert cli.main(["upscale", str(clip), "-o", str(tmp_path / "o.mp4"), "-q", *options]) == 1
    err = capsys.readouterr().err
    assert fragment in err and len(err.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("name,what", [("o.avi", "a .avi file"), ("o.webm", "a .webm file"), ("o", "a file without extension")])
def test_output_name_without_a_container_we_write_is_refused_up_front(clip, tmp_path, capsys, name, what):
    # before: .avi got MP4 content under an AVI name, .webm failed at the first segment
    assert cli.main(["upscale", str(clip), "-o", str(tmp_path / name), "-q"]) == 1
    assert capsys.readouterr().err.strip() == (
        f"error: {tmp_path / name}: cannot write libx264 video as {what}; name it .mp4, .mkv, .mov or .m4v"
    )
    assert not list(tmp_path.iterdir()), "nothing written, not even partial results"


def _unwritable_folder(tmp_path: Path) -> Path:
    if os.geteuid() == 0:
        return Path("/proc/restore-cannot-write-here")  # root ignores permission bits; /proc refuses everyone
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    return locked / "sub"


@pytest.mark.parametrize("where", ["output", "report"])
def test_an_unwritable_output_folder_or_report_is_refused_before_any_work(clip, tmp_path, capsys, where):
    # before: the output folder failed file by file; the report failed after all the work, with a traceback
    bad = _unwritable_folder(tmp_path)
    out = bad / "out.mp4" if where == "output" else tmp_path / "out.mp4"
    report = tmp_path / "r.json" if where == "output" else bad / "r.json"
    assert cli.main(["upscale", str(clip), "-o", str(out), "-q", "--report", str(report)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"restore: error: {bad}: cannot write here") and len(err.strip().splitlines()) == 1, err
    assert [p.name for p in tmp_path.iterdir()] in ([], ["locked"]), "no work done"


def _make_unreadable(path: Path, monkeypatch) -> None:
    """``chmod 000``. Root reads such a file anyway, so for root FFmpeg's and Python's opens are made
    to refuse it as the kernel refuses everyone else."""
    import builtins
    import errno

    path.chmod(0)
    if os.geteuid() != 0:
        return

    def refusing(opener, error):
        def opened(file, *args, **kwargs):
            if Path(os.fspath(file)) == path:
                raise error(errno.EACCES, os.strerror(errno.EACCES), str(path))
            return opener(file, *args, **kwargs)
        return opened

    monkeypatch.setattr(av, "open", refusing(av.open, av.error.PermissionError))
    monkeypatch.setattr(builtins, "open", refusing(builtins.open, PermissionError))


def test_unreadable_files_and_unknown_codecs_fail_one_line_each_and_the_batch_goes_on(clip, tmp_path, capsys, monkeypatch):
    # before: PermissionError and AttributeError in the frame-count pre-pass aborted the batch, no report
    locked = tmp_path / "locked.mp4"
    locked.write_bytes(clip.read_bytes())
    _make_unreadable(locked, monkeypatch)
    ffv1 = make_video(tmp_path / "ffv1.mkv", frames=2, codec="ffv1").path
    strange = unknown_codec(ffv1, tmp_path / "strange.mkv")
    report = tmp_path / "r.json"
    args = ["upscale", str(locked), str(strange), str(clip), "-o", str(tmp_path / "out"), "--scale", "2", "-q"]
    assert cli.main([*args, "--report", str(report)]) == 1
    rows = {Path(r["input"]).name: r for r in json.loads(report.read_text())["inputs"]}
    assert rows["locked.mp4"]["status"] == "failed" and rows["locked.mp4"]["error"] == f"{locked}: cannot read: Permission denied"
    assert rows["strange.mkv"]["status"] == "failed" and "unknown video codec" in rows["strange.mkv"]["error"]
    assert rows["clip.mp4"]["status"] == "ok"
    err = capsys.readouterr().err
    assert "Traceback" not in err and sum(line.startswith("error: ") for line in err.splitlines()) == 2, err


def test_running_out_of_memory_or_a_bug_fails_only_that_file(tmp_path, caplog, monkeypatch):
    """Memory runs out on one file (a CUDA or a CPU allocation), a bug in restore is met by another:
    each is that file's failed row, the later files are done; a bug makes the exit code EXIT_BUG."""
    import torch

    from restore.engine.runner import FrameRunner

    failures = {
        64: torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB.\nGPU 0 has a total capacity ..."),
        56: MemoryError(),
        40: ValueError("a stray bug"),
    }
    clips = [make_sample_video(tmp_path / f"w{w}.mp4", frames=3, width=w, height=32) for w in (*failures, 48)]
    forward = FrameRunner._forward

    def failing(self, frames):
        if frames.shape[-1] in failures:  # the LR width tells the clips apart
            raise failures[frames.shape[-1]]
        return forward(self, frames)

    monkeypatch.setattr(FrameRunner, "_forward", failing)
    report = tmp_path / "r.json"
    args = ["upscale", *map(str, clips), "-o", str(tmp_path / "out"), "--scale", "2", "-q", "--report", str(report)]
    assert cli.main(args) == cli.EXIT_BUG
    rows = [(Path(r["input"]).name, r["status"], r["error"]) for r in json.loads(report.read_text())["inputs"]]
    hint = "a smaller --tile or --max-pixels needs less"
    assert rows == [
        ("w64.mp4", "failed", f"{clips[0]}: out of memory (CUDA out of memory. Tried to allocate 2.00 GiB.); {hint}"),
        ("w56.mp4", "failed", f"{clips[1]}: out of memory (MemoryError); {hint}"),
        ("w40.mp4", "failed", f"{clips[2]}: internal error (please report): ValueError: a stray bug"),
        ("w48.mp4", "ok", None),
    ]
    logged = [r for r in caplog.records if r.exc_info]  # the bug's traceback, to report
    assert len(logged) == 1 and str(logged[0].exc_info[1]) == "a stray bug" and str(clips[2]) in logged[0].message


def test_disk_full_mid_write_leaves_no_file_under_the_final_name(clip, tmp_path):
    """A file-size limit makes writes fail with EFBIG part-way, as a full disk would (ENOSPC)."""
    out = tmp_path / "out.mkv"
    limit = 60_000  # bytes: the ffv1 output of this clip is several times larger
    code = (
        "import resource, signal, sys, cli;"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN);"
        f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}));"
        "sys.exit(cli.main())"
    )
    report = tmp_path / "r.json"
    proc = subprocess.run(
        [sys.executable, "-c", code, "upscale", str(clip), "-o", str(out), "--codec", "ffv1", "-q", "--report", str(report)],
        capture_output=True, text=True, cwd=ROOT,
    )
    assert proc.returncode == 1, proc.stderr
    assert not out.exists()
    row = json.loads(report.read_text())["inputs"][0]
    assert row["status"] == "failed" and "\n" not in row["error"]
    assert row["error"].startswith(f"{out}: writing failed")
    assert "Traceback" not in proc.stderr


def _partial_folder(out: Path) -> Path:
    return out.parent / f".{out.name}.restore-partial"


# `restore` with PartialState.commit announcing each committed segment on stdout; after the second
# it waits on stdin, so the test signals a run that is certainly mid-way (no polling, no race).
_ANNOUNCING_CLI = """
import sys, cli
from restore.segments import SegmentSink as PartialState
commit = PartialState.commit
def announced(self, index):
    commit(self, index)
    print("committed", index, flush=True)
    if len(self.completed()) == 2:
        sys.stdin.readline()  # held here until the test's signal arrives
PartialState.commit = announced
sys.exit(cli.main())
"""


def _start_and_kill(args: list[str], out: Path, sig: int) -> subprocess.Popen:
    """Run ``restore ARGS``, send ``sig`` once two segments of ``out`` are committed, wait for the exit."""
    proc = subprocess.Popen([sys.executable, "-c", _ANNOUNCING_CLI, *args], cwd=ROOT, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint)
    committed = 0
    for line in proc.stdout:  # blocks until the next segment is committed, or the run ends
        committed += line.startswith("committed ")
        if committed == 2:
            break
    assert committed == 2, f"the run ended before two segments were committed: {proc.stderr.read()}"
    assert len(list(_partial_folder(out).glob("seg_*"))) == 2
    proc.send_signal(sig)
    proc.wait(timeout=120)
    return proc


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory) -> Path:
    return make_sample_video(tmp_path_factory.mktemp("long") / "long.mp4", frames=240, width=64, height=48)


@pytest.mark.parametrize("codec,suffix", [("ffv1", ".mkv"), ("libx264", ".mp4")])
def test_killed_run_resumes_to_identical_frames(long_clip, tmp_path, codec, suffix):
    common = ["--scale", "2", "--codec", codec, "--segment-frames", "8", "--chunk", "4", "--overlap", "1", "-q"]
    reference = tmp_path / f"reference{suffix}"
    assert cli.main(["upscale", str(long_clip), "-o", str(reference), *common]) == 0

    out = tmp_path / f"out{suffix}"
    proc = _start_and_kill(["upscale", str(long_clip), "-o", str(out), *common], out, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists(), "no output under the final name before completion"
    assert _partial_folder(out).is_dir()

    assert cli.main(["upscale", str(long_clip), "-o", str(out), *common]) == 1, "refuses to discard partial work"
    assert cli.main(["upscale", str(long_clip), "-o", str(out), *common, "--resume"]) == 0
    assert not _partial_folder(out).exists()
    a, b = decoded_frames(reference), decoded_frames(out)
    assert len(a) == len(b) == 240
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert audio_packets(out) == audio_packets(long_clip)


@pytest.mark.parametrize("sig,code,how", [(signal.SIGINT, 130, ""), (signal.SIGTERM, 143, " (SIGTERM)")])
def test_ctrl_c_or_sigterm_keeps_state_for_resume(long_clip, tmp_path, sig, code, how):
    # before: SIGTERM ended the process on the spot, with no message and no report
    out = tmp_path / "out.mkv"
    report = tmp_path / "r.json"
    args = ["upscale", str(long_clip), "-o", str(out), "--codec", "ffv1", "--segment-frames", "8", "--report", str(report), "-q"]
    proc = _start_and_kill(args, out, sig)
    stderr = proc.stderr.read()
    assert proc.returncode == code, stderr
    assert stderr.strip() == f"restore: interrupted{how}; run the same command with --resume to continue"
    assert json.loads(report.read_text())["inputs"][0]["status"] == "interrupted"
    assert _partial_folder(out).is_dir() and not out.exists()
    assert cli.main(args[:-1] + ["--resume", "-q"]) == 0
    assert len(decoded_frames(out)) == 240


def test_resume_with_other_settings_is_refused(long_clip, tmp_path):
    out = tmp_path / "out.mkv"
    args = ["upscale", str(long_clip), "-o", str(out), "--codec", "ffv1", "--segment-frames", "8", "-q"]
    proc = _start_and_kill(args, out, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    report = tmp_path / "r.json"
    assert cli.main(args + ["--resume", "--scale", "2", "--report", str(report)]) == 1
    assert "other settings (scale)" in json.loads(report.read_text())["inputs"][0]["error"]


def test_progress_total_is_estimated_for_matroska(tmp_path):
    from restore.batch import WorkItem, estimated_frames

    mkv = make_sample_video(tmp_path / "c.mkv", frames=15, width=32, height=32)  # no frame count stored
    assert estimated_frames(WorkItem(mkv, tmp_path / "o.mkv", "video")) == 15


def test_help_texts_are_for_users():
    top = cli.build_parser().format_help()
    assert "_add_" not in top and "``" not in top  # not the module's developer docstring
    upscale = cli.build_parser()._subparsers._group_actions[0].choices["upscale"].format_help()
    assert "upscaling factor (default: 4)" in upscale


def test_a_corrupt_packet_keeps_the_finished_segments_and_resume_conceals_it(tmp_path):
    # before: the error removed the partial folder, throwing the finished segments away
    made = make_video(tmp_path / "source.mkv", frames=40, codec="mjpeg", pix_fmt="yuvj420p")  # with audio
    bad = corrupt_packet(made.path, 30, tmp_path / "bad.mkv")
    out, report = tmp_path / "out.mkv", tmp_path / "r.json"
    args = ["upscale", str(bad), "-o", str(out), "--scale", "2", "--codec", "ffv1", "--segment-frames", "8", "-q",
            "--report", str(report)]
    assert cli.main(args) == 1
    row = json.loads(report.read_text())["inputs"][0]
    assert row["status"] == "failed" and "--on-decode-error skip or repeat" in row["error"]
    assert len(list(_partial_folder(out).glob("seg_*"))) >= 2, "the frames before the bad packet are kept"

    assert cli.main([*args, "--resume", "--on-decode-error", "repeat"]) == 0
    row = json.loads(report.read_text())["inputs"][0]
    assert row["status"] == "ok" and row["concealed"] == 1
    frames = decoded_frames(out)
    assert len(frames) == 40 and np.array_equal(frames[30], frames[29])
    with av.open(str(made.path)) as a, av.open(str(out)) as b:  # every frame at its time
        assert [f.pts for f in a.decode(video=0)] == [f.pts for f in b.decode(video=0)]
    assert audio_packets(out) == audio_packets(bad)


def test_an_unknown_decode_error_policy_is_refused_by_the_api_too():
    from restore.api import UpscaleOptions
    from restore.errors import OptionError

    with pytest.raises(OptionError, match="--on-decode-error must be one of fail, skip, repeat, got 'ignore'"):
        UpscaleOptions(on_decode_error="ignore")


class _InterruptedAfter:
    """``os`` for ``restore.io.video`` whose ``link`` and ``replace`` (how frames go into the output
    folder) raise ``KeyboardInterrupt`` after ``n`` calls: Ctrl-C part-way through publishing."""

    def __init__(self, n: int):
        self.left = n

    def __getattr__(self, name: str):
        return getattr(os, name)

    def _tick(self) -> None:
        self.left -= 1
        if self.left < 0:
            raise KeyboardInterrupt

    def link(self, *args) -> None:
        self._tick()
        os.link(*args)

    def replace(self, *args) -> None:
        self._tick()
        os.replace(*args)


def test_ctrl_c_while_frames_are_published_loses_none(clip, tmp_path, monkeypatch):
    # before: frames were moved out of the segments; an interruption lost them, and --resume
    # published the rest, renumbered, as "ok"
    import restore.io.video

    args = ["upscale", str(clip), "--scale", "2", "--codec", "png", "--segment-frames", "8", "-q"]
    reference, out = tmp_path / "reference", tmp_path / "out"
    assert cli.main([*args, "-o", str(reference)]) == 0
    with monkeypatch.context() as patch:
        patch.setattr(restore.io.video, "os", _InterruptedAfter(10))
        assert cli.main([*args, "-o", str(out)]) == 130
    assert not out.exists()
    assert cli.main([*args, "-o", str(out), "--resume"]) == 0
    names = sorted(p.name for p in reference.iterdir())
    assert len(names) == 20 and sorted(p.name for p in out.iterdir()) == names
    assert all((reference / n).read_bytes() == (out / n).read_bytes() for n in names)


# `restore` killed (SIGKILL: no cleanup runs) while it joins the segments into the output
_KILLED_IN_THE_JOIN = """
import os, signal, sys, cli
import restore.io.video
def killed(segments, output, **kwargs):
    output.write_bytes(b"the first part of a large video")
    os.kill(os.getpid(), signal.SIGKILL)
restore.io.video.concat_segments = killed
sys.exit(cli.main())
"""


def test_a_kill_during_the_final_join_leaves_nothing_that_resume_does_not_clean_up(clip, tmp_path):
    # before: the output-sized temporary file beside the output stayed there for good
    out = tmp_path / "out.mp4"
    args = ["upscale", str(clip), "-o", str(out), "--scale", "2", "--segment-frames", "8", "-q"]
    proc = subprocess.run([sys.executable, "-c", _KILLED_IN_THE_JOIN, *args], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [_partial_folder(out).name]
    assert cli.main([*args, "--resume"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]
    assert len(decoded_frames(out)) == 20


def test_a_final_join_without_room_on_disk_is_refused_before_it_starts(clip, tmp_path, monkeypatch):
    # before: nothing checked; the join, which copies every segment, ran into the full disk
    import shutil
    from collections import namedtuple

    out, report = tmp_path / "out.mp4", tmp_path / "r.json"
    args = ["upscale", str(clip), "-o", str(out), "--scale", "2", "-q", "--report", str(report)]
    usage = namedtuple("usage", "total used free")
    with monkeypatch.context() as patch:
        patch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 1000, 1000))
        assert cli.main(args) == 1
    error = json.loads(report.read_text())["inputs"][0]["error"]
    assert error.startswith(f"{out}: joining the segments needs ") and error.endswith("MB left; free some and --resume")
    assert not out.exists() and list(_partial_folder(out).glob("seg_*"))
    assert cli.main([*args, "--resume"]) == 0


def test_an_output_that_is_an_input_is_refused(clip, tmp_path, capsys):
    # before: --overwrite replaced the original, --resume took it for a finished output
    original = tmp_path / "a.mp4"
    original.write_bytes(clip.read_bytes())
    for flag in ("--overwrite", "--resume"):
        assert cli.main(["upscale", str(original), "-o", str(original), flag, "-q"]) == 1
        assert capsys.readouterr().err.strip() == f"error: {original}: the output {original} is an input; choose another output"
    assert original.read_bytes() == clip.read_bytes()


def test_an_output_folder_inside_an_input_folder_is_refused(clip, tmp_path, capsys):
    # before: the outputs were found as inputs, and upscaled again, by --resume or the next run
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.mp4").write_bytes(clip.read_bytes())
    for out in (tmp_path / "in" / "up", tmp_path / "in"):
        assert cli.main(["upscale", str(tmp_path / "in"), "-o", str(out), "-q"]) == 1
        assert capsys.readouterr().err.strip() == (
            f"restore: error: {out}: is inside the input folder {tmp_path / 'in'}: its outputs would be upscaled "
            "again on --resume; choose an output folder outside it"
        )
    assert [p.name for p in (tmp_path / "in").iterdir()] == ["a.mp4"]


def test_two_inputs_for_one_output_name_say_so(clip, tmp_path, capsys):
    # before: the second input's failure was in the report only, not a word on the console
    for folder in ("x", "y"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "a.mp4").write_bytes(clip.read_bytes())
    first, second, out = tmp_path / "x" / "a.mp4", tmp_path / "y" / "a.mp4", tmp_path / "out"
    assert cli.main(["upscale", str(first), str(second), "-o", str(out), "--scale", "2", "-q"]) == 1
    assert capsys.readouterr().err.strip() == f"error: {second}: output {out / 'a.mp4'} collides with the output of {first}"
    assert len(decoded_frames(out / "a.mp4")) == 20

