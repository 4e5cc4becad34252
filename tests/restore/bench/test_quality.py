"""``restore bench quality`` (restore/bench/quality.py) on generated images, synthetic clips, a real
pydicom CT slice and a tiny OASIS with random weights exported with its model card."""

from __future__ import annotations

import argparse
import json

import cv2
import pytest
import torch

from restore.bench import quality
from restore.errors import ModelError
from restore.evaluation import synthetic_clip


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    quality.add_arguments(parser)
    return parser.parse_args(list(argv))


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """Set5/ and Set14/ folders of small generated PNGs (sizes not multiples of 4)."""
    root = tmp_path_factory.mktemp("bench")
    for folder, count in (("Set5", 2), ("Set14", 1)):
        (root / folder).mkdir()
        for i in range(count):
            rgb = (synthetic_clip(1, 38, 45, seed=i)[0].permute(1, 2, 0).numpy() * 255).round().astype("uint8")
            cv2.imwrite(str(root / folder / f"img{i}.png"), rgb[..., ::-1])
    return root


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    """oasis-t with random weights saved as ``tiny.safetensors`` + model card, as `restore train export` writes."""
    from safetensors.torch import save_file

    from models.oasis import PRESETS
    from restore.registry import build_model, sha256_of

    folder = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    config = PRESETS["oasis-t"]["config"]
    model = build_model("oasis", config)
    path = folder / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    card = {"name": "tiny", "architecture": "oasis", "task": "video-sr", "scale": 4, "config": config,
            "weights": path.name, "sha256": sha256_of(path)}
    path.with_suffix(".json").write_text(json.dumps(card))
    return path


def test_image_suites_measure_every_model_and_the_imresize_check(data_root, capsys):
    results = quality.run(_args("--suite", "set5,set14", "--models", "bicubic", "--scales", "2,4",
                                "--data-root", str(data_root)))
    assert set(results["images"]) == {"set5_x2", "set14_x2", "set5_x4", "set14_x4"}
    set5 = results["images"]["set5_x4"]
    assert set5["images"] == 2 and set(set5["models"]) == {quality.IMRESIZE, "bicubic"}
    for row in set5["models"].values():
        assert 15 < row["psnr"] < 60 and 0 < row["ssim"] < 1 and set(row["per_image"]) == {"img0", "img1"}
    # x2 is easier than x4
    assert results["images"]["set5_x2"]["models"]["bicubic"]["psnr"] > set5["models"]["bicubic"]["psnr"]
    printed = capsys.readouterr().out
    assert "### set5_x4" in printed and "SwinIR (2021) (11.9M) | 32.92 | 0.9044" in printed
    assert "SwinIR" not in printed.split("### set5_x2")[1].split("###")[0]  # published rows are x4 only


def test_labelled_weights_run_image_and_video_suites(data_root, tiny_weights):
    results = quality.run(_args(
        "--suite", "set5,video", "--models", "bicubic,tiny", "--weights", f"tiny={tiny_weights}",
        "--scales", "4,2", "--data-root", str(data_root), "--clip-frames", "3", "--clip-height", "48",
    ))
    assert "psnr" in results["images"]["set5_x4"]["models"]["tiny"]
    assert results["images"]["set5_x2"]["models"]["tiny"] == {"skipped": "weights are not x2"}
    clip = results["video"]["clips"]["synthetic0"]
    assert clip["frames"] == 3 and clip["size"] == "64x48" and clip["ground_truth_warp_error"] >= 0
    assert set(clip["models"]) == {"bicubic T=1", "tiny T=1", "tiny T=4"}


def test_video_suite_grades_models_on_noisy_and_compressed_lr(capsys):
    results = quality.run(_args("--suite", "video", "--models", "bicubic",
                                "--clip-frames", "3", "--clip-height", "48", "--lr-degradations", "noise:10,h264:40"))
    degraded = results["video"]["clips"]["synthetic0"]["degraded_lr"]
    clean = results["video"]["clips"]["synthetic0"]["models"]["bicubic T=1"]["psnr"]
    assert list(degraded) == ["noise:10", "h264:40"]
    assert all(degraded[c]["bicubic"]["psnr"] < clean - 0.3 for c in degraded)  # both conditions hurt
    assert "| synthetic0 | h264:40 | " in capsys.readouterr().out
    with pytest.raises(SystemExit, match="unknown LR degradation 'blur:2'"):
        quality.run(_args("--suite", "video", "--lr-degradations", "blur:2"))


@pytest.mark.slow
def test_speed_suite_times_labels_as_their_preset_and_plots(tiny_weights, tmp_path):
    plot = tmp_path / "plot.png"
    results = quality.run(_args("--suite", "speed", "--models", "bicubic,tiny", "--weights", f"tiny={tiny_weights}",
                                "--speed-size", "32x24", "--speed-frames", "2", "--device", "cpu", "--plot", str(plot)))
    speed = results["speed"]["models"]
    assert speed["tiny"]["timed_as"] == "oasis-t" and speed["tiny"]["frames_per_s"] > 0  # the preset its card matches
    assert quality.SPEED_REFERENCE in speed
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_and_markdown_from_results(tmp_path):
    speed_row = {"frames_per_s": 10.0, "params_m": 1.0, "gmac_per_frame": 2.0}
    results = {
        "images": {"set5_x4": {"images": 5, "scale": 4, "models": {"mine": {"psnr": 30.1, "ssim": 0.85}}}},
        "speed": {"settings": {"device": "cpu", "lr_size": "32x24", "frames": 2, "scale": 4},
                  "models": {"mine": {**speed_row, "timed_as": "oasis-s"}, "srvgg-compact": {**speed_row, "timed_as": "srvgg-compact"},
                             "other": {"skipped": "card config matches no registry preset (closest: oasis-s)"}}},
    }
    quality.plot_speed_quality(results, tmp_path / "p.png")
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
    table = quality.markdown(results)
    assert "| mine | 30.1 | 0.85 |" in table and "| other | card config matches no registry preset" in table


def test_ct_suite_on_a_real_dicom_slice(tmp_path):
    from pydicom.data import get_testdata_file

    results = quality.run(_args("--suite", "ct", "--ct", get_testdata_file("CT_small.dcm"), "--ct-models", "nlm",
                                "--no-bm3d", "--dose", "0.1"))
    (name, row), = results["ct"]["slices"].items()
    assert name.startswith("CT_small.dcm") and row["noise_std_hu"] > 1
    methods = row["methods"]
    assert set(methods) == {"noisy input", "nlm"}
    assert methods["nlm"]["psnr"] > methods["noisy input"]["psnr"]


def test_mr_suite_takes_mr_series_only_and_grades_noise_levels_and_nlm():
    from pydicom.data import get_testdata_file

    # a CT file among the paths is not an MR series: left out
    results = quality.run(_args("--suite", "mr", "--mr", get_testdata_file("MR_small.dcm"), get_testdata_file("CT_small.dcm"),
                                "--mr-models", "nlm,identity", "--rician", "0.03,0.1"))
    conditions = results["mr"]["conditions"]
    assert list(conditions) == ["rician 0.03", "rician 0.1"]
    rows = {c: next(iter(v["slices"].items())) for c, v in conditions.items()}
    assert all(name.startswith("MR_small.dcm") and len(conditions[c]["slices"]) == 1 for c, (name, _) in rows.items())
    light, heavy = (rows[c][1]["methods"] for c in ("rician 0.03", "rician 0.1"))
    assert light["noisy input"]["psnr"] > heavy["noisy input"]["psnr"] + 6  # 3x the noise: ~9.5 dB
    assert abs(heavy["identity"]["psnr"] - heavy["noisy input"]["psnr"]) < 0.05
    assert heavy["nlm"]["psnr"] > heavy["noisy input"]["psnr"] and heavy["nlm"]["seconds"] >= 0
    assert "| rician 0.1 | MR_small.dcm" in quality.markdown(results)
    with pytest.raises(Exception, match="no single-channel MR series"):
        quality.run(_args("--suite", "mr", "--mr", get_testdata_file("CT_small.dcm")))


def test_bad_model_arguments_name_the_problem(data_root, tmp_path):
    with pytest.raises(ModelError, match="no --weights nope=PATH"):
        quality.run(_args("--suite", "set5", "--models", "nope", "--data-root", str(data_root)))
    with pytest.raises(SystemExit, match="LABEL=PATH"):
        quality.run(_args("--suite", "set5", "--weights", "just-a-path"))
    with pytest.raises(SystemExit, match="unknown suite"):
        quality.run(_args("--suite", "set6"))


def test_ct_suite_sweeps_doses_and_gaussian_noise_with_bias_grid_and_time():
    from pydicom.data import get_testdata_file

    results = quality.run(_args("--suite", "ct", "--ct", get_testdata_file("CT_small.dcm"), "--ct-models", "identity",
                                "--no-bm3d", "--dose", "0.1,1.0", "--ct-noise-hu", "15", "--gaussian-hu", "10"))
    ct = results["ct"]
    assert list(ct["conditions"]) == ["dose 0.1", "dose 1.0", "ct noise 15 HU", "gaussian 10 HU"]
    assert ct["dose"] == 0.1 and ct["slices"] == ct["conditions"]["dose 0.1"]["slices"]
    std = {c: next(iter(v["slices"].values()))["noise_std_hu"] for c, v in ct["conditions"].items()}
    assert std["dose 0.1"] > std["dose 1.0"] and abs(std["gaussian 10 HU"] - 10) < 1
    assert 5 < std["ct noise 15 HU"] < 16  # 15 HU SD over the body, less over the whole slice with its air
    row = next(iter(ct["conditions"]["gaussian 10 HU"]["slices"].values()))
    noisy, same = row["methods"]["noisy input"], row["methods"]["identity"]
    assert abs(same["psnr"] - noisy["psnr"]) < 0.05 and same["seconds"] >= 0
    assert abs(same["bias_hu"]["soft tissue"]) < 2 and max(same["periodic_peak"].values()) < 3  # white noise
    assert "| gaussian 10 HU | CT_small.dcm" in quality.markdown(results)


@pytest.fixture(scope="module")
def tiny_rat_weights(tmp_path_factory):
    """rat-t with random weights (none at zero) and its model card (a CT denoiser), as `restore train export` writes."""
    from safetensors.torch import save_file

    from models.rat import PRESETS
    from restore.registry import build_model, sha256_of

    path = tmp_path_factory.mktemp("rat") / "tinyrat.safetensors"
    torch.manual_seed(0)
    config = PRESETS["rat-t"]["config"]
    net = build_model("rat", config)
    with torch.no_grad():  # the output layers start at zero (identity): random weights everywhere, so it acts
        for p in net.parameters():
            p.normal_(0.0, 0.1)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    card = {"name": "tinyrat", "architecture": "rat", "task": "ct-denoise", "scale": 1, "config": config,
            "weights": path.name, "sha256": sha256_of(path)}
    path.with_suffix(".json").write_text(json.dumps(card))
    return path


def test_ct_suite_runs_rat_models_once_per_partition(tiny_rat_weights):
    from pydicom.data import get_testdata_file

    results = quality.run(_args("--suite", "ct", "--ct", get_testdata_file("CT_small.dcm"), "--ct-models", "identity,tinyrat",
                                "--weights", f"tinyrat={tiny_rat_weights}", "--regions", "hu,grid", "--no-bm3d", "--gaussian-hu", "20", "--dose", ""))
    assert results["settings"]["regions"] == ["hu", "grid"]
    (_, row), = results["ct"]["conditions"]["gaussian 20 HU"]["slices"].items()
    methods = row["methods"]
    assert set(methods) == {"noisy input", "identity", "tinyrat [hu]", "tinyrat [grid]"}  # identity takes no regions
    # region attention only inside each region: another partition is another output
    assert methods["tinyrat [hu]"]["rmse_hu"] != methods["tinyrat [grid]"]["rmse_hu"]
    with pytest.raises(SystemExit, match="unknown partition"):
        quality.run(_args("--suite", "ct", "--ct", get_testdata_file("CT_small.dcm"), "--regions", "voronoi"))


def test_ct_bias_phantom_alone_is_a_ct_suite_with_wide_tissue_bands():
    results = quality.run(_args("--suite", "ct", "--ct-bias-phantom", "--ct-models", "identity", "--no-bm3d",
                                "--dose", "0.5", "--gaussian-hu", "20"))
    for condition in ("dose 0.5", "gaussian 20 HU"):
        (name, row), = results["ct"]["conditions"][condition]["slices"].items()
        assert name == quality.PHANTOM_SLICE
        bias = row["methods"]["identity"]["bias_hu"]
        # zero-mean noise over thousands of interior pixels: no offset in fat or soft tissue
        assert abs(bias["fat"]) < 2 and abs(bias["soft tissue"]) < 1
    assert f"| gaussian 20 HU | {quality.PHANTOM_SLICE} | identity |" in quality.markdown(results)
    with pytest.raises(SystemExit, match="--ct-bias-phantom"):
        quality.run(_args("--suite", "ct"))


def test_periodic_peak_finds_a_grid_and_not_white_noise():
    import numpy as np

    from restore.evaluation import periodic_peak

    rng = np.random.default_rng(0)
    clean = np.zeros((128, 128))
    noise = rng.normal(0, 10, clean.shape)
    assert max(periodic_peak(noise, clean).values()) < 2
    grid = noise + 10.0 * np.cos(np.pi / 2 * np.arange(128))[None, :]  # a 4-pixel period along x
    assert periodic_peak(grid, clean)["4"] > 10


def test_self_ensemble_is_recorded_and_changes_a_models_numbers(data_root, tiny_weights, tmp_path):
    from safetensors.torch import load_file, save_file

    from restore.registry import sha256_of

    # the random model's zero-initialised output layers make it equivariant to flips: perturb them
    torch.manual_seed(1)
    state = {k: v + 0.05 * torch.randn_like(v) for k, v in load_file(str(tiny_weights)).items()}
    weights = tmp_path / "perturbed.safetensors"
    save_file(state, str(weights))
    card = json.loads(tiny_weights.with_suffix(".json").read_text())
    weights.with_suffix(".json").write_text(json.dumps({**card, "weights": weights.name, "sha256": sha256_of(weights)}))
    argv = ("--suite", "set5", "--models", "tiny", "--weights", f"tiny={weights}", "--data-root", str(data_root))
    plain, plus = quality.run(_args(*argv)), quality.run(_args(*argv, "--self-ensemble"))
    assert (plain["settings"]["self_ensemble"], plus["settings"]["self_ensemble"]) == (False, True)
    rows = [r["images"]["set5_x4"]["models"]["tiny"]["per_image"]["img0"]["psnr"] for r in (plain, plus)]
    assert rows[0] != rows[1]
    # the MATLAB-bicubic check row is never ensembled
    assert plain["images"]["set5_x4"]["models"][quality.IMRESIZE] == plus["images"]["set5_x4"]["models"][quality.IMRESIZE]
