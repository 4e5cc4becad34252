"""Tests for the optical flow helpers (models/flow.py)."""

import numpy as np
import torch
import torch.nn.functional as F

from models.flow import dis_flow, warp


def test_zero_flow_warp_is_the_identity():
    frames = torch.rand(2, 3, 17, 23)
    assert torch.allclose(warp(frames, torch.zeros(2, 17, 23, 2)), frames, atol=1e-5)


def test_a_whole_pixel_flow_moves_the_image_by_that_pixel():
    frames = torch.rand(1, 1, 12, 16)
    flow = torch.zeros(1, 12, 16, 2)
    flow[..., 0] = 1.0  # out[y, x] = in[y, x + 1]
    out = warp(frames, flow)
    assert torch.allclose(out[..., :-1], frames[..., 1:], atol=1e-5)


def test_dis_flow_finds_a_sub_pixel_shift():
    g = torch.Generator().manual_seed(0)
    texture = F.avg_pool2d(torch.rand(1, 1, 270, 270, generator=g), 7, stride=1)  # smooth, 264 px
    a = F.interpolate(texture[..., :256, :256], scale_factor=0.25, mode="bicubic", antialias=True)
    b = F.interpolate(texture[..., 2:258, 3:259], scale_factor=0.25, mode="bicubic", antialias=True)
    to_u8 = lambda x: (x[0, 0].clamp(0, 1) * 255).round().to(torch.uint8).numpy()  # noqa: E731
    flow = dis_flow(to_u8(a), to_u8(b))[8:-8, 8:-8]  # a[y, x] ~ b[y - 0.5, x - 0.75]
    assert abs(float(np.median(flow[..., 0])) + 0.75) < 0.1 and abs(float(np.median(flow[..., 1])) + 0.5) < 0.1
