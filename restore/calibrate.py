"""``restore calibrate-heads``: assign OASIS attention heads to global / intra / window groups.

Loads the network and calibration clips, runs :func:`models.oasis.calibration.calibrate` and writes
three files: ``routing.json`` (what ``OASISConfig.routing`` reads), a per-head CSV beside it
(``<stem>.csv``) and a heat map (``<stem>.png``: layers x heads, coloured by group, each cell annotated
with the head's KL divergence to its window and to its own frame).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .atomic import atomic_path
from .errors import InputError, ModelError
from .io.formats import VIDEO_EXTENSIONS, is_video

GROUP_COLOURS = {"global": "#d62728", "intra": "#ff7f0e", "window": "#2ca02c"}


@dataclass
class ClipOptions:
    """Calibration clips: ``frames`` frames, centre-cropped (video files) or drawn (synthetic) at
    ``height`` x ``width`` LR pixels; at most ``count`` clips.

    A video frame smaller than the crop is cropped to the largest multiple of ``multiple``
    (height, width; the model's padding multiple, so that no padded pixels enter the statistics)
    that fits it, or used whole when it is smaller than one multiple.
    """

    frames: int = 9
    height: int = 64
    width: int = 64
    count: int = 4
    seed: int = 0
    multiple: tuple[int, int] = (1, 1)


def _crop_side(size: int, wanted: int, multiple: int) -> int:
    """Crop side in pixels for a frame side of ``size``: ``wanted``, or what fits (see ``ClipOptions``)."""
    if size >= wanted:
        return wanted
    return size // multiple * multiple or size


def _to_clip(frames: list[torch.Tensor], opts: ClipOptions) -> torch.Tensor:
    """(H, W, 3) uint8/uint16 frames -> (1, T, 3, h, w) float in [0, 1], centre crop."""
    clip = torch.stack(frames).permute(0, 3, 1, 2)
    scale = 65535.0 if clip.dtype == torch.uint16 else 255.0
    h, w = clip.shape[-2:]
    ch, cw = _crop_side(h, opts.height, opts.multiple[0]), _crop_side(w, opts.width, opts.multiple[1])
    top, left = (h - ch) // 2, (w - cw) // 2
    clip = clip[..., top : top + ch, left : left + cw]
    return (clip.float() / scale)[None]


def synthetic_clips(opts: ClipOptions) -> Iterator[torch.Tensor]:
    """``count`` moving test-pattern clips (1, T, 3, H, W) in [0, 1] (``restore.io.samples``)."""
    from .io.samples import sample_frame

    for i in range(opts.count):
        frames = [
            torch.from_numpy(sample_frame(t, opts.width, opts.height, seed=opts.seed + i)) for t in range(opts.frames)
        ]
        yield _to_clip(frames, opts)


def folder_clips(folder: Path, opts: ClipOptions) -> Iterator[torch.Tensor]:
    """The first ``frames`` frames of up to ``count`` videos in ``folder`` (sorted by name)."""
    from .io.video import VideoReader

    videos = sorted(p for p in Path(folder).iterdir() if is_video(p))
    if not videos:
        raise InputError(folder, f"no video files ({', '.join(sorted(VIDEO_EXTENSIONS))}) to calibrate on")
    for path in videos[: opts.count]:
        frames = []
        with VideoReader(path, expect_frames=False) as reader:
            for frame, _ in reader:
                frames.append(frame)
                if len(frames) == opts.frames:
                    break
        if len(frames) < opts.frames:
            raise InputError(path, f"has {len(frames)} frames, calibration clips need {opts.frames}")
        yield _to_clip(frames, opts)


def load_clips(source: str, opts: ClipOptions) -> Iterator[torch.Tensor]:
    """``source`` is ``"synthetic"`` or a folder of videos."""
    if source == "synthetic":
        return synthetic_clips(opts)
    if not Path(source).is_dir():
        raise InputError(source, "not a folder of videos (pass a folder, or 'synthetic')")
    return folder_clips(Path(source), opts)


def load_network(config: str, weights: str | None) -> nn.Module:
    """An OASIS network in eval mode from what a user has at hand, named by ``config``:

    * a model name of ``restore models`` (a preset, or shipped weights);
    * a model card (``weights/NAME.json``): its ``config``, with the weights file it names
      (sha256 checked);
    * a LightningCLI recipe, or a run's saved ``config.yaml`` (e.g. ``configs/oasis_t_x4.yaml``):
      the network of its ``model.init_args`` (``network``, ``wan_path``), built as the recipe's
      ``OASISModule`` builds it;
    * an OASIS config file: JSON or YAML holding ``OASISConfig`` fields.

    ``weights`` (``.safetensors``, or a torch or Lightning checkpoint such as a run's
    ``last.ckpt``) take the place of a card's; without either the weights are random (Wan's
    transformer weights for a Wan2.1 recipe).
    """
    import yaml

    from models.oasis import OASIS

    from .registry import build_model, list_models, load_model, load_state_dict, read_card

    if config in {e.name for e in list_models()}:
        model = load_model(config, weights)
        if not isinstance(model, OASIS):
            raise ModelError(None, f"{config} is a {type(model).__name__} model; calibrate-heads takes OASIS")
        return model
    path = Path(config)
    try:
        text = path.read_text()
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise ModelError(path, f"not a model name or a readable config file ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, dict):
        raise ModelError(path, "config file must hold a mapping (OASISConfig fields, a model card or a recipe)")
    expected_sha256 = None
    if "architecture" in data:
        card = read_card(path)
        if card["architecture"] != "oasis":
            raise ModelError(path, f"model card of a {card['architecture']} model; calibrate-heads takes OASIS")
        model = build_model("oasis", dict(card["config"]))
        if weights is None:
            weights = path.with_name(card.get("weights", path.stem + ".safetensors"))
            expected_sha256 = card.get("sha256")
    elif "model" in data:
        model = _recipe_network(path, data["model"])
    else:
        model = build_model("oasis", data)
    if weights is not None:
        try:
            model.load_state_dict(load_state_dict(weights, expected_sha256), strict=True)
        except RuntimeError as exc:
            raise ModelError(weights, f"weights do not fit {path.name}: {str(exc).splitlines()[0]}") from None
    return model.eval()


def _recipe_network(path: Path, model: dict) -> nn.Module:
    """The network of a recipe's ``model`` section (``class_path`` OASISModule, its ``init_args``)."""
    from models.oasis.module import build_network

    class_path = str(model.get("class_path") or "")
    if class_path.rpartition(".")[2] != "OASISModule":
        raise ModelError(path, f"recipe trains {class_path or 'no model class'}, not models.oasis.OASISModule")
    init_args = model.get("init_args") or {}
    try:
        return build_network(init_args.get("network"), init_args.get("wan_path"))
    except OSError as exc:  # the recipe's Wan2.1 folder
        raise ModelError(path, f"model.init_args.wan_path: {exc}") from None


def write_csv(table, path: Path) -> None:
    """One row per head: layer, head, group and the calibration statistics."""
    from models.oasis.calibration import STAT_KEYS

    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["layer", "head", "group", *STAT_KEYS])
        for i, heads in enumerate(table.layers):
            for h, group in enumerate(heads):
                stats = table.stats[i][h] if table.stats else {}
                writer.writerow([i, h, group, *(f"{stats[k]:.6g}" if k in stats else "" for k in STAT_KEYS)])


def write_heatmap(table, path: Path) -> None:
    """Layers x heads grid coloured by group, each cell annotated with ``kl_window`` / ``kl_intra``."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    from models.oasis.attention import HEAD_GROUPS

    n_layers, n_heads = len(table.layers), max(len(h) for h in table.layers)
    codes = [[HEAD_GROUPS.index(g) for g in heads] for heads in table.layers]
    # wide enough for the title and legend even with two heads
    fig, ax = plt.subplots(figsize=(max(5.0, 2.5 + 0.6 * n_heads), 1.6 + 0.5 * n_layers))
    ax.imshow(codes, cmap=ListedColormap([GROUP_COLOURS[g] for g in HEAD_GROUPS]), vmin=0, vmax=2, aspect="auto")
    if table.stats:
        for i, heads in enumerate(table.layers):
            for h in range(len(heads)):
                stats = table.stats[i][h]
                label = f"{stats['kl_window']:.2f}\n{stats['kl_intra']:.2f}"
                ax.text(h, i, label, ha="center", va="center", fontsize=7)
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_xticks(range(n_heads))
    ax.set_yticks(range(n_layers))
    title = "ASR head groups\ncell: KL to window / KL to own frame (nats)"
    if table.attention_effect is not None:
        title += f"\nattention changes the output by {table.attention_effect:.2f} grey levels RMS"
    ax.set_title(title, fontsize=9)
    ax.legend(handles=[Patch(color=GROUP_COLOURS[g], label=g) for g in HEAD_GROUPS],
              loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


@dataclass
class CalibrationOutputs:
    routing: Path
    csv: Path
    heatmap: Path
    counts: list[dict[str, int]] = field(default_factory=list)
    attention_effect: float | None = None
    effect_negligible: bool = False


def calibrate_heads(model: nn.Module, clips, out: str | Path, **calibrate_kwargs) -> CalibrationOutputs:
    """Calibrate ``model`` on ``clips`` and write ``out`` (routing.json), ``.csv`` and ``.png``.

    ``clips`` are moved to the model's device and dtype; ``calibrate_kwargs`` go to
    :func:`models.oasis.calibration.calibrate` (``queries_per_clip``, ``thresholds``,
    ``global_budget``, ``seed``, ``window``).
    """
    from models.oasis.calibration import calibrate

    out = Path(out)
    if not out.parent.is_dir():
        raise InputError(out.parent, "output folder does not exist")
    param = next(model.parameters(), None)
    device, dtype = (param.device, param.dtype) if param is not None else (torch.device("cpu"), torch.float32)
    table = calibrate(model, (c.to(device=device, dtype=dtype) for c in clips), **calibrate_kwargs)
    csv_path, png_path = out.with_suffix(".csv"), out.with_suffix(".png")
    table.save(out)
    write_csv(table, csv_path)
    write_heatmap(table, png_path)
    return CalibrationOutputs(out, csv_path, png_path, table.counts(), table.attention_effect, table.effect_negligible)
