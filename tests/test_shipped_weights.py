"""The trained weights in weights/: each file matches its model card, stays under 20 MB, loads
through the registry and restores a small input; each card says how it was made."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "weights"
CARDS = sorted(WEIGHTS.glob("*.json"))
IN_TRAINING = sorted(WEIGHTS.glob("training/*.json"))  # warm starts of runs that go on (weights/README.md)


@pytest.fixture
def shipped(monkeypatch):
    monkeypatch.setenv("RESTORE_WEIGHTS_DIR", str(WEIGHTS))


@pytest.mark.parametrize("card_path", CARDS + IN_TRAINING, ids=lambda p: p.parent.name + "/" + p.stem)
def test_card_matches_its_weights_and_records_the_run(card_path, shipped):
    from restore.registry import read_card, sha256_of

    card = read_card(card_path)
    weights = card_path.with_name(card["weights"])
    assert weights.stat().st_size <= 20 * 2**20
    assert sha256_of(weights) == card["sha256"]
    training = card["training"]
    for key in ("global_step", "wall_time_s", "hardware", "data", "config"):
        assert training.get(key), f"{card_path.name}: training.{key} is missing"
    assert card["metrics"], "validation metrics"


@pytest.mark.parametrize("card_path", CARDS, ids=lambda p: p.stem)
def test_shipped_model_loads_and_restores(card_path, shipped):
    from restore.registry import load_model

    card = json.loads(card_path.read_text())
    model = load_model(card["name"])
    s = int(card["scale"])
    with torch.no_grad():
        if card["task"] == "video-sr":
            x = torch.rand(1, 2, 3, 16, 16)
            y = model(x)
            assert y.shape == (1, 2, 3, 16 * s, 16 * s)
            # a trained SR model stays close to a plain upscale of a smooth input
            assert (y - torch.nn.functional.interpolate(x[0], scale_factor=s, mode="bicubic")[None]).abs().mean() < 0.2
        else:
            x = torch.rand(1, 1, 32, 32)
            regions = torch.zeros(1, 32, 32, dtype=torch.long)
            y = model(x, regions)
            assert y.shape == x.shape
        assert torch.isfinite(y).all()


def test_at_most_one_default_per_task_and_scale(shipped):
    from restore.registry import list_models

    defaults = [(e.task, e.scale) for e in list_models() if e.card.get("default")]
    assert len(defaults) == len(set(defaults))


def _recipe_of(run_config: Path) -> Path:
    """The recipe a run config overrides, from the command in its header comment."""
    recipe = re.search(r"--config (configs/(?!shipped/)\S+\.yaml)", run_config.read_text())
    assert recipe, f"{run_config.name}: its comment names no `--config configs/RECIPE.yaml`"
    return ROOT / recipe.group(1)


def _model_section(config: Path) -> dict:
    return yaml.safe_load(config.read_text()).get("model") or {}


# every warm start a later run begins from: the cards in weights/training, and the shipped weights
# that a run config in configs/shipped names as its init_checkpoint (oasis-s-x4 from oasis-s-bi-x4)
RUNS_FROM_WEIGHTS = [
    c for c in sorted((ROOT / "configs" / "shipped").glob("*.yaml"))
    if str((_model_section(c).get("init_args") or {}).get("init_checkpoint") or "").startswith("weights/")
]
WARM_STARTS = [pytest.param(p, id="training/" + p.stem) for p in IN_TRAINING] + [
    pytest.param(c, id="configs/shipped/" + c.stem) for c in RUNS_FROM_WEIGHTS
]


@pytest.mark.parametrize("source", WARM_STARTS)
def test_warm_starts_load_into_the_network_of_their_run(source, monkeypatch):
    """A card in weights/training loads strictly into its own network; a run config's
    init_checkpoint loads strictly into the network its recipe + overrides build (the module's
    constructor loads it), so the next run starts from those weights and not from scratch."""
    import importlib

    from models.families import network_class
    from models.weights import read_state_dict

    if source.suffix == ".json":
        card = json.loads(source.read_text())
        assert not card["default"]
        net = network_class(card["architecture"]).from_config(card["config"])
        net.load_state_dict(read_state_dict(source.with_name(card["weights"])), strict=True)
        return
    recipe, override = _model_section(_recipe_of(source)), _model_section(source)
    init_args = {**(recipe.get("init_args") or {}), **override["init_args"]}
    if isinstance(override["init_args"].get("network"), dict):  # LightningCLI merges dicts, key by key
        init_args["network"] = {**(recipe["init_args"].get("network") or {}), **override["init_args"]["network"]}
    module_path, _, class_name = (override.get("class_path") or recipe["class_path"]).rpartition(".")
    monkeypatch.chdir(ROOT)  # the configs name weights relative to the repository root
    module = getattr(importlib.import_module(module_path), class_name)(**init_args)
    expected = read_state_dict(ROOT / init_args["init_checkpoint"])
    loaded = module.net.state_dict()
    assert loaded.keys() == expected.keys()
    assert all(torch.equal(loaded[k], expected[k]) for k in expected)
