"""Image-quality metrics shared by every model family: PSNR and SSIM, optionally on the Y channel.

All functions take tensors shaped ``(..., C, H, W)`` (e.g. ``(B, C, H, W)`` images or
``(B, T, C, H, W)`` clips) and return one value per image, shaped like the leading dims ``(...)``;
average them yourself. They are differentiable (``ssim`` doubles as a loss, see ``models.losses``).

Conventions follow the super-resolution literature (BasicSR): Y is ITU-R BT.601 luma in the
studio range [16, 235] / 255, and ``crop_border`` pixels (usually the scale factor) are removed on
every side before measuring. For CT pass values already mapped to a window with ``data_range``
equal to its width, e.g. HU clipped to [-160, 240] and ``data_range=400``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# BT.601 RGB -> Y for values in [0, 1] (the 8-bit formula divided by 255), as MATLAB's rgb2ycbcr.
_Y_WEIGHTS = (65.481 / 255.0, 128.553 / 255.0, 24.966 / 255.0)
_Y_OFFSET = 16.0 / 255.0


def rgb_to_y(x: torch.Tensor) -> torch.Tensor:
    """BT.601 luma of RGB in [0, 1]: ``(..., 3, H, W)`` -> ``(..., 1, H, W)``, range [16/255, 235/255]."""
    if x.shape[-3] != 3:
        raise ValueError(f"rgb_to_y needs 3 channels in dim -3, got shape {tuple(x.shape)}")
    w = torch.tensor(_Y_WEIGHTS, dtype=x.dtype, device=x.device).view(3, 1, 1)
    return (x * w).sum(dim=-3, keepdim=True) + _Y_OFFSET


def _prepare(
    pred: torch.Tensor, target: torch.Tensor, crop_border: int, y_channel: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    if pred.shape != target.shape:
        raise ValueError(f"shape mismatch: pred {tuple(pred.shape)} vs target {tuple(target.shape)}")
    if pred.dim() < 3:
        raise ValueError(f"expected (..., C, H, W), got shape {tuple(pred.shape)}")
    # metrics in float32 at least: fp16/bf16 squared errors lose too much precision
    dtype = torch.promote_types(pred.dtype, torch.float32)
    pred, target = pred.to(dtype), target.to(dtype)
    if crop_border > 0:
        pred = pred[..., crop_border:-crop_border, crop_border:-crop_border]
        target = target[..., crop_border:-crop_border, crop_border:-crop_border]
    if y_channel:
        pred, target = rgb_to_y(pred), rgb_to_y(target)
    return pred, target


def psnr(
    pred: torch.Tensor,
    target: torch.Tensor,
    data_range: float = 1.0,
    crop_border: int = 0,
    y_channel: bool = False,
    eps: float = 1e-10,
) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per image: ``(..., C, H, W)`` x2 -> ``(...)``.

    ``data_range``: peak-to-peak range of the signal (1 for [0, 1] images). ``eps`` bounds the
    value for identical images (100 dB for ``data_range=1``) instead of returning inf.
    """
    pred, target = _prepare(pred, target, crop_border, y_channel)
    mse = (pred - target).pow(2).mean(dim=(-3, -2, -1))
    return 10.0 * torch.log10(data_range**2 / (mse + eps))


def _gaussian_kernel(size: int, sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    coords = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(
    pred: torch.Tensor,
    target: torch.Tensor,
    data_range: float = 1.0,
    crop_border: int = 0,
    y_channel: bool = False,
    window_size: int = 11,
    sigma: float = 1.5,
) -> torch.Tensor:
    """Structural similarity per image (Wang et al. 2004): ``(..., C, H, W)`` x2 -> ``(...)``.

    Gaussian window ``window_size`` x ``window_size`` with std ``sigma``, K1 = 0.01, K2 = 0.03,
    "valid" filtering (no padding), mean over channels and positions. Images smaller than the
    window use a window shrunk to the image (odd size), so tiny test tensors still work.
    """
    pred, target = _prepare(pred, target, crop_border, y_channel)
    lead, (c, h, w) = pred.shape[:-3], pred.shape[-3:]
    x = pred.reshape(-1, c, h, w)
    y = target.reshape(-1, c, h, w)
    size = min(window_size, h - (1 - h % 2), w - (1 - w % 2))  # largest odd size that fits
    g = _gaussian_kernel(size, sigma, x.dtype, x.device)
    # separable Gaussian, one filter per channel (groups=c)
    kh = g.view(1, 1, size, 1).expand(c, 1, size, 1)
    kw = g.view(1, 1, 1, size).expand(c, 1, 1, size)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(t, kh, groups=c), kw, groups=c)

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_x, mu_y = blur(x), blur(y)
    sxx = blur(x * x) - mu_x**2
    syy = blur(y * y) - mu_y**2
    sxy = blur(x * y) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))
    return ssim_map.mean(dim=(-3, -2, -1)).reshape(lead)
