import numpy as np
import pytest
import torch

from datasets.synthetic import moving_texture, write_frames, write_video
from datasets.video import VideoClipDataModule, VideoClipDataset, find_clip_sources
from restore.errors import InputError


@pytest.fixture(scope="module")
def clip_root(tmp_path_factory):
    """YouHQ-style videos (with audio), REDS-style and Vimeo-style frame folders."""
    root = tmp_path_factory.mktemp("clips")
    write_video(root / "youhq" / "a.mp4", moving_texture(8, 40, 64, seed=0))
    write_frames(root / "reds" / "train_sharp" / "000", moving_texture(6, 40, 48, seed=1))
    write_frames(root / "vimeo" / "sequences" / "00001" / "0001", moving_texture(7, 40, 48, seed=2), pattern="im{}.png")
    return root


def test_finds_videos_and_frame_folders(clip_root):
    sources = find_clip_sources(clip_root)
    assert len(sources) == 3
    assert sum(1 for s in sources if not s.frames) == 1
    assert [len(s) for s in sources] == [8, 6, 7]


def test_module_yields_documented_shapes_and_ranges(clip_root):
    data = VideoClipDataModule(root=str(clip_root), val_count=1, num_frames=3, crop_size=32, batch_size=2, num_workers=0)
    data.setup("fit")
    batch = data.on_after_batch_transfer(next(iter(data.train_dataloader())), 0)
    assert batch["hr"].shape == (2, 3, 3, 32, 32) and batch["lr"].shape == (2, 3, 3, 8, 8)
    for key in ("hr", "lr"):
        assert batch[key].dtype == torch.float32 and 0 <= batch[key].min() and batch[key].max() <= 1
    val = [data.on_after_batch_transfer(b, 0) for b in (next(iter(data.val_dataloader())) for _ in range(2))]
    assert torch.equal(val[0]["hr"], val[1]["hr"]) and torch.equal(val[0]["lr"], val[1]["lr"])  # fixed crops and seeds


def test_video_frames_match_what_was_written(clip_root):
    sources = find_clip_sources(clip_root)
    dataset = VideoClipDataset(sources[1:2], num_frames=2, crop=40, train=False, stride=2)
    expected = moving_texture(6, 40, 48, seed=1)[[0, 2], :, 4:44]
    got = dataset[0]["hr"].permute(0, 2, 3, 1).numpy()
    assert np.array_equal(got, expected)


def test_videos_decord_cannot_copy_are_read_with_pyav(tmp_path):
    frames = moving_texture(4, 40, 48, seed=3)  # decord2 fails on 48-pixel-wide frames
    write_video(tmp_path / "narrow.mp4", frames)
    clip = VideoClipDataset(find_clip_sources(tmp_path), num_frames=2, crop=32, train=False, stride=2)[0]["hr"]
    assert clip.shape == (2, 3, 32, 32)
    expected = torch.from_numpy(frames[[0, 2], 4:36, 8:40]).permute(0, 3, 1, 2).float()
    assert (clip.float() - expected).abs().mean() < 20  # x264 at its default quality


def test_training_items_are_random_crops_and_augmentations(clip_root):
    dataset = VideoClipDataset(find_clip_sources(clip_root)[:1], num_frames=3, crop=16, train=True)
    torch.manual_seed(0)
    items = [dataset[0]["hr"] for _ in range(6)]
    assert len({tuple(i.flatten()[:64].tolist()) for i in items}) > 1


def test_bad_sources_raise_one_line_errors_naming_the_file(clip_root, tmp_path):
    short = VideoClipDataset(find_clip_sources(clip_root)[1:2], num_frames=10, crop=16, train=True)
    with pytest.raises(InputError, match="has 6 frames, a clip needs 10") as info:
        short[0]
    assert info.value.path.name == "000"
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    broken = VideoClipDataset(find_clip_sources(tmp_path), num_frames=2, crop=16, train=True)
    with pytest.raises(InputError) as info:
        broken[0]
    assert info.value.path.name == "broken.mp4"
    with pytest.raises(InputError, match="data folder not found"):
        find_clip_sources(tmp_path / "missing")
