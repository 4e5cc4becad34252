import itertools

import pytest
import torch
import torch.nn.functional as F

from models.oasis.attention import HEAD_GROUPS, _window, group_mask, group_mask_rows, routed_attention


def _qkv(grid, heads=3, d=8, b=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    L = grid[0] * grid[1] * grid[2]
    return [torch.randn(b, heads, L, d, generator=g) for _ in range(3)]


def _rel_err(a, b):
    return ((a - b).norm() / b.norm()).item()


def test_window_mask_is_clamped_not_cut():
    # axis of 6 with window 5: query 0 sees 0..4 (slid inwards), query 5 sees 1..5
    m = group_mask((1, 1, 6), "window", (1, 1, 5))
    assert m[0].tolist() == [True] * 5 + [False]
    assert m[5].tolist() == [False] + [True] * 5
    assert m[2].tolist() == [True] * 5 + [False]  # centred
    # every query sees exactly prod(min(window, grid)) keys, also at corners
    m = group_mask((4, 7, 9), "window", (3, 5, 5))
    assert (m.sum(1) == 3 * 5 * 5).all()
    # a window larger than the grid covers the whole axis
    assert group_mask((2, 3, 3), "window", (3, 5, 5)).all()


def test_intra_and_global_masks():
    grid = (3, 2, 4)
    frame = torch.arange(24) // 8
    assert torch.equal(group_mask(grid, "intra"), frame[:, None] == frame[None, :])
    assert group_mask(grid, "global").all()


def test_mask_rows_match_full_mask():
    grid = (3, 5, 7)
    rows = torch.tensor([0, 17, 104, 50])
    for group in HEAD_GROUPS:
        assert torch.equal(group_mask_rows(grid, group, rows, (3, 3, 5)), group_mask(grid, group, (3, 3, 5))[rows])


@pytest.mark.parametrize(
    "grid, window, tile",
    [
        ((3, 5, 7), (3, 5, 5), None),  # odd grid, windows at every border
        ((5, 9, 11), (3, 3, 5), (2, 4, 4)),  # partial tiles on every axis
        ((2, 3, 4), (3, 5, 5), (1, 2, 3)),  # window larger than the grid
        ((4, 6, 6), (1, 1, 1), None),  # window of one token
        ((1, 1, 1), (3, 5, 5), None),
    ],
)
def test_fast_matches_reference_for_every_routing(grid, window, tile):
    q, k, v = _qkv(grid)
    for routing in itertools.product(HEAD_GROUPS, repeat=3):
        ref = routed_attention(q, k, v, grid, routing, window, impl="reference")
        fast = routed_attention(q, k, v, grid, routing, window, impl="fast", tile=tile)
        assert fast.shape == ref.shape
        assert _rel_err(fast, ref) < 1e-5, routing


def test_output_is_in_head_order():
    # heads routed window/global/intra must come back where they were, not grouped
    grid = (2, 3, 5)
    q, k, v = _qkv(grid, heads=3)
    out = routed_attention(q, k, v, grid, ["window", "global", "intra"])
    for h, group in enumerate(["window", "global", "intra"]):
        alone = routed_attention(q[:, h : h + 1], k[:, h : h + 1], v[:, h : h + 1], grid, [group], impl="reference")
        assert _rel_err(out[:, h : h + 1], alone) < 1e-5


def test_all_global_equals_plain_attention():
    grid = (3, 4, 5)
    q, k, v = _qkv(grid, heads=4)
    plain = F.scaled_dot_product_attention(q, k, v)
    for impl in ("reference", "fast"):
        assert _rel_err(routed_attention(q, k, v, grid, ["global"] * 4, impl=impl), plain) < 1e-6


def test_gradients_match_reference():
    grid = (3, 4, 5)
    routing = ["intra", "window", "global"]
    grads = []
    for impl in ("reference", "fast"):
        q, k, v = (x.requires_grad_() for x in _qkv(grid))
        (routed_attention(q, k, v, grid, routing, (3, 3, 3), impl=impl) ** 2).sum().backward()
        grads.append([x.grad for x in (q, k, v)])
    for a, b in zip(*grads):
        assert _rel_err(a, b) < 1e-5


def test_bad_arguments_raise():
    q, k, v = _qkv((2, 2, 2), heads=2)
    with pytest.raises(ValueError, match="routing has 1"):
        routed_attention(q, k, v, (2, 2, 2), ["global"])
    with pytest.raises(ValueError, match="unknown head group"):
        routed_attention(q, k, v, (2, 2, 2), ["global", "local"])
    with pytest.raises(ValueError, match="tokens"):
        routed_attention(q, k, v, (2, 2, 3), ["global"] * 2)


@pytest.mark.parametrize("align, chunk_bytes", [(16, None), (1, 1), (8, 1 << 30)])
def test_window_path_settings_of_every_device(align, chunk_bytes):
    # (16, None) is what CUDA runs (padded halos, one SDPA call); (1, 1) one tile per call
    grid, window = (3, 7, 9), (3, 5, 5)
    q, k, v = _qkv(grid)
    ref = routed_attention(q, k, v, grid, ["window"] * 3, window, impl="reference")
    out = _window(q, k, v, grid, window, 8**-0.5, (1, 4, 4), align=align, chunk_bytes=chunk_bytes)
    assert _rel_err(out, ref) < 1e-5
