import av
import numpy as np
import torch

from datasets.synthetic import SyntheticClipDataModule, SyntheticClipDataset, moving_texture, write_frames, write_video


def test_moving_texture_is_deterministic_and_moves():
    a, b = moving_texture(4, 24, 32, seed=5), moving_texture(4, 24, 32, seed=5)
    assert a.shape == (4, 24, 32, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and not np.array_equal(a, moving_texture(4, 24, 32, seed=6))
    assert a.std() > 20  # textured, not flat


def test_dataset_and_module_follow_the_batch_contract():
    item = SyntheticClipDataset(3, 2, 16)[1]
    assert item["hr"].shape == (2, 3, 16, 16) and item["hr"].dtype == torch.uint8 and item["index"] == 1
    data = SyntheticClipDataModule(num_train=4, num_val=1, num_frames=2, crop_size=16, scale=2, batch_size=2, num_workers=0)
    data.setup("fit")
    batch = data.on_after_batch_transfer(next(iter(data.train_dataloader())), 0)
    assert batch["hr"].shape == (2, 2, 3, 16, 16) and batch["lr"].shape == (2, 2, 3, 8, 8)
    assert batch["hr"].dtype == batch["lr"].dtype == torch.float32
    assert 0 <= batch["lr"].min() and batch["lr"].max() <= 1


def test_writers_make_real_media(tmp_path):
    frames = moving_texture(5, 32, 48, seed=0)
    path = write_video(tmp_path / "clip.mp4", frames)
    with av.open(str(path)) as container:
        assert {s.type for s in container.streams} == {"video", "audio"}
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(decoded) == 5 and decoded[0].shape == (32, 48, 3)
    paths = write_frames(tmp_path / "seq", frames)
    assert [p.name for p in paths][:2] == ["00000000.png", "00000001.png"]
