"""restore.export: weights + model card from a `restore train` checkpoint."""

from __future__ import annotations

import json

import pytest
import torch

from models.rat import PRESETS, RAT
from restore.errors import InputError, OptionError
from restore.export import CARD_KEY, export_checkpoint


def _rat_checkpoint(path, preset: str | None):
    net = RAT.from_config(PRESETS["rat-t"]["config"])
    card = {"architecture": "rat", "config": net.config_dict(), "scale": 1, "preset": preset, "metrics": {}}
    torch.save({"state_dict": {f"net.{k}": v for k, v in net.state_dict().items()}, CARD_KEY: card,
                "global_step": 5}, path)
    return path


def test_task_comes_from_the_preset_the_run_started_from(tmp_path):
    # RAT presets span ct-denoise and mr-denoise: the architecture alone does not tell the task
    ckpt = _rat_checkpoint(tmp_path / "last.ckpt", "rat-s-mr")
    card = json.loads(export_checkpoint(ckpt, tmp_path / "rat.safetensors").read_text())
    assert card["task"] == "mr-denoise" and card["training"]["global_step"] == 5
    assert "tile" not in card
    card = json.loads(export_checkpoint(ckpt, tmp_path / "rat.safetensors", tile=128).read_text())
    assert card["tile"] == 128  # restore dicom's window cap


def test_an_unknown_task_fails_before_anything_is_written(tmp_path):
    ckpt = _rat_checkpoint(tmp_path / "last.ckpt", None)
    with pytest.raises(InputError, match="pass --task"):
        export_checkpoint(ckpt, tmp_path / "out" / "rat.safetensors")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    card = json.loads(export_checkpoint(ckpt, tmp_path / "rat.safetensors", task="ct-denoise").read_text())
    assert card["task"] == "ct-denoise"


def _oasis_checkpoint(path):
    from models.oasis import OASIS
    from models.oasis import PRESETS as OASIS_PRESETS

    net = OASIS.from_config(OASIS_PRESETS["oasis-t"]["config"])
    card = {"architecture": "oasis", "config": net.config_dict(), "scale": 4, "preset": None, "metrics": {}}
    torch.save({"state_dict": {f"net.{k}": v for k, v in net.state_dict().items()}, CARD_KEY: card}, path)
    return path


def test_calibrated_routing_replaces_the_trained_one_in_the_card_and_in_the_loaded_model(tmp_path):
    from models.oasis.calibration import RoutingTable, attention_modules
    from restore.registry import load_model

    routing = tmp_path / "routing.json"
    RoutingTable([["window", "window"], ["global", "intra"]], window=(1, 3, 3)).save(routing)
    out = tmp_path / "oasis-t-x4.safetensors"
    card = json.loads(export_checkpoint(_oasis_checkpoint(tmp_path / "last.ckpt"), out, routing=routing,
                                        routing_note="world.mp4, default thresholds").read_text())
    assert card["config"]["routing"] == [["window", "window"], ["global", "intra"]]
    assert card["config"]["window"] == [1, 3, 3]
    assert card["routing"]["heads"] == {"global": 1, "intra": 1, "window": 2}
    assert card["routing"]["note"] == "world.mp4, default thresholds"
    model = load_model("oasis-t", weights=out)
    assert [m.routing for m in attention_modules(model)] == [["window", "window"], ["global", "intra"]]


def test_routing_of_another_shape_is_refused(tmp_path):
    from models.oasis.calibration import RoutingTable

    routing = tmp_path / "routing.json"
    RoutingTable([["window"] * 3] * 2).save(routing)
    with pytest.raises(InputError, match="does not fit"):
        export_checkpoint(_oasis_checkpoint(tmp_path / "last.ckpt"), tmp_path / "o.safetensors", routing=routing)


def _propagating_oasis_checkpoint(path):
    from models.oasis import OASIS
    from models.oasis import PRESETS as OASIS_PRESETS

    net = OASIS.from_config(dict(OASIS_PRESETS["oasis-t"]["config"], decoder_propagation="bidirectional"))
    config = net.config_dict()
    del config["decoder_propagation_warmup"]  # a checkpoint saved before the field existed
    card = {"architecture": "oasis", "config": config, "scale": 4, "preset": None, "metrics": {}}
    torch.save({"state_dict": {f"net.{k}": v for k, v in net.state_dict().items()}, CARD_KEY: card}, path)
    return path


def test_overrides_set_how_the_weights_run_and_are_recorded(tmp_path):
    from models.oasis.propagation import BidirectionalPropagation
    from restore.registry import load_model

    out = tmp_path / "oasis-t-x4.safetensors"
    ckpt = _propagating_oasis_checkpoint(tmp_path / "last.ckpt")
    card = json.loads(export_checkpoint(ckpt, out, overrides={"decoder_propagation_warmup": 2}).read_text())
    assert card["config"]["decoder_propagation_warmup"] == 2
    assert card["overrides"] == {"decoder_propagation_warmup": 2}
    model = load_model("oasis-t", weights=out)
    assert [m.warmup for m in model.modules() if isinstance(m, BidirectionalPropagation)] == [2]


@pytest.mark.parametrize("overrides, error, message", [
    ({"decoder_blocks": 4}, InputError, "changes the network's weights"),  # more weights than trained
    ({"no_such_field": 1}, OptionError, "unknown OASIS config key"),
    ({"decoder_propagation_warmup": -1}, OptionError, "decoder_propagation_warmup"),
])
def test_overrides_that_change_the_weights_or_do_not_exist_are_refused(tmp_path, overrides, error, message):
    out = tmp_path / "out" / "o.safetensors"
    with pytest.raises(error, match=message):
        export_checkpoint(_propagating_oasis_checkpoint(tmp_path / "last.ckpt"), out, overrides=overrides)
    assert not out.parent.exists()
