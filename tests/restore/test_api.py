"""restore.api: the Python API takes the settings of `restore upscale`, the model by name or loaded."""

from __future__ import annotations

import cv2
import numpy as np

import restore
from restore.api import UpscaleOptions, prepare_model


def _image(path):
    rng = np.random.default_rng(0)
    cv2.imwrite(str(path), rng.integers(0, 256, (12, 16, 3), dtype=np.uint8))
    return path


def test_a_model_is_given_by_name_or_loaded_and_both_give_the_same_image(tmp_path):
    src = _image(tmp_path / "in.png")
    restore.upscale_image(src, tmp_path / "name.png", model="bicubic", scale=2, device="cpu")
    loaded = prepare_model(UpscaleOptions(model="bicubic", scale=2, device="cpu"))
    restore.upscale_image(src, tmp_path / "loaded.png", model=loaded, scale=2, device="cpu")
    a, b = cv2.imread(str(tmp_path / "name.png")), cv2.imread(str(tmp_path / "loaded.png"))
    assert a.shape == (24, 32, 3) and np.array_equal(a, b)



def test_the_bicubic_banner_shows_only_where_bicubic_is_the_default(tmp_path, capsys, monkeypatch):
    import restore.batch

    src = _image(tmp_path / "in.png")
    monkeypatch.setattr(restore.batch, "default_model", lambda task, scale: "bicubic" if scale == 2 else "oasis-s-x4")
    restore.upscale([src], tmp_path / "x4.png", model="bicubic", scale=4, device="cpu", quiet=False)
    assert "baseline" not in capsys.readouterr().err
    restore.upscale([src], tmp_path / "x2.png", model="bicubic", scale=2, device="cpu", quiet=False)
    assert "no trained x2 model is the default yet" in capsys.readouterr().err
