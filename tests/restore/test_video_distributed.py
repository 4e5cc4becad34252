"""restore upscale scale-out: units and their assignment, tasks run as ranks would (in this process,
any order), and a real 2-process DDP run (gloo, CPU) through Lightning Trainer.predict."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import av
import pytest
import torch

import cli
from restore.batch import WorkItem, plan_outputs
from restore.engine import ChunkPlan
from restore.jobs import TO_THE_END, JobResult, UpscaleOptions, prepare_model
from restore.segments import segment_lengths
from restore.video_distributed import Task, Unit, _video_units, assign, build_report, plan_units, run_task
from tests.fixtures import make_photo, make_video

ROOT = Path(__file__).resolve().parents[2]


def packets(path: Path) -> list[tuple[int, int | None, bytes]]:
    """Every packet of every stream: (stream index, pts, bytes)."""
    with av.open(str(path)) as c:
        return [(p.stream.index, p.pts, bytes(p)) for p in c.demux() if p.size]


def outputs(folder: Path) -> dict[str, list]:
    """The packets of every file under ``folder``, by relative path (hidden files included)."""
    return {str(p.relative_to(folder)): packets(p) for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    """A folder of two clips with audio, a long mp4 (several segments) and a short Matroska one (no
    frame count stored: its segments are an estimate), and a photo."""
    folder = tmp_path_factory.mktemp("clips") / "in"
    folder.mkdir()
    make_video(folder / "long.mp4", frames=36, width=24, height=16)
    make_photo(folder / "photo.jpg")
    make_video(folder / "short.mkv", frames=6, width=24, height=16)
    return folder


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """Random weights of the temporal test model oasis-t (so the cross-fades of chunks matter)."""
    from safetensors.torch import save_file

    from restore.registry import build_model, get_entry

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "oasis-t.safetensors"
    save_file(build_model("oasis", get_entry("oasis-t").config).state_dict(), str(path))
    return path


def common(weights: Path) -> list[str]:
    # chunk 4 overlap 2: every segment but the first needs the chunk before it (its cross-fade);
    # --tile 0: no tile timing, which could choose differently in two runs
    return ["--scale", "4", "--model", "oasis-t", "--weights", str(weights), "--chunk", "4", "--overlap", "2",
            "--segment-frames", "8", "--tile", "0", "--device", "cpu", "--preset", "ultrafast", "-q"]


@pytest.fixture(scope="module")
def reference(clips, weights, tmp_path_factory) -> dict[str, list]:
    """The packets of the single-process run."""
    out = tmp_path_factory.mktemp("reference") / "out"
    assert cli.main(["upscale", str(clips), "-o", str(out), *common(weights)]) == 0
    return outputs(out)


def test_segment_lengths_follow_the_chunk_plan():
    plan = ChunkPlan(4, 2)  # stride 2: 4 chunks, 8 frames per segment of 8
    assert segment_lengths(plan, 8, 36) == [8, 8, 8, 8, 4]  # 17 chunks; the last one holds 4 frames
    assert segment_lengths(plan, 8, 3) == [3]
    assert sum(segment_lengths(ChunkPlan(8, 0), 240, 1000)) == 1000


def test_units_are_the_missing_segments_and_an_open_tail_when_the_count_is_an_estimate():
    lengths = [8, 8, 4]
    assert _video_units(0, {1}, None, lengths) == [Unit(0, 0, 8), Unit(0, 2, 4, to_the_end=True)]
    assert _video_units(0, {1}, 4, lengths) == [Unit(0, 0, 8), Unit(0, 2, 4), Unit(0, 3, 4)]  # count known
    assert _video_units(0, {0, 1, 2}, 3, lengths) == [Unit(0, 3, 0)]  # all in: only the join is left


def test_assign_cuts_the_units_in_order_into_runs_of_equal_frames():
    long = [Unit(0, k, 8) for k in range(4)] + [Unit(0, 4, 8, to_the_end=True)]
    short = [Unit(1, 0, 8, to_the_end=True)]
    assert assign(long + short, 2) == [[Task(0, 0, 3)], [Task(0, 3, TO_THE_END), Task(1, 0, TO_THE_END)]]
    assert assign(long, 1) == [[Task(0, 0, TO_THE_END)]]
    ranks = assign([Unit(0, 0, 4), Unit(1, 2, 0)], 3)  # more ranks than work: some get none
    assert {t for r in ranks for t in r} == {Task(0, 0, 1), Task(1, 2, 2)}  # the second only joins


def test_the_report_has_a_row_per_input_a_failed_rank_fails_only_its_file_and_frames_per_s_per_rank(tmp_path):
    items = [WorkItem(tmp_path / n, tmp_path / "out" / n, "video") for n in ("a.mp4", "b.mp4", "c.mp4")]
    items.insert(0, WorkItem(tmp_path / "notes.txt", None, "other", "skipped", "not a video or image (by extension)"))

    def outcome(item, rank, frames, seconds, **kw):
        return {"item": item, "rank": rank, "host": "h", "device": "cpu", "threads": 1, "segments": [0, None],
                "status": "ok", "frames": frames, "concealed": 0, "joined": False, "error": None, "bug": False,
                "seconds": seconds, **kw}

    outcomes = [outcome(1, 0, 8, 2.0), outcome(2, 0, 0, 1.0, joined=True),  # rank 0
                outcome(1, 1, 4, 1.0, status="failed", error="a.mp4: writing failed"), outcome(3, 1, 6, 2.0)]
    opts = UpscaleOptions(scale=4, model="bicubic")
    report = build_report(items, {0: JobResult(str(items[0].src), "skipped", error="not a video").as_dict()},
                          outcomes, opts, world_size=2)
    rows = report.as_dict()["inputs"]
    assert [r["status"] for r in rows] == ["skipped", "failed", "ok", "failed"]
    assert rows[1]["error"] == "a.mp4: writing failed" and [r["rank"] for r in rows[1]["ranks"]] == [0, 1]
    assert "no rank joined" in rows[3]["error"] and report.bugs == 1  # c.mp4: all ok, but never joined
    assert [(r["rank"], r["frames"], r["frames_per_s"]) for r in report.ranks] == [(0, 8, 2.667), (1, 10, 3.333)]


def test_after_a_stop_signal_the_files_not_joined_are_interrupted_and_the_exit_code_says_which(tmp_path):
    items = [WorkItem(tmp_path / n, tmp_path / "out" / n, "video") for n in ("a.mp4", "b.mp4", "c.mp4")]
    outcomes = [{"item": i, "rank": 0, "host": "h", "device": "cpu", "threads": 1, "segments": [0, 1], "status": "ok",
                 "frames": 4, "concealed": 0, "joined": i == 0, "error": None, "bug": False, "seconds": 1.0}
                for i in (0, 1)]  # a.mp4 finished, b.mp4 mid-way, c.mp4 never reached
    report = build_report(items, {}, outcomes, UpscaleOptions(scale=4, model="bicubic"), 2, stop_signal=signal.SIGINT)
    rows = report.as_dict()["inputs"]
    assert [r["status"] for r in rows] == ["ok", "interrupted", "interrupted"] and report.bugs == 0
    assert rows[1]["error"] == "interrupted (Ctrl-C); continue with --resume" and rows[1]["frames"] == 4
    assert rows[2]["error"] == "not started (interrupted)"
    assert report.exit_code() == 130 and report.as_dict()["interrupted"]


@pytest.mark.parametrize("world_size", [3])
def test_tasks_run_by_ranks_in_any_order_give_the_single_process_output(clips, weights, reference, tmp_path,
                                                                         world_size):
    """The ranks' tasks, run here one after another from the last rank to the first (so that a
    segment in the middle is written before the ones before it), make the same packets as one
    process; the rank that completes a video joins it, once."""

    out = tmp_path / "out"
    opts = UpscaleOptions(scale=4, model="oasis-t", weights=str(weights), chunk=4, overlap=2, segment_frames=8,
                          tile=0, device="cpu", preset="ultrafast")
    items = plan_outputs([clips], out, opts.codec)
    model = prepare_model(opts)
    units, decided = plan_units(items, model, opts)
    assert decided == {} and len(units) == 7  # long.mp4: 5 segments; the photo; short.mkv: 1, to the end
    ranks = assign(units, world_size)
    outcomes = [run_task(t, items, model, opts, r) for r in reversed(range(world_size)) for t in ranks[r]]
    assert [o["status"] for o in outcomes] == ["ok"] * len(outcomes)
    assert sorted(items[o["item"]].src.name for o in outcomes if o["joined"]) == ["long.mp4", "short.mkv"]
    assert outputs(out) == reference


@pytest.mark.timeout(1200)  # two processes that start torch and Lightning: slow on a loaded machine
def test_two_ddp_processes_make_the_single_process_output_and_report_their_work(clips, weights, reference, tmp_path):
    """A real 2-process run (Lightning DDP, gloo on CPU): the same packets as one process, both
    ranks upscaled frames (one thread each), one report from rank 0; nothing left behind."""

    out, report = tmp_path / "out", tmp_path / "report.json"
    env = {**os.environ, "PL_DISABLE_FORK": "1"}
    env.pop("OMP_NUM_THREADS", None)  # the ranks split the cores themselves
    proc = subprocess.run(
        [sys.executable, "-m", "cli", "upscale", str(clips), "-o", str(out), *common(weights), "--devices", "2",
         "--report", str(report)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert outputs(out) == reference
    data = json.loads(report.read_text())
    assert [r["status"] for r in data["inputs"]] == ["ok", "ok", "ok"]
    ranks = data["ranks"]
    assert [r["rank"] for r in ranks] == [0, 1] and all(r["frames"] > 0 for r in ranks)
    if (os.cpu_count() or 1) <= 2:
        assert [r["threads"] for r in ranks] == [1, 1]
    long = data["inputs"][0]["ranks"]
    assert sorted(r["rank"] for r in long) == [0, 1], "the long clip is shared by both ranks"
    assert sum(r["frames"] for r in data["inputs"][0]["ranks"]) == 36
    assert sum(r["joined"] for r in long) == 1
    chatter = ("GPU available", "Tip:", "Initializing distributed", "processes registered")
    assert [c for c in chatter if c in proc.stdout + proc.stderr] == []


def restore_script() -> str:
    """The installed ``restore`` command of this interpreter's environment (what the docs launch)."""
    return str(Path(sys.executable).with_name("restore"))


def slurm_cluster() -> None:
    if shutil.which("srun") is None or subprocess.run(["sinfo"], capture_output=True).returncode:
        pytest.fail("needs a running SLURM cluster: run `make slurm` (a one-node cluster on this machine)")


# how docs/TRAINING.md launches 2 ranks on one node: the launcher starts both processes and
# Lightning joins them (torchrun's or SLURM's environment) instead of starting its own
LAUNCHERS = {
    "torchrun": [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"],
    "srun": ["srun", "--nodes=1", "--ntasks-per-node=2", "--cpus-per-task=1", "--job-name=restore-upscale"],
}


@pytest.mark.slow
@pytest.mark.timeout(1200)
@pytest.mark.parametrize("launcher", list(LAUNCHERS))
def test_a_launcher_started_job_makes_the_single_process_output(clips, weights, reference, tmp_path, launcher):
    """``torchrun ... $(which restore) upscale ... --devices 2`` and, on a real one-node SLURM
    cluster (``make slurm`` starts one here), ``srun ... restore upscale ... --devices 2``: the
    packets are those of one process and the report counts both ranks."""
    if launcher == "srun":
        slurm_cluster()
    out, report = tmp_path / "out", tmp_path / "report.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [*LAUNCHERS[launcher], restore_script(), "upscale", str(clips), "-o", str(out), *common(weights),
         "--devices", "2", "--report", str(report)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert outputs(out) == reference
    data = json.loads(report.read_text())
    assert [r["status"] for r in data["inputs"]] == ["ok", "ok", "ok"]
    assert [r["rank"] for r in data["ranks"]] == [0, 1] and all(r["frames"] > 0 for r in data["ranks"])


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_srun_with_ntasks_is_refused_in_one_line(clips, weights, tmp_path):
    """Lightning refuses ``srun --ntasks`` (it wants --ntasks-per-node): a one-line error that
    says so, not an internal-error report."""
    slurm_cluster()
    proc = subprocess.run(["srun", "--ntasks=2", restore_script(), "upscale", str(clips), "-o", str(tmp_path / "out"),
                           *common(weights), "--devices", "2"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode != 0 and "--ntasks-per-node" in proc.stderr, proc.stderr[-3000:]
    assert "bug" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-3000:]


# `restore` (as a script, so that Lightning can start the second rank the same way) with
# SegmentSink.commit announcing each committed segment with its rank on stdout; after its first
# each rank waits on stdin, so the test kills a run that is certainly mid-way (no polling, no race)
_ANNOUNCING_CLI = """
import os, sys
sys.path.insert(0, {root!r})
import cli
from restore.segments import SegmentSink
commit = SegmentSink.commit
def announced(self, index):
    commit(self, index)
    print("committed", os.environ.get("LOCAL_RANK", "0"), index, flush=True)
    sys.stdin.readline()  # held here until the test's SIGKILL arrives
SegmentSink.commit = announced
sys.exit(cli.main())
"""


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGINT], ids=["killed", "ctrl-c"])
def test_a_stopped_ddp_run_resumes_on_one_process_to_the_same_files(clips, weights, reference, tmp_path, stop):
    """SIGKILL: nothing is reported, the committed segments are kept. Ctrl-C (SIGINT to the job's
    process group, as a terminal sends it): rank 0 still writes the report, exit code 130."""
    script = tmp_path / "announcing_cli.py"
    script.write_text(_ANNOUNCING_CLI.format(root=str(ROOT)))
    out, report = tmp_path / "out", tmp_path / "report.json"
    env = {**os.environ, "PL_DISABLE_FORK": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(script), "upscale", str(clips), "-o", str(out), *common(weights),
                             "--devices", "2", "--report", str(report)], cwd=ROOT, env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    ranks = set()
    try:
        for line in proc.stdout:  # blocks until the next segment is committed, or the run ends
            if line.startswith("committed "):
                ranks.add(line.split()[1])
            if len(ranks) == 2:
                break
    finally:
        os.killpg(proc.pid, stop)  # the whole job: both ranks
        code = proc.wait(timeout=300)
    stderr = proc.stderr.read()
    assert ranks == {"0", "1"}, f"the run ended before both ranks committed a segment: {stderr[-3000:]}"
    assert not (out / "long.mp4").exists()
    if stop == signal.SIGINT:
        assert code == 130, stderr[-3000:]
        rows = json.loads(report.read_text())["inputs"]
        assert "interrupted" in [r["status"] for r in rows] and {r["status"] for r in rows} <= {"ok", "interrupted"}
        assert "run the same command with --resume" in stderr
    else:
        assert not report.exists()

    assert cli.main(["upscale", str(clips), "-o", str(out), *common(weights), "--resume", "--devices", "1"]) == 0
    assert outputs(out) == reference
