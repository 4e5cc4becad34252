"""The web demo end to end: a launched app on 127.0.0.1 driven through gradio_client and plain HTTP.

Waiting is always on a condition (``tests.conditions.wait_until``), never a fixed sleep.
"""

from __future__ import annotations

import json
import os
import socket
import zipfile
from pathlib import Path

import gradio_client
import httpx
import numpy as np
import pytest

from app import DemoConfig, exposure_warnings, launch, parse_auth
from tests.conditions import wait_until
from tests.restore.test_limits import dicom_declaring, png_bomb

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(config: DemoConfig, **kwargs):
    return launch("127.0.0.1", _free_port(), config=config, prevent_thread_lock=True, quiet=True, **kwargs)


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """One launched demo for the module (each launch costs seconds)."""
    config = DemoConfig(max_clip_seconds=2.0, workdir=tmp_path_factory.mktemp("demo"), device="cpu",
                        max_job_pixels=1 << 25)
    ui = _launch(config)
    client = gradio_client.Client(ui.local_url, verbose=False)
    yield client, config, ui
    client.close()
    ui.close()


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    """A demo that sees the shipped weights in weights/ (whatever their configs are)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RESTORE_WEIGHTS_DIR", str(REPO / "weights"))
        ui = _launch(DemoConfig(workdir=tmp_path_factory.mktemp("shipped"), device="cpu"))
    client = gradio_client.Client(ui.local_url, verbose=False)
    yield client, ui
    client.close()
    ui.close()


def _examples(config: DemoConfig) -> Path:
    return Path(config.workdir) / "examples"


def _image(value) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(value if isinstance(value, str) else value["path"]).convert("RGB"))


def _slider_images(value) -> list[np.ndarray]:
    before, after = value if isinstance(value, (tuple, list)) else (value["before"], value["after"])
    return [_image(v) for v in (before, after)]


def _upload_folder() -> Path:
    from gradio.utils import get_upload_folder

    return Path(get_upload_folder())


def _call(url: str, endpoint: str, data: list, *, client: httpx.Client | None = None) -> str:
    """POST /gradio_api/call/<endpoint> as any HTTP client could, then read the event stream."""
    http = client or httpx.Client(timeout=120)
    event = http.post(f"{url}gradio_api/call/{endpoint}", json={"data": data})
    event.raise_for_status()
    return http.get(f"{url}gradio_api/call/{endpoint}/{event.json()['event_id']}").text


def _file(path) -> dict:
    return {"path": str(path), "meta": {"_type": "gradio.FileData"}}


# ------------------------------------------------------------------------------------ the basics


def test_image_endpoint_upscales_with_lossless_previews(app):
    """Item 6: the before/after previews are PNG; "after" is exactly the result."""
    client, config, _ = app
    slider, zoom, download = client.predict(gradio_client.handle_file(str(_examples(config) / "astronaut.png")),
                                            "bicubic", 2, api_name="/image")
    before, after = _slider_images(slider)
    assert after.shape == (192, 192, 3) and before.shape == after.shape
    result = _image(download)
    assert result.shape == (192, 192, 3)
    assert np.array_equal(after, result), "the preview must be the result, losslessly"
    assert Path(slider[1] if isinstance(slider, (list, tuple)) else slider["after"]["path"]).suffix == ".png"
    assert _image(zoom).shape[0] > 0 and _image(zoom).shape[1] > 2 * _image(zoom).shape[0]  # three crops side by side


def test_video_endpoint_keeps_audio_and_shows_frame(app):
    import av

    client, config, _ = app
    video, slider, zoom, download = client.predict(
        gradio_client.handle_file(str(_examples(config) / "sample.mp4")), "bicubic", 2, 0, 3, api_name="/video"
    )
    path = video["video"] if isinstance(video, dict) else video
    with av.open(path) as container:
        assert container.streams.video[0].width == 192 and container.streams.video[0].height == 128
        assert len(container.streams.audio) == 1
    before, after = _slider_images(slider)
    assert after.shape == (128, 192, 3) and before.shape == after.shape
    assert Path(download).suffix == ".mp4"


def test_video_endpoint_output_is_browser_playable_for_a_10bit_source(app, tmp_path):
    import av

    from tests.fixtures import make_video

    client, _, _ = app
    source = make_video(tmp_path / "ten.mp4", frames=4, width=32, height=32, pix_fmt="yuv420p10le", audio=False)
    video, *_ = client.predict(gradio_client.handle_file(str(source.path)), "bicubic", 2, 0, 0, api_name="/video")
    with av.open(video["video"] if isinstance(video, dict) else video) as container:
        assert container.streams.video[0].codec_context.pix_fmt == "yuv420p"  # High 10 does not play in browsers


@pytest.mark.parametrize("frame", [-3, 99])
def test_video_endpoint_clamps_the_preview_frame(app, tmp_path, frame):
    from restore.io.samples import make_sample_video

    client, _, _ = app
    clip = make_sample_video(tmp_path / "c.mp4", frames=3, width=32, height=32, audio=False)
    _, slider, _, _ = client.predict(gradio_client.handle_file(str(clip)), "bicubic", 2, 0, frame, api_name="/video")
    assert _slider_images(slider)[1].shape == (64, 64, 3)


def test_long_video_refused_with_cli_hint(app, tmp_path):
    from restore.io.samples import make_sample_video

    client, _, _ = app
    long_clip = make_sample_video(tmp_path / "long.mp4", frames=90, width=32, height=32, audio=False)  # 3 s > 2 s cap
    with pytest.raises(Exception, match="restore upscale"):
        client.predict(gradio_client.handle_file(str(long_clip)), "bicubic", 2, 0, 0, api_name="/video")


def test_dicom_zip_restored_into_derived_series(app, tmp_path):
    import pydicom

    client, config, _ = app
    upload = gradio_client.handle_file(str(_examples(config) / "ct_series.zip"))
    slice_index, preset, level, width, slider = client.predict(upload, api_name="/dicom_load")
    before, after = _slider_images(slider)
    assert (slice_index["maximum"], slice_index["value"]) == (2, 1) and before.shape == (128, 128, 3)
    archive, summary = client.predict(upload, "ct-denoise", "task default", api_name="/dicom")
    with zipfile.ZipFile(archive) as zf:
        names = [n for n in zf.namelist() if n.endswith(".dcm")]
        assert len(names) == 3
        zf.extract(names[0], tmp_path)
    ds = pydicom.dcmread(tmp_path / names[0])
    assert "DERIVED" in ds.ImageType
    assert "nlm" in summary and "3 slices" in summary


@pytest.mark.parametrize(("name", "endpoint", "args"), [
    ("broken.png", "/image", ("bicubic", 2)),
    ("broken.mp4", "/video", ("bicubic", 2, 0, 0)),
    ("broken.dcm", "/dicom", ("ct-denoise", "task default")),
])
def test_bad_upload_gets_one_line_message(app, tmp_path, name, endpoint, args):
    client, _, _ = app
    bad = tmp_path / name
    bad.write_bytes(b"not a real file at all" * 10)
    with pytest.raises(Exception) as excinfo:
        client.predict(gradio_client.handle_file(str(bad)), *args, api_name=endpoint)
    message = str(excinfo.value)
    assert name in message and "Traceback" not in message and "\n" not in message.strip()
    assert str(tmp_path) not in message and "/gradio/" not in message, "no server paths, the file's name is enough"


def test_inspect_endpoints_label_untrained_models(app):
    client, _, _ = app
    grid, text, heatmap, measured = client.predict(None, "oasis-t", None, api_name="/routing")
    assert Path(grid).stat().st_size > 0 and Path(heatmap).stat().st_size > 0 and "untrained" in text
    attention = client.predict(None, "oasis-t", None, 0, 1, 0, 8, 8, api_name="/attention")
    assert Path(attention if isinstance(attention, str) else attention["path"]).stat().st_size > 0
    pixels, tokens, text = client.predict(None, "rat-t", None, "hu", api_name="/partition")
    assert "untrained" in text and "regions" in text


# ----------------------------------------------------------------- item 1: no way into others' data


def test_the_upload_folder_itself_is_refused_as_an_input(app):
    """The reported leak: Inspect's file input given gradio's upload folder (every user's uploads)."""
    client, config, ui = app
    # another user's DICOM series sits in the upload folder
    client.predict(gradio_client.handle_file(str(_examples(config) / "ct_series.zip")), api_name="/dicom_load")
    stream = _call(ui.local_url, "partition", [_file(_upload_folder()), "rat-t", None, "hu"])
    assert "event: error" in stream and "event: complete" not in stream
    assert "regions" not in stream and str(_upload_folder()) not in stream


def test_another_sessions_upload_and_stale_files_are_refused(app, tmp_path):
    client, config, ui = app

    secret = tmp_path / "patient.dcm"
    secret.write_bytes((_examples(config) / "ct_small.dcm").read_bytes()[:-16] + os.urandom(16))  # unique bytes
    owner = gradio_client.Client(ui.local_url, verbose=False)
    try:
        owner.predict(gradio_client.handle_file(str(secret)), "rat-t", None, "hu", api_name="/partition")
    except Exception:  # noqa: BLE001 - the owner's own result does not matter here
        pass
    uploaded = next(p for p in _upload_folder().rglob("patient.dcm"))
    # a second session that learnt the path (a log, a shoulder) names it
    stream = _call(ui.local_url, "partition", [_file(uploaded), "rat-t", None, "hu"])
    assert "event: error" in stream and "event: complete" not in stream
    # a file in the upload folder that this server never received (an earlier run's upload)
    stale = _upload_folder() / ("0" * 64) / "old.dcm"
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_bytes(secret.read_bytes())
    stream = _call(ui.local_url, "partition", [_file(stale), "rat-t", None, "hu"])
    assert "event: error" in stream and "event: complete" not in stream
    owner.close()


# ------------------------------------------------------------------------- item 3: decompression bombs


def test_png_bomb_refused_from_its_header(app, tmp_path):
    client, _, _ = app
    bomb = png_bomb(tmp_path / "bomb.png", 12000)
    job = client.submit(gradio_client.handle_file(str(bomb)), "bicubic", 2, api_name="/image")
    with pytest.raises(Exception, match="12000x12000"):
        job.result(timeout=60)


def test_dicom_bombs_refused_before_decoding(app, tmp_path):
    client, _, _ = app
    big = dicom_declaring(tmp_path / "big.dcm", 4096, 4096, frames=16)  # 268 M voxels in a few KB
    with pytest.raises(Exception, match="voxels.*restore dicom"):
        client.submit(gradio_client.handle_file(str(big)), api_name="/dicom_load").result(timeout=60)
    many = tmp_path / "many.zip"
    with zipfile.ZipFile(many, "w") as zf:
        for n in range(2001):
            zf.writestr(f"IM{n:04d}.dcm", b"")
    with pytest.raises(Exception, match="2001 files"):
        client.submit(gradio_client.handle_file(str(many)), api_name="/dicom_load").result(timeout=60)


# --------------------------------------------------- item 2: one worker, real cancellation, budget


def _big_clip(tmp_path: Path) -> Path:
    from restore.io.samples import make_sample_video

    return make_sample_video(tmp_path / "big.mp4", frames=40, width=960, height=544, audio=False)


def _queued_events(ui) -> int:
    return sum(len(q.queue) for q in ui._queue.event_queue_per_concurrency_id.values())


def test_one_job_at_a_time_across_endpoints_and_cancel_stops_the_work(app, tmp_path):
    client, config, ui = app
    demo = ui.restore_demo
    video = client.submit(gradio_client.handle_file(str(_big_clip(tmp_path))), "bicubic", 4, 0, 0, api_name="/video")
    wait_until(lambda: demo.worker.busy, what="the video job to start")
    worker_pid = demo.worker.pid
    image = client.submit(gradio_client.handle_file(str(_examples(config) / "astronaut.png")), "bicubic", 2,
                          api_name="/image")
    wait_until(lambda: _queued_events(ui) >= 1 or image.done(), what="the image job to queue")
    assert not image.done() and _queued_events(ui) == 1, "the image job must wait for the device"
    video.cancel()
    # the work stops: its process is killed, and the queued job then runs
    wait_until(lambda: not _pid_alive(worker_pid), timeout=30, what="the cancelled job's process to end")
    slider, _, _ = image.result(timeout=120)
    assert _slider_images(slider)[1].shape == (192, 192, 3)


def _pid_alive(pid: int | None) -> bool:
    import psutil

    try:
        return pid is not None and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_job_budget_refuses_big_work_with_a_cli_hint(app, tmp_path):
    from restore.io.samples import make_sample_video

    client, config, _ = app
    big = make_sample_video(tmp_path / "hd.mp4", frames=48, width=1920, height=1088, audio=False)  # 2 s of 1080p
    with pytest.raises(Exception, match=r"input pixels.*restore upscale"):
        client.submit(gradio_client.handle_file(str(big)), "bicubic", 4, 0, 0, api_name="/video").result(timeout=60)


def test_job_time_limit_stops_the_worker(tmp_path):
    config = DemoConfig(workdir=tmp_path / "demo", device="cpu", max_job_seconds=1.0, max_job_pixels=1 << 25)
    ui = _launch(config)
    try:
        client = gradio_client.Client(ui.local_url, verbose=False)
        job = client.submit(gradio_client.handle_file(str(_big_clip(tmp_path))), "bicubic", 4, 0, 0, api_name="/video")
        with pytest.raises(Exception, match="limit per job.*restore upscale"):
            job.result(timeout=120)
        assert ui.restore_demo.worker.pid is None
        client.close()
    finally:
        ui.close()


# ------------------------------------------------------------------------ item 4: memory and files


def test_dicom_volumes_freed_when_the_session_ends(app):
    client, config, ui = app
    demo = ui.restore_demo
    viewer = gradio_client.Client(ui.local_url, verbose=False)
    before = demo.volumes.nbytes
    viewer.predict(gradio_client.handle_file(str(_examples(config) / "ct_series.zip")), api_name="/dicom_load")
    assert demo.volumes.nbytes > before
    viewer.close()  # like closing the tab: its heartbeat ends, gradio runs the unload event
    wait_until(lambda: demo.volumes.nbytes <= before, timeout=60, what="the volumes to be freed")


def test_volume_cache_is_bounded():
    from app import VolumeCache

    cache = VolumeCache(max_bytes=3_000_000)
    keys = [cache.put(f"s{n}", {"before": np.zeros((1, 500, 500), np.float32)}) for n in range(4)]  # 1 MB each
    assert cache.nbytes <= 3_000_000 and cache.get(keys[0]) is None and cache.get(keys[-1]) is not None
    cache.put("s3", {"before": np.zeros((1, 10, 10), np.float32)})  # a session's next series replaces its last
    assert cache.get(keys[-1]) is None
    cache.drop_owner("s2")
    assert cache.get(keys[2]) is None


def test_uploads_and_outputs_deleted_after_their_age_and_on_shutdown(tmp_path):
    config = DemoConfig(workdir=tmp_path / "demo", device="cpu", max_file_age=2)
    ui = _launch(config)
    client = gradio_client.Client(ui.local_url, verbose=False)
    try:
        image = tmp_path / "scan.png"
        image.write_bytes((_examples(config) / "astronaut.png").read_bytes())
        _, _, download = client.predict(gradio_client.handle_file(str(image)), "bicubic", 2, api_name="/image")
        served = [Path(p) for p in ui.upload_file_set] + [p for p in (tmp_path / "demo" / "jobs").rglob("*.png")]
        assert served and all(p.exists() for p in served)
        wait_until(lambda: not any(p.exists() for p in served), timeout=30, what="old files to be deleted")
        client.predict(gradio_client.handle_file(str(image)), "bicubic", 2, api_name="/image")
        fresh = [Path(p) for p in ui.upload_file_set] + [p for p in (tmp_path / "demo" / "jobs").rglob("*.png")]
        assert fresh
    finally:
        client.close()
        ui.close()
    assert not any(p.exists() for p in fresh), "uploads and outputs are deleted on shutdown"


def test_uploads_over_the_size_limit_are_refused(tmp_path):
    from PIL import Image

    config = DemoConfig(max_file_size="20kb", workdir=tmp_path / "demo", device="cpu")
    ui = _launch(config)
    try:
        client = gradio_client.Client(ui.local_url, verbose=False)
        big = tmp_path / "big.png"
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)).save(big)
        assert big.stat().st_size > 20_000
        with pytest.raises(Exception, match="(?i)size|large|limit"):
            client.predict(gradio_client.handle_file(str(big)), "bicubic", 2, api_name="/image")
        client.close()
    finally:
        ui.close()


# --------------------------------------------------------------------------------- item 9: exposure


def test_exposure_warnings_and_auth_parsing():
    assert exposure_warnings("127.0.0.1", False, False) == [] and exposure_warnings("localhost", False, False) == []
    warned = " ".join(exposure_warnings("0.0.0.0", False, False))
    assert "0.0.0.0" in warned and "--auth" in warned
    assert "gradio.live" in " ".join(exposure_warnings("127.0.0.1", True, True))
    assert parse_auth("ana:secret", {}) == ("ana", "secret")
    assert parse_auth("ana", {"RESTORE_DEMO_PASSWORD": "pw"}) == ("ana", "pw")
    assert parse_auth(None, {"RESTORE_DEMO_PASSWORD": "pw"}) == ("restore", "pw")
    assert parse_auth(None, {}) is None
    with pytest.raises(ValueError):
        parse_auth("ana", {})


def test_auth_is_required_when_set_and_analytics_are_off(tmp_path):
    ui = _launch(DemoConfig(workdir=tmp_path / "demo", device="cpu"), auth=("ana", "secret"))
    try:
        assert ui.analytics_enabled is False
        with httpx.Client(timeout=30) as http:
            assert http.post(f"{ui.local_url}gradio_api/call/image", json={"data": [None, "bicubic", 2]}).status_code in (401, 403)
            assert http.post(f"{ui.local_url}login", data={"username": "ana", "password": "wrong"}).status_code >= 400
            assert http.post(f"{ui.local_url}login", data={"username": "ana", "password": "secret"}).status_code == 200
            assert http.post(f"{ui.local_url}gradio_api/call/image", json={"data": [None, "bicubic", 2]}).status_code == 200
    finally:
        ui.close()


# ------------------------------------------------------- items 5, 7, 8: the shipped models as they are


def test_model_and_scale_are_consistent(shipped):
    client, ui = shipped
    demo = ui.restore_demo
    assert "oasis-s-x2" not in demo.sr_models(4) and "oasis-s-x2" in demo.sr_models(2)
    example = gradio_client.handle_file(str(demo.examples["astronaut.png"]))
    with pytest.raises(Exception) as excinfo:
        client.predict(example, "oasis-s-x2", 4, api_name="/image")
    message = str(excinfo.value)
    assert "x2" in message and "scale 2" in message and "--scale" not in message and "/" not in message.replace("x2", "")


def test_dicom_uses_the_files_window_and_every_shipped_model(shipped):
    import pydicom
    from pydicom.data import get_testdata_file

    client, ui = shipped
    mr = get_testdata_file("MR_small.dcm")
    ds = pydicom.dcmread(mr)
    upload = gradio_client.handle_file(mr)
    _, preset, level, width, slider = client.predict(upload, api_name="/dicom_load")
    assert (preset, level, width) == ("file", float(ds.WindowCenter), float(ds.WindowWidth))
    before, _ = _slider_images(slider)
    assert (before == 255).all(-1).mean() < 0.2, "MR must not get a CT window (mostly white)"
    assert tuple(client.predict("bone", api_name="/dicom_window")) == (400.0, 1800.0)  # presets fill the boxes
    demo = ui.restore_demo
    assert "rat-s-ct" in demo.dicom_models("ct-denoise") and "rat-s-mr" in demo.dicom_models("mr-denoise")
    _, summary = client.predict(upload, "mr-denoise", "rat-s-mr", api_name="/dicom")
    assert "rat-s-mr" in summary


def test_routing_map_shows_the_routing_the_model_runs(shipped):
    client, ui = shipped
    demo = ui.restore_demo
    default = next(c for c in ui.config["components"] if c.get("props", {}).get("label") == "OASIS model")
    assert demo.trained(default["props"]["value"]), "the default is a shipped model"
    card = json.loads((REPO / "weights" / "oasis-s-x4.json").read_text())
    runs = {g: sum(layer.count(g) for layer in card["config"]["routing"]) for g in ("global", "intra", "window")}
    grid, text, heatmap, measured = client.predict(None, "oasis-s-x4", None, api_name="/routing")
    assert f"{runs['global']} global, {runs['intra']} intra, {runs['window']} window" in text and "trained" in text
    assert "Measured" in measured and Path(heatmap).stat().st_size > 0
    assert _image(grid).shape[0] > 0
