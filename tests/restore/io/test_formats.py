"""restore.io.formats: which suffix is which, and the container policy of video outputs."""

from __future__ import annotations

from pathlib import Path

import pytest

from restore.errors import OutputError
from restore.io.formats import is_image, is_video, muxer_for, output_suffix


def test_kind_by_extension():
    assert is_image("a/B.JPG") and is_image("x.tiff") and not is_image("x.mp4")
    assert is_video("clip.MKV") and is_video("c.m4v") and not is_video("c.png") and not is_video("noext")


@pytest.mark.parametrize("src,codec,suffix", [
    ("a.MOV", "libx264", ".mov"),  # x264/x265 keep a container that holds them
    ("a.avi", "libx265", ".mp4"),  # and move out of one we do not write
    ("a.mov", "ffv1", ".mkv"),  # lossless codecs have their own container
    ("a.mp4", "png", ""),  # a folder of frames
])
def test_output_suffix_keeps_the_input_container_when_it_can(src, codec, suffix):
    assert output_suffix(Path(src), codec) == suffix


def test_muxer_for_names_the_muxer_or_refuses_the_name():
    assert muxer_for(Path("o.MKV"), "ffv1") == "matroska" and muxer_for(Path("o.m4v"), "libx264") == "mp4"
    assert muxer_for(Path("frames"), "png") is None
    with pytest.raises(OutputError, match=r"as a \.avi file; name it \.mp4, \.mkv, \.mov or \.m4v$"):
        muxer_for(Path("o.avi"), "libx264")
