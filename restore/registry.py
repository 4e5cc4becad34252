"""Model registry: names -> architectures, presets and shipped weights.

Three sources of models, listed by ``restore models``:

* built-in: ``bicubic`` (always available, no weights);
* presets: architecture configs published by a model family (``PRESETS`` in ``models.<family>``),
  e.g. ``oasis-s``; they need ``--weights`` until trained weights ship;
* shipped weights: ``weights/NAME.safetensors`` with a model card ``weights/NAME.json``.

A model card is JSON with at least::

    {"name": "oasis-s-x4", "architecture": "oasis", "task": "video-sr", "scale": 4,
     "config": {...architecture config...}, "weights": "oasis-s-x4.safetensors",
     "sha256": "<hex digest of the weights file>", "training": {...}, "metrics": {...}}

Every network here follows one calling convention, so the engine can run any of them:
``forward(x)`` takes ``(B, T, C, h, w)`` for ``video-sr`` models and ``(B, C, h, w)`` for image
models, floats in [0, 1] (image models for CT take normalised HU, see their card), and returns the
same layout at ``scale`` times the size. Architectures expose ``from_config(dict)`` and
``config_dict()``.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from models.families import FAMILIES, network_class, presets
from models.weights import read_state_dict

from .errors import ModelError

DEFAULT_VIDEO_MODEL = "bicubic"


@dataclass(frozen=True)
class ModelEntry:
    """One row of ``restore models``.

    ``weights`` is None for the built-in baseline and for presets without trained weights;
    ``test_only`` marks presets for tests and smoke runs (``oasis-t``), which ``restore models``
    and the demo do not offer.
    """

    name: str
    architecture: str
    task: str
    scale: int
    config: dict
    source: str
    weights: Path | None = None
    card: dict = field(default_factory=dict)
    test_only: bool = False

    @property
    def needs_weights(self) -> bool:
        return self.source != "built-in" and self.weights is None


def weights_dir() -> Path:
    """Folder of shipped weights: ``$RESTORE_WEIGHTS_DIR`` or ``weights/`` at the repository root."""
    env = os.environ.get("RESTORE_WEIGHTS_DIR")
    if env:
        return Path(env)
    return Path(importlib.import_module("models").__path__[0]).resolve().parent / "weights"


def _preset_entries() -> list[ModelEntry]:
    entries = []
    for family in FAMILIES:
        for name, preset in presets(family).items():
            entries.append(
                ModelEntry(
                    name=name,
                    architecture=family,
                    task=preset["task"],
                    scale=int(preset["config"].get("scale", 1)),
                    config=dict(preset["config"]),
                    source="preset (untrained: pass --weights)",
                    test_only=bool(preset.get("test_only", False)),
                )
            )
    return entries


def read_card(path: Path) -> dict:
    """Read and validate a model card (JSON) -> dict; raises ``ModelError`` naming the file."""
    try:
        card = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(path, f"unreadable model card ({exc})") from None
    missing = [k for k in ("name", "architecture", "task", "scale", "config") if k not in card]
    if missing:
        raise ModelError(path, f"model card lacks {', '.join(missing)}")
    return card


def _shipped_entries() -> list[ModelEntry]:
    entries = []
    folder = weights_dir()
    for card_path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        card = read_card(card_path)
        weights = card_path.with_name(card.get("weights", card_path.stem + ".safetensors"))
        entries.append(
            ModelEntry(
                name=card["name"],
                architecture=card["architecture"],
                task=card["task"],
                scale=int(card["scale"]),
                config=dict(card["config"]),
                source=f"weights/{weights.name}",
                weights=weights,
                card=card,
            )
        )
    return entries


def list_models() -> list[ModelEntry]:
    """Every known model: ``bicubic`` x2/x4, shipped weights, then untrained presets."""
    builtin = [
        ModelEntry("bicubic", "bicubic", "video-sr", 4, {"scale": 4}, "built-in"),
        ModelEntry("identity", "identity", "image", 1, {}, "built-in"),
        ModelEntry("nlm", "nlm", "image-denoise", 1, {}, "built-in"),
    ]
    shipped = _shipped_entries()
    shipped_names = {e.name for e in shipped}
    presets = [e for e in _preset_entries() if e.name not in shipped_names]
    return builtin + shipped + presets


def default_model(task: str, scale: int) -> str:
    """The default model for ``task`` at ``scale``: a shipped model whose card marks it
    ``"default": true``, else the baseline (``bicubic`` for video SR)."""
    for entry in _shipped_entries():
        if entry.task == task and entry.scale == scale and entry.card.get("default"):
            return entry.name
    return DEFAULT_VIDEO_MODEL


def get_entry(name: str) -> ModelEntry:
    for entry in list_models():
        if entry.name == name:
            return entry
    known = ", ".join(e.name for e in list_models())
    raise ModelError(None, f"unknown model {name!r} (known: {known})")


def sha256_of(path: Path, chunk_bytes: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk_bytes):
            digest.update(block)
    return digest.hexdigest()


def load_state_dict(path: str | Path, expected_sha256: str | None = None) -> dict[str, torch.Tensor]:
    """``models.weights.read_state_dict`` with errors as ``ModelError``; ``expected_sha256`` is checked first when given."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(path, "weight file not found")
    if expected_sha256 and sha256_of(path) != expected_sha256:
        raise ModelError(path, "sha256 does not match the model card: corrupt or replaced weight file")
    try:
        return read_state_dict(path)
    except ValueError as exc:
        raise ModelError(path, str(exc)) from None


def build_model(architecture: str, config: dict) -> nn.Module:
    """Instantiate an architecture (a key of ``models.families.FAMILIES``) from its config dict (random weights)."""
    try:
        cls = network_class(architecture)
    except KeyError as exc:
        raise ModelError(None, exc.args[0]) from None
    return cls.from_config(config)


def load_model(
    name: str = DEFAULT_VIDEO_MODEL,
    weights: str | Path | None = None,
    *,
    scale: int | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> nn.Module:
    """Build model ``name`` in eval mode on ``device``/``dtype``, with its weights loaded.

    ``weights`` overrides the shipped file; a model card ``<weights stem>.json`` beside a user
    file is honoured (architecture config, sha256). ``scale`` overrides a preset's scale (only for
    models whose config has one; a shipped model's scale is fixed by its weights).
    """
    entry = get_entry(name)
    config = dict(entry.config)
    card = entry.card
    weights_path = Path(weights) if weights is not None else entry.weights
    if weights is not None:
        side_card = Path(weights).with_suffix(".json")
        if side_card.is_file():
            card = read_card(side_card)
            config = dict(card["config"])
    if scale is not None and "scale" in config and int(config["scale"]) != scale:
        if weights_path is not None and card:
            raise ModelError(weights_path, f"model is x{config['scale']}, but --scale {scale} was asked for")
        config["scale"] = scale
    model = build_model(entry.architecture, config)
    if weights_path is None and entry.needs_weights:
        raise ModelError(None, f"model {name!r} has no trained weights shipped yet: pass --weights PATH")
    if weights_path is not None:
        state = load_state_dict(weights_path, card.get("sha256") if card else None)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise ModelError(weights_path, f"weights do not fit {name!r}: {str(exc).splitlines()[0]}") from None
    return model.eval().to(device=device, dtype=dtype)
