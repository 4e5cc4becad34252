import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from datasets.images import (ImageToVideoDataModule, ImageToVideoDataset, MotionConfig, PairedImageDataModule, pseudo_clip,
                             zoom_out)
from datasets.synthetic import moving_texture
from datasets.video import augment
from restore.errors import InputError


@pytest.fixture(scope="module")
def image_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    for i in range(4):
        cv2.imwrite(str(root / "set" / f"{i}.png") if (root / "set").mkdir(exist_ok=True) is None else "", moving_texture(1, 60, 80, i)[0])
    return root


def _find(frame: np.ndarray, image: np.ndarray) -> tuple[int, int] | None:
    """Where ``frame`` stands in ``image`` as an exact crop, or None."""
    h, w = frame.shape[:2]
    for y in range(image.shape[0] - h + 1):
        for x in range(image.shape[1] - w + 1):
            if np.array_equal(image[y : y + h, x : x + w], frame):
                return y, x
    return None


def test_pseudo_clip_frames_are_exact_crops_along_a_smooth_path():
    image = np.random.default_rng(0).integers(0, 256, (60, 70, 3), dtype=np.uint8)
    motion = MotionConfig(shift=3, accel=0, still_prob=0, object_prob=0)
    clip = pseudo_clip(image, 5, 16, motion, train=True, generator=torch.Generator().manual_seed(1))
    corners = np.array([_find(frame, image) for frame in clip])  # fails (None) for any resampled frame
    steps = np.diff(corners, axis=0)
    assert (np.abs(steps - steps[0]) <= 1).all() and np.abs(steps).sum() > 0  # constant velocity, rounded


def test_pseudo_clip_objects_move_over_the_scene_with_real_pixels():
    image = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    still = MotionConfig(shift=0, accel=0, still_prob=0, object_prob=1.0, object_size=(0.5, 0.5), object_shift=3)
    clip = pseudo_clip(image, 4, 32, still, train=True, generator=torch.Generator().manual_seed(3))
    changed = [(clip[t] != clip[0]).any(-1) for t in range(1, 4)]
    assert any(c.any() for c in changed)  # the object moves while the camera stands still
    pixels = {tuple(v) for v in image.reshape(-1, 3)}
    assert all(tuple(v) in pixels for v in clip.reshape(-1, 3))  # nothing interpolated


def test_augment_reaches_all_eight_dihedral_transforms():
    clip = torch.arange(9).reshape(1, 1, 3, 3)
    seen = set()
    torch.manual_seed(0)
    for _ in range(200):
        (out,) = augment(clip, flip=True, reverse=False)
        seen.add(tuple(out.flatten().tolist()))
    assert len(seen) == 8


def test_zoom_out_averages_areas_and_keeps_the_crop_possible():
    image = np.kron(np.arange(4, dtype=np.uint8).reshape(2, 2) * 60, np.ones((40, 60), np.uint8))
    image = np.repeat(image[..., None], 3, -1)  # 80x120, four flat quadrants
    half = zoom_out(image, 0.5, min_side=16)
    assert half.shape == (40, 60, 3)
    assert set(np.unique(half)) == {0, 60, 120, 180}  # area averaging of flat blocks: no ringing
    assert zoom_out(image, 0.05, min_side=32).shape[0] == 32  # never below the crop
    assert zoom_out(image, 1.0, min_side=16) is image


def test_zoomed_training_items_come_from_a_smaller_image(tmp_path):
    cv2.imwrite(str(tmp_path / "a.png"), np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    still = MotionConfig(shift=0, accel=0, still_prob=1.0, object_prob=0)
    plain = ImageToVideoDataset([tmp_path / "a.png"], 1, 32, still, train=True)
    zoomed = ImageToVideoDataset([tmp_path / "a.png"], 1, 32, still, train=True, zoom=(0.5, 0.5))
    evaluation = ImageToVideoDataset([tmp_path / "a.png"], 1, 32, still, train=False, zoom=(0.5, 0.5))
    torch.manual_seed(0)
    # white noise keeps its contrast in a crop, but area averaging of 2x2 pixels halves its std
    assert plain[0]["hr"].float().std() > 1.6 * zoomed[0]["hr"].float().std()
    assert evaluation[0]["hr"].float().std() > 1.6 * zoomed[0]["hr"].float().std()  # evaluation is never zoomed
    with pytest.raises(ValueError, match="zoom"):
        ImageToVideoDataset([tmp_path / "a.png"], 1, 32, still, train=True, zoom=(0.5, 1.5))


def test_module_yields_documented_shapes_and_ranges(image_root):
    data = ImageToVideoDataModule(root=str(image_root), val_count=1, motion=MotionConfig(still_prob=0), num_frames=4,
                                  crop_size=32, batch_size=2, num_workers=0)
    data.setup("fit")
    batch = data.on_after_batch_transfer(next(iter(data.train_dataloader())), 0)
    assert batch["hr"].shape == (2, 4, 3, 32, 32) and batch["lr"].shape == (2, 4, 3, 8, 8)
    assert 0 <= batch["hr"].min() and batch["hr"].max() <= 1
    assert not torch.equal(batch["hr"][:, 0], batch["hr"][:, -1])  # the camera moves
    a, b = (data.eval_set[0]["hr"] for _ in range(2))
    assert torch.equal(a, b)  # evaluation clips are fixed


def test_too_small_images_are_reported(image_root):
    dataset = ImageToVideoDataset(sorted((image_root / "set").glob("*.png"))[:1], 2, 64, MotionConfig(), train=True)
    with pytest.raises(InputError, match="smaller than the crop"):
        dataset[0]


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    root = tmp_path_factory.mktemp("pairs")
    (root / "lr").mkdir()
    (root / "hr").mkdir()
    for i in range(3):
        hr = moving_texture(1, 64, 48, i)[0]
        cv2.imwrite(str(root / "hr" / f"{i}.png"), hr)
        cv2.imwrite(str(root / "lr" / f"{i}.png"), cv2.resize(hr, (12, 16), interpolation=cv2.INTER_AREA))
    return root


def test_paired_crops_stay_aligned(pairs):
    data = PairedImageDataModule(lr_root=str(pairs / "lr"), hr_root=str(pairs / "hr"), crop_size=32, scale=4, batch_size=2, num_workers=0)
    data.setup("fit")
    batch = data.on_after_batch_transfer(next(iter(data.train_dataloader())), 0)
    assert batch["lr"].shape == (2, 1, 3, 8, 8) and batch["hr"].shape == (2, 1, 3, 32, 32)
    area = F.interpolate(batch["hr"].flatten(0, 1), scale_factor=0.25, mode="area")
    assert (area - batch["lr"].flatten(0, 1)).abs().mean() < 0.01


def test_paired_size_mismatch_names_the_file(pairs, tmp_path):
    (tmp_path / "lr").mkdir()
    (tmp_path / "hr").mkdir()
    cv2.imwrite(str(tmp_path / "lr" / "a.png"), np.zeros((10, 10, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "hr" / "a.png"), np.zeros((30, 30, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "lr" / "b.png"), np.zeros((10, 10, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "hr" / "b.png"), np.zeros((40, 40, 3), np.uint8))
    data = PairedImageDataModule(lr_root=str(tmp_path / "lr"), hr_root=str(tmp_path / "hr"), crop_size=16, scale=4, num_workers=0)
    data.setup("fit")
    with pytest.raises(InputError, match="expected x4") as info:
        data.train_set[0]
    assert info.value.path.name == "a.png"
