"""The trained weights in weights/: each file matches its model card, stays under 20 MB, loads
through the registry and restores a small input; each card says how it was made."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

WEIGHTS = Path(__file__).resolve().parents[1] / "weights"
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


@pytest.mark.parametrize("card_path", IN_TRAINING, ids=lambda p: p.stem)
def test_weights_in_training_warm_start_their_recipe_network(card_path):
    from models.families import network_class
    from models.weights import read_state_dict

    card = json.loads(card_path.read_text())
    assert not card["default"]
    net = network_class(card["architecture"]).from_config(card["config"])
    net.load_state_dict(read_state_dict(card_path.with_name(card["weights"])), strict=True)
