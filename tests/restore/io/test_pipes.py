"""`-` for stdin and stdout: the real `restore` command in a subprocess, fed and read through pipes."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import av
import pytest

import cli
from restore.io.samples import make_sample_video

ROOT = Path(__file__).resolve().parents[3]


def restore_cmd(*args: str) -> list[str]:
    return [sys.executable, "-c", "import sys, cli; sys.exit(cli.main())", *args]


def _audio_packets(container: av.container.InputContainer) -> list[bytes]:
    return [bytes(p) for p in container.demux(audio=0) if p.size]


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    # Matroska, as `ffmpeg -i x.mp4 -f matroska -` would pipe it
    return make_sample_video(tmp_path_factory.mktemp("pipes") / "clip.mkv", frames=12, width=32, height=24)


def test_stdin_is_spooled_beside_the_output_and_removed(clip, tmp_path):
    out = tmp_path / "out" / "up.mkv"
    report = tmp_path / "r.json"
    proc = subprocess.run(restore_cmd("upscale", "-", "-o", str(out), "--scale", "2", "-q", "--report", str(report)),
                          input=clip.read_bytes(), capture_output=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr.decode()
    with av.open(str(out)) as c:
        assert c.streams.video[0].width == 64
        assert sum(1 for _ in c.decode(video=0)) == 12
    with av.open(str(out)) as c, av.open(str(clip)) as a:
        assert _audio_packets(c) == _audio_packets(a)
    assert [p.name for p in out.parent.iterdir()] == ["up.mkv"], "the spooled stdin is gone"
    row = json.loads(report.read_text())["inputs"][0]
    assert (row["input"], row["status"]) == ("-", "ok")


def test_stdout_gets_a_streamable_matroska_video_and_nothing_else(clip, tmp_path):
    proc = subprocess.run(restore_cmd("upscale", str(clip), "-o", "-", "--scale", "2"),
                          capture_output=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr.decode()
    with av.open(io.BytesIO(proc.stdout)) as c:  # what `| ffplay -` reads
        assert c.format.name.startswith("matroska")
        assert c.streams.video[0].width == 64 and len(c.streams.audio) == 1
        assert sum(1 for _ in c.decode(video=0)) == 12
    assert b"1 ok" in proc.stderr, "the summary goes to stderr"


@pytest.mark.parametrize("args,fragment", [
    (["-", "-o", "{tmp}/o.mkv", "--resume"], "--resume cannot continue from `-`"),
    (["-", "{clip}", "-o", "{tmp}"], "`-` (stdin) must be the only input"),
    (["{clip}", "-o", "-", "--resume"], "--resume cannot continue a run written to stdout"),
    (["{clip}", "{clip}", "-o", "-"], "-o - (stdout) takes one input file"),
    (["{tmp}", "-o", "-"], "-o - (stdout) takes one input file"),
    (["{clip}", "-o", "-", "--codec", "png"], "--codec png makes a folder of frames"),
    (["-", "-o", "{tmp}"], "-o names the output file, not a folder"),
])
def test_combinations_that_cannot_work_are_refused_in_one_line(clip, tmp_path, capsys, args, fragment):
    argv = [a.format(tmp=tmp_path, clip=clip) for a in args]
    assert cli.main(["upscale", *argv, "-q"]) == 1
    err = capsys.readouterr().err.strip()
    assert fragment in err and len(err.splitlines()) == 1, err
    assert not list(tmp_path.iterdir()), "refused before any work"
