"""Data modules from still images: pseudo-clips with camera motion, and LR/HR image pairs.

Both follow the batch contract of ``datasets.video`` (``{"hr", "lr", "index"}``, ``(B, T, 3, H, W)``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from restore.errors import InputError
from restore.io.formats import IMAGE_EXTENSIONS

from .video import ClipDataModule, augment, crop_box, list_files, read_image, split_sources


@dataclass
class MotionConfig:
    """Ranges of the random motion of a pseudo-clip, in HR pixels per frame (drawn uniformly in +-range).

    ``shift``: camera (crop window) speed; ``accel``: its change per frame. With probability
    ``object_prob`` an object moves over the scene: a patch of the same image, ``object_size``
    (fractions of the crop side) large, with its own speed of up to ``object_shift``. With
    probability ``still_prob`` nothing moves: a single image upscaled as a one-frame clip sees
    its own frame as both neighbours, and so does a static shot.
    """

    shift: float = 4.0
    accel: float = 0.5
    still_prob: float = 0.2
    object_prob: float = 0.5
    object_size: tuple[float, float] = (0.25, 0.5)
    object_shift: float = 3.0


def trajectory(frames: int, speed: float, accel: float, generator: torch.Generator | None = None) -> np.ndarray:
    """Whole-pixel offsets ``(T, 2)`` (y, x) of a point moving by ``v t + a t^2 / 2``, relative to frame 0.

    ``v`` and ``a`` are drawn uniformly in ``+-speed`` and ``+-accel`` per axis; positions are
    rounded so that every frame is an exact crop of real pixels (no resampling, no soft targets).
    """
    draw = lambda bound: ((2 * torch.rand(2, generator=generator, dtype=torch.float64) - 1) * bound).numpy()  # noqa: E731
    velocity, acceleration = draw(speed), draw(accel)
    t = np.arange(frames, dtype=np.float64)[:, None]
    path = np.rint(velocity * t + acceleration * t**2 / 2).astype(np.int64)
    return path - path[0]


def _place(span: tuple[int, int], path: np.ndarray, room: tuple[int, int], train: bool,
           generator: torch.Generator | None) -> np.ndarray:
    """Absolute top-left corners ``(T, 2)`` of a ``span`` window following ``path`` inside ``room``.

    A path that does not fit is shrunk (scaled towards its start) until it does.
    """
    if span[0] > room[0] or span[1] > room[1]:
        raise ValueError(f"a {span} window does not fit in {room}")
    path = path.astype(np.float64)
    while True:
        low, high = path.min(0), path.max(0)
        slack = np.array(room) - np.array(span) - (high - low)
        if (slack >= 0).all():
            break
        path = path * 0.5
    if train:
        start = np.array([int(torch.randint(int(n) + 1, (1,), generator=generator)) for n in slack])
    else:
        start = slack.astype(np.int64) // 2
    return np.rint(path - low + start).astype(np.int64)


def pseudo_clip(image: np.ndarray, frames: int, crop: int, motion: MotionConfig, *, train: bool,
                generator: torch.Generator | None = None) -> np.ndarray:
    """A clip ``(T, crop, crop, 3)`` uint8 of exact crops of ``image`` ``(H, W, 3)``: camera and object motion.

    The crop window follows a random whole-pixel ``trajectory``; with ``motion.object_prob`` a
    second patch of the image (an ellipse, hard edged) moves over it along its own trajectory;
    with ``motion.still_prob`` the clip is one crop repeated.
    Every output pixel is a pixel of the image. Training draws positions from ``generator`` (the
    worker's RNG when None); evaluation clips are centred.
    """
    height, width = image.shape[:2]
    rand = lambda: float(torch.rand((), generator=generator))  # noqa: E731
    if motion.still_prob > 0 and rand() < motion.still_prob:
        motion = MotionConfig(shift=0.0, accel=0.0, still_prob=0.0, object_prob=0.0)
    camera = _place((crop, crop), trajectory(frames, motion.shift, motion.accel, generator), (height, width),
                    train, generator)
    clip = np.stack([image[y : y + crop, x : x + crop] for y, x in camera])
    if motion.object_prob > 0 and rand() < motion.object_prob:
        lo, hi = motion.object_size
        side = max(2, int(round(crop * (lo + (hi - lo) * rand()))))
        source = _place((side, side), np.zeros((1, 2), np.int64), (height, width), True, generator)[0]
        patch = image[source[0] : source[0] + side, source[1] : source[1] + side]
        yy, xx = np.mgrid[:side, :side] - (side - 1) / 2
        mask = (yy**2 + xx**2) <= (side / 2) ** 2
        # the object's path relative to the camera (it moves in the frame, not with the scene)
        where = _place((side, side), trajectory(frames, motion.object_shift, 0.0, generator), (crop, crop),
                       True, generator)
        for frame, (y, x) in zip(clip, where):
            frame[y : y + side, x : x + side][mask] = patch[mask]
    return clip


def zoom_out(image: np.ndarray, factor: float, min_side: int) -> np.ndarray:
    """``image`` ``(H, W, 3)`` uint8 resized by ``factor`` <= 1 (area averaging), never below ``min_side``.

    Area averaging is the anti-aliased resize that adds no ringing; it also averages away the
    blocking and softness of JPEG photographs, so a zoomed-out image is a cleaner, more detailed
    HR target per pixel than the original.
    """
    height, width = image.shape[:2]
    factor = max(factor, min_side / min(height, width))
    if factor >= 1.0:
        return image
    size = (max(min_side, round(width * factor)), max(min_side, round(height * factor)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


class ImageToVideoDataset(Dataset):
    """Pseudo-clips from still images: exact crops along camera and object motion (see ``pseudo_clip``).

    Training items first zoom the image out by a factor drawn uniformly in ``zoom`` (``(1, 1)``:
    never; see ``zoom_out``), then draw the motion from the worker's RNG, then one of the 8
    dihedral transforms and a random temporal reversal; evaluation items use the image as it is
    and a motion seeded by their index, centred.
    ``__getitem__`` -> ``{"hr": (T, 3, crop, crop) uint8, "index": int}``.
    """

    def __init__(self, images: list[Path], num_frames: int, crop: int, motion: MotionConfig, *, train: bool,
                 repeat: int = 1, zoom: tuple[float, float] = (1.0, 1.0)):
        if not 0 < zoom[0] <= zoom[1] <= 1:
            raise ValueError(f"zoom range {zoom} must satisfy 0 < low <= high <= 1")
        self.images, self.num_frames, self.crop, self.motion = images, num_frames, crop, motion
        self.train, self.repeat, self.zoom = train, repeat, zoom

    def __len__(self) -> int:
        return len(self.images) * self.repeat

    def __getitem__(self, index: int) -> dict:
        path = self.images[index % len(self.images)]
        image = read_image(path)
        height, width = image.shape[:2]
        if min(height, width) < self.crop:
            raise InputError(path, f"image of {width}x{height} is smaller than the crop {self.crop}")
        generator = None if self.train else torch.Generator().manual_seed(index)
        if self.train and self.zoom[0] < 1:
            low, high = self.zoom
            image = zoom_out(image, low + (high - low) * float(torch.rand(())), self.crop)
        clip = pseudo_clip(image, self.num_frames, self.crop, self.motion, train=self.train, generator=generator)
        clip = torch.from_numpy(clip).permute(0, 3, 1, 2)
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
        zoom: range of the factor training images are zoomed out by before cropping (``(1, 1)``:
            never; ``(0.5, 1)``: down to half size); more distinct HR content from few photographs.
        kwargs: see ``ClipDataModule``.
    """

    def __init__(
        self,
        root: str,
        val_root: str | None = None,
        val_count: int = 2,
        motion: MotionConfig | None = None,
        repeat: int = 1,
        zoom: tuple[float, float] = (1.0, 1.0),
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.root, self.val_root, self.val_count, self.repeat = Path(root), val_root, val_count, repeat
        self.zoom = tuple(zoom)
        self.motion = motion or MotionConfig()

    def build_datasets(self) -> tuple[Dataset, Dataset]:
        images = _images(self.root)
        val = _images(Path(self.val_root)) if self.val_root else None
        train, val = split_sources(images, val, self.val_count, self.root)
        make = lambda s, t, r: ImageToVideoDataset(s, self.num_frames, self.crop_size, self.motion, train=t, repeat=r,  # noqa: E731
                                                   zoom=self.zoom)
        return make(train, True, self.repeat), make(val, False, 1)


def _images(root: Path) -> list[Path]:
    images = list_files(root, IMAGE_EXTENSIONS)
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
