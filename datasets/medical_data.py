"""Lightning data modules for RAT: paired DICOM folders, DICOM folders with simulated
degradations, and image folders (pathology SR).

Each sample is a dict ``{"input": (C, h, w), "target": (C, s*h, s*w), "regions": (h, w) int64}``
with images normalised as the network expects (``models.rat.network``):

* CT (DICOM modality CT): HU windowed from ``hu_range`` (default ``[-1024, 3071]``) to [0, 1];
* other DICOM (MR): both images divided by the input's 99.5th percentile, clipped to [0, 1];
* image files: 8/16-bit values divided by the type's maximum.

Slices are read lazily, one DICOM frame at a time (``restore.io.dicom``). A simulated
degradation is drawn once per slice (seeded by ``seed`` and the slice's key) so that it can be
cached, like the fixed pairs of a paired dataset; the partition (``models.rat.partitions``) is
computed on the whole degraded slice (in HU for CT) and cached by content hash (in memory, and
with ``cache_dir`` on disk, where the degraded slices are cached too). Training samples are random ``patch_size`` crops of the
input (the target crop is ``scale`` times larger) with random flips and 90-degree rotations;
validation samples are whole slices.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from models.rat.partitions import PartitionCache, PartitionConfig
from restore.errors import InputError, OptionError
from restore.io.formats import IMAGE_EXTENSIONS, is_image

from .medical import (
    add_relative_rician_noise, bicubic_downsample, image_as_slice, kspace_downsample, random_phantom, simulate_ct_noise,
    simulate_low_dose_ct,
)

DEGRADATIONS = ("low_dose_ct", "rician", "kspace", "bicubic")


@dataclass
class Degradation:
    """A simulated degradation: ``kind`` in ``DEGRADATIONS``.

    ``low_dose_ct``: ``dose_fraction`` of incident flux ``i0`` (photons per bin per view) plus
    ``electronic_noise`` (counts); ``rician``: ``rician_sigma`` as a fraction of the slice's 99.5th
    percentile; ``kspace`` (MR) and ``bicubic`` (pathology): downsampling by ``scale``.
    ``dose_fraction`` and ``rician_sigma`` take a value or a ``[low, high]`` range drawn uniformly
    for each degraded slice (a denoiser trained on a range is not tied to one noise level).
    ``low_dose_ct`` with ``gaussian_fraction`` > 0: that share of the degraded slices gets white
    Gaussian noise of ``gaussian_hu`` HU (value or range) instead of a reduced dose, so that the
    model also sees the light noise a full-dose scan or another reconstruction kernel has (the
    dose simulation adds ~45 HU even at 100 %, on top of the scan's own noise). With
    ``texture_fraction`` > 0, that share gets reduced-dose noise *texture* (correlated, streaks
    behind bone) scaled to ``texture_hu`` HU SD over the body (``models.ct_dose.simulate_ct_noise``):
    the noise of a real low-dose protocol, quoted as its SD, which the nominal flux of the dose
    simulation only reaches at a few per mille of a clinical scan's dose. The shares are of one
    uniform draw (Gaussian first, then texture, the rest reduced dose) and sum to at most 1.
    """

    kind: str
    dose_fraction: float | tuple[float, float] = 0.25
    i0: float = 1e5
    electronic_noise: float = 10.0
    rician_sigma: float | tuple[float, float] = 0.05
    scale: int = 1
    gaussian_hu: float | tuple[float, float] = 20.0
    gaussian_fraction: float = 0.0
    texture_hu: float | tuple[float, float] = 20.0
    texture_fraction: float = 0.0

    def __post_init__(self):
        if self.kind not in DEGRADATIONS:
            raise ValueError(f"unknown degradation {self.kind!r} (known: {', '.join(DEGRADATIONS)})")
        # a command-line override arrives as text
        self.gaussian_fraction, self.texture_fraction = float(self.gaussian_fraction), float(self.texture_fraction)
        if min(self.gaussian_fraction, self.texture_fraction) < 0 or self.gaussian_fraction + self.texture_fraction > 1:
            raise ValueError(f"gaussian_fraction ({self.gaussian_fraction}) and texture_fraction "
                             f"({self.texture_fraction}) must be >= 0 and sum to at most 1")

    def __call__(self, clean: np.ndarray, rng: np.random.Generator, pixel_size_mm: float | None) -> np.ndarray:
        if self.kind == "low_dose_ct":
            share = rng.random() if self.gaussian_fraction + self.texture_fraction > 0 else 1.0
            if share < self.gaussian_fraction:
                sigma = _draw(self.gaussian_hu, rng)
                return (clean + rng.normal(0.0, sigma, clean.shape)).astype(np.float32)
            if share < self.gaussian_fraction + self.texture_fraction:
                return simulate_ct_noise(clean, _draw(self.texture_hu, rng), rng, pixel_size_mm=pixel_size_mm or 0.7)
            return simulate_low_dose_ct(clean, _draw(self.dose_fraction, rng), rng, i0=self.i0,
                                        electronic_noise=self.electronic_noise, pixel_size_mm=pixel_size_mm or 0.7)
        if self.kind == "rician":
            return add_relative_rician_noise(clean, _draw(self.rician_sigma, rng), rng)
        if self.kind == "kspace":
            return kspace_downsample(clean, self.scale)
        return bicubic_downsample(clean, self.scale)


def _draw(value: float | tuple[float, float], rng: np.random.Generator) -> float:
    return float(value) if np.isscalar(value) else float(rng.uniform(*value))


@dataclass
class SyntheticSlices:
    """Clean slices made rather than read, added to the real ones of a ``DicomDataModule``.

    ``phantoms``: random ellipse phantoms in HU (``datasets.medical.random_phantom``; CT only);
    ``image_dir``: natural images (recursively, the first ``max_images`` in name order, all if
    None) as attenuation maps for CT or magnitude images for MR (``image_as_slice``). All are
    ``size x size`` pixels of ``pixel_size_mm`` (the CT simulation's ray lengths).
    """

    phantoms: int = 0
    image_dir: str | None = None
    max_images: int | None = None
    size: int = 256
    pixel_size_mm: float = 1.4


@dataclass
class SliceSource:
    """One training/validation slice: ``load()`` -> ``(input, target)`` arrays in physical units,
    ``(H, W)`` or ``(H, W, C)``; ``units``: ``"HU"``, ``"stored"`` or ``"image"``;
    ``simulation``: a description of the simulated degradation (its parameters and seed), None for
    a real pair; only simulated pairs are cached, under a key that includes it. ``shape``: the
    input's ``(H, W)`` where known without reading it, and ``origin`` the file it comes from, so
    that a slice smaller than the training patch is reported before training starts."""

    key: str
    load: Callable[[], tuple[np.ndarray, np.ndarray]]
    units: str
    simulation: str | None = None
    shape: tuple[int, int] | None = None
    origin: str | None = None


def _dicom_slices(folder: str | Path) -> list[tuple[str, object, object]]:
    """Every 2-D slice under ``folder`` as ``(key, series, SliceRef)``; InputError if none."""
    from restore.io.dicom import discover

    found = discover([folder])
    slices = [(f"{s.key}/{i}", s, ref) for s in found.series for i, ref in enumerate(s.slices)]
    if not slices:
        reasons = "; ".join(sorted({k.reason for k in found.skipped})) or "no files"
        raise InputError(folder, f"no readable DICOM image slices ({reasons})")
    return slices


def _read_slice(ref) -> np.ndarray:
    from restore.io.dicom import read_instance_frames

    return read_instance_frames(ref.instance)[0][ref.frame]


def _position_key(series, ref) -> tuple | None:
    pos = ref.position
    return None if pos is None else (series.first.study_uid, tuple(round(p, 1) for p in pos))


def _normalizer(units: str, hu_range: tuple[float, float]) -> Callable[[np.ndarray, np.ndarray], tuple]:
    if units == "HU":
        from monai.transforms import ScaleIntensityRange

        window = ScaleIntensityRange(a_min=hu_range[0], a_max=hu_range[1], b_min=0.0, b_max=1.0, clip=True)
        return lambda x, y: (np.asarray(window(x)), np.asarray(window(y)))
    if units == "stored":
        def by_percentile(x, y):
            peak = max(float(np.percentile(x, 99.5)), 1e-6)
            return np.clip(x / peak, 0, 1), np.clip(y / peak, 0, 1)

        return by_percentile
    return lambda x, y: (x, y)


def _to_chw(a: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
    return t[None] if t.dim() == 2 else t.permute(2, 0, 1).contiguous()


class SliceDataset(Dataset):
    """Samples of ``SliceSource``s: whole slices, or random patches when ``patch_size`` is set."""

    def __init__(self, sources: list[SliceSource], partitions: PartitionCache, scale: int,
                 hu_range: tuple[float, float], patch_size: int | None, cache_dir: Path | None):
        self.sources = sources
        self.partitions = partitions
        self.scale = scale
        self.hu_range = hu_range
        self.patch_size = patch_size
        self.cache_dir = cache_dir

    def __len__(self) -> int:
        return len(self.sources)

    def _pair(self, src: SliceSource) -> tuple[np.ndarray, np.ndarray]:
        # degraded slices are cached on disk: projection-domain simulation takes seconds per slice
        # (without a cache_dir they are recomputed, identically: the degradation is seeded per slice)
        if src.simulation is None or self.cache_dir is None:
            return src.load()
        path = self.cache_dir / f"{hashlib.sha1((src.key + src.simulation).encode()).hexdigest()}.npz"
        if path.is_file():
            with np.load(path) as f:
                return f["input"], f["target"]
        pair = src.load()
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path.with_suffix(".tmp.npz"), input=pair[0], target=pair[1])
        path.with_suffix(".tmp.npz").replace(path)
        return pair

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        src = self.sources[index]
        degraded, clean = self._pair(src)
        regions = self.partitions(degraded)
        x, y = _normalizer(src.units, self.hu_range)(degraded, clean)
        x, y, r = _to_chw(x), _to_chw(y), torch.from_numpy(regions.astype(np.int64))
        if self.patch_size is not None:
            x, y, r = self._random_patch(src.key, x, y, r)
        return {"input": x, "target": y, "regions": r}

    def _random_patch(self, key: str, x: torch.Tensor, y: torch.Tensor, r: torch.Tensor):
        p, s = self.patch_size, self.scale
        h, w = x.shape[-2:]
        if h < p or w < p:
            raise InputError(key, f"slice {h}x{w} is smaller than patch_size {p}")
        top, left = (int(v) for v in (torch.randint(0, h - p + 1, ()), torch.randint(0, w - p + 1, ())))
        x, r = x[:, top : top + p, left : left + p], r[top : top + p, left : left + p]
        y = y[:, s * top : s * (top + p), s * left : s * (left + p)]
        k = int(torch.randint(0, 4, ()))
        flip = bool(torch.randint(0, 2, ()))
        out = []
        for t in (x, y, r[None]):
            t = torch.rot90(t, k, dims=(-2, -1))
            out.append((t.flip(-1) if flip else t).contiguous())
        return out[0], out[1], out[2][0]


class MedicalDataModule(pl.LightningDataModule):
    """Common part of the RAT data modules; subclasses provide ``sources()``.

    ``val_fraction``: the last fraction of slices (in sorted key order, at least one) used for
    validation. ``partition``: how to partition (default ``auto``; on the command line e.g.
    ``--data.init_args.partition.sam_checkpoint PATH``); its ``modality`` is set from the data.
    """

    def __init__(self, patch_size: int = 128, batch_size: int = 8, num_workers: int = 0, val_fraction: float = 0.1,
                 partition: PartitionConfig | None = None, hu_range: tuple[float, float] = (-1024.0, 3071.0),
                 cache_dir: str | None = None, seed: int = 0, scale: int = 1):
        super().__init__()
        self.patch_size = patch_size
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.val_fraction = val_fraction
        self.partition = partition or PartitionConfig()
        self.hu_range = tuple(hu_range)
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.seed = seed
        self.scale = scale
        self.train_set: SliceDataset | None = None
        self.val_set: SliceDataset | None = None

    def sources(self) -> list[SliceSource]:
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        sources = sorted(self.sources(), key=lambda s: s.key)
        n_val = max(1, int(round(len(sources) * self.val_fraction)))
        train, val = (sources[:-n_val], sources[-n_val:]) if len(sources) > 1 else (sources, sources)
        self._check_patch_fits(train)
        modality = {"HU": "ct", "stored": "mr"}.get(sources[0].units, "other")
        partitions = PartitionCache(PartitionConfig(**{**asdict(self.partition), "modality": modality}),
                                    self.cache_dir / "partitions" if self.cache_dir else None)
        degraded = self.cache_dir / "slices" if self.cache_dir else None
        self.train_set = SliceDataset(train, partitions, self.scale, self.hu_range, self.patch_size, degraded)
        self.val_set = SliceDataset(val, partitions, self.scale, self.hu_range, None, degraded)

    def _check_patch_fits(self, sources: list[SliceSource]) -> None:
        # a worker's exception reaches the trainer as a bare RuntimeError: check here, in the main process
        p = self.patch_size
        for src in sources:
            if p is not None and src.shape is not None and min(src.shape) < p:
                h, w = src.shape
                raise OptionError(None, f"data.init_args.patch_size {p} is larger than the {h}x{w} slice {src.key}"
                                  f" of {src.origin or 'the data'}: lower patch_size or leave the file out")

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True, num_workers=self.num_workers,
                          drop_last=len(self.train_set) >= self.batch_size, persistent_workers=self.num_workers > 0)

    def val_dataloader(self) -> DataLoader:
        # whole slices of possibly different sizes: one per batch
        return DataLoader(self.val_set, batch_size=1, num_workers=self.num_workers)

    predict_dataloader = val_dataloader

    def _rng(self, key: str) -> np.random.Generator:
        return np.random.default_rng([self.seed, int(hashlib.sha1(key.encode()).hexdigest()[:8], 16)])


class PairedDicomDataModule(MedicalDataModule):
    """Paired full/low-dose DICOM folders (AAPM Mayo layout): slices paired by study and
    ImagePositionPatient, or by order within equally long series when positions are missing."""

    def __init__(self, full_dose_dir: str, low_dose_dir: str, **kwargs):
        super().__init__(**kwargs)
        self.full_dose_dir = full_dose_dir
        self.low_dose_dir = low_dose_dir

    def sources(self) -> list[SliceSource]:
        full, low = _dicom_slices(self.full_dose_dir), _dicom_slices(self.low_dose_dir)
        low_by_pos = {_position_key(s, r): r for _, s, r in low}
        pairs = []
        if None not in low_by_pos:
            pairs = [(k, s, r, low_by_pos[p]) for k, s, r in full if (p := _position_key(s, r)) in low_by_pos]
        elif len(full) == len(low):
            pairs = [(k, s, r, lr) for (k, s, r), (_, _, lr) in zip(full, low)]
        if not pairs:
            raise InputError(self.low_dose_dir, f"no slice matches a slice of {self.full_dose_dir} by position")
        return [SliceSource(key, (lambda full=r, low=lr: (_read_slice(low), _read_slice(full))), s.units,
                            shape=(lr.instance.rows, lr.instance.columns), origin=str(lr.instance.ref))
                for key, s, r, lr in pairs]


class DicomDataModule(MedicalDataModule):
    """DICOM folders of clean slices with a simulated degradation (``Degradation`` fields):
    low-dose CT, MR Rician noise or MR k-space truncation (``scale``).

    ``dicom_dir``: a folder or file, or a list of them; None for made-up slices only (CT, in HU),
    so that a smoke run needs no data. ``realizations``: independent degradations of every clean
    slice (few real slices still give many noise draws). ``synthetic``: made-up clean slices added
    to the real ones (``SyntheticSlices``), in the units of the real series.
    """

    def __init__(self, dicom_dir: str | list[str] | None = None, degradation: dict | None = None,
                 realizations: int = 1, synthetic: SyntheticSlices | None = None, **kwargs):
        self.degradation = Degradation(**(degradation or {"kind": "low_dose_ct"}))
        super().__init__(scale=self.degradation.scale, **kwargs)
        if realizations < 1:
            raise ValueError(f"realizations must be >= 1, got {realizations}")
        self.dicom_dir = dicom_dir
        self.realizations = realizations
        self.synthetic = synthetic or SyntheticSlices()
        if dicom_dir is None and not (self.synthetic.phantoms or self.synthetic.image_dir):
            raise ValueError("DicomDataModule needs dicom_dir or synthetic slices (phantoms, image_dir)")

    def sources(self) -> list[SliceSource]:
        folders = [self.dicom_dir] if isinstance(self.dicom_dir, str) else list(self.dicom_dir or [])
        real = [s for folder in folders for s in _dicom_slices(folder)]
        units = real[0][1].units if real else "HU"  # made-up slices alone are CT: phantoms are in HU
        clean: list[tuple[str, Callable[[], np.ndarray], float | None, tuple[int, int], str]] = [
            (key, (lambda ref=ref: _read_slice(ref)), (series.first.pixel_spacing or (None,))[0],
             (ref.instance.rows, ref.instance.columns), str(ref.instance.ref))
            for key, series, ref in real
        ]
        clean += self._synthetic(units)
        simulation = f"{self.degradation}/{self.seed}"
        out = []
        for key, read, spacing, shape, origin in clean:
            # the degraded slice of an SR degradation is smaller by its scale
            lr_shape = (shape[0] // self.degradation.scale, shape[1] // self.degradation.scale)
            for r in range(self.realizations):
                name = key if self.realizations == 1 else f"{key}#{r}"

                def load(read=read, name=name, spacing=spacing):
                    image = read()
                    return self.degradation(image, self._rng(name), spacing), image

                out.append(SliceSource(name, load, units, simulation, lr_shape, origin))
        return out

    def _synthetic(self, units: str) -> list[tuple[str, Callable[[], np.ndarray], float, tuple[int, int], str]]:
        cfg = self.synthetic
        size = (cfg.size, cfg.size)
        if cfg.phantoms and units != "HU":
            raise ValueError(f"synthetic phantoms are CT (HU) slices; {self.dicom_dir} holds {units} images")
        made = [(f"phantom/{i:05d}", (lambda i=i: random_phantom(cfg.size, self._rng(f"phantom/{i}"))), cfg.pixel_size_mm,
                 size, "a random phantom") for i in range(cfg.phantoms)]
        if cfg.image_dir:
            import cv2

            files = sorted(p for p in Path(cfg.image_dir).rglob("*") if is_image(p))
            if not files:
                raise InputError(cfg.image_dir, f"no images ({', '.join(sorted(IMAGE_EXTENSIONS))})")

            def read(path: Path) -> np.ndarray:
                raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
                if raw is None:
                    raise InputError(path, "unreadable image")
                return image_as_slice(raw.astype(np.float32) / np.iinfo(raw.dtype).max, cfg.size, units, self._rng(str(path)))

            made += [(f"image/{p.relative_to(cfg.image_dir)}", (lambda p=p: read(p)), cfg.pixel_size_mm, size, str(p))
                     for p in files[: cfg.max_images]]
        return made


class ImageFolderDataModule(MedicalDataModule):
    """A folder of images (pathology tiles): bicubic SR by ``scale`` or Rician noise."""

    def __init__(self, image_dir: str, degradation: dict | None = None, **kwargs):
        self.degradation = Degradation(**(degradation or {"kind": "bicubic", "scale": 4}))
        super().__init__(scale=self.degradation.scale, **kwargs)
        self.image_dir = image_dir

    def sources(self) -> list[SliceSource]:
        files = sorted(p for p in Path(self.image_dir).rglob("*") if is_image(p))
        if not files:
            raise InputError(self.image_dir, f"no images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
        s = self.degradation.scale

        def load(path: Path):
            import cv2

            raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            if raw is None:
                raise InputError(path, "unreadable image")
            img = raw.astype(np.float32) / np.iinfo(raw.dtype).max
            img = img[..., 2::-1] if img.ndim == 3 else img  # BGR(A) -> RGB
            img = np.ascontiguousarray(img[: img.shape[0] // s * s, : img.shape[1] // s * s])  # divisible by scale
            return self.degradation(img, self._rng(str(path)), None), img

        simulation = f"{self.degradation}/{self.seed}"
        return [SliceSource(str(p.relative_to(self.image_dir)), (lambda p=p: load(p)), "image", simulation)
                for p in files]
