"""Data modules from still images: pseudo-clips with camera motion, and LR/HR image pairs.

Both follow the batch contract of ``datasets.video`` (``{"hr", "lr", "index"}``, ``(B, T, 3, H, W)``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from restore.errors import InputError

from .video import IMAGE_SUFFIXES, ClipDataModule, augment, crop_box, list_files, read_image, split_sources


@dataclass
class MotionConfig:
    """Ranges of the smooth random camera motion of a pseudo-clip, per frame (drawn uniformly in +-range).

    ``shift``: translation speed in pixels/frame; ``accel``: its change in pixels/frame^2;
    ``zoom``: relative zoom per frame (0.02 = 2 %); ``rotation``: degrees per frame.
    """

    shift: float = 4.0
    accel: float = 0.5
    zoom: float = 0.02
    rotation: float = 1.0


def camera_grid(
    height: int, width: int, crop: int, frames: int, centre: tuple[float, float], motion: MotionConfig, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Sampling grid of a moving ``crop`` window over a ``height x width`` image -> ``(T, crop, crop, 2)``.

    The window centre follows ``centre + v t + a t^2 / 2`` (pixels, ``t`` counted from the middle
    frame), it zooms by ``exp(z t)`` and turns by ``r t``; ``v, a, z, r`` are drawn from ``motion``.
    The result is in ``grid_sample``'s normalised coordinates (``align_corners=False``).
    """
    draw = lambda bound, n=1: (2 * torch.rand(n, generator=generator, dtype=torch.float64) - 1) * bound  # noqa: E731
    velocity, accel = draw(motion.shift, 2), draw(motion.accel, 2)
    zoom_rate, turn_rate = draw(motion.zoom), draw(math.radians(motion.rotation))
    t = torch.arange(frames, dtype=torch.float64) - (frames - 1) / 2
    cx = centre[1] + velocity[0] * t + accel[0] * t**2 / 2
    cy = centre[0] + velocity[1] * t + accel[1] * t**2 / 2
    zoom, angle = torch.exp(zoom_rate * t), turn_rate * t
    offsets = torch.arange(crop, dtype=torch.float64) - (crop - 1) / 2
    v, u = torch.meshgrid(offsets, offsets, indexing="ij")  # window pixel offsets from its centre
    cos, sin = (torch.cos(angle) / zoom).view(-1, 1, 1), (torch.sin(angle) / zoom).view(-1, 1, 1)
    x = cx.view(-1, 1, 1) + cos * u - sin * v
    y = cy.view(-1, 1, 1) + sin * u + cos * v
    return torch.stack([(2 * x + 1) / width - 1, (2 * y + 1) / height - 1], dim=-1).float()


class ImageToVideoDataset(Dataset):
    """Pseudo-clips: a ``crop`` window moving smoothly over a still image (see ``camera_grid``).

    Training items draw the window position and motion from the worker's RNG, then flips and
    reversal; evaluation items use a motion seeded by their index, centred. Pixels outside the
    image are mirrored. ``__getitem__`` -> ``{"hr": (T, 3, crop, crop) uint8, "index": int}``.
    """

    def __init__(self, images: list[Path], num_frames: int, crop: int, motion: MotionConfig, *, train: bool, repeat: int = 1):
        self.images, self.num_frames, self.crop, self.motion = images, num_frames, crop, motion
        self.train, self.repeat = train, repeat

    def __len__(self) -> int:
        return len(self.images) * self.repeat

    def __getitem__(self, index: int) -> dict:
        path = self.images[index % len(self.images)]
        image = read_image(path)
        height, width = image.shape[:2]
        if min(height, width) < self.crop:
            raise InputError(path, f"image of {width}x{height} is smaller than the crop {self.crop}")
        top, left = crop_box(height, width, self.crop, self.train)
        centre = (top + (self.crop - 1) / 2, left + (self.crop - 1) / 2)
        generator = None if self.train else torch.Generator().manual_seed(index)
        grid = camera_grid(height, width, self.crop, self.num_frames, centre, self.motion, generator)
        source = torch.from_numpy(image).permute(2, 0, 1).float().unsqueeze(0).expand(self.num_frames, -1, -1, -1)
        clip = F.grid_sample(source, grid, mode="bicubic", padding_mode="reflection", align_corners=False)
        clip = clip.clamp(0, 255).round().to(torch.uint8)
        if self.train:
            (clip,) = augment(clip, flip=True, reverse=True)
        return {"hr": clip.contiguous(), "index": index}


class ImageToVideoDataModule(ClipDataModule):
    """Train video SR from image collections: pseudo-clips with random camera motion.

    Args:
        root: folder of images (searched recursively), e.g. ``../shared/data/images/train``.
        val_root: evaluation images; None holds out the last ``val_count`` images of ``root``.
        motion: camera motion ranges (None: the defaults).
        repeat: clips drawn per image and epoch.
        kwargs: see ``ClipDataModule``.
    """

    def __init__(
        self,
        root: str,
        val_root: str | None = None,
        val_count: int = 2,
        motion: MotionConfig | None = None,
        repeat: int = 1,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.root, self.val_root, self.val_count, self.repeat = Path(root), val_root, val_count, repeat
        self.motion = motion or MotionConfig()

    def build_datasets(self) -> tuple[Dataset, Dataset]:
        images = _images(self.root)
        val = _images(Path(self.val_root)) if self.val_root else None
        train, val = split_sources(images, val, self.val_count, self.root)
        make = lambda s, t, r: ImageToVideoDataset(s, self.num_frames, self.crop_size, self.motion, train=t, repeat=r)  # noqa: E731
        return make(train, True, self.repeat), make(val, False, 1)


def _images(root: Path) -> list[Path]:
    images = list_files(root, IMAGE_SUFFIXES)
    if not images:
        raise InputError(root, "no images found")
    return images


class PairedImageDataset(Dataset):
    """Aligned LR/HR image pairs as one-frame clips, with aligned random crops and flips when training.

    ``__getitem__`` -> ``{"lr": (1, 3, crop / scale, crop / scale) uint8, "hr": (1, 3, crop, crop) uint8, "index": int}``.
    """

    def __init__(self, pairs: list[tuple[Path, Path]], crop: int, scale: int, *, train: bool):
        self.pairs, self.crop, self.scale, self.train = pairs, crop, scale, train

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict:
        lr_path, hr_path = self.pairs[index]
        lr, hr = read_image(lr_path), read_image(hr_path)
        if (hr.shape[0], hr.shape[1]) != (lr.shape[0] * self.scale, lr.shape[1] * self.scale):
            raise InputError(hr_path, f"is {hr.shape[1]}x{hr.shape[0]}, expected x{self.scale} of {lr_path.name} ({lr.shape[1]}x{lr.shape[0]})")
        small = self.crop // self.scale
        if min(lr.shape[:2]) < small:
            raise InputError(lr_path, f"image of {lr.shape[1]}x{lr.shape[0]} is smaller than the LR crop {small}")
        top, left = crop_box(lr.shape[0], lr.shape[1], small, self.train)
        s = self.scale
        lr = torch.from_numpy(np.ascontiguousarray(lr[top : top + small, left : left + small])).permute(2, 0, 1)
        hr = torch.from_numpy(np.ascontiguousarray(hr[top * s : (top + small) * s, left * s : (left + small) * s])).permute(2, 0, 1)
        lr, hr = lr.unsqueeze(0), hr.unsqueeze(0)
        if self.train:
            lr, hr = augment(lr, hr, flip=True, reverse=False)
        return {"lr": lr.contiguous(), "hr": hr.contiguous(), "index": index}


class PairedImageDataModule(ClipDataModule):
    """LR/HR image pairs matched by relative path (file stems), as one-frame clips; no synthetic degradation.

    Args:
        lr_root, hr_root: folders of LR and HR images; HR must be exactly ``scale`` x LR.
        val_count: pairs held out (the last in name order) for evaluation.
        kwargs: see ``ClipDataModule`` (``num_frames`` is 1; ``degradation`` is unused).
    """

    def __init__(self, lr_root: str, hr_root: str, val_count: int = 1, **kwargs):
        kwargs["num_frames"] = 1
        super().__init__(**kwargs)
        self.lr_root, self.hr_root, self.val_count = Path(lr_root), Path(hr_root), val_count

    def build_datasets(self) -> tuple[Dataset, Dataset]:
        key = lambda p, root: p.relative_to(root).with_suffix("").as_posix()  # noqa: E731
        hr = {key(p, self.hr_root): p for p in _images(self.hr_root)}
        pairs = [(p, hr[key(p, self.lr_root)]) for p in _images(self.lr_root) if key(p, self.lr_root) in hr]
        if not pairs:
            raise InputError(self.lr_root, f"no image has a counterpart of the same name in {self.hr_root}")
        train, val = split_sources(pairs, None, self.val_count, self.lr_root)
        return PairedImageDataset(train, self.crop_size, self.scale, train=True), PairedImageDataset(val, self.crop_size, self.scale, train=False)
