"""The one table of network families: architecture name -> network class and its presets.

A model card's ``architecture`` is a key of ``FAMILIES``. Every family's network builds from a
plain config dict (``from_config``), gives it back (``config_dict``), loads a state dict read by
``models.weights.read_state_dict`` and follows the calling convention of ``restore.registry``;
``tests/models/test_families.py`` checks each one. Classes and presets are imported lazily, so
listing models stays fast.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class Family:
    """``network``: ``"module:Class"``; ``presets``: module with ``PRESETS: {name: {"task", "config"}}``, or None."""

    network: str
    presets: str | None = None


FAMILIES: dict[str, Family] = {
    "bicubic": Family("models.bicubic:Bicubic"),
    "edsr": Family("models.edsr:EDSR", presets="models.edsr"),
    "fsrcnn": Family("models.fsrcnn:FSRCNN", presets="models.fsrcnn"),
    "identity": Family("models.classical:Identity"),
    "nlm": Family("models.classical:NonLocalMeans"),
    "oasis": Family("models.oasis:OASIS", presets="models.oasis"),
    "rat": Family("models.rat:RAT", presets="models.rat"),
    "srvgg": Family("models.srvgg:SRVGG", presets="models.srvgg"),
}


def network_class(architecture: str) -> type[nn.Module]:
    """The network class of ``architecture``; ``KeyError`` naming the known ones if there is none."""
    try:
        module_name, class_name = FAMILIES[architecture].network.split(":")
    except KeyError:
        raise KeyError(f"unknown architecture {architecture!r} (known: {', '.join(FAMILIES)})") from None
    return getattr(importlib.import_module(module_name), class_name)


def presets(architecture: str) -> dict[str, dict]:
    """The named presets of ``architecture`` (``{}`` for families without any)."""
    module = FAMILIES[architecture].presets
    return dict(importlib.import_module(module).PRESETS) if module else {}


def architecture_of(network: nn.Module) -> str:
    """The ``FAMILIES`` key of a network instance (what its model card records)."""
    for name, family in FAMILIES.items():
        module_name, class_name = family.network.split(":")
        if type(network).__name__ == class_name and type(network).__module__.startswith(module_name):
            return name
    raise KeyError(f"{type(network).__name__} is not a network of models.families")
