import json
import pickle

import pytest
import torch
from safetensors.torch import save_file

from models.srvgg import SRVGG, SRVGGConfig
from restore.errors import ModelError
from restore.registry import default_model, get_entry, list_models, load_model, sha256_of

CONFIG = {"scale": 2, "channels": 4, "convs": 1}


@pytest.fixture
def weights_dir(tmp_path, monkeypatch):
    net = SRVGG(SRVGGConfig(**CONFIG))
    path = tmp_path / "tiny-x2.safetensors"
    save_file(net.state_dict(), str(path))
    card = {"name": "tiny-x2", "architecture": "srvgg", "task": "video-sr", "scale": 2, "config": CONFIG,
            "weights": path.name, "sha256": sha256_of(path), "default": True}
    (tmp_path / "tiny-x2.json").write_text(json.dumps(card))
    monkeypatch.setenv("RESTORE_WEIGHTS_DIR", str(tmp_path))
    return tmp_path


def test_shipped_weights_are_listed_loaded_and_can_be_the_default(weights_dir):
    entry = get_entry("tiny-x2")
    assert entry.source == "weights/tiny-x2.safetensors" and not entry.needs_weights
    model = load_model("tiny-x2")
    assert model.scale == 2 and not model.training
    assert default_model("video-sr", 2) == "tiny-x2"
    assert default_model("video-sr", 4) == "bicubic"


def test_a_changed_weight_file_fails_its_sha256_check(weights_dir):
    path = weights_dir / "tiny-x2.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="sha256 does not match"):
        load_model("tiny-x2")


def test_a_shipped_model_refuses_another_scale(weights_dir):
    with pytest.raises(ModelError, match="x2, but --scale 4"):
        load_model("tiny-x2", scale=4)


def test_bicubic_takes_any_scale_and_presets_need_weights():
    assert load_model("bicubic", scale=2).scale == 2
    with pytest.raises(ModelError, match="pass --weights"):
        load_model("oasis-t")
    with pytest.raises(ModelError, match="unknown model 'nope'"):
        load_model("nope")
    assert {"bicubic", "oasis-s", "oasis-t", "rat-s-ct"} <= {e.name for e in list_models()}


class Payload:
    def __reduce__(self):
        return (print, ("pickled code ran",))


def test_torch_files_are_loaded_weights_only(tmp_path):
    path = tmp_path / "evil.pt"
    with open(path, "wb") as fh:
        pickle.dump({"state_dict": {"x": Payload()}}, fh)
    with pytest.raises(ModelError, match="cannot read weights"):
        load_model("srvgg-compact", path)


def test_weights_of_another_shape_are_refused_with_the_file_named(tmp_path):
    path = tmp_path / "wrong.safetensors"
    save_file({"body.0.weight": torch.zeros(1)}, str(path))
    with pytest.raises(ModelError) as info:
        load_model("srvgg-compact", path)
    assert info.value.path == path and "do not fit" in info.value.cause


def test_restore_models_lists_no_test_presets_which_still_load(capsys):
    from cli import main
    from restore.registry import build_model, get_entry

    assert main(["models"]) == 0
    listed = {line.split()[0] for line in capsys.readouterr().out.splitlines()[1:]}
    assert "oasis-s" in listed and "oasis-t" not in listed and "rat-t" not in listed
    entry = get_entry("oasis-t")  # tests and smoke recipes still reach them by name
    assert entry.test_only and build_model(entry.architecture, entry.config).scale == 4
