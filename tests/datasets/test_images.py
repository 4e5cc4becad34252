import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from datasets.images import ImageToVideoDataModule, ImageToVideoDataset, MotionConfig, PairedImageDataModule, camera_grid
from datasets.synthetic import moving_texture
from restore.errors import InputError


@pytest.fixture(scope="module")
def image_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    for i in range(4):
        cv2.imwrite(str(root / "set" / f"{i}.png") if (root / "set").mkdir(exist_ok=True) is None else "", moving_texture(1, 60, 80, i)[0])
    return root


def test_still_camera_grid_is_a_plain_crop():
    image = torch.rand(1, 3, 20, 30)
    grid = camera_grid(20, 30, 8, 3, centre=(9.5, 12.5), motion=MotionConfig(0, 0, 0, 0))
    frames = F.grid_sample(image.expand(3, -1, -1, -1), grid, mode="bilinear", align_corners=False)
    assert torch.allclose(frames, image[:, :, 6:14, 9:17].expand(3, -1, -1, -1), atol=1e-5)


def test_pseudo_clips_move_smoothly():
    grid = camera_grid(200, 200, 32, 5, centre=(100, 100), motion=MotionConfig(shift=4, accel=0, zoom=0, rotation=0),
                       generator=torch.Generator().manual_seed(0))
    step = grid[1:] - grid[:-1]
    assert torch.allclose(step, step[:1].expand_as(step), atol=1e-5)  # constant velocity
    assert step.abs().max() > 0


def test_module_yields_documented_shapes_and_ranges(image_root):
    data = ImageToVideoDataModule(root=str(image_root), val_count=1, num_frames=4, crop_size=32, batch_size=2, num_workers=0)
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
