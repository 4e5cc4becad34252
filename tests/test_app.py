"""The web demo end to end: a launched app on 127.0.0.1 driven through gradio_client."""

from __future__ import annotations

import socket
from pathlib import Path

import gradio_client
import numpy as np
import pytest

from app import DemoConfig, launch


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """One launched demo for the module (each launch costs seconds)."""
    config = DemoConfig(max_clip_seconds=2.0, workdir=tmp_path_factory.mktemp("demo"), device="cpu")
    ui = launch("127.0.0.1", _free_port(), config=config, prevent_thread_lock=True, quiet=True)
    client = gradio_client.Client(ui.local_url, verbose=False)
    yield client, config
    client.close()
    ui.close()


def _examples(config: DemoConfig) -> Path:
    return Path(config.workdir) / "examples"


def _slider_images(value) -> list[np.ndarray]:
    from PIL import Image

    before, after = value if isinstance(value, (tuple, list)) else (value["before"], value["after"])
    return [np.asarray(Image.open(v if isinstance(v, str) else v["path"]).convert("RGB")) for v in (before, after)]


def test_image_endpoint_upscales_and_offers_download(app):
    client, config = app
    slider, download = client.predict(gradio_client.handle_file(str(_examples(config) / "astronaut.png")), "bicubic", 2,
                                      api_name="/image")
    before, after = _slider_images(slider)
    assert after.shape == (192, 192, 3) and before.shape == after.shape
    from PIL import Image

    assert Image.open(download).size == (192, 192)


def test_video_endpoint_keeps_audio_and_shows_frame(app):
    import av

    client, config = app
    video, slider, download = client.predict(
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

    client, _ = app
    source = make_video(tmp_path / "ten.mp4", frames=4, width=32, height=32, pix_fmt="yuv420p10le", audio=False)
    video, _, _ = client.predict(gradio_client.handle_file(str(source.path)), "bicubic", 2, 0, 0, api_name="/video")
    with av.open(video["video"] if isinstance(video, dict) else video) as container:
        assert container.streams.video[0].codec_context.pix_fmt == "yuv420p"  # High 10 does not play in browsers


@pytest.mark.parametrize("frame", [-3, 99])
def test_video_endpoint_clamps_the_preview_frame(app, tmp_path, frame):
    from restore.io.samples import make_sample_video

    client, _ = app
    clip = make_sample_video(tmp_path / "c.mp4", frames=3, width=32, height=32, audio=False)
    _, slider, _ = client.predict(gradio_client.handle_file(str(clip)), "bicubic", 2, 0, frame, api_name="/video")
    assert _slider_images(slider)[1].shape == (64, 64, 3)


def test_long_video_refused_with_cli_hint(app, tmp_path):
    from restore.io.samples import make_sample_video

    client, _ = app
    long_clip = make_sample_video(tmp_path / "long.mp4", frames=90, width=32, height=32, audio=False)  # 3 s > 2 s cap
    with pytest.raises(Exception, match="restore upscale"):
        client.predict(gradio_client.handle_file(str(long_clip)), "bicubic", 2, 0, 0, api_name="/video")


def test_dicom_zip_restored_into_derived_series(app, tmp_path):
    import zipfile

    import pydicom

    client, config = app
    upload = gradio_client.handle_file(str(_examples(config) / "ct_series.zip"))
    slice_index, slider = client.predict(upload, api_name="/dicom_load")
    before, after = _slider_images(slider)
    assert (slice_index["maximum"], slice_index["value"]) == (2, 1) and before.shape == (128, 128, 3)
    archive, summary = client.predict(upload, "ct-denoise", api_name="/dicom")
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
    ("broken.dcm", "/dicom", ("ct-denoise",)),
])
def test_bad_upload_gets_one_line_message(app, tmp_path, name, endpoint, args):
    client, _ = app
    bad = tmp_path / name
    bad.write_bytes(b"not a real file at all" * 10)
    with pytest.raises(Exception) as excinfo:
        client.predict(gradio_client.handle_file(str(bad)), *args, api_name=endpoint)
    message = str(excinfo.value)
    assert name in message and "Traceback" not in message and "\n" not in message.strip()
    assert str(tmp_path) not in message and "/gradio/" not in message, "no server paths, the file's name is enough"


def test_inspect_endpoints_label_untrained_models(app):
    client, _ = app
    heatmap, text = client.predict(None, "oasis-t", None, api_name="/routing")
    assert Path(heatmap).stat().st_size > 0 and "untrained" in text
    attention = client.predict(None, "oasis-t", None, 0, 1, 0, 8, 8, api_name="/attention")
    assert Path(attention if isinstance(attention, str) else attention["path"]).stat().st_size > 0
    pixels, tokens, text = client.predict(None, "rat-t", None, "hu", api_name="/partition")
    assert "untrained" in text and "regions" in text


def test_uploads_over_the_size_limit_are_refused(tmp_path):
    from PIL import Image

    config = DemoConfig(max_file_size="20kb", workdir=tmp_path / "demo", device="cpu")
    ui = launch("127.0.0.1", _free_port(), config=config, prevent_thread_lock=True, quiet=True)
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
