"""restore.io.image on real files written by OpenCV and Pillow."""

from __future__ import annotations

import logging

import cv2
import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from restore.errors import InputError, OutputError
from restore.io.image import ImageMetadata, read_image, read_image_metadata, write_image
from tests.fixtures import PHOTO_DPI, PHOTO_MAKE, make_frames, make_photo


@pytest.mark.parametrize("suffix", [".png", ".tif"])
@pytest.mark.parametrize("deep", [False, True])
def test_round_trip_is_exact(tmp_path, suffix, deep):
    image = torch.from_numpy(make_frames(1, 17, 23, deep=deep)[0])  # odd size on purpose
    write_image(tmp_path / f"a{suffix}", image)
    back = read_image(tmp_path / f"a{suffix}")
    assert back.dtype == image.dtype and torch.equal(back, image)
    assert [p.name for p in tmp_path.iterdir()] == [f"a{suffix}"]  # no temporary file left


def test_channels_are_rgb_on_disk(tmp_path):
    red = torch.zeros(4, 5, 3, dtype=torch.uint8)
    red[..., 0] = 255
    write_image(tmp_path / "red.png", red)
    assert cv2.imread(str(tmp_path / "red.png"))[0, 0].tolist() == [0, 0, 255]  # OpenCV's BGR


def test_grey_image_keeps_one_channel(tmp_path):
    grey = torch.arange(12 * 9, dtype=torch.uint8).reshape(12, 9, 1)
    write_image(tmp_path / "g.png", grey)
    back = read_image(tmp_path / "g.png")
    assert back.shape == (12, 9, 1) and torch.equal(back, grey)


def test_jpeg_is_read_as_rgb(tmp_path):
    image = np.zeros((32, 40, 3), np.uint8)
    image[:, :20, 0], image[:, 20:, 2], image[..., 1] = 220, 180, np.arange(40) * 5  # red | blue, green ramp
    cv2.imwrite(str(tmp_path / "a.jpg"), image[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 98])
    back = read_image(tmp_path / "a.jpg").numpy()
    assert back.shape == (32, 40, 3) and back.dtype == np.uint8
    assert np.abs(back.astype(int) - image).mean() < 3


def test_alpha_is_dropped_with_a_note(tmp_path, caplog):
    bgra = np.zeros((6, 7, 4), np.uint8)
    bgra[..., 2], bgra[..., 3] = 200, 10  # red, nearly transparent
    cv2.imwrite(str(tmp_path / "a.png"), bgra)
    with caplog.at_level(logging.INFO, logger="restore.io"):
        back = read_image(tmp_path / "a.png")
    assert back.shape == (6, 7, 3) and back[0, 0].tolist() == [200, 0, 0]
    assert "alpha channel dropped" in caplog.text


@pytest.mark.parametrize("channels", [2, 4])
@pytest.mark.parametrize("deep", [False, True])
def test_alpha_round_trips_when_kept(tmp_path, channels, deep):
    image = torch.from_numpy(make_frames(1, 6, 7, deep=deep)[0])
    alpha = (torch.arange(42, dtype=torch.int32).reshape(6, 7, 1) * (1000 if deep else 5)).to(image.dtype)
    image = torch.cat([image[:, :, : channels - 1], alpha], dim=2)
    write_image(tmp_path / "a.png", image)
    back = read_image(tmp_path / "a.png", keep_alpha=True)
    if channels == 2:  # written as RGBA (OpenCV has no grey + alpha encoder)
        assert torch.equal(back[:, :, :3], image[:, :, :1].expand(-1, -1, 3))
    else:
        assert torch.equal(back[:, :, :3], image[:, :, :3])
    assert back.dtype == image.dtype and torch.equal(back[:, :, 3], image[:, :, -1])


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied(tmp_path, orientation):
    stored = make_frames(1, 10, 16)[0]
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(stored).save(tmp_path / "a.png", exif=exif)  # PNG: lossless, so exact
    expected = np.asarray(ImageOps.exif_transpose(Image.open(tmp_path / "a.png")))
    assert np.array_equal(read_image(tmp_path / "a.png").numpy(), expected)


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_metadata_is_read_with_the_orientation_reset(tmp_path, suffix):
    _, profile = make_photo(tmp_path / f"a{suffix}", orientation=6)
    metadata = read_image_metadata(tmp_path / f"a{suffix}")
    assert metadata.icc_profile == profile and metadata.dpi == pytest.approx(PHOTO_DPI, rel=1e-3)
    exif = Image.Exif()
    exif.load(b"Exif\x00\x00" + metadata.exif)
    assert exif[0x0112] == 1 and exif[0x010F] == PHOTO_MAKE  # read_image turns the pixels upright


def test_metadata_of_a_plain_image_is_empty(tmp_path):
    write_image(tmp_path / "a.png", torch.zeros(3, 3, 3, dtype=torch.uint8))
    assert read_image_metadata(tmp_path / "a.png") == ImageMetadata()


def test_a_tiffs_own_tags_are_not_taken_for_exif(tmp_path):
    write_image(tmp_path / "a.tif", torch.zeros(3, 3, 3, dtype=torch.uint8))  # strip offsets, sizes
    assert read_image_metadata(tmp_path / "a.tif").exif is None


@pytest.mark.parametrize(
    ("suffix", "deep", "embeds", "has_dpi"),
    [(".png", False, True, True), (".png", True, True, True), (".jpg", False, True, True),
     (".webp", False, True, False), (".tif", True, False, True)],
)
def test_write_keeps_the_icc_profile_dpi_and_exif(tmp_path, caplog, suffix, deep, embeds, has_dpi):
    _, profile = make_photo(tmp_path / "src.jpg")
    metadata = read_image_metadata(tmp_path / "src.jpg")
    image = torch.from_numpy(make_frames(1, 9, 11, deep=deep)[0])
    with caplog.at_level(logging.WARNING, logger="restore.io"):
        write_image(tmp_path / f"out{suffix}", image, metadata)
    with Image.open(tmp_path / f"out{suffix}") as out:
        assert (out.info.get("icc_profile") == profile) == embeds
        assert (out.getexif().get(0x010F) == PHOTO_MAKE) == embeds
        assert (out.info.get("dpi") == pytest.approx(PHOTO_DPI, rel=1e-3)) == has_dpi
    lost = [what for what, kept in [("ICC profile and EXIF", embeds), ("DPI", has_dpi)] if not kept]
    assert (f"cannot hold the input's {' and '.join(lost)}; dropped" in caplog.text) == bool(lost)
    assert torch.equal(read_image(tmp_path / f"out{suffix}"), image) or suffix in (".jpg", ".webp")


def test_write_replaces_existing_file(tmp_path):
    write_image(tmp_path / "a.png", torch.zeros(3, 3, 3, dtype=torch.uint8))
    write_image(tmp_path / "a.png", torch.full((3, 3, 3), 7, dtype=torch.uint8))
    assert read_image(tmp_path / "a.png").unique().tolist() == [7]


def test_write_rejects_bad_input(tmp_path):
    with pytest.raises(OutputError, match="a.jpg: 16-bit images need"):
        write_image(tmp_path / "a.jpg", torch.zeros(3, 3, 3, dtype=torch.uint16))
    with pytest.raises(OutputError, match="a.jpg: .jpg cannot hold an alpha channel"):
        write_image(tmp_path / "a.jpg", torch.zeros(3, 3, 4, dtype=torch.uint8))
    with pytest.raises(ValueError, match="expected"):
        write_image(tmp_path / "a.png", torch.zeros(3, 3, 3))
    with pytest.raises(OutputError, match="no-such-folder"):
        write_image(tmp_path / "no-such-folder" / "a.png", torch.zeros(3, 3, 3, dtype=torch.uint8))


def test_missing_empty_corrupt_and_unsupported(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        read_image(tmp_path / "nope.png")
    (tmp_path / "empty.png").touch()
    with pytest.raises(InputError, match="empty file"):
        read_image(tmp_path / "empty.png")
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg" * 10)
    with pytest.raises(InputError, match="corrupt"):
        read_image(tmp_path / "bad.jpg")
    cv2.imwrite(str(tmp_path / "float.tif"), np.random.default_rng(0).random((4, 4, 3), dtype=np.float32))
    with pytest.raises(InputError, match="unsupported sample type float32") as error:
        read_image(tmp_path / "float.tif")
    assert str(error.value).startswith(str(tmp_path / "float.tif"))
    (tmp_path / "a.gif").write_bytes(b"GIF89a")
    with pytest.raises(InputError, match="unsupported image type"):
        read_image(tmp_path / "a.gif")
