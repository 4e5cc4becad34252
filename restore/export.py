"""Export a training checkpoint as shipped weights: ``NAME.safetensors`` plus its model card ``NAME.json``.

The checkpoint must carry a ``"restore_card"`` entry (architecture, network config, scale,
validation metrics), which ``restore train`` adds to every checkpoint it saves. Its
``state_dict`` holds the EMA weights when training used ``WeightAveraging`` (the callback swaps
them in when saving), so the exported network is the averaged one. The card follows the schema
in ``restore.registry``; ``sha256`` is the digest of the written weight file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from .atomic import atomic_path
from .errors import InputError, OptionError, OutputError
from models.families import FAMILIES, network_class, presets

from .registry import sha256_of

CARD_KEY = "restore_card"


def _default_task(architecture: str, preset: str | None, path: Path) -> str:
    """The task of the preset the run started from, else the one task of the architecture's presets."""
    named = presets(architecture) if architecture in FAMILIES else {}
    if preset in named:
        return named[preset]["task"]
    tasks = {p["task"] for p in named.values()}
    if len(tasks) != 1:
        raise InputError(path, f"cannot tell the task of a {architecture!r} model: pass --task")
    return tasks.pop()


def _write_atomically(path: Path, write) -> None:
    """Write through a temporary name in the destination folder (``restore.atomic``), then rename."""
    try:
        with atomic_path(path) as tmp:
            write(tmp)
            os.chmod(tmp, 0o644)  # shipped files: readable by all, whatever mode the writer chose
    except OSError as exc:
        raise OutputError(path, f"cannot write ({exc.strerror or exc})") from None


def _read_benchmarks(paths: list[str | Path]) -> dict:
    """``restore bench --json`` files -> ``{file stem: results}``."""
    out = {}
    for path in map(Path, paths):
        try:
            out[path.stem] = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise InputError(path, f"cannot read benchmark results ({exc})") from None
    return out


def _calibrated_routing(path: Path, config: dict, note: str | None) -> tuple[dict, dict]:
    """(config with the routing of ``routing.json`` at ``path``, the card's ``routing`` record)."""
    from models.oasis.calibration import RoutingTable

    try:
        table = RoutingTable.load(path)
    except ValueError as exc:
        raise InputError(path, str(exc).split(": ", 1)[-1]) from None
    if len(table.layers) != config.get("layers") or any(len(h) != config.get("heads") for h in table.layers):
        raise InputError(path, f"routing of {len(table.layers)} layers does not fit the model's "
                               f"{config.get('layers')} layers of {config.get('heads')} heads")
    config = {**config, "routing": table.layers, "window": list(table.window)}
    totals = {g: sum(c[g] for c in table.counts()) for g in ("global", "intra", "window")}
    return config, {"source": "restore calibrate-heads", "file": path.name, "sha256": sha256_of(path),
                    "heads": totals, "note": note}


def _overridden_config(architecture: str, config: dict, overrides: dict, state: dict, path: Path) -> dict:
    """``config`` with ``overrides``, refused unless the network they build has exactly the
    checkpoint's weights (same names and shapes): an override may change how trained weights run
    (e.g. OASIS ``decoder_propagation_warmup``), never which weights there are."""
    config = {**config, **overrides}  # a field newer than the checkpoint is settable too; unknown ones the config refuses
    try:
        with torch.device("meta"):  # shapes only: no memory, even at 1.3B parameters
            built = network_class(architecture).from_config(dict(config)).state_dict()
    except (TypeError, ValueError) as exc:
        raise OptionError(None, f"--set: {exc}") from None
    if {k: tuple(v.shape) for k, v in built.items()} != {k: tuple(v.shape) for k, v in state.items()}:
        raise InputError(path, f"--set {', '.join(sorted(overrides))} changes the network's weights: "
                               "only settings that run the trained weights differently can be set at export")
    return config


def export_checkpoint(ckpt: str | Path, out: str | Path, *, name: str | None = None, task: str | None = None,
                      data: str | None = None, benchmarks: list[str | Path] = (), default: bool = False,
                      routing: str | Path | None = None, routing_note: str | None = None,
                      tile: int | None = None, overrides: dict | None = None) -> Path:
    """Write ``out`` (``.safetensors``) with the network weights of ``ckpt`` and the card beside it -> card path.

    ``name`` defaults to the stem of ``out``; ``task`` to the task of the preset the run started
    from, or of the architecture's presets when they all share one; ``data`` describes the
    training data in words; ``benchmarks``: ``restore bench --json`` result files, stored in the
    card under their file stems; ``default``: the card marks the model the default of its task
    and scale (``restore.registry.default_model``); ``routing``: a ``routing.json`` of
    ``restore calibrate-heads`` whose head groups replace the trained ones in the card's config
    (OASIS), recorded with ``routing_note`` (which clips, which thresholds) under ``routing``;
    ``tile``: the card's ``"tile"``, the largest sliding window (pixels) ``restore dicom`` runs the
    model in (RAT: near its training patch, see ``restore.dicom.processing.SliceProcessor``);
    ``overrides``: network config fields set at export, recorded under ``overrides``; only those
    that change how the trained weights run, not which weights there are (checked).
    """
    if tile is not None and tile < 8:
        raise OptionError(None, f"--tile must be at least 8 pixels, got {tile}")
    ckpt, out = Path(ckpt), Path(out)
    if out.suffix != ".safetensors":
        raise OutputError(out, "the weight file must end in .safetensors")
    if not ckpt.is_file():
        raise InputError(ckpt, "checkpoint not found")
    try:
        checkpoint = torch.load(ckpt, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a bad checkpoint
        raise InputError(ckpt, f"cannot read checkpoint ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None
    info = checkpoint.get(CARD_KEY) if isinstance(checkpoint, dict) else None
    if info is None:
        raise InputError(ckpt, f"no {CARD_KEY!r} entry: not a checkpoint saved by `restore train`")
    state = {k[len("net."):]: v for k, v in checkpoint["state_dict"].items() if k.startswith("net.")}
    if not state:
        raise InputError(ckpt, "no network weights (keys starting with 'net.') in its state_dict")
    task = task or _default_task(info["architecture"], info.get("preset"), ckpt)  # before anything is written
    bench = _read_benchmarks(list(benchmarks))
    config, routing_record = info["config"], None
    if overrides:
        config = _overridden_config(info["architecture"], config, overrides, state, ckpt)
    if routing is not None:
        config, routing_record = _calibrated_routing(Path(routing), config, routing_note)

    from safetensors.torch import save_file

    out.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().clone() for k, v in state.items()}
    _write_atomically(out, lambda tmp: save_file(tensors, str(tmp), metadata={"format": "pt"}))
    card = {
        "name": name or out.stem,
        "architecture": info["architecture"],
        "task": task,
        "scale": int(info["scale"]),
        "config": config,
        "weights": out.name,
        "sha256": sha256_of(out),
        "default": default,
        "training": {
            "checkpoint": ckpt.name,
            "global_step": checkpoint.get("global_step"),
            "epoch": checkpoint.get("epoch"),
            "ema": "current_model_state" in checkpoint,
            "wall_time_s": info.get("wall_time_s"),
            "cpu_time_s": info.get("cpu_time_s"),
            "hardware": info.get("hardware"),
            "data": data,
            "config": info.get("run_config"),
        },
        "metrics": info.get("metrics", {}),
        "benchmarks": bench,
    }
    if routing_record is not None:
        card["routing"] = routing_record
    if tile is not None:
        card["tile"] = int(tile)
    if overrides:
        card["overrides"] = dict(overrides)
    card_path = out.with_suffix(".json")
    _write_atomically(card_path, lambda tmp: tmp.write_text(json.dumps(card, indent=2) + "\n"))
    return card_path
