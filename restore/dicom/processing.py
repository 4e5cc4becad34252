"""Run a model on DICOM slices: units <-> model units, sliding windows, regions, batching.

The job stays model-agnostic: a model is any callable ``(B, C, h, w) -> (B, C, s*h, s*w)`` in its
normalised units. :class:`SliceProcessor` converts slices from physical units to those units and
back, tiles each slice with ``models.tiling.sliding_window_restore`` (MONAI, Gaussian blending),
and, for region-attention models (RAT), computes a partition per slice and passes it as ``regions``.

Normalisation (``x = (v - lo) / (hi - lo)``), unless the model card has a ``"normalization"``
entry ``{"lo": ..., "hi": ...}`` in the slice's units:

* CT (HU): fixed window ``[-1024, 3071]`` HU (air to dense bone, the 12-bit CT range; the
  window the RAT CT models are trained in, ``models.rat.network.CT_HU_RANGE``), clipped for
  trained networks (``clip_hu``; not for the classical baselines, whose noise estimate would see
  the clipped air as less noisy);
* other grey-scale (stored units): per slice, the 0.5 and 99.5 percentiles of its pixels that are
  not padding;
* RGB: ``[0, 255]``.

The model works on a normalised copy; the result is mapped back without clamping a real value.
When the copy is not clipped (the classical baselines), the model sees values outside ``[lo, hi]``
as they are. When it is clipped (trained networks; every upscaler, whose output is an image in
[0, 1]: the bicubic baseline clamps to it), pixels outside the window (metal, the 0.5 % brightest
of a slice, values at or below -2000 HU) reach the model at the window's edge and come back with
their original values; at scale > 1 what lies beyond the window is upscaled beside the model
(bicubic, half-pixel centres, as the geometry of the derived image) and added to its output, so
the full stored range survives. One exception for denoisers (scale 1): values between a noise
floor and the window's floor (``Normalisation.noise_floor``; HU: ``(-2000, -1024)``) are not
tissue but noise around air (nothing is below -1024 HU; at 10 % dose the noise SD reaches 330 HU),
so they take the model's output like their neighbours: passed through, they came back as raw noise
(air error 183 HU RMS, fat -10 HU at 10 % dose on the flat-tissue phantom, docs/BENCHMARKS.md). Padding (the -2048 or
-3024 HU outside the scanner's field of view: PixelPaddingValue) is never spread: its pixels come
back with their own values (at scale s, as s x s blocks) and their part beyond the window is not
upscaled into their neighbours. The writer clips to what the original pixel representation can
store, and counts what it clipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from models.rat.partitions import METHODS as PARTITION_METHODS

TASK_SCALES: dict[str, int] = {"ct-denoise": 1, "mr-denoise": 1, "sr-x2": 2}
# Modalities a task processes by default (None: any); `--modalities any|LIST` overrides.
TASK_MODALITIES: dict[str, tuple[str, ...] | None] = {"ct-denoise": ("CT",), "mr-denoise": ("MR",), "sr-x2": None}


def allowed_modalities(task: str, spec: str = "task") -> tuple[str, ...] | None:
    """``spec``: ``task`` (the task's own modalities), ``any``, or a comma list such as ``CT,MR``."""
    if spec == "task":
        return TASK_MODALITIES[task]
    if spec == "any":
        return None
    return tuple(m.strip().upper() for m in spec.split(",") if m.strip())
# honest baselines, used until a shipped model card marks a trained model "default" for the task
BASELINE_MODELS: dict[str, str] = {"ct-denoise": "nlm", "mr-denoise": "nlm", "sr-x2": "bicubic"}
BASELINE_DESCRIPTIONS: dict[str, str] = {
    "nlm": "classical baseline: non-local means, no training",
    "bicubic": "classical baseline: bicubic interpolation, no training",
    "identity": "baseline: identity (output equals input)",
}
# every partition of models.rat.partitions; `restore bench quality --regions` compares them
REGION_METHODS = PARTITION_METHODS


@dataclass(frozen=True)
class Normalisation:
    """``units -> [0, 1]`` by ``(v - lo) / (hi - lo)``; ``lo``/``hi`` None: per-slice percentiles;
    ``clip``: the model gets values clipped to [0, 1]; ``noise_floor``: values in
    ``(noise_floor, lo)`` are noise around the floor and take a denoiser's output, values at or
    below it (out-of-field padding) come back unchanged (see the module docstring for the rest)."""

    lo: float | None = None
    hi: float | None = None
    percentiles: tuple[float, float] = (0.5, 99.5)
    clip: bool = False
    noise_floor: float | None = None

    @classmethod
    def default(cls, units: str, card: dict | None = None, clip_hu: bool = True) -> "Normalisation":
        spec = (card or {}).get("normalization")
        if spec:
            floor = spec.get("noise_floor")
            return cls(float(spec["lo"]), float(spec["hi"]), clip=bool(spec.get("clip", False)),
                       noise_floor=None if floor is None else float(floor))
        # -2000 HU: below air's noise even at 10 % dose, at or above the usual padding values
        hu = cls(-1024.0, 3071.0, clip=clip_hu, noise_floor=-2000.0)
        return {"HU": hu, "RGB": cls(0.0, 255.0)}.get(units, cls())

    def bounds(self, image: np.ndarray, padding: np.ndarray | None = None) -> tuple[float, float]:
        """``(lo, hi)`` for one slice ``(H, W[, C])``; percentiles leave ``padding`` (``(H, W)`` bool) out."""
        if self.lo is not None and self.hi is not None:
            return self.lo, self.hi
        real = image if padding is None or padding.all() else image[~padding]
        lo, hi = (float(v) for v in np.percentile(real, self.percentiles))
        return lo, hi if hi > lo else lo + 1.0  # flat slice: any non-zero range round-trips


@dataclass(frozen=True)
class ProcessingConfig:
    """``tile``: sliding-window size in input pixels; ``overlap``: window overlap fraction;
    ``batch_size``: slices per model call (and windows per call); ``regions``: partition method for
    region-attention models (ignored by others); ``sam_checkpoint``: for ``regions="sam"``."""

    tile: int = 512
    overlap: float = 0.25
    batch_size: int = 4
    regions: str = "auto"
    sam_checkpoint: str | None = None


class SliceProcessor:
    """Apply ``model`` to slices in physical units.

    ``model``: ``nn.Module`` in eval mode, ``forward(x)`` or ``forward(x, regions=...)`` on
    ``(B, C, h, w)``; ``scale``: its output/input size ratio; ``card``: its model card, whose
    ``"tile"`` (pixels) caps the sliding window (a model whose global operations, such as RAT's
    channel attention pooling the whole window, learnt the statistics of small training patches
    is more accurate on windows near that size: rat-s-ct 2026-12-01, trained on 64 px, gains
    1.1 dB at 5 HU noise and loses 1 HU of soft-tissue bias with 128 px windows instead of 512); ``uses_regions``: pass a partition;
    ``in_channels``: the channels the model takes (None: any, e.g. the classical baselines);
    ``clip_hu``: clip HU to the normalisation window (see the module docstring).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        scale: int,
        card: dict | None = None,
        config: ProcessingConfig = ProcessingConfig(),
        uses_regions: bool = False,
        in_channels: int | None = None,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        clip_hu: bool = True,
    ):
        self.device = torch.device(device)
        if self.device.type == "cpu" and isinstance(model, nn.Module):
            # oneDNN's convolutions and the channel LayerNorms run on NHWC without a layout copy
            # per layer: rat-s-ct 1.24x faster on 2 CPU threads, the same output to 4e-7
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self.clip_hu = clip_hu
        self.scale = scale
        self.card = card or {}
        self.config = config
        self.uses_regions = uses_regions
        self.in_channels = in_channels
        self.dtype = dtype

    def unsupported(self, modality: str, channels: int) -> str | None:
        """Why slices of ``modality`` with ``channels`` samples per pixel cannot be processed, or None.

        Checked once per series before any pixel is read, so that a folder mixing modalities
        skips the series the model cannot take (one line each) instead of aborting the job.
        """
        if self.in_channels is not None and channels != self.in_channels:
            return f"unsupported by the model: it takes {self.in_channels}-channel slices, the series has {channels}"
        if self.uses_regions and self.config.regions == "hu" and (modality != "CT" or channels != 1):
            return f"unsupported region partition: 'hu' needs single-channel CT, the series is {modality} ({channels} channel(s))"
        return None

    def __call__(self, frames: np.ndarray, units: str, modality: str = "", padding: np.ndarray | None = None) -> np.ndarray:
        """``(N, H, W)`` or ``(N, H, W, 3)`` float32 in ``units`` -> ``(N, sH, sW[, 3])`` float32 in ``units``.

        ``padding``: ``(N, H, W)`` bool, True at padding pixels (``restore.io.dicom.padding_mask``),
        or None: none (see the module docstring).
        """
        norm = Normalisation.default(units, self.card, self.clip_hu)
        # an upscaler's output is an image in [0, 1] (bicubic clamps to it): it always gets the
        # clipped copy, and what lies beyond the window is upscaled beside it
        clip = norm.clip or self.scale > 1
        out = []
        for start in range(0, frames.shape[0], self.config.batch_size):
            batch = frames[start : start + self.config.batch_size]
            pad = None if padding is None else padding[start : start + self.config.batch_size]
            bounds = np.array([norm.bounds(img, None if pad is None else pad[i]) for i, img in enumerate(batch)])
            lo = bounds[:, 0].reshape(-1, *([1] * (batch.ndim - 1)))
            span = (bounds[:, 1] - bounds[:, 0]).reshape(lo.shape)
            batch_in = np.clip(batch, lo, lo + span) if clip else batch  # partitions see what the model sees
            x = ((batch_in - lo) / span).astype(np.float32)
            x = x[:, None] if x.ndim == 3 else np.moveaxis(x, -1, 1)  # -> (B, C, H, W)
            regions = self._regions(batch_in, modality) if self.uses_regions else None
            y = self._infer(torch.from_numpy(np.ascontiguousarray(x)), regions).numpy()
            y = y[:, 0] if frames.ndim == 3 else np.moveaxis(y, 1, -1)
            y = (y.astype(np.float64) * span + lo).astype(np.float32)
            beyond = batch - batch_in  # float32 (N, H, W[, 3]): the part of each value outside the window
            if norm.noise_floor is not None and self.scale == 1:
                beyond[(batch < lo) & (batch > norm.noise_floor)] = 0.0
            if pad is not None:
                beyond[pad] = 0.0
            if self.scale == 1:
                y = np.where(beyond != 0, batch, y)
            else:
                y += upscale(beyond, self.scale, "bicubic")
            if pad is not None and pad.any():
                y = np.where(upscale(pad, self.scale, "nearest"), upscale(batch, self.scale, "nearest"), y)
            out.append(y)
        return np.concatenate(out)

    @torch.inference_mode()
    def _infer(self, x: torch.Tensor, regions: torch.Tensor | None) -> torch.Tensor:
        """``(B, C, H, W)`` normalised slices (and ``(B, H, W)`` labels) -> ``(B, C, sH, sW)`` float32 on CPU."""
        from models.tiling import sliding_window_restore

        # the card's "tile" caps the window (see the class docstring)
        tile = min(self.config.tile, int(self.card.get("tile") or self.config.tile))
        x = x.to(self.device, self.dtype)
        if self.device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        y = sliding_window_restore(self.model, x, regions, window=tile,
                                   overlap=self.config.overlap, batch_size=self.config.batch_size)
        return y.float().cpu()

    def _regions(self, batch: np.ndarray, modality: str) -> torch.Tensor:
        from models.rat.partitions import PartitionConfig, compute_partition

        config = PartitionConfig(
            method=self.config.regions,
            modality={"CT": "ct", "MR": "mr"}.get(modality, "other"),
            sam_checkpoint=self.config.sam_checkpoint,
        )
        return torch.stack([torch.from_numpy(compute_partition(img, config).astype(np.int64)) for img in batch])


def upscale(images: np.ndarray, scale: int, mode: str) -> np.ndarray:
    """``(N, H, W[, C])`` -> ``(N, sH, sW[, C])``, same dtype. ``mode``: ``"nearest"`` (each pixel
    an s x s block; any dtype) or ``"bicubic"`` (half-pixel centres, unclamped; float)."""
    if scale == 1:
        return images
    if mode == "nearest":
        return images.repeat(scale, axis=1).repeat(scale, axis=2)
    x = torch.from_numpy(np.ascontiguousarray(images[:, None] if images.ndim == 3 else np.moveaxis(images, -1, 1)))
    y = torch.nn.functional.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False).numpy()
    return y[:, 0] if images.ndim == 3 else np.moveaxis(y, 1, -1)


class _ImageAdapter(nn.Module):
    """Runs a ``video-sr`` model (``(B, T, C, h, w)``) on images as one-frame clips."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        self.scale = net.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x[:, None])[:, 0]


@dataclass(frozen=True)
class ModelChoice:
    """The model a DICOM job runs: registry ``name``, whether it is a baseline, and a description."""

    name: str
    baseline: bool
    description: str


def choose_model(task: str, name: str | None, weights: str | None = None) -> ModelChoice:
    """The model for ``task``: ``name`` if given, else a shipped default, else the task's baseline;
    ``weights`` (user weights for ``name``) only changes the description."""
    from restore.registry import DEFAULT_VIDEO_MODEL, default_model, get_entry

    if task not in TASK_SCALES:
        raise ValueError(f"unknown task {task!r} (known: {', '.join(TASK_SCALES)})")
    if name is None:
        shipped = default_model(task, TASK_SCALES[task])
        name = BASELINE_MODELS[task] if shipped == DEFAULT_VIDEO_MODEL else shipped
    entry = get_entry(name)
    baseline = entry.source == "built-in"
    source = f"weights {Path(weights).name}" if weights else entry.source
    description = BASELINE_DESCRIPTIONS.get(name, f"{entry.architecture} model ({source})")
    return ModelChoice(name, baseline, description)


def build_processor(
    task: str,
    choice: ModelChoice,
    *,
    weights: str | None = None,
    config: ProcessingConfig = ProcessingConfig(),
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> SliceProcessor:
    """Load the chosen model for ``task`` (checking its scale) and wrap it in a :class:`SliceProcessor`."""
    from restore.errors import ModelError
    from restore.registry import get_entry, load_model, read_card

    entry = get_entry(choice.name)
    scale = TASK_SCALES[task]
    model = load_model(choice.name, weights, scale=scale if "scale" in entry.config else None, device=device, dtype=dtype)
    if int(getattr(model, "scale", 1)) != scale:
        raise ModelError(weights, f"model {choice.name!r} is x{getattr(model, 'scale', 1)}, task {task} needs x{scale}")
    # networks of models/ describe themselves (config_dict); the classical baselines take any channels
    in_channels = model.config_dict().get("in_channels") if hasattr(model, "config_dict") else None
    if entry.task == "video-sr":
        model = _ImageAdapter(model)
    card = entry.card
    if weights is not None and (side := Path(weights).with_suffix(".json")).is_file():
        card = read_card(side)
    return SliceProcessor(
        model, scale=scale, card=card, config=config, uses_regions=entry.architecture == "rat",
        in_channels=in_channels, device=device, dtype=dtype, clip_hu=entry.source != "built-in",
    )
