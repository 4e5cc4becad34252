"""Synthetic data: deterministic moving-texture clips, a data module on them, and test-fixture writers.

``SyntheticClipDataModule`` needs no files, so a smoke run (``configs/oasis_t_x4.yaml``) works from
a fresh clone. The writers create real media for tests: videos with an audio track through PyAV,
frame folders and image folders.
"""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from .video import ClipDataModule


def moving_texture(num_frames: int, height: int, width: int, seed: int) -> np.ndarray:
    """A textured scene (smooth noise, edges, a disc) drifting by whole pixels -> ``(T, H, W, 3)`` uint8."""
    g = torch.Generator().manual_seed(seed)
    pad = 2 * num_frames + 2
    big_h, big_w = height + 2 * pad, width + 2 * pad
    coarse = torch.rand((1, 3, big_h // 8 + 2, big_w // 8 + 2), generator=g)
    scene = F.interpolate(coarse, size=(big_h, big_w), mode="bicubic", align_corners=False)[0]
    fine = torch.rand((3, big_h, big_w), generator=g)
    scene = 0.8 * scene + 0.2 * fine  # high frequencies for the SR model to recover
    yy, xx = torch.meshgrid(torch.arange(big_h), torch.arange(big_w), indexing="ij")
    r = 0.25 * min(big_h, big_w)
    disc = ((yy - big_h / 2) ** 2 + (xx - big_w / 2) ** 2) < r**2
    scene = torch.where(disc, torch.rand((3, 1, 1), generator=g), scene)
    scene[:, :, big_w // 3] = 1.0  # a sharp vertical line
    dy, dx = (int(v) for v in torch.randint(-2, 3, (2,), generator=g))
    frames = [scene[:, pad + dy * t : pad + dy * t + height, pad + dx * t : pad + dx * t + width] for t in range(num_frames)]
    return (torch.stack(frames).clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


class SyntheticClipDataset(Dataset):
    """``length`` deterministic clips (item ``i`` is seeded by ``seed + i``) -> ``{"hr": (T, 3, size, size) uint8, "index": i}``."""

    def __init__(self, length: int, num_frames: int, size: int, seed: int = 0):
        self.length, self.num_frames, self.size, self.seed = length, num_frames, size, seed

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        clip = moving_texture(self.num_frames, self.size, self.size, self.seed + index)
        return {"hr": torch.from_numpy(clip).permute(0, 3, 1, 2).contiguous(), "index": index}


class SyntheticClipDataModule(ClipDataModule):
    """Moving-texture clips, for smoke runs and tests: ``num_train`` training and ``num_val`` evaluation clips.

    Args:
        kwargs: see ``datasets.video.ClipDataModule`` (``crop_size`` is the clip size).
    """

    def __init__(self, num_train: int = 64, num_val: int = 4, **kwargs):
        super().__init__(**kwargs)
        self.num_train, self.num_val = num_train, num_val

    def build_datasets(self) -> tuple[Dataset, Dataset]:
        train = SyntheticClipDataset(self.num_train, self.num_frames, self.crop_size, seed=self.seed)
        val = SyntheticClipDataset(self.num_val, self.num_frames, self.crop_size, seed=self.seed + 10**6)
        return train, val


def write_video(path: Path, frames: np.ndarray, fps: int = 25, codec: str = "libx264", audio: bool = True) -> Path:
    """Write ``(T, H, W, 3)`` uint8 RGB (H, W even) as a video with a 440 Hz stereo AAC track -> ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        video = container.add_stream(codec, rate=fps)
        video.width, video.height, video.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        sound = container.add_stream("aac", rate=48000, layout="stereo") if audio else None
        for frame in frames:
            container.mux(video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(video.encode())
        if sound is not None:
            samples = int(48000 * len(frames) / fps)
            tone = (0.2 * np.sin(2 * math.pi * 440 * np.arange(samples) / 48000)).astype(np.float32)
            chunk = 1024
            for start in range(0, samples, chunk):
                piece = np.ascontiguousarray(np.stack([tone[start : start + chunk]] * 2))
                af = av.AudioFrame.from_ndarray(piece, format="fltp", layout="stereo")
                af.sample_rate, af.pts, af.time_base = 48000, start, Fraction(1, 48000)
                container.mux(sound.encode(af))
            container.mux(sound.encode())
    return path


def write_frames(folder: Path, frames: np.ndarray, pattern: str = "{:08d}.png") -> list[Path]:
    """Write ``(T, H, W, 3)`` uint8 RGB as numbered PNGs in ``folder`` (REDS-style names by default)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, frame in enumerate(frames):
        paths.append(folder / pattern.format(i))
        cv2.imwrite(str(paths[-1]), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    return paths
