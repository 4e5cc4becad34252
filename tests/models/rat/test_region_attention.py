"""Region MSA (models/rat/region_attention.py) against the dense-masked reference."""

from __future__ import annotations

import pytest
import torch

from models.rat.region_attention import RegionLayout, dense_region_attention, region_attention


def _partitions(length: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "random": torch.randint(0, 9, (2, length), generator=g),
        "one_token_regions": torch.arange(length).repeat(2, 1),
        "single_region": torch.zeros(2, length, dtype=torch.long),
        # region 0 is split into two disconnected runs; ids are sparse and differ per image
        "disconnected": torch.stack([torch.tensor([0, 1, 0, 7] * (length // 4)),
                                     torch.cat([torch.full((length // 2,), 40), torch.full((length // 2,), 3)])]),
        "mixed_sizes": torch.cat([torch.zeros(2, 1), torch.ones(2, 3), torch.full((2, length - 4), 2)], 1).long(),
    }


@pytest.mark.parametrize("name", list(_partitions(64)))
@pytest.mark.parametrize("backend", ["bucketed", "flex"])
def test_matches_dense_reference(name, backend):
    labels = _partitions(64)[name]
    g = torch.Generator().manual_seed(1)
    q, k, v = torch.randn(3, 2, 3, 64, 8, generator=g).unbind(0)
    ref = dense_region_attention(q, k, v, labels)
    out = region_attention(q, k, v, labels, backend=backend)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


def test_gradients_match_dense():
    labels = _partitions(48)["random"]
    q, k, v = (torch.randn(2, 2, 48, 4, requires_grad=True) for _ in range(3))
    grads = []
    for fn in (dense_region_attention, region_attention):
        for t in (q, k, v):
            t.grad = None
        fn(q, k, v, labels).square().sum().backward()
        grads.append([t.grad.clone() for t in (q, k, v)])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_softmax_scale_is_head_dim():
    # one region: region attention is plain attention, whose scale must be head_dim ** -0.5
    q, k, v = torch.randn(3, 1, 8, 16, 32).unbind(0)
    labels = torch.zeros(1, 16, dtype=torch.long)
    expected = torch.softmax(q @ k.transpose(-1, -2) * 32**-0.5, -1) @ v
    torch.testing.assert_close(region_attention(q, k, v, labels), expected, atol=1e-5, rtol=0)


def test_layout_buckets_and_ideal_fraction():
    labels = torch.tensor([[0] * 10 + [1] * 6])
    layout = RegionLayout.from_labels(labels)
    assert layout.num_regions == 2
    assert layout.ideal_fraction() == pytest.approx((100 + 36) / 256)
    # padding is bounded: every bucket length is at most 25 % above its largest region
    for bucket in layout.buckets:
        assert bucket.valid.shape[1] <= 1.25 * int(bucket.valid.sum(1).max())


def test_unknown_backend():
    q = torch.zeros(1, 1, 4, 2)
    with pytest.raises(ValueError, match="backend"):
        region_attention(q, q, q, torch.zeros(1, 4, dtype=torch.long), backend="nope")
