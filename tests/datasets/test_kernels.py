import math

import torch

from datasets.kernels import FAMILIES, blur_kernels, filter2d, sinc_kernels


def _kernels(family: str, n: int = 6, size: int = 21, sx: float = 2.0, sy: float = 2.0, theta: float = 0.0, beta: float = 1.5):
    full = lambda v: torch.full((n,), float(v))  # noqa: E731
    return blur_kernels(
        torch.full((n,), FAMILIES.index(family)), torch.full((n,), size), full(sx), full(sy), full(theta), full(beta), full(math.pi / 2), 21
    )


def test_every_family_sums_to_one_and_respects_its_size():
    for family in FAMILIES:
        k = _kernels(family, size=9)
        assert torch.allclose(k.sum(dim=(-2, -1)), torch.ones(6), atol=1e-5), family
        assert k[:, :6].abs().sum() == 0 and k[:, :, :6].abs().sum() == 0  # outside the central 9x9
        assert k[:, 10, 10].gt(0).all()


def test_anisotropic_kernel_spreads_along_its_rotated_axis():
    coords = torch.arange(21.0) - 10
    k = _kernels("gaussian", n=1, sx=3.0, sy=0.7)[0]
    var_x, var_y = (k.sum(0) * coords**2).sum(), (k.sum(1) * coords**2).sum()
    assert var_x > 5 * var_y
    turned = _kernels("gaussian", n=1, sx=3.0, sy=0.7, theta=math.pi / 2)[0]
    assert torch.allclose(turned, k.T, atol=1e-6)


def test_isotropic_gaussian_has_the_requested_sigma():
    coords = torch.arange(21.0) - 10
    k = _kernels("gaussian", n=1, sx=1.5, sy=1.5)[0]
    assert torch.allclose(k, k.T, atol=1e-7)
    assert abs(math.sqrt((k.sum(0) * coords**2).sum()) - 1.5) < 0.02


def test_plateau_is_flatter_than_gaussian_at_the_centre():
    g, p = _kernels("gaussian", n=1)[0], _kernels("plateau", n=1, beta=2.0)[0]
    assert p[10, 10] / p[10, 11] < g[10, 10] / g[10, 11]


def test_sinc_kernel_rings():
    k = sinc_kernels(torch.tensor([math.pi / 3]), torch.tensor([21]), 21)[0]
    assert abs(float(k.sum()) - 1) < 1e-5 and float(k.min()) < 0


def test_filter2d_delta_is_identity_and_blur_keeps_flat_frames():
    frames = torch.rand(3, 3, 10, 12)
    delta = torch.zeros(3, 7, 7)
    delta[:, 3, 3] = 1
    assert torch.allclose(filter2d(frames, delta), frames, atol=1e-6)
    flat = torch.full((3, 3, 10, 12), 0.3)
    assert torch.allclose(filter2d(flat, _kernels("generalized", n=3)), flat, atol=1e-5)
