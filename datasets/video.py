"""Data modules for video super-resolution: the shared batch contract and ``VideoClipDataModule``.

**Batch contract** (what ``training_step`` receives, on the training device)::

    {"hr": (B, T, 3, H, W) float32 in [0, 1],
     "lr": (B, T, 3, H / scale, W / scale) float32 in [0, 1],
     "index": (B,) int64, the dataset item of each clip}

Datasets yield ``uint8`` HR clips ``(T, 3, H, W)`` (4x less to copy between processes and to
the GPU). The LR clips are made **on the device**, in ``on_after_batch_transfer``: the
degradation pipeline runs batched there (on the GPU when training on one), each batch's draws are
seeded from ``(seed, global step, rank, clip indices)``, and the ``DegradationCurriculum``
callback reaches it as ``trainer.datamodule.degradation`` on every rank. Validation, test and
predict batches are degraded with a fixed seed per clip and the configured temporal mode, so
their metrics are comparable across epochs. Pairs that already have LR (``PairedImageDataModule``)
skip the degradation.
"""

from __future__ import annotations

import zlib
from abc import abstractmethod
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from restore.errors import InputError
from restore.io.formats import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS

from .degradations import Degradation, DegradationConfig


def read_image(path: Path) -> np.ndarray:
    """Read an image as ``(H, W, 3)`` ``uint8`` RGB (16-bit scaled down, grey expanded, alpha dropped)."""
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise InputError(path, "cannot read image (missing, corrupt or unsupported format)")
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise InputError(path, f"unsupported pixel type {image.dtype}")
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    elif image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    else:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return image


def list_files(root: Path, suffixes: frozenset[str]) -> list[Path]:
    """Files under ``root`` (recursive) with one of ``suffixes``, sorted; ``InputError`` if ``root`` is no folder."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(root, "data folder not found")
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in suffixes and p.is_file())


@dataclass(frozen=True)
class ClipSource:
    """One sequence: a video file, or a folder of frames (``frames`` lists them in display order)."""

    path: Path
    frames: tuple[Path, ...] = ()

    def read(self, indices: list[int]) -> np.ndarray:
        """Frames ``indices`` -> ``(T, H, W, 3)`` ``uint8`` RGB."""
        if self.frames:
            return np.stack([read_image(self.frames[i]) for i in indices])
        import decord

        reader = self._reader()
        try:
            return reader.get_batch(indices).asnumpy()
        except decord.DECORDError:
            # decord2 3.x fails to copy frames of some widths (48, 96, ...): decode those with PyAV
            return self._read_sequentially(indices)

    def _read_sequentially(self, indices: list[int]) -> np.ndarray:
        import av

        wanted, frames = set(indices), {}
        try:
            with av.open(str(self.path)) as container:
                for i, frame in enumerate(container.decode(video=0)):
                    if i in wanted:
                        frames[i] = frame.to_ndarray(format="rgb24")
                    if i >= max(indices):
                        break
        except av.FFmpegError as exc:
            raise InputError(self.path, f"cannot decode video ({exc})") from None
        if len(frames) < len(wanted):
            raise InputError(self.path, f"video ends before frame {max(indices)}")
        return np.stack([frames[i] for i in indices])

    def __len__(self) -> int:
        return len(self.frames) if self.frames else len(self._reader())

    def _reader(self):
        import decord

        try:
            return decord.VideoReader(str(self.path), ctx=decord.cpu(0), num_threads=1)
        except (decord.DECORDError, RuntimeError) as exc:
            raise InputError(self.path, f"cannot open video ({str(exc).splitlines()[0]})") from None


def find_clip_sources(root: Path) -> list[ClipSource]:
    """Every video file and every folder of frames under ``root``.

    Covers the usual layouts: YouHQ (folders of ``.mp4``), REDS (``train_sharp/000/00000000.png``),
    Vimeo-90K (``sequences/00001/0001/im1.png``): a folder holding image files is one clip, its
    frames in name order.
    """
    sources = [ClipSource(p) for p in list_files(root, VIDEO_EXTENSIONS)]
    folders: dict[Path, list[Path]] = {}
    for image in list_files(root, IMAGE_EXTENSIONS):
        folders.setdefault(image.parent, []).append(image)
    sources += [ClipSource(folder, tuple(frames)) for folder, frames in sorted(folders.items())]
    if not sources:
        raise InputError(root, "no videos or frame folders found")
    return sources


def crop_box(height: int, width: int, crop: int, train: bool) -> tuple[int, int]:
    """Top-left corner of a ``crop`` square: uniform from the worker's RNG when ``train``, else centred."""
    if not train:
        return (height - crop) // 2, (width - crop) // 2
    return int(torch.randint(height - crop + 1, (1,))), int(torch.randint(width - crop + 1, (1,)))


def augment(*clips: torch.Tensor, flip: bool, reverse: bool) -> tuple[torch.Tensor, ...]:
    """The same random dihedral transform and temporal reversal for each ``(T, C, H, W)`` clip.

    ``flip``: one of the 8 symmetries of the square, uniformly (horizontal and vertical flips and
    a transpose; the transpose only for square clips). ``reverse``: play backwards with
    probability 1/2. Decisions come from the worker's RNG (seeded per worker by the DataLoader).
    """
    square = all(c.shape[-1] == c.shape[-2] for c in clips)
    transpose = flip and square and bool(torch.rand(()) < 0.5)
    dims = []
    if flip and torch.rand(()) < 0.5:
        dims.append(-1)
    if flip and torch.rand(()) < 0.5:
        dims.append(-2)
    if reverse and torch.rand(()) < 0.5:
        dims.append(0)
    out = tuple(c.flip(dims) if dims else c for c in clips)
    return tuple(c.transpose(-1, -2) for c in out) if transpose else out


class VideoClipDataset(Dataset):
    """Random clips of ``num_frames`` frames (every ``stride``-th frame) and ``crop`` x ``crop`` pixels.

    Training items pick a random source start, crop, flips and reversal; evaluation items take
    the first frames and the centre crop. Item ``i`` reads source ``i % len(sources)``.
    ``__getitem__`` -> ``{"hr": (T, 3, crop, crop) uint8, "index": int}``.
    """

    def __init__(self, sources: list[ClipSource], num_frames: int, crop: int, *, train: bool, stride: int = 1, repeat: int = 1):
        self.sources, self.num_frames, self.crop = sources, num_frames, crop
        self.train, self.stride, self.repeat = train, stride, repeat

    def __len__(self) -> int:
        return len(self.sources) * self.repeat

    def __getitem__(self, index: int) -> dict:
        source = self.sources[index % len(self.sources)]
        span = (self.num_frames - 1) * self.stride + 1
        total = len(source)
        if total < span:
            raise InputError(source.path, f"has {total} frames, a clip needs {span}")
        start = int(torch.randint(total - span + 1, (1,))) if self.train else 0
        frames = source.read(list(range(start, start + span, self.stride)))
        height, width = frames.shape[1:3]
        if min(height, width) < self.crop:
            raise InputError(source.path, f"frames of {width}x{height} are smaller than the crop {self.crop}")
        top, left = crop_box(height, width, self.crop, self.train)
        clip = torch.from_numpy(np.ascontiguousarray(frames[:, top : top + self.crop, left : left + self.crop]))
        clip = clip.permute(0, 3, 1, 2)
        if self.train:
            (clip,) = augment(clip, flip=True, reverse=True)
        return {"hr": clip.contiguous(), "index": index}


class ClipDataModule(pl.LightningDataModule):
    """Shared machinery of the data modules: loaders, on-device degradation, the batch contract above.

    Subclasses implement ``build_datasets() -> (train, evaluation)``.

    Args:
        scale: HR/LR size ratio (2 or 4); crops must be divisible by it.
        num_frames: frames per clip ``T``.
        crop_size: HR crop side in pixels.
        batch_size: training clips per batch (per device); ``val_batch_size`` for evaluation.
        num_workers: loader processes (persistent between epochs when > 0); pinned memory on CUDA.
        degradation: operators and ranges; None for the defaults.
        seed: seed of the degradation draws.
    """

    def __init__(
        self,
        scale: int = 4,
        num_frames: int = 5,
        crop_size: int = 256,
        batch_size: int = 4,
        val_batch_size: int = 1,
        num_workers: int = 4,
        degradation: DegradationConfig | None = None,
        seed: int = 0,
    ):
        super().__init__()
        if crop_size % scale:
            raise ValueError(f"crop_size {crop_size} is not divisible by scale {scale}")
        self.scale, self.num_frames, self.crop_size = scale, num_frames, crop_size
        self.batch_size, self.val_batch_size, self.num_workers = batch_size, val_batch_size, num_workers
        self.seed = seed
        self.degradation = Degradation(degradation or DegradationConfig(), scale=scale)
        self.train_set: Dataset | None = None
        self.eval_set: Dataset | None = None

    @abstractmethod
    def build_datasets(self) -> tuple[Dataset, Dataset]:
        """-> (training set, evaluation set) yielding ``{"hr": uint8 (T, 3, H, W), "index": int}`` (and optionally ``"lr"``)."""

    def setup(self, stage: str) -> None:
        if self.train_set is None:
            self.train_set, self.eval_set = self.build_datasets()

    def _loader(self, dataset: Dataset, batch_size: int, train: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=train,
            drop_last=train,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, self.batch_size, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.eval_set, self.val_batch_size, train=False)

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()

    def predict_dataloader(self) -> DataLoader:
        return self.val_dataloader()

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        """uint8 -> float in [0, 1]; make ``"lr"`` by degrading ``"hr"`` where the dataset gave none."""
        batch = dict(batch)
        for key in ("hr", "lr"):
            if key in batch and batch[key].dtype == torch.uint8:
                batch[key] = batch[key].float().div_(255)
        if "lr" not in batch:
            batch["lr"] = self.degrade(batch["hr"], batch["index"])
        return batch

    def degrade(self, hr: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """LR for a batch: seeded by the clips' indices, plus the step and rank while training."""
        trainer = self.trainer
        training = trainer is not None and trainer.training
        key = [self.seed, *index.tolist()]
        if training:
            key += [trainer.global_step, trainer.global_rank]
        generator = torch.Generator().manual_seed(zlib.crc32(np.asarray(key, dtype=np.int64).tobytes()))
        if training:
            return self.degradation(hr, generator)
        inconsistent = torch.rand(hr.shape[0], generator=generator) < self.degradation.config.temporal.inconsistent_prob
        params = self.degradation.sample_params(hr.shape[0], hr.shape[1], generator, inconsistent=inconsistent)
        return self.degradation.apply(hr, params, generator)


def split_sources(sources: list, val_sources: list | None, val_count: int, what: Path) -> tuple[list, list]:
    """(train, evaluation) sources: ``val_sources`` if given, else the last ``val_count`` held out."""
    if val_sources is not None:
        return sources, val_sources
    if len(sources) <= val_count:
        raise InputError(what, f"{len(sources)} items: too few to hold out {val_count} for validation")
    return sources[:-val_count], sources[-val_count:]


class VideoClipDataModule(ClipDataModule):
    """Clips from folders of videos and/or frame folders (REDS, Vimeo-90K, YouHQ layouts).

    Args:
        root: training data folder (searched recursively).
        val_root: evaluation data folder; None holds out the last ``val_count`` sequences of ``root``.
        stride: temporal step between the frames of a clip.
        repeat: clips drawn per sequence and epoch.
        kwargs: see ``ClipDataModule``.
    """

    def __init__(
        self,
        root: str,
        val_root: str | None = None,
        val_count: int = 1,
        stride: int = 1,
        repeat: int = 1,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.root, self.val_root, self.val_count = Path(root), val_root, val_count
        self.stride, self.repeat = stride, repeat

    def build_datasets(self) -> tuple[Dataset, Dataset]:
        val = find_clip_sources(Path(self.val_root)) if self.val_root else None
        train, val = split_sources(find_clip_sources(self.root), val, self.val_count, self.root)
        make = lambda s, t, r: VideoClipDataset(s, self.num_frames, self.crop_size, train=t, stride=self.stride, repeat=r)  # noqa: E731
        return make(train, True, self.repeat), make(val, False, 1)
