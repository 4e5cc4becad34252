"""Evaluation protocols behind ``restore bench quality``: SR on still images, video SR, CT and MR denoising.

* **Bicubic (BI) super-resolution protocol** of the SR literature (see ``docs/BENCHMARKS.md``):
  the HR image is cropped to a multiple of the scale, the LR input is its antialiased bicubic
  downscale (``F.interpolate(..., mode="bicubic", antialias=True)``, MATLAB ``imresize``-like)
  quantised to 8 bits, the output is quantised to 8 bits, and PSNR/SSIM are measured on BT.601
  luma (studio range) with ``scale`` pixels shaved from every border (``models.metrics``).
* **Temporal consistency**: the warping error of Lai et al. (ECCV 2018) with optical flow
  computed on the *ground truth* (OpenCV DIS), so that every method is warped by the same motion.
* **CT**: PSNR/SSIM of HU clipped to a display window (default the soft-tissue [-160, 240] HU).
* **MR**: PSNR/SSIM of magnitude slices scaled by the clean slice's 99.5th percentile to [0, 1].

Images are ``(C, H, W)`` / clips ``(T, C, H, W)`` float tensors in [0, 1] (CT: ``(H, W)`` HU
arrays; MR: ``(H, W)`` arrays in stored units) unless stated otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.flow import dis_flow
from models.metrics import psnr, ssim, rgb_to_y

CT_WINDOW_HU = (-160.0, 240.0)


def quantize(x: torch.Tensor) -> torch.Tensor:
    """Clamp to [0, 1] and round to 8-bit levels, as images saved to PNG are."""
    return x.clamp(0, 1).mul(255).round().div(255)


def mod_crop(x: torch.Tensor, scale: int) -> torch.Tensor:
    """Crop ``(..., H, W)`` at the bottom/right to multiples of ``scale``."""
    h, w = x.shape[-2:]
    return x[..., : h - h % scale, : w - w % scale]


def bicubic_downscale(hr: torch.Tensor, scale: int) -> torch.Tensor:
    """The BI degradation: ``(..., C, H, W)`` in [0, 1], H and W multiples of ``scale`` ->
    ``(..., C, H / scale, W / scale)``, antialiased bicubic, quantised to 8 bits."""
    *lead, c, h, w = hr.shape
    if h % scale or w % scale:
        raise ValueError(f"size {h}x{w} is not a multiple of the scale {scale}: mod_crop first")
    lr = F.interpolate(hr.reshape(-1, c, h, w).float(), size=(h // scale, w // scale), mode="bicubic",
                       align_corners=False, antialias=True)
    return quantize(lr).reshape(*lead, c, h // scale, w // scale).to(hr.dtype)


# ------------------------------------------------------------------------------ super-resolution


def sr_metrics(sr: torch.Tensor, hr: torch.Tensor, scale: int) -> tuple[float, float]:
    """PSNR (dB) and SSIM on BT.601 luma of ``(..., 3, H, W)`` tensors, the output quantised to 8
    bits and ``scale`` pixels shaved, averaged over the leading dims (frames)."""
    sr = quantize(sr)
    return (float(psnr(sr, hr, crop_border=scale, y_channel=True).mean()),
            float(ssim(sr, hr, crop_border=scale, y_channel=True).mean()))


@torch.inference_mode()
def super_resolve(model: nn.Module, lr: torch.Tensor, *, temporal: bool) -> torch.Tensor:
    """Run a video-SR model (registry convention) on ``lr`` ``(T, C, h, w)`` -> ``(T, C, s*h, s*w)``.

    ``temporal=False`` feeds one frame per call (T = 1, ``restore upscale --chunk 1``);
    ``temporal=True`` feeds the chunks ``restore upscale`` feeds by default: the model's
    ``temporal_window`` frames (the whole clip if it has none), overlapping and cross-faded as
    ``UpscaleOptions.chunk_plan`` plans them, so a model that flickers at chunk seams is measured
    as a user sees it.
    """
    from .engine import ChunkPlan, stream_chunks
    from .jobs import UpscaleOptions

    device = next(iter(model.parameters()), torch.empty(0)).device
    plan = ChunkPlan(1)
    if temporal:
        context = int(getattr(model, "temporal_window", 0) or 0)
        plan = UpscaleOptions().chunk_plan(context) if context > 1 else ChunkPlan(lr.shape[0])

    def process(frames: list[torch.Tensor]) -> torch.Tensor:
        return model(torch.stack(frames)[None].to(device))[0].float().cpu()

    chunks = stream_chunks(((frame, index) for index, frame in enumerate(lr)), plan, process)
    return torch.cat([chunk.frames for chunk in chunks])


class ImresizeBicubic(nn.Module):
    """MATLAB ``imresize`` bicubic upscaling (cubic coefficient a = -0.5, as torch's antialiased
    path): the "bicubic" row of the SR papers. ``(B, T, C, h, w)`` -> ``(B, T, C, s*h, s*w)``.

    The registry's ``bicubic`` uses torch's default a = -0.75, sharper and ~0.2 dB higher on Set5.
    """

    temporal_window = 1

    def __init__(self, scale: int):
        super().__init__()
        self.scale = scale

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        b, t, c, h, w = clip.shape
        out = F.interpolate(clip.reshape(b * t, c, h, w), scale_factor=self.scale, mode="bicubic",
                            align_corners=False, antialias=True)
        return out.clamp(0, 1).reshape(b, t, c, h * self.scale, w * self.scale)


def evaluate_image(model: nn.Module, hr: torch.Tensor, scale: int) -> dict[str, float]:
    """The BI protocol on one image ``(3, H, W)`` in [0, 1] -> ``{"psnr": dB, "ssim": ...}`` (Y channel)."""
    hr = mod_crop(hr, scale)
    sr = super_resolve(model, bicubic_downscale(hr, scale)[None], temporal=False)[0]
    value_psnr, value_ssim = sr_metrics(sr, hr, scale)
    return {"psnr": value_psnr, "ssim": value_ssim}


# -------------------------------------------------------------------------- temporal consistency


def _gray_u8(frame: torch.Tensor) -> np.ndarray:
    return (rgb_to_y(frame.float())[0].clamp(0, 1) * 255).round().byte().numpy()


def _sample(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    import cv2

    h, w = flow.shape[:2]
    grid = np.stack(np.meshgrid(np.arange(w), np.arange(h)), axis=-1).astype(np.float32) + flow
    return cv2.remap(image, grid[..., 0], grid[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def warping_error(clip: torch.Tensor, reference: torch.Tensor) -> float:
    """Temporal warping error (Lai et al., ECCV 2018) of ``clip`` ``(T, 3, H, W)`` in [0, 1].

    For each t >= 1, frame t-1 of ``clip`` is warped to t with the optical flow of ``reference``
    (the ground truth, same shape; OpenCV DIS on its luma), and the squared difference to frame t
    is averaged over RGB and over the pixels where the forward/backward flows agree (the
    occlusion test of Sundaram et al. 2010) and the flow stays inside the frame. Returns the mean
    over t (x 1000 reads as the papers' tables). ``warping_error(gt, gt)`` is the floor that
    interpolation error and occlusions set; a method above it flickers or drifts.
    """
    if clip.shape != reference.shape or clip.shape[0] < 2:
        raise ValueError(f"need two equal clips of >= 2 frames, got {tuple(clip.shape)} and {tuple(reference.shape)}")
    gray = [_gray_u8(f) for f in reference]
    frames = clip.float().clamp(0, 1).permute(0, 2, 3, 1).numpy()
    h, w = gray[0].shape
    coords = np.stack(np.meshgrid(np.arange(w), np.arange(h)), axis=-1).astype(np.float32)
    errors = []
    for t in range(1, len(gray)):
        back = dis_flow(gray[t], gray[t - 1])  # pixel of t -> where it was in t-1
        forward = dis_flow(gray[t - 1], gray[t])
        round_trip = back + _sample(forward, back)
        limit = 0.01 * ((back**2).sum(-1) + (_sample(forward, back) ** 2).sum(-1)) + 0.5
        target = coords + back
        inside = (target[..., 0] >= 0) & (target[..., 0] <= w - 1) & (target[..., 1] >= 0) & (target[..., 1] <= h - 1)
        mask = ((round_trip**2).sum(-1) < limit) & inside
        if not mask.any():
            continue
        diff = (frames[t] - _sample(frames[t - 1], back)) ** 2
        errors.append(float(diff.mean(-1)[mask].mean()))
    return float(np.mean(errors)) if errors else float("nan")


def evaluate_clip(model: nn.Module, hr: torch.Tensor, scale: int, *, temporal: bool, lr_degradation: str | None = None,
                  seed: int = 0) -> dict[str, float]:
    """The BI protocol on a clip ``(T, 3, H, W)``: mean PSNR/SSIM-Y over frames and the warping
    error of the output (``warp_error``), both against ``hr``. ``lr_degradation``: what a real
    video's LR has on top of the downscale (:func:`degrade_lr`, drawn from ``seed``)."""
    hr = mod_crop(hr, scale)
    lr = bicubic_downscale(hr, scale)
    if lr_degradation:
        lr = degrade_lr(lr, lr_degradation, seed)
    sr = quantize(super_resolve(model, lr, temporal=temporal))
    value_psnr, value_ssim = sr_metrics(sr, hr, scale)
    return {"psnr": value_psnr, "ssim": value_ssim, "warp_error": warping_error(sr, hr)}


# kind -> what its number is
LR_DEGRADATIONS = {"noise": "Gaussian noise std in 8-bit levels", "h264": "libx264 constant rate factor"}


def degrade_lr(lr: torch.Tensor, spec: str, seed: int = 0) -> torch.Tensor:
    """``lr`` ``(T, 3, h, w)`` in [0, 1] with a degradation of ``spec`` ``"KIND:VALUE"`` (kinds of
    ``LR_DEGRADATIONS``: ``noise:10`` adds white Gaussian noise of std 10/255 per pixel and
    channel, seeded by ``seed``; ``h264:28`` round-trips the clip through libx264 at CRF 28,
    4:2:0), 8-bit quantised."""
    from .io.memory_video import compress_clip

    kind, value = parse_lr_degradation(spec)
    if kind == "noise":
        generator = torch.Generator().manual_seed(seed)
        noisy = lr + torch.randn(lr.shape, generator=generator, dtype=lr.dtype) * value / 255
        return quantize(noisy.clamp(0, 1))
    return compress_clip(lr, "libx264", crf=int(value))[0]


def parse_lr_degradation(spec: str) -> tuple[str, float]:
    """``"KIND:VALUE"`` -> ``(kind, value)``; ValueError naming the known kinds otherwise."""
    kind, _, value = spec.partition(":")
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if kind not in LR_DEGRADATIONS or number < 0:
        known = ", ".join(f"{k}:N ({v})" for k, v in LR_DEGRADATIONS.items())
        raise ValueError(f"unknown LR degradation {spec!r} (known: {known})")
    return kind, number


def synthetic_clip(frames: int, height: int, width: int, seed: int = 0, step: tuple[float, float] = (1.5, 0.75)) -> torch.Tensor:
    """A textured scene panned by ``step`` (x, y) pixels per frame -> ``(T, 3, H, W)`` in [0, 1].

    Band-limited colour noise (bicubic upsampling of a coarse random field) sampled with subpixel
    shifts, so that the ground-truth motion is exact and the frames are not bicubic-trivial.
    """
    gen = torch.Generator().manual_seed(seed)
    pad = int(np.ceil(max(abs(step[0]), abs(step[1])) * frames)) + 4
    coarse = torch.rand(1, 3, (height + 2 * pad) // 4 + 2, (width + 2 * pad) // 4 + 2, generator=gen)
    fine = torch.rand(1, 3, height + 2 * pad, width + 2 * pad, generator=gen)
    scene = 0.8 * F.interpolate(coarse, size=fine.shape[-2:], mode="bicubic", align_corners=False) + 0.2 * fine
    scene = F.avg_pool2d(scene, 3, 1, 1)  # soften the per-pixel noise: detail, not aliasing
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32), indexing="ij")
    size = torch.tensor([scene.shape[-1] - 1, scene.shape[-2] - 1], dtype=torch.float32)
    out = []
    for t in range(frames):
        pos = torch.stack([xs + pad + t * step[0], ys + pad + t * step[1]], dim=-1)
        grid = (2 * pos / size - 1)[None]
        out.append(F.grid_sample(scene, grid, mode="bicubic", padding_mode="border", align_corners=True)[0])
    return quantize(torch.stack(out))


# --------------------------------------------------------------------------------------------- CT


def ct_metrics(pred_hu: np.ndarray, clean_hu: np.ndarray, window: tuple[float, float] = CT_WINDOW_HU) -> dict[str, float]:
    """PSNR (dB) and SSIM of ``(H, W)`` HU slices clipped to ``window``, data range its width."""
    lo, hi = window
    pred, clean = (torch.from_numpy(np.clip(a, lo, hi).astype(np.float64))[None] for a in (pred_hu, clean_hu))
    return {"psnr": float(psnr(pred, clean, data_range=hi - lo)), "ssim": float(ssim(pred, clean, data_range=hi - lo))}


@dataclass
class TunedResult:
    """The best of a parameter sweep: ``param``, its ``output`` and ``metrics``, and every ``tried`` (param, PSNR)."""

    param: float
    output: np.ndarray
    metrics: dict[str, float]
    tried: list[tuple[float, float]]


# tissue bands of the clean slice for the HU-bias check (HU, inclusive low, exclusive high)
CT_TISSUES_HU: dict[str, tuple[float, float]] = {"air": (-1024.0, -900.0), "fat": (-120.0, -60.0),
                                                  "soft tissue": (20.0, 80.0), "bone": (400.0, 3072.0)}


def hu_bias(pred_hu: np.ndarray, clean_hu: np.ndarray, tissues: dict[str, tuple[float, float]] = CT_TISSUES_HU,
            erosion: int = 2) -> dict[str, float]:
    """Mean error (HU) of ``pred_hu - clean_hu`` over each tissue band of the clean slice, eroded
    by ``erosion`` pixels (partial-volume edges excluded); bands with under 50 pixels are left out."""
    return _per_band(pred_hu - clean_hu, clean_hu, tissues, erosion, np.mean)


def hu_band_rmse(pred_hu: np.ndarray, clean_hu: np.ndarray, tissues: dict[str, tuple[float, float]] = CT_TISSUES_HU,
                 erosion: int = 0) -> dict[str, float]:
    """RMS error (HU) of ``pred_hu`` over each tissue band of the clean slice, edges included by
    default: the per-region error a focal region loss weighs (``hu_bias`` is its mean part)."""
    return _per_band(pred_hu - clean_hu, clean_hu, tissues, erosion, lambda e: np.sqrt(np.mean(np.square(e))))


def _per_band(error: np.ndarray, clean_hu: np.ndarray, tissues: dict[str, tuple[float, float]], erosion: int,
              reduce) -> dict[str, float]:
    """``reduce(error[band])`` per tissue band of ``clean_hu`` (eroded by ``erosion`` px; >= 50 pixels)."""
    from scipy.ndimage import binary_erosion

    out = {}
    for name, (lo, hi) in tissues.items():
        mask = (clean_hu >= lo) & (clean_hu < hi)
        if erosion:
            mask = binary_erosion(mask, iterations=erosion)
        if mask.sum() >= 50:
            out[name] = float(reduce(error[mask]))
    return out


def flat_tissue_phantom(size: int = 512) -> np.ndarray:
    """A made-up CT slice ``(size, size)`` in HU whose tissue bands are wide and flat, for the
    HU-bias check: an elliptic soft-tissue body (40 HU) with a bone rim (1000 HU) in air (-1000 HU)
    holding discs of fat (-110, -90, -70 HU) and soft tissue (30, 60 HU) about a sixth of the slice
    across, smoothed by 0.8 px.

    Each band holds thousands of pixels over 6 px from its edge, so :func:`hu_bias` with
    ``erosion=6`` measures a denoiser's offset and not its smoothing. On a patient slice a thin
    band (a head's scalp fat: no pixel over 3 px from brighter skin and bone) mostly measures
    partial-volume blur: a 1 px Gaussian blur of the clean slice alone reads about +10 HU there.
    """
    from scipy.ndimage import gaussian_filter

    y, x = np.mgrid[:size, :size] / size - 0.5
    hu = np.full((size, size), -1000.0)
    hu[(y / 0.43) ** 2 + (x / 0.47) ** 2 <= 1] = 1000.0
    hu[(y / 0.40) ** 2 + (x / 0.44) ** 2 <= 1] = 40.0
    discs = {(-0.19, -0.17): -110.0, (-0.19, 0.17): -90.0, (0.19, -0.17): -70.0, (0.19, 0.17): 30.0, (0.0, 0.0): 60.0}
    for (cy, cx), value in discs.items():
        hu[(y - cy) ** 2 + (x - cx) ** 2 <= 0.088**2] = value
    return gaussian_filter(hu, 0.8).astype(np.float32)


def periodic_peak(pred_hu: np.ndarray, clean_hu: np.ndarray, periods: Sequence[int] = (2, 4, 8, 16)) -> dict[str, float]:
    """Grid check: power of the error ``pred_hu - clean_hu`` at the frequency of each period (in
    pixels, along rows and columns: the spectrum of every row/column averaged) over the median
    power of the 16 neighbouring frequencies. White noise gives ~1; a periodic pattern, >> 1."""
    err = (pred_hu - clean_hu).astype(np.float64)
    err -= err.mean()
    out = {}
    for p in periods:
        ratios = []
        for axis in (0, 1):
            spectrum = (np.abs(np.fft.rfft(err, axis=axis)) ** 2).mean(axis=1 - axis)
            n = err.shape[axis]
            k = int(round(n / p))
            if k < 9 or k >= spectrum.size:
                continue
            lo, hi = k - 8, min(spectrum.size, k + 9)
            neighbours = np.concatenate([spectrum[lo:k], spectrum[k + 1 : hi]])
            ratios.append(float(spectrum[k] / max(np.median(neighbours), 1e-12)))
        if ratios:
            out[str(p)] = max(ratios)
    return out


def tune_on_clean(
    denoise: Callable[[np.ndarray, float], np.ndarray],
    noisy_hu: np.ndarray,
    clean_hu: np.ndarray,
    params: Iterable[float],
    window: tuple[float, float] = CT_WINDOW_HU,
) -> TunedResult:
    """Run ``denoise(noisy_hu, param)`` for every param and keep the best PSNR against the clean
    slice: an oracle choice, the best case for a classical method (a reference, not a fair rival)."""
    best, tried = None, []
    for param in params:
        out = denoise(noisy_hu, float(param))
        metrics = ct_metrics(out, clean_hu, window)
        tried.append((float(param), metrics["psnr"]))
        if best is None or metrics["psnr"] > best.metrics["psnr"]:
            best = TunedResult(float(param), out, metrics, tried)
    if best is None:
        raise ValueError("no parameters to try")
    best.tried = tried
    return best


def bm3d_denoise(hu: np.ndarray, sigma_hu: float) -> np.ndarray:
    """BM3D (the ``bm3d`` package, ``pip install restore[bench]``) of an ``(H, W)`` HU slice with
    noise std ``sigma_hu`` (HU); runs on [0, 1]-scaled values over the slice's range."""
    import bm3d

    lo, hi = float(hu.min()), float(hu.max())
    span = max(hi - lo, 1.0)
    out = bm3d.bm3d((hu - lo) / span, sigma_psd=sigma_hu / span)
    return (np.asarray(out, dtype=np.float64) * span + lo).astype(np.float32)


def sweep(center: float, factors: Sequence[float] = (0.5, 1.0, 1.5, 2.0, 3.0, 4.0)) -> list[float]:
    """Parameters ``center * factor`` for a small grid search. Wide on the high side: CT noise is
    not stationary (streaks near bone), so the best global sigma can lie well above the mean std."""
    return [center * f for f in factors]


# --------------------------------------------------------------------------------------------- MR


def mr_metrics(pred: np.ndarray, clean: np.ndarray) -> dict[str, float]:
    """PSNR (dB) and SSIM of ``(H, W)`` MR magnitude slices divided by the clean slice's reference
    intensity (``models.mr_noise.reference_intensity``, what a noise level is a fraction of) and
    clipped to [0, 1], data range 1."""
    from models.mr_noise import reference_intensity

    peak = max(reference_intensity(clean), 1e-6)
    pred_t, clean_t = (torch.from_numpy(np.clip(a / peak, 0.0, 1.0).astype(np.float64))[None] for a in (pred, clean))
    return {"psnr": float(psnr(pred_t, clean_t, data_range=1.0)), "ssim": float(ssim(pred_t, clean_t, data_range=1.0))}
