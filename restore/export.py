"""Export a training checkpoint as shipped weights: ``NAME.safetensors`` plus its model card ``NAME.json``.

The checkpoint must carry a ``"restore_card"`` entry (architecture, network config, scale,
validation metrics), which ``restore train`` adds to every checkpoint it saves. Its
``state_dict`` holds the EMA weights when training used ``WeightAveraging`` (the callback swaps
them in when saving), so the exported network is the averaged one. The card follows the schema
in ``restore.registry``; ``sha256`` is the digest of the written weight file.
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path

import torch

from .atomic import atomic_path
from .errors import InputError, OutputError
from .registry import PRESET_FAMILIES, sha256_of

CARD_KEY = "restore_card"


def _default_task(architecture: str, preset: str | None, path: Path) -> str:
    """The task of the preset the run started from, else the one task of the architecture's presets."""
    try:
        presets = importlib.import_module(PRESET_FAMILIES[architecture]).PRESETS
    except (KeyError, ImportError, AttributeError):
        presets = {}
    if preset in presets:
        return presets[preset]["task"]
    tasks = {p["task"] for p in presets.values()}
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


def export_checkpoint(ckpt: str | Path, out: str | Path, *, name: str | None = None, task: str | None = None,
                      data: str | None = None, benchmarks: list[str | Path] = (), default: bool = False) -> Path:
    """Write ``out`` (``.safetensors``) with the network weights of ``ckpt`` and the card beside it -> card path.

    ``name`` defaults to the stem of ``out``; ``task`` to the task of the preset the run started
    from, or of the architecture's presets when they all share one; ``data`` describes the
    training data in words; ``benchmarks``: ``restore bench --json`` result files, stored in the
    card under their file stems; ``default``: the card marks the model the default of its task
    and scale (``restore.registry.default_model``).
    """
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

    from safetensors.torch import save_file

    out.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().clone() for k, v in state.items()}
    _write_atomically(out, lambda tmp: save_file(tensors, str(tmp), metadata={"format": "pt"}))
    card = {
        "name": name or out.stem,
        "architecture": info["architecture"],
        "task": task,
        "scale": int(info["scale"]),
        "config": info["config"],
        "weights": out.name,
        "sha256": sha256_of(out),
        "default": default,
        "training": {
            "checkpoint": ckpt.name,
            "global_step": checkpoint.get("global_step"),
            "epoch": checkpoint.get("epoch"),
            "ema": "current_model_state" in checkpoint,
            "wall_time_s": info.get("wall_time_s"),
            "hardware": info.get("hardware"),
            "data": data,
            "config": info.get("run_config"),
        },
        "metrics": info.get("metrics", {}),
        "benchmarks": bench,
    }
    card_path = out.with_suffix(".json")
    _write_atomically(card_path, lambda tmp: tmp.write_text(json.dumps(card, indent=2) + "\n"))
    return card_path
