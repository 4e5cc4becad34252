"""Region partitions for region attention: label maps ``(H, W)`` with labels ``0..K-1``.

Methods (``PartitionConfig.method``):

* ``sam``: segment-anything automatic mask generator from a local checkpoint; masks sorted by
  area and painted largest first (smaller masks overwrite larger ones), uncovered pixels get one
  more label;
* ``slic`` / ``felzenszwalb``: scikit-image superpixels;
* ``hu`` (CT only, input in HU): HU bands (air, lung, fat, soft tissue, bone) on a lightly
  smoothed slice, then 4-connected components;
* ``grid``: square cells of ``grid_size`` pixels (what the network uses when given no partition);
* ``auto``: ``sam`` when a checkpoint is set, else ``hu`` for CT and ``slic`` otherwise.

Partitions are computed on the degraded input (what the network sees at test time).
``PartitionCache`` memoises them by content hash. At the attention scale, ``token_labels``
subsamples a partition to the token grid and merges regions below ``min_tokens`` into their
largest neighbour (in the published code such regions vanish or stay as 1-5 token regions).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

METHODS = ("auto", "sam", "slic", "felzenszwalb", "hu", "grid")


@dataclass
class PartitionConfig:
    """How to partition an image into regions.

    ``modality``: ``"ct"`` (input in HU), ``"mr"`` or ``"other"``; only used by ``auto``/``hu``.
    ``hu_edges``: band edges in HU separating air | lung | fat | soft tissue | bone.
    ``grid_size``: cell size in pixels. ``sam_*``: segment-anything settings (defaults as the
    RAT paper: 32 points per side, IoU 0.88, stability 0.95) and the device SAM runs on.
    """

    method: str = "auto"
    modality: str = "other"
    sam_checkpoint: str | None = None
    sam_model_type: str = "vit_b"
    sam_points_per_side: int = 32
    sam_pred_iou_thresh: float = 0.88
    sam_stability_score_thresh: float = 0.95
    sam_device: str = "cpu"
    slic_segments: int = 64
    slic_compactness: float = 0.1
    felzenszwalb_scale: float = 100.0
    felzenszwalb_min_size: int = 64
    hu_edges: tuple[float, ...] = (-900.0, -300.0, -30.0, 300.0)
    hu_smoothing_sigma: float = 1.0
    grid_size: int = 32

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"unknown partition method {self.method!r} (known: {', '.join(METHODS)})")
        self.hu_edges = tuple(float(e) for e in self.hu_edges)

    def resolved_method(self) -> str:
        if self.method != "auto":
            return self.method
        if self.sam_checkpoint:
            return "sam"
        return "hu" if self.modality == "ct" else "slic"


def relabel(labels: np.ndarray) -> np.ndarray:
    """Map arbitrary integer labels to ``0..K-1`` (order of first sorted value), int32."""
    _, inverse = np.unique(labels, return_inverse=True)
    return inverse.reshape(labels.shape).astype(np.int32)


def _unit_range(image: np.ndarray) -> np.ndarray:
    """Robustly scale to [0, 1] (0.5/99.5 percentiles) so superpixel settings fit every modality."""
    lo, hi = np.percentile(image, [0.5, 99.5])
    return np.clip((image.astype(np.float32) - lo) / max(float(hi - lo), 1e-6), 0.0, 1.0)


def grid_partition(shape: tuple[int, int], grid_size: int) -> np.ndarray:
    """Square cells of ``grid_size`` pixels, row-major labels."""
    h, w = shape
    cols = -(-w // grid_size)
    yy, xx = np.meshgrid(np.arange(h) // grid_size, np.arange(w) // grid_size, indexing="ij")
    return (yy * cols + xx).astype(np.int32)


def hu_partition(hu: np.ndarray, edges: tuple[float, ...], smoothing_sigma: float = 1.0) -> np.ndarray:
    """HU bands then connected components. ``hu``: ``(H, W)`` in Hounsfield units."""
    from scipy.ndimage import gaussian_filter
    from skimage.measure import label

    # smoothing first: on low-dose input, noise would otherwise shatter bands into specks
    smooth = gaussian_filter(hu.astype(np.float32), smoothing_sigma) if smoothing_sigma > 0 else hu
    bands = np.digitize(smooth, np.asarray(edges, dtype=np.float32))
    # connected components of each band (no pixel is background: bands + 1 >= 1); label numbers
    # them 1..K in raster order already, so no relabelling pass (a sort of every pixel) is needed
    return (label(bands + 1, background=0, connectivity=1) - 1).astype(np.int32)


def sam_paint(masks: list[dict], shape: tuple[int, int]) -> np.ndarray:
    """Paint SAM masks largest first so smaller ones overwrite; uncovered pixels get one more label."""
    labels = np.zeros(shape, dtype=np.int32)  # 0 = uncovered
    for i, m in enumerate(sorted(masks, key=lambda m: m["area"], reverse=True), start=1):
        labels[m["segmentation"]] = i
    return relabel(labels)


@lru_cache(maxsize=2)
def build_sam_generator(checkpoint: str, model_type: str, points_per_side: int, pred_iou_thresh: float,
                        stability_score_thresh: float, device: str = "cpu"):
    """A ``SamAutomaticMaskGenerator`` for a local checkpoint (cached: the model is large)."""
    from segment_anything import SamAutomaticMaskGenerator, sam_model_registry

    if not Path(checkpoint).is_file():
        raise FileNotFoundError(f"{checkpoint}: SAM checkpoint not found")
    sam = sam_model_registry[model_type](checkpoint=checkpoint).to(device).eval()
    return SamAutomaticMaskGenerator(sam, points_per_side=points_per_side, pred_iou_thresh=pred_iou_thresh,
                                     stability_score_thresh=stability_score_thresh)


def sam_partition(image: np.ndarray, generator) -> np.ndarray:
    """Partition ``image`` (``(H, W)`` or ``(H, W, C)``, any units) with a SAM mask generator."""
    unit = _unit_range(image)
    rgb = np.repeat(unit[..., None], 3, axis=-1) if unit.ndim == 2 else unit[..., :3]
    if rgb.shape[-1] < 3:
        rgb = np.repeat(rgb[..., :1], 3, axis=-1)
    masks = generator.generate((rgb * 255).round().astype(np.uint8))
    return sam_paint(masks, image.shape[:2])


def compute_partition(image: np.ndarray, config: PartitionConfig) -> np.ndarray:
    """Partition one image -> ``(H, W)`` int32 labels ``0..K-1`` covering every pixel.

    ``image``: ``(H, W)`` (gray; HU for CT) or ``(H, W, C)``, the degraded input.
    """
    method = config.resolved_method()
    shape = image.shape[:2]
    if method == "grid":
        return grid_partition(shape, config.grid_size)
    if method == "hu":
        if image.ndim != 2:
            raise ValueError("the 'hu' partition needs a single-channel CT slice in HU")
        return hu_partition(image, config.hu_edges, config.hu_smoothing_sigma)
    if method == "sam":
        if not config.sam_checkpoint:
            raise ValueError("the 'sam' partition needs a checkpoint (--sam-checkpoint)")
        generator = build_sam_generator(config.sam_checkpoint, config.sam_model_type, config.sam_points_per_side,
                                        config.sam_pred_iou_thresh, config.sam_stability_score_thresh,
                                        config.sam_device)
        return sam_partition(image, generator)
    unit = _unit_range(image)
    channel_axis = None if unit.ndim == 2 else -1
    if method == "slic":
        from skimage.segmentation import slic

        labels = slic(unit, n_segments=config.slic_segments, compactness=config.slic_compactness,
                      channel_axis=channel_axis, start_label=0, enforce_connectivity=True)
    else:
        from skimage.segmentation import felzenszwalb

        labels = felzenszwalb(unit, scale=config.felzenszwalb_scale, min_size=config.felzenszwalb_min_size,
                              channel_axis=channel_axis)
    return relabel(labels)


class PartitionCache:
    """Partitions memoised by the SHA-1 of the image bytes and the partition config.

    In memory (LRU of ``max_items``) and, with ``directory``, on disk as ``<hash>.npy`` so they
    survive between runs (SAM takes seconds per image).
    """

    def __init__(self, config: PartitionConfig, directory: str | Path | None = None, max_items: int = 1024):
        self.config = config
        self.directory = Path(directory) if directory else None
        self.max_items = max_items
        self._memory: OrderedDict[str, np.ndarray] = OrderedDict()
        self._config_key = repr(sorted(asdict(config).items())).encode()

    def key(self, image: np.ndarray) -> str:
        digest = hashlib.sha1(self._config_key)
        digest.update(str((image.shape, image.dtype.str)).encode())
        digest.update(np.ascontiguousarray(image).tobytes())
        return digest.hexdigest()

    def __call__(self, image: np.ndarray) -> np.ndarray:
        key = self.key(image)
        if key in self._memory:
            self._memory.move_to_end(key)
            return self._memory[key]
        path = self.directory / f"{key}.npy" if self.directory else None
        if path is not None and path.is_file():
            labels = np.load(path)
        else:
            labels = compute_partition(image, self.config)
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(".tmp.npy")
                np.save(tmp, labels)
                tmp.replace(path)
        self._memory[key] = labels
        if len(self._memory) > self.max_items:
            self._memory.popitem(last=False)
        return labels


def _largest_neighbours(labels: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """For every label, its 4-connected neighbour with the most pixels (-1 when none)."""
    pairs = [np.stack([labels[:, :-1].ravel(), labels[:, 1:].ravel()]),
             np.stack([labels[:-1, :].ravel(), labels[1:, :].ravel()])]
    a, b = np.concatenate(pairs, axis=1)
    keep = a != b
    a, b = np.concatenate([a[keep], b[keep]]), np.concatenate([b[keep], a[keep]])
    best = np.full(sizes.shape[0], -1, dtype=np.int64)
    if a.size:
        # sort by (source, neighbour size desc); the first row of each source is its largest neighbour
        order = np.lexsort((-sizes[b], a))
        a, b = a[order], b[order]
        first = np.r_[True, a[1:] != a[:-1]]
        best[a[first]] = b[first]
    return best


def merge_small_regions(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Merge every region smaller than ``min_size`` pixels into its largest 4-connected neighbour.

    ``labels``: ``(h, w)`` integers -> ``(h, w)`` int32 ``0..K-1``. Smallest regions merge first;
    within one pass a region that receives others does not itself move, so merges never chain or
    swap; passes repeat until no small region is left (or it has no neighbour: a single region).
    """
    labels = relabel(labels)
    while True:
        sizes = np.bincount(labels.ravel())
        small = np.flatnonzero(sizes < min_size)
        if small.size == 0 or sizes.size == 1:
            return labels
        best = _largest_neighbours(labels, sizes)
        target = np.arange(sizes.size)
        receivers: set[int] = set()
        moved: set[int] = set()
        for r in small[np.argsort(sizes[small], kind="stable")].tolist():
            t = int(best[r])
            if t < 0 or r in receivers or t in moved:
                continue
            target[r] = t
            moved.add(r)
            receivers.add(t)
        if not moved:
            return labels
        labels = relabel(target[labels])


def token_labels(regions: torch.Tensor, size: tuple[int, int], min_tokens: int) -> torch.Tensor:
    """Pixel partitions ``(B, H, W)`` -> token labels ``(B, h*w)`` at the attention scale.

    Nearest subsampling to ``size = (h, w)``, then regions under ``min_tokens`` tokens merge into
    their largest neighbour. Runs on the CPU (one host sync per call); call it once per forward
    and scale, not per layer.
    """
    small = F.interpolate(regions[:, None].float(), size=size, mode="nearest")[:, 0]
    small = small.to(device="cpu", dtype=torch.int64).numpy()
    merged = np.stack([merge_small_regions(m, min_tokens) for m in small]) if min_tokens > 1 else small
    return torch.from_numpy(merged.astype(np.int64)).reshape(regions.shape[0], -1).to(regions.device)
