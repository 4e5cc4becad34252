"""Tests of datasets/medical_data.py: data modules on real pydicom files and image files, and a
``fast_dev_run`` of every RAT config through LightningCLI."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest
import torch
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from datasets.medical_data import DicomDataModule, ImageFolderDataModule, PairedDicomDataModule, SyntheticSlices
from restore.errors import InputError, OptionError

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def write_series(folder: Path, template: str, n: int, study_uid: str, noise: float = 0.0, seed: int = 0,
                 size: int = 64) -> None:
    """``n`` slices of a pydicom test file (central ``size`` crop, shifted copies, optional noise)."""
    folder.mkdir(parents=True, exist_ok=True)
    base = pydicom.dcmread(get_testdata_file(template))
    rng = np.random.default_rng(seed)
    series_uid = generate_uid()
    for i in range(n):
        ds = copy.deepcopy(base)
        top = (base.Rows - size) // 2
        crop = base.pixel_array[top : top + size, top : top + size].astype(np.float64)
        pixels = np.roll(crop, 3 * i, axis=1)
        pixels = pixels + rng.normal(0, noise, pixels.shape) if noise else pixels
        ds.set_pixel_data(np.clip(pixels, 0, 4000).round().astype(np.int16), "MONOCHROME2", 16)
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.SeriesInstanceUID = series_uid
        ds.StudyInstanceUID = study_uid
        ds.InstanceNumber = n - i  # disagrees with position on purpose: pairing must use positions
        ds.ImagePositionPatient = [0.0, 0.0, 5.0 * i]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.save_as(folder / f"{i:03d}.dcm")


@pytest.fixture
def ct_folder(tmp_path: Path) -> Path:
    write_series(tmp_path / "ct", "CT_small.dcm", 3, generate_uid())
    return tmp_path / "ct"


@pytest.fixture
def paired_folders(tmp_path: Path) -> tuple[Path, Path]:
    study = generate_uid()
    write_series(tmp_path / "full", "CT_small.dcm", 3, study)
    write_series(tmp_path / "low", "CT_small.dcm", 3, study, noise=40.0)
    return tmp_path / "full", tmp_path / "low"


@pytest.fixture
def mr_folder(tmp_path: Path) -> Path:
    write_series(tmp_path / "mr", "MR_small.dcm", 3, generate_uid())
    return tmp_path / "mr"


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "tiles"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        tile = cv2.GaussianBlur(rng.integers(0, 256, (66, 64, 3), dtype=np.uint8), (5, 5), 2)
        cv2.imwrite(str(folder / f"tile{i}.png"), tile)
    return folder


def test_paired_dicom_pairs_by_position_and_windows_hu(paired_folders):
    full, low = paired_folders
    dm = PairedDicomDataModule(str(full), str(low), patch_size=32, batch_size=2, val_fraction=0.34)
    dm.setup("fit")
    assert len(dm.train_set) == 2 and len(dm.val_set) == 1
    sample = dm.val_set[0]
    x, y = sample["input"], sample["target"]
    assert x.shape == y.shape == (1, 64, 64)
    assert 0 <= float(x.min()) and float(x.max()) <= 1
    # same slice position -> same anatomy: the pair differs only by the added noise (40 HU std)
    diff_hu = (x - y) * 4095
    assert 20 < float(diff_hu.std()) < 60
    batch = next(iter(dm.train_dataloader()))
    assert batch["input"].shape == (2, 1, 32, 32) and batch["regions"].shape == (2, 32, 32)
    assert batch["regions"].dtype == torch.int64


def test_dicom_simulated_low_dose_is_fixed_per_slice_and_cached(ct_folder, tmp_path):
    dm = DicomDataModule(str(ct_folder), degradation={"kind": "low_dose_ct", "dose_fraction": 0.1}, patch_size=32,
                         cache_dir=str(tmp_path / "cache"))
    dm.setup("fit")
    a, b = dm.val_set[0], dm.val_set[0]
    assert torch.equal(a["input"], b["input"]) and torch.equal(a["regions"], b["regions"])
    assert not torch.equal(a["input"], a["target"])
    assert list((tmp_path / "cache" / "slices").glob("*.npz"))
    assert list((tmp_path / "cache" / "partitions").glob("*.npy"))
    # the 'auto' partition of CT is HU bands: every pixel labelled, labels contiguous
    regions = a["regions"]
    assert regions.min() == 0 and len(regions.unique()) == int(regions.max()) + 1


def test_dicom_realizations_and_synthetic_slices(ct_folder, image_folder, tmp_path):
    dm = DicomDataModule([str(ct_folder)], degradation={"kind": "low_dose_ct", "dose_fraction": [0.1, 0.5]},
                         realizations=2, synthetic=SyntheticSlices(phantoms=2, image_dir=str(image_folder), size=32),
                         patch_size=16, val_fraction=0.1)
    sources = dm.sources()
    keys = [s.key for s in sources]
    assert len(keys) == (3 + 2 + 3) * 2 and len(set(keys)) == len(keys)  # 3 real + 2 phantoms + 3 images, twice
    assert {s.units for s in sources} == {"HU"}
    (first_a, clean_a), (first_b, clean_b) = sources[0].load(), sources[1].load()  # one slice, two realizations
    np.testing.assert_array_equal(clean_a, clean_b)
    assert not np.array_equal(first_a, first_b)
    phantom = next(s for s in sources if s.key.startswith("phantom/"))
    noisy, clean = phantom.load()
    assert clean.shape == (32, 32) and 5 < float(np.std(noisy - clean)) < 300
    dm.setup("fit")
    assert dm.train_dataloader().dataset[0]["input"].shape == (1, 16, 16)


def test_phantoms_are_refused_for_mr(mr_folder):
    with pytest.raises(ValueError, match="phantoms are CT"):
        DicomDataModule(str(mr_folder), degradation={"kind": "rician"}, synthetic=SyntheticSlices(phantoms=1)).sources()


def test_phantoms_alone_need_no_dicom_folder():
    """The smoke recipe (configs/rat_t.yaml) trains on phantoms only: no DICOM file anywhere."""
    dm = DicomDataModule(synthetic=SyntheticSlices(phantoms=4, size=32), patch_size=16, val_fraction=0.25)
    dm.setup("fit")
    assert len(dm.train_set) == 3 and len(dm.val_set) == 1
    assert {s.units for s in dm.train_set.sources} == {"HU"}  # windowed as CT
    sample = dm.val_set[0]
    assert sample["input"].shape == sample["target"].shape == (1, 32, 32)
    assert not torch.equal(sample["input"], sample["target"])
    with pytest.raises(ValueError, match="needs dicom_dir or synthetic slices"):
        DicomDataModule()


def test_mr_kspace_sr_sizes(mr_folder):
    dm = DicomDataModule(str(mr_folder), degradation={"kind": "kspace", "scale": 2}, patch_size=16)
    dm.setup("fit")
    s = dm.train_set[0]
    assert s["input"].shape == (1, 16, 16) and s["target"].shape == (1, 32, 32) and s["regions"].shape == (16, 16)
    v = dm.val_set[0]
    assert v["input"].shape == (1, 32, 32) and v["target"].shape == (1, 64, 64)
    assert float(v["input"].max()) <= 1.0


def test_a_slice_smaller_than_the_patch_is_refused_before_training_naming_its_file(mr_folder):
    # 64x64 slices; x2 k-space SR makes 32x32 inputs, which a 40 px input patch does not fit either
    for degradation, patch in (({"kind": "rician"}, 96), ({"kind": "kspace", "scale": 2}, 40)):
        dm = DicomDataModule(str(mr_folder), degradation=degradation, patch_size=patch)
        with pytest.raises(OptionError, match=r"patch_size \d+ is larger than the (64x64|32x32) slice .* of .*mr"):
            dm.setup("fit")
    DicomDataModule(str(mr_folder), degradation={"kind": "rician"}, patch_size=64).setup("fit")  # fits exactly


def test_image_folder_bicubic_x4(image_folder):
    dm = ImageFolderDataModule(str(image_folder), patch_size=8)
    dm.setup("fit")
    s = dm.train_set[0]
    assert s["input"].shape == (3, 8, 8) and s["target"].shape == (3, 32, 32)
    assert dm.val_set[0]["target"].shape == (3, 64, 64)  # cropped to a multiple of the scale


def test_bad_folders_name_the_path(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "junk.dcm").write_bytes(b"not dicom")
    with pytest.raises(InputError, match="empty"):
        DicomDataModule(str(tmp_path / "empty")).setup("fit")
    with pytest.raises(InputError, match="no images"):
        ImageFolderDataModule(str(tmp_path / "empty")).setup("fit")


def _fast_dev_run(config: str, data_args: list[str], tmp_path: Path, monkeypatch) -> None:
    from pytorch_lightning.cli import LightningCLI

    args = ["fit", "--config", str(CONFIGS / config), "--trainer.fast_dev_run=1", "--trainer.accelerator=cpu",
            "--trainer.logger=false", "--trainer.enable_progress_bar=false", f"--trainer.default_root_dir={tmp_path}",
            "--data.init_args.batch_size=1", "--data.init_args.num_workers=0",
            f"--data.init_args.cache_dir={tmp_path / 'cache'}", *data_args]
    # LightningCLI warns when sys.argv (pytest's) and args are both present
    monkeypatch.setattr(sys, "argv", ["restore"])
    cli = LightningCLI(args=args, save_config_kwargs={"overwrite": True})
    assert cli.trainer.state.finished
    assert torch.isfinite(torch.tensor(cli.trainer.callback_metrics["val/psnr"].item()))


@pytest.mark.parametrize(
    "config", ["rat_ct_denoise.yaml", "rat_ct_simulated.yaml", "rat_mr_denoise.yaml", "rat_pathology_sr_x4.yaml",
               "rat_t.yaml"]
)
def test_config_fast_dev_run(config, tmp_path, monkeypatch, paired_folders, mr_folder, image_folder, ct_folder):
    data = {
        "rat_ct_denoise.yaml": [f"--data.init_args.full_dose_dir={paired_folders[0]}",
                                f"--data.init_args.low_dose_dir={paired_folders[1]}", "--data.init_args.patch_size=32"],
        "rat_mr_denoise.yaml": [f"--data.init_args.dicom_dir={mr_folder}", "--data.init_args.patch_size=32",
                                f"--data.init_args.synthetic.image_dir={image_folder}"],
        "rat_ct_simulated.yaml": [f"--data.init_args.dicom_dir=[{ct_folder}]", "--data.init_args.patch_size=16",
                                  "--data.init_args.realizations=1", "--data.init_args.synthetic.phantoms=1",
                                  f"--data.init_args.synthetic.image_dir={image_folder}",
                                  "--data.init_args.synthetic.size=32"],
        "rat_pathology_sr_x4.yaml": [f"--data.init_args.image_dir={image_folder}", "--data.init_args.patch_size=16"],
        # nested keys reach the partition config (as --data.init_args.partition.sam_checkpoint would)
        "rat_t.yaml": [f"--data.init_args.dicom_dir={ct_folder}", "--data.init_args.partition.grid_size=8"],
    }[config]
    _fast_dev_run(config, data, tmp_path, monkeypatch)


def test_rat_recipe_fit_export_and_use_in_restore_dicom(tmp_path, monkeypatch, ct_folder):
    """The documented flow: `restore train fit` (a few steps, no validation reached) leaves a
    last.ckpt under the recipe's runs/ folder, `restore train export` turns it into weights + card,
    and `restore dicom --model rat-t --weights` uses them (the RAT recipes used to save no checkpoint)."""
    from cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["restore"])
    assert main(["train", "fit", "--config", str(CONFIGS / "rat_t.yaml"), f"--data.init_args.dicom_dir={ct_folder}",
                 "--data.init_args.partition.grid_size=8", "--trainer.max_steps=2",
                 "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]) == 0
    (last,) = (tmp_path / "runs" / "rat_t").rglob("last.ckpt")
    weights = tmp_path / "rat-mine.safetensors"
    assert main(["train", "export", "--ckpt", str(last), "--out", str(weights)]) == 0
    assert main(["dicom", str(ct_folder), "-o", str(tmp_path / "out"), "--task", "ct-denoise", "--model", "rat-t",
                 "--weights", str(weights), "--regions", "hu", "-q"]) == 0
    derived = [pydicom.dcmread(p) for p in sorted((tmp_path / "out").rglob("*.dcm"))]
    assert len(derived) == 3 and all(np.isfinite(d.pixel_array).all() for d in derived)


def test_ct_degradation_adds_noise_texture_at_a_stated_sd():
    from datasets.medical_data import Degradation

    clean = np.full((64, 64), 40.0, np.float32)
    clean[:, :8] = -1000.0
    texture = Degradation("low_dose_ct", texture_hu=(10.0, 10.0), texture_fraction=1.0)
    noise = (texture(clean, np.random.default_rng(0), 0.7) - clean)[:, 8:]
    assert noise.dtype == np.float32 and abs(float(noise.std()) - 10.0) < 1.0
    white = Degradation("low_dose_ct", gaussian_hu=(10.0, 10.0), gaussian_fraction=1.0)
    white_noise = (white(clean, np.random.default_rng(0), 0.7) - clean)[:, 8:]

    def neighbour_correlation(n: np.ndarray) -> float:
        return float(np.corrcoef(n[:, :-1].ravel(), n[:, 1:].ravel())[0, 1])

    # the FBP texture is correlated between neighbouring pixels (about 0.1 here), white noise is not
    assert neighbour_correlation(noise) > 0.07 > abs(neighbour_correlation(white_noise))
    with pytest.raises(ValueError, match="sum to at most 1"):
        Degradation("low_dose_ct", gaussian_fraction=0.6, texture_fraction=0.6)


def test_ct_degradation_mixes_gaussian_noise_and_reduced_dose():
    from datasets.medical_data import Degradation

    clean = np.full((64, 64), 40.0, np.float32)
    clean[:, :8] = -1000.0
    light = Degradation("low_dose_ct", gaussian_hu=(5.0, 5.0), gaussian_fraction=1.0)
    noise = light(clean, np.random.default_rng(0), 0.7) - clean
    assert noise.dtype == np.float32 and abs(float(noise.std()) - 5.0) < 0.3 and abs(float(noise.mean())) < 0.3
    mixed = Degradation("low_dose_ct", dose_fraction=(0.1, 1.0), gaussian_hu=(3.0, 45.0), gaussian_fraction=0.5)
    stds = [float((mixed(clean, np.random.default_rng(s), 0.7) - clean).std()) for s in range(8)]
    assert min(stds) < 45.0 and max(stds) > 45.0  # both ends of the range: light Gaussian and low dose
    # gaussian_fraction 0: a pure dose simulation, the same draws as before the option existed
    plain = Degradation("low_dose_ct", dose_fraction=0.5)
    np.testing.assert_array_equal(plain(clean, np.random.default_rng(1), 0.7),
                                  Degradation("low_dose_ct", dose_fraction=0.5, gaussian_fraction=0.0)(
                                      clean, np.random.default_rng(1), 0.7))
