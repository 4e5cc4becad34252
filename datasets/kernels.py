"""Batched blur kernels and per-frame filtering (Real-ESRGAN families), on any device.

Every kernel of a batch lives centred in one ``max_size x max_size`` grid: an item's own odd
``size`` is enforced by zeroing the grid outside its square, so kernels of different sizes are
built and applied together in one grouped convolution.

Families, with ``q = [x y] Sigma^-1 [x y]^T`` and ``Sigma = R(theta) diag(sx^2, sy^2) R(theta)^T``:

* ``gaussian``: ``exp(-q / 2)``;
* ``generalized`` (generalized Gaussian): ``exp(-q^beta / 2)``, heavier (beta < 1) or flatter
  (beta > 1) tails than the Gaussian;
* ``plateau``: ``1 / (1 + q^beta)``, a flat top with polynomial tails;
* ``sinc``: the circular low-pass ``wc * J1(wc * r) / (2 pi r)`` with cutoff ``wc`` in rad/pixel,
  which produces ringing and overshoot.

All kernels are normalised to sum to 1.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

FAMILIES = ("gaussian", "generalized", "plateau", "sinc")


def _grid(max_size: int, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    coords = torch.arange(max_size, dtype=dtype, device=device) - (max_size - 1) / 2
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    return xx, yy


def _support_mask(sizes: torch.Tensor, max_size: int, xx: torch.Tensor, yy: torch.Tensor) -> torch.Tensor:
    radius = ((sizes.to(xx.dtype) - 1) / 2).view(-1, 1, 1)
    return (xx.abs() <= radius) & (yy.abs() <= radius)


def blur_kernels(
    family: torch.Tensor,
    sizes: torch.Tensor,
    sigma_x: torch.Tensor,
    sigma_y: torch.Tensor,
    theta: torch.Tensor,
    beta: torch.Tensor,
    cutoff: torch.Tensor,
    max_size: int,
) -> torch.Tensor:
    """One kernel per item: all arguments ``(N,)`` -> ``(N, max_size, max_size)`` float32, each summing to 1.

    ``family``: index into ``FAMILIES``; ``sizes``: odd kernel sizes <= ``max_size``; ``sigma_x``,
    ``sigma_y``: standard deviations in pixels along the rotated axes; ``theta``: rotation in
    radians; ``beta``: shape exponent (ignored for ``gaussian`` and ``sinc``); ``cutoff``: sinc
    cutoff in rad/pixel (used only for ``sinc``). Put ``sigma_y = sigma_x`` for isotropic kernels.
    """
    device = sigma_x.device
    xx, yy = _grid(max_size, torch.float32, device)
    cos, sin = torch.cos(theta).view(-1, 1, 1), torch.sin(theta).view(-1, 1, 1)
    # coordinates in the kernel's principal axes, scaled by its standard deviations
    u = (cos * xx + sin * yy) / sigma_x.view(-1, 1, 1)
    v = (-sin * xx + cos * yy) / sigma_y.view(-1, 1, 1)
    q = u.square() + v.square()
    beta = torch.where(family == FAMILIES.index("gaussian"), torch.ones_like(beta), beta).view(-1, 1, 1)
    q_beta = q.clamp_min(0).pow(beta)
    kernel = torch.where(
        (family == FAMILIES.index("plateau")).view(-1, 1, 1), 1.0 / (1.0 + q_beta), torch.exp(-0.5 * q_beta)
    )
    is_sinc = family == FAMILIES.index("sinc")
    if bool(is_sinc.any()):
        kernel = torch.where(is_sinc.view(-1, 1, 1), _sinc_values(cutoff, xx, yy), kernel)
    kernel = kernel * _support_mask(sizes, max_size, xx, yy)
    return kernel / kernel.sum(dim=(-2, -1), keepdim=True)


def _sinc_values(cutoff: torch.Tensor, xx: torch.Tensor, yy: torch.Tensor) -> torch.Tensor:
    wc = cutoff.view(-1, 1, 1).to(torch.float32)
    r = torch.sqrt(xx.square() + yy.square()).expand(wc.shape[0], -1, -1)
    safe_r = torch.where(r > 0, r, torch.ones_like(r))
    values = wc * torch.special.bessel_j1(wc * safe_r) / (2 * math.pi * safe_r)
    # limit r -> 0 of wc J1(wc r) / (2 pi r) is wc^2 / (4 pi)
    return torch.where(r > 0, values, wc.square() / (4 * math.pi))


def sinc_kernels(cutoff: torch.Tensor, sizes: torch.Tensor, max_size: int) -> torch.Tensor:
    """Circular low-pass kernels: ``cutoff`` (rad/pixel) and odd ``sizes``, ``(N,)`` -> ``(N, K, K)``, sums 1."""
    ones = torch.ones_like(cutoff, dtype=torch.float32)
    family = torch.full_like(sizes, FAMILIES.index("sinc"))
    return blur_kernels(family, sizes, ones, ones, ones * 0, ones, cutoff, max_size)


def filter2d(frames: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Convolve each frame with its own kernel: ``(N, C, H, W)`` and ``(N, K, K)`` -> ``(N, C, H, W)``.

    Borders are replicated (reflection needs frames wider than half the kernel, which small
    intermediate sizes of the random resize are not).
    """
    n, c, h, w = frames.shape
    k = kernels.shape[-1]
    padded = F.pad(frames.reshape(1, n * c, h, w), (k // 2,) * 4, mode="replicate")
    weight = kernels.to(frames.dtype).repeat_interleave(c, dim=0).unsqueeze(1)
    return F.conv2d(padded, weight, groups=n * c).reshape(n, c, h, w)
