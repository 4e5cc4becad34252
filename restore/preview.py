"""Pictures of inputs, outputs and model internals, for the web demo and reports.

Everything here returns ``(H, W, 3)`` ``uint8`` RGB arrays (or the numbers behind them) and knows
nothing about the UI: extract a video frame, window a CT slice, draw a region partition, overlay a
heat map, and compute what a model looks at (one OASIS head's attention for one query token, the
regions a RAT bottleneck attends within).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .errors import InputError

# Common CT display windows as (level, width) in HU.
WINDOW_PRESETS: dict[str, tuple[float, float]] = {
    "brain": (40.0, 80.0),
    "soft tissue": (40.0, 400.0),
    "lung": (-600.0, 1500.0),
    "bone": (400.0, 1800.0),
}


def to_rgb8(image: np.ndarray | torch.Tensor) -> np.ndarray:
    """``(H, W)``/``(H, W, C)`` uint8 or uint16 -> ``(H, W, 3)`` uint8 (16-bit scaled down, gray repeated)."""
    array = image.numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if array.dtype == np.uint16:
        array = (array.astype(np.uint32) * 255 + 32767) // 65535
    array = array.astype(np.uint8)
    if array.ndim == 2:
        array = array[..., None]
    return np.ascontiguousarray(np.repeat(array, 3, axis=-1) if array.shape[-1] == 1 else array[..., :3])


def read_frame(path: str | Path, index: int) -> np.ndarray:
    """Frame ``index`` (0-based, display order) of a video -> ``(H, W, 3)`` uint8.

    Raises ``InputError`` when the video has fewer frames.
    """
    from .io.video import VideoReader

    count = 0
    with VideoReader(path, expect_frames=False) as reader:
        for frame, _ in reader:
            if count == index:
                return to_rgb8(frame)
            count += 1
    raise InputError(path, f"has no frame {index} (it has {count} frames)")


def resize_nearest(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize ``(H, W[, C])`` to ``size = (height, width)`` by pixel repetition, so a low-resolution
    "before" image can sit beside an upscaled "after" one without being smoothed."""
    import cv2

    return cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)


def resize_bicubic(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize ``(H, W, 3)`` uint8 to ``size = (height, width)`` by bicubic interpolation: the
    "before" of a before/after view (what plain interpolation gives at the output size)."""
    import cv2

    return cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_CUBIC)


def zoom_comparison(lr: np.ndarray, before: np.ndarray, after: np.ndarray, *, crop: int = 64, zoom: int = 4,
                    centre: tuple[float, float] = (0.5, 0.5)) -> np.ndarray:
    """A magnified crop of the input, the interpolated "before" and the result side by side.

    ``lr`` is the input ``(h, w, 3)``, ``before``/``after`` the output-size images ``(H, W, 3)``;
    the crop (``crop`` output pixels square, at ``centre`` as fractions of height and width) is
    taken at the same place in all three and enlarged ``zoom`` times by pixel repetition, so every
    output pixel is visible. Returns ``(crop*zoom, 3*crop*zoom + gaps, 3)`` uint8.
    """
    height, width = after.shape[:2]
    side = max(1, min(crop, height, width))
    top = min(max(int(centre[0] * height) - side // 2, 0), height - side)
    left = min(max(int(centre[1] * width) - side // 2, 0), width - side)
    sy, sx = lr.shape[0] / height, lr.shape[1] / width
    lr_crop = lr[int(top * sy): max(int((top + side) * sy), int(top * sy) + 1),
                 int(left * sx): max(int((left + side) * sx), int(left * sx) + 1)]
    tiles = [resize_nearest(lr_crop, (side, side)), before[top:top + side, left:left + side], after[top:top + side, left:left + side]]
    gap = np.full((side * zoom, 4, 3), 255, np.uint8)
    big = [np.repeat(np.repeat(t, zoom, axis=0), zoom, axis=1) for t in tiles]
    return np.concatenate([big[0], gap, big[1], gap, big[2]], axis=1)


def save_png(path: str | Path, image: np.ndarray) -> str:
    """Write ``(H, W, 3)`` uint8 RGB as a lossless PNG -> the path (previews are never re-encoded lossily)."""
    import cv2

    if not cv2.imwrite(str(path), np.ascontiguousarray(image[..., ::-1])):
        raise OSError(f"cannot write {path}")
    return str(path)


ROUTING_COLOURS = {"global": (214, 39, 40), "intra": (255, 127, 14), "window": (44, 160, 44)}


def routing_grid(routing: list[list[str]], cell: int = 24) -> np.ndarray:
    """The routing a network runs, one row per attention layer and one cell per head, coloured by
    group (``ROUTING_COLOURS``: global red, intra-frame orange, 3D window green)."""
    rows = len(routing)
    heads = max((len(r) for r in routing), default=0)
    out = np.full((rows * cell + 1, heads * cell + 1, 3), 255, np.uint8)
    for i, layer in enumerate(routing):
        for j, group in enumerate(layer):
            out[i * cell + 1:(i + 1) * cell, j * cell + 1:(j + 1) * cell] = ROUTING_COLOURS.get(group, (128, 128, 128))
    return out


def modality_window(image: np.ndarray, modality: str, declared: tuple[float, float] | None = None) -> tuple[float, float]:
    """The display window of a slice: the file's own Window Center/Width when it declares one, the
    soft-tissue window for CT, else the 0.5-99.5 percentile range (MR and other units)."""
    if declared is not None and declared[1] > 0:
        return float(declared[0]), float(declared[1])
    if modality.upper() == "CT":
        return WINDOW_PRESETS["soft tissue"]
    return display_range(image)


def window_to_rgb(hu: np.ndarray, level: float, width: float) -> np.ndarray:
    """Window a CT slice ``(H, W)`` in HU to gray RGB: ``level - width/2`` -> 0, ``level + width/2`` -> 255."""
    if width <= 0:
        raise ValueError(f"window width must be positive, got {width}")
    unit = np.clip((np.asarray(hu, dtype=np.float32) - (level - width / 2)) / width, 0.0, 1.0)
    return to_rgb8((unit * 255).round().astype(np.uint8))


def display_range(image: np.ndarray) -> tuple[float, float]:
    """(level, width) covering the 0.5-99.5 percentiles: a window for non-CT images (MR, any units)."""
    lo, hi = np.percentile(image, [0.5, 99.5])
    return float(lo + hi) / 2, max(float(hi - lo), 1e-6)


def _palette(n: int, seed: int = 0) -> np.ndarray:
    """``n`` distinct-ish saturated colours ``(n, 3)`` uint8 (fixed seed: same labels, same colours)."""
    import colorsys

    rng = np.random.default_rng(seed)
    hues = (np.arange(n) * 0.618033988749895 + rng.uniform()) % 1.0  # golden-ratio spacing
    return np.array([colorsys.hsv_to_rgb(h, 0.75, 0.95) for h in hues], dtype=np.float32).reshape(n, 3) * 255


def partition_overlay(image: np.ndarray, labels: np.ndarray, alpha: float = 0.35) -> np.ndarray:
    """Blend one colour per region of ``labels`` ``(H, W)`` into ``image`` ``(H, W, 3)`` uint8 and draw
    region boundaries in white. ``labels`` of another size are resized (nearest)."""
    from skimage.segmentation import find_boundaries

    if labels.shape != image.shape[:2]:
        labels = resize_nearest(labels.astype(np.int32), image.shape[:2])
    colours = _palette(int(labels.max()) + 1)[labels]
    out = (1 - alpha) * image.astype(np.float32) + alpha * colours
    out[find_boundaries(labels, mode="inner")] = 255
    return out.round().astype(np.uint8)


def heat_overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """Overlay ``heat`` ``(h, w)`` (any non-negative scale; resized nearest, so tokens stay visible
    as blocks) on ``image`` ``(H, W, 3)`` uint8 with the inferno colour map."""
    import cv2

    heat = np.asarray(heat, dtype=np.float32)
    unit = heat / heat.max() if heat.max() > 0 else heat
    coloured = cv2.applyColorMap((unit * 255).round().astype(np.uint8), cv2.COLORMAP_INFERNO)[..., ::-1]
    coloured = resize_nearest(coloured, image.shape[:2])
    return ((1 - alpha) * image.astype(np.float32) + alpha * coloured).round().astype(np.uint8)


@torch.no_grad()
def head_attention(model: nn.Module, clip: torch.Tensor, layer: int, head: int, query: tuple[int, int, int]) -> torch.Tensor:
    """Attention of one OASIS head for one query token, as the routed network computes it.

    Args:
        model: an OASIS network (attention modules follow the capture contract of
            ``models.oasis.calibration``).
        clip: ``(1, T, 3, H, W)`` float in [0, 1].
        layer, head: which attention module (``modules()`` order) and head.
        query: ``(frame, y, x)`` of the query in input pixels; mapped to the token covering it.

    Returns:
        ``(t, h, w)`` float: the head's softmax over every key token of the clip's token grid;
        keys outside the head's group (its window or own frame) are 0. Sums to 1.
    """
    from models.oasis.attention import group_mask_rows
    from models.oasis.calibration import attention_modules

    modules = attention_modules(model)
    if not 0 <= layer < len(modules):
        raise ValueError(f"layer {layer} out of range (model has {len(modules)} attention layers)")
    module = modules[layer]
    if not 0 <= head < len(module.routing):
        raise ValueError(f"head {head} out of range (layer {layer} has {len(module.routing)} heads)")
    captured: dict = {}

    def observe(q: torch.Tensor, k: torch.Tensor, grid) -> None:
        captured.setdefault("qk", (q[0, head].float(), k[0, head].float(), tuple(grid)))

    saved, module.qk_observer = module.qk_observer, observe
    try:
        model(clip)
    finally:
        module.qk_observer = saved
    q, k, grid = captured["qk"]
    frames, height, width = clip.shape[1], clip.shape[-2], clip.shape[-1]
    t_q, y_q, x_q = query
    if not (0 <= t_q < frames and 0 <= y_q < height and 0 <= x_q < width):
        raise ValueError(f"query {query} lies outside the clip ({frames} frames of {width}x{height})")
    # token grid and input are aligned: each token covers an equal block of frames and pixels
    row = (t_q * grid[0] // frames) * grid[1] * grid[2] + (y_q * grid[1] // height) * grid[2] + x_q * grid[2] // width
    logits = (k @ q[row]) * q.shape[-1] ** -0.5
    allowed = group_mask_rows(grid, module.routing[head], torch.tensor([row]), module.window)[0]
    logits = logits.masked_fill(~allowed.to(logits.device), float("-inf"))
    return torch.softmax(logits, dim=0).reshape(grid).cpu()


@torch.no_grad()
def rat_regions(model: nn.Module, image: np.ndarray, regions: np.ndarray) -> np.ndarray:
    """The regions a RAT network's bottleneck attention works within, as a pixel label map.

    ``image`` ``(H, W)`` is the network input (only its size matters), ``regions`` ``(H, W)`` the
    pixel partition it would be given (``models.rat.partitions.compute_partition``). The partition
    is subsampled to the bottleneck token grid and small regions merged, exactly as the network
    does (``token_labels``, after the same replicate padding to ``model.multiple``); returns ``(h, w)``
    int labels on that grid, ``h = ceil(s*H / m) * m / 2**levels`` for model scale ``s`` and
    padding multiple ``m``.
    """
    from models.rat.partitions import token_labels

    config = model.config
    height, width = (n * int(config.scale) for n in image.shape[:2])
    padded = [math.ceil(n / model.multiple) * model.multiple for n in (height, width)]
    size = tuple(n // 2 ** len(config.enc_depths) for n in padded)
    pixels = torch.as_tensor(regions, dtype=torch.float32)[None, None]
    pixels = F.interpolate(pixels, size=(height, width), mode="nearest")
    pixels = F.pad(pixels, (0, padded[1] - width, 0, padded[0] - height), mode="replicate")[:, 0]
    return token_labels(pixels, size, int(config.min_region_tokens))[0].reshape(size).numpy()


def read_frames(path: str | Path, count: int) -> list[np.ndarray]:
    """The first ``count`` frames of a video (fewer if it is shorter) -> ``(H, W, 3)`` uint8 each."""
    from .io.video import VideoReader

    frames = []
    with VideoReader(path, expect_frames=False) as reader:
        for frame, _ in reader:
            frames.append(to_rgb8(frame))
            if len(frames) == count:
                break
    return frames


def load_volume(path: str | Path) -> tuple[np.ndarray, object]:
    """The first image series in a DICOM file, folder or ``.zip`` -> ``(Z, H, W)`` float32 (HU for CT)
    and its ``restore.io.dicom.VolumeInfo``. Raises ``InputError`` naming the file when it holds none."""
    volume, info, _ = load_volume_with_window(path)
    return volume, info


def load_volume_with_window(path: str | Path) -> tuple[np.ndarray, object, tuple[float, float] | None]:
    """:func:`load_volume` and the series' own display window ``(Window Center, Window Width)`` in
    the volume's units (the first value when several are given), or None when it declares none."""
    from .io.dicom import discover, read_series_volume

    found = discover([Path(path)])
    if not found.series:
        reason = found.skipped[0].reason if found.skipped else "no DICOM files found"
        raise InputError(path, f"no readable image series ({reason})")
    volume, info = read_series_volume(found.series[0])
    if volume.ndim == 4:  # colour (e.g. secondary capture): show its luminance
        volume = volume[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return volume.astype(np.float32), info, _declared_window(found.series[0])


def _declared_window(series) -> tuple[float, float] | None:
    try:
        ds = series.first.ref.read(stop_before_pixels=True)
        centre, width = ds.get("WindowCenter"), ds.get("WindowWidth")
        if centre is None or width is None:
            return None
        first = lambda v: float(v[0]) if hasattr(v, "__len__") and not isinstance(v, str) else float(v)  # noqa: E731
        return (first(centre), first(width)) if first(width) > 0 else None
    except Exception:  # noqa: BLE001 - a missing or odd window falls back to the modality's
        return None
