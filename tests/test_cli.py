"""The ``restore`` command's plumbing: options generated from their dataclasses, and errors vs bugs."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from safetensors.torch import save_file

import cli
from models.srvgg import SRVGG, SRVGGConfig
from restore.api import UpscaleOptions
from restore.dicom.job import DicomJobConfig
from restore.errors import InputError
from restore.options import from_arguments
from restore.registry import sha256_of


def _subparser(name: str):
    return cli.build_parser()._subparsers._group_actions[0].choices[name]


@pytest.fixture
def default_x4(tmp_path, monkeypatch) -> str:
    """A weights folder whose x4 video-SR model is marked the default (a tiny SRVGG)."""
    config = {"scale": 4, "channels": 4, "convs": 1}
    folder = tmp_path / "weights"
    folder.mkdir()
    weights = folder / "tiny-x4.safetensors"
    save_file(SRVGG(SRVGGConfig(**config)).state_dict(), str(weights))
    card = {"name": "tiny-x4", "architecture": "srvgg", "task": "video-sr", "scale": 4, "config": config,
            "weights": weights.name, "sha256": sha256_of(weights), "default": True}
    (folder / "tiny-x4.json").write_text(json.dumps(card))
    monkeypatch.setenv("RESTORE_WEIGHTS_DIR", str(folder))
    return "tiny-x4"


def test_the_library_default_model_is_the_one_restore_upscale_runs(default_x4, tmp_path):
    image, report = tmp_path / "in.png", tmp_path / "report.json"
    cv2.imwrite(str(image), np.zeros((8, 8, 3), np.uint8))
    assert cli.main(["upscale", str(image), "-o", str(tmp_path / "out.png"), "-q", "--report", str(report)]) == 0
    assert json.loads(report.read_text())["model"] == UpscaleOptions().model == default_x4
    assert UpscaleOptions(scale=2).model == "bicubic"  # no default shipped for x2: the baseline, as the CLI


def test_every_upscale_option_is_a_flag_with_the_dataclass_default():
    parser = _subparser("upscale")
    actions = parser._option_string_actions
    for f in dataclasses.fields(UpscaleOptions):
        flag = f.metadata["flag"] or "--" + f.name.replace("_", "-")
        assert flag in actions and actions[flag].dest == f.name, f.name
        assert actions[flag].help, f"{flag} has no help text"
    args = parser.parse_args(["in.mp4", "-o", "out.mp4"])
    assert from_arguments(UpscaleOptions, args) == UpscaleOptions()
    args = parser.parse_args(["in.mp4", "-o", "out.mp4", "--no-audio", "--tile-overlap", "8", "--scale", "2"])
    opts = from_arguments(UpscaleOptions, args)
    assert (opts.keep_audio, opts.tile_overlap, opts.scale) == (False, 8, 2)


def test_dicom_flags_are_made_from_the_job_config_and_read_back_with_its_defaults():
    parser = _subparser("dicom")
    by_dest = {a.dest: a for a in parser._actions}
    for f in dataclasses.fields(DicomJobConfig)[2:]:  # inputs and outdir: the positional arguments and -o
        assert by_dest[f.name].help == f.metadata["help"], f.name
    assert by_dest["task"].required and by_dest["quiet"].option_strings == ["-q", "--quiet"]
    args = parser.parse_args(["in", "-o", "out", "--task", "ct-denoise"])
    assert from_arguments(DicomJobConfig, args) == DicomJobConfig(inputs=[Path("in")], outdir=Path("out"), task="ct-denoise")


def test_a_bug_inside_a_command_prints_its_traceback_and_asks_for_a_report(monkeypatch, capsys):
    def broken(args):
        raise ValueError("an internal invariant does not hold")

    monkeypatch.setattr(cli, "_run_models", broken)
    assert cli.main(["models"]) == cli.EXIT_BUG != 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "ValueError: an internal invariant does not hold" in err
    assert "bug in restore" in err and "please report" in err


def test_a_restore_error_inside_a_command_is_one_line(monkeypatch, capsys):
    def refuses(args):
        raise InputError("clip.mp4", "not a video")

    monkeypatch.setattr(cli, "_run_models", refuses)
    assert cli.main(["models"]) == 1
    assert capsys.readouterr().err == "restore: error: clip.mp4: not a video\n"


@pytest.mark.parametrize("options,message", [
    (["--device", "tpu"], "--device tpu: expected auto, cpu, cuda or cuda:N"),
    (["--overlap", "8"], "--overlap must be in [0, chunk), got 8 with chunk 8"),  # bicubic's chunk: 8 frames
    (["--tile", "16", "--tile-overlap", "16"], "--tile-overlap (16) must be smaller than --tile (16)"),
    (["--model", "nlm"], "model 'nlm' upscales x1, but --scale 4 was asked for"),
])
def test_settings_that_cannot_work_are_one_line_user_errors(tmp_path, capsys, options, message):
    assert cli.main(["upscale", str(tmp_path / "in.png"), "-o", str(tmp_path / "out.png"), "-q", *options]) == 1
    assert capsys.readouterr().err == f"restore: error: {message}\n"
