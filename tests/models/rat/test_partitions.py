"""Partitions (models/rat/partitions.py): coverage, merging, caching, and the real SAM generator."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.rat.partitions import (
    PartitionCache,
    PartitionConfig,
    compute_partition,
    merge_small_regions,
    sam_paint,
    sam_partition,
    token_labels,
)


def _ct_phantom(n: int = 64) -> np.ndarray:
    """Air around a soft-tissue body with lungs, a fat rim and a bone, in HU, plus noise."""
    yy, xx = np.mgrid[:n, :n] - n / 2
    hu = np.full((n, n), -1000.0)
    hu[(xx / 0.9) ** 2 + (yy / 0.7) ** 2 < (n / 2) ** 2] = -100.0  # fat
    hu[(xx / 0.85) ** 2 + (yy / 0.65) ** 2 < (n / 2) ** 2] = 40.0  # soft tissue
    hu[((xx - n / 6) ** 2 + yy**2) < (n / 12) ** 2] = -800.0  # lung
    hu[((xx + n / 6) ** 2 + yy**2) < (n / 12) ** 2] = -800.0  # second, disconnected lung
    hu[(xx**2 + (yy - n / 8) ** 2) < (n / 20) ** 2] = 900.0  # bone
    return (hu + np.random.default_rng(0).normal(0, 20, hu.shape)).astype(np.float32)


def _assert_covering(labels: np.ndarray, shape: tuple[int, int]) -> None:
    assert labels.shape == shape and labels.dtype == np.int32
    assert labels.min() == 0
    assert np.array_equal(np.unique(labels), np.arange(labels.max() + 1))  # contiguous, every pixel labelled


@pytest.mark.parametrize("method", ["slic", "felzenszwalb", "hu", "grid", "auto"])
def test_every_method_covers_every_pixel(method):
    image = _ct_phantom()
    labels = compute_partition(image, PartitionConfig(method=method, modality="ct", grid_size=16, slic_segments=16))
    _assert_covering(labels, image.shape)
    assert labels.max() >= 1


def test_hu_bands_split_disconnected_lungs():
    image = _ct_phantom()
    labels = compute_partition(image, PartitionConfig(method="hu"))
    n = image.shape[0]
    left, right = labels[n // 2, n // 2 - n // 6], labels[n // 2, n // 2 + n // 6]
    body = labels[n // 2 + n // 5, n // 2]
    assert left != right  # same band, different connected components
    assert len({left, right, body}) == 3


def test_auto_picks_hu_for_ct_and_slic_otherwise():
    assert PartitionConfig(modality="ct").resolved_method() == "hu"
    assert PartitionConfig(modality="mr").resolved_method() == "slic"
    assert PartitionConfig(modality="ct", sam_checkpoint="x.pth").resolved_method() == "sam"
    with pytest.raises(ValueError, match="unknown partition"):
        PartitionConfig(method="watershed")


def test_rgb_partition():
    rgb = np.random.default_rng(0).random((32, 32, 3)).astype(np.float32)
    _assert_covering(compute_partition(rgb, PartitionConfig(method="slic", slic_segments=8)), (32, 32))


def test_merge_small_regions_into_largest_neighbour():
    labels = np.zeros((6, 6), dtype=np.int32)
    labels[:, 3:] = 1  # two big regions
    labels[0:2, 2:4] = 2  # 4-pixel region touching 0 and 1
    labels[5, 0] = 3  # 1-pixel region inside region 0
    labels[0:2, 4] = 4  # 2-pixel region touching 2 and 1 (1 is largest)
    merged = merge_small_regions(labels, min_size=5)
    sizes = np.bincount(merged.ravel())
    assert len(sizes) == 2 and sizes.min() >= 5
    assert merged[5, 0] == merged[0, 0]  # the speck joined its only neighbour
    assert merged[0, 4] == merged[3, 5]  # joined region 1, its largest neighbour


def test_merge_keeps_a_single_small_region():
    assert np.array_equal(merge_small_regions(np.zeros((2, 2), int), 10), np.zeros((2, 2), np.int32))


def test_token_labels_merge_at_attention_scale():
    regions = torch.zeros(2, 32, 32, dtype=torch.long)
    regions[:, :, 16:] = 1
    regions[0, 4:6, 4:6] = 2  # vanishes or is one token after 4x subsampling -> merged
    out = token_labels(regions, (8, 8), min_tokens=4)
    assert out.shape == (2, 64)
    counts = torch.stack([torch.bincount(o) for o in out])
    assert (counts >= 4).all() and counts.shape[1] == 2


def test_cache_hits_by_content(tmp_path):
    config = PartitionConfig(method="grid", grid_size=8)
    image = np.random.default_rng(0).random((16, 16)).astype(np.float32)
    first = PartitionCache(config, tmp_path)(image)
    (stored,) = tmp_path.glob("*.npy")
    np.save(stored, first + 100)  # a recomputation would not return this
    fresh = PartitionCache(config, tmp_path)
    assert np.array_equal(fresh(image), first + 100)
    assert not np.array_equal(fresh(image + 1), first + 100)  # other content, other key
    assert PartitionCache(PartitionConfig(method="grid", grid_size=4)).key(image) != fresh.key(image)


def test_sam_paint_order_and_uncovered_label():
    big = np.zeros((4, 4), bool)
    big[:, :3] = True
    small = np.zeros((4, 4), bool)
    small[:2, :2] = True
    labels = sam_paint([{"segmentation": small, "area": 4}, {"segmentation": big, "area": 12}], (4, 4))
    # small overwrites big; column 3 is uncovered and gets its own label
    assert len(np.unique(labels)) == 3
    assert labels[0, 0] != labels[3, 0] != labels[0, 3]


def _generator(sam):
    from segment_anything import SamAutomaticMaskGenerator

    # random weights give random scores: keep every mask so painting is exercised
    return SamAutomaticMaskGenerator(sam, points_per_side=2, points_per_batch=4, pred_iou_thresh=0.0,
                                     stability_score_thresh=0.0, box_nms_thresh=1.0, crop_n_layers=0)


@pytest.mark.slow
def test_sam_automatic_mask_generator_random_vit_b():
    from segment_anything import sam_model_registry

    torch.manual_seed(0)
    sam = sam_model_registry["vit_b"]().eval()  # random weights: no checkpoint needed (~80 s on 2 CPU cores)
    image = _ct_phantom(32)
    _assert_covering(sam_partition(image, _generator(sam)), image.shape)


def test_sam_automatic_mask_generator_tiny_sam():
    """The same real generator on a tiny randomly initialised SAM (64-pixel encoder) in seconds."""
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    torch.manual_seed(0)
    dim, size = 32, 64
    sam = Sam(
        image_encoder=ImageEncoderViT(img_size=size, patch_size=16, embed_dim=dim, depth=1, num_heads=1, out_chans=dim,
                                      window_size=0, global_attn_indexes=()),
        prompt_encoder=PromptEncoder(embed_dim=dim, image_embedding_size=(size // 16, size // 16),
                                     input_image_size=(size, size), mask_in_chans=4),
        mask_decoder=MaskDecoder(transformer_dim=dim, iou_head_hidden_dim=dim,
                                 transformer=TwoWayTransformer(depth=1, embedding_dim=dim, mlp_dim=dim, num_heads=1)),
    ).eval()
    image = _ct_phantom(48)
    labels = sam_partition(image, _generator(sam))
    _assert_covering(labels, image.shape)
    assert labels.max() >= 1  # masks were painted, not just the "uncovered" label
