"""Tests for OASISModule (models/oasis/module.py): real Lightning Trainer runs on CPU, tiny model."""

import json

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from models.oasis import OASIS, PRESETS, OASISModule


class PairClips(Dataset):
    """LR/HR clip pairs: HR random, LR its 4x average-pooled version."""

    def __init__(self, n: int = 2, frames: int = 2, size: int = 8, scale: int = 4):
        g = torch.Generator().manual_seed(0)
        self.hr = torch.rand(n, frames, 3, size * scale, size * scale, generator=g)
        self.lr = torch.nn.functional.avg_pool2d(self.hr.flatten(0, 1), scale).unflatten(0, (n, frames))

    def __len__(self):
        return len(self.hr)

    def __getitem__(self, i):
        return {"lr": self.lr[i], "hr": self.hr[i]}


def loader():
    return DataLoader(PairClips(), batch_size=2)


def trainer(tmp_path, **kwargs):
    options = dict(
        accelerator="cpu", max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=tmp_path, limit_val_batches=1, num_sanity_val_steps=0,
    )
    options.update(kwargs)
    return pl.Trainer(**options)


def snapshot(module: torch.nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def changed(before: dict, module: torch.nn.Module) -> set:
    return {k for k, v in module.state_dict().items() if not torch.equal(before[k], v)}


def tiny_vgg(path):
    torch.manual_seed(0)
    torch.save({"features.0.weight": torch.randn(64, 3, 3, 3) * 0.1, "features.0.bias": torch.zeros(64),
                "features.2.weight": torch.randn(64, 64, 3, 3) * 0.05, "features.2.bias": torch.zeros(64)}, path)
    return str(path)


@pytest.mark.parametrize("objective", ["one_step", "flow_matching"])
def test_one_optimisation_step_per_objective(tmp_path, objective):
    torch.manual_seed(0)
    module = OASISModule(network=PRESETS["oasis-t"]["config"], objective=objective, sample_steps=2, lr=1e-3,
                         temporal_weight=0.5)
    before = snapshot(module.net)
    trainer(tmp_path).fit(module, loader(), loader())
    moved = changed(before, module.net)
    # zero-initialised proj_out gets the first gradient; a flow step also trains the embeddings
    assert "transformer.proj_out.weight" in moved
    if objective == "one_step":
        assert "codec.conv_out.weight" in moved
    metrics = module.trainer.callback_metrics
    assert torch.isfinite(metrics["train/loss"])
    assert ("train/temporal" in metrics) == (objective == "one_step")
    assert 0 < metrics["val/ssim_y"] <= 1 and metrics["val/psnr_y"] > 5
    assert (tmp_path / "samples" / "step0000001.png").is_file()


def test_mse_only_loss_is_the_logged_training_loss(tmp_path):
    module = OASISModule(network=PRESETS["oasis-t"]["config"], charbonnier_weight=0.0, ssim_weight=0.0,
                         frequency_weight=0.0, mse_weight=1.0, lr=1e-3)
    trainer(tmp_path).fit(module, loader(), loader())
    metrics = module.trainer.callback_metrics
    assert "train/charbonnier" not in metrics
    assert metrics["train/mse"] > 0
    assert torch.equal(metrics["train/mse"], metrics["train/loss"])


def test_adversarial_and_perceptual_step(tmp_path):
    torch.manual_seed(0)
    module = OASISModule(
        network=PRESETS["oasis-t"]["config"],
        perceptual_weight=0.1, perceptual_checkpoint=tiny_vgg(tmp_path / "vgg.pth"), perceptual_layers={"relu1_2": 1.0},
        adversarial_weight=0.1, discriminator_channels=(8, 16), lr_min=1e-6,
    )
    assert not module.automatic_optimization
    before_g, before_d = snapshot(module.net), snapshot(module.discriminator)
    trainer(tmp_path, max_steps=2).fit(module, loader(), loader())  # 2 optimiser steps = 1 batch
    assert "transformer.proj_out.weight" in changed(before_g, module.net)
    assert changed(before_d, module.discriminator)
    assert {"train/perceptual", "train/adversarial", "train/discriminator"} <= set(module.trainer.callback_metrics)
    assert not any(k.startswith("perceptual.") for k in module.state_dict())  # the VGG is not checkpointed
    with pytest.raises(ValueError, match="perceptual_checkpoint"):
        OASISModule(network=PRESETS["oasis-t"]["config"], perceptual_weight=1.0)


def test_checkpoint_round_trip_and_registry_weights(tmp_path):
    from restore.registry import load_state_dict

    torch.manual_seed(0)
    module = OASISModule(network=PRESETS["oasis-t"]["config"], lr=1e-2)
    run = trainer(tmp_path, max_steps=2)
    run.fit(module, loader(), loader())
    path = tmp_path / "last.ckpt"
    run.save_checkpoint(path)

    clip = PairClips().lr[:1]
    restored = OASISModule.load_from_checkpoint(path).eval()
    with torch.no_grad():
        expected = module.eval()(clip)
        assert torch.equal(restored(clip), expected)
        # the registry's path: strip `net.`, build from the config dict, strict load
        net = OASIS.from_config(restored.hparams.network)
        net.load_state_dict(load_state_dict(path), strict=True)
        assert torch.equal(net.eval()(clip), expected)
    bicubic = torch.nn.functional.interpolate(clip[0], scale_factor=4, mode="bicubic").clamp(0, 1)
    assert not torch.allclose(expected[0], bicubic)  # it did train away from the bicubic start


def test_flow_matching_checkpoint_starts_one_step(tmp_path):
    torch.manual_seed(0)
    flow = OASISModule(network=PRESETS["oasis-t"]["config"], objective="flow_matching", lr=1e-2, sample_steps=1)
    run = trainer(tmp_path)
    run.fit(flow, loader(), loader())
    run.save_checkpoint(tmp_path / "flow.ckpt")
    one = OASISModule(network=PRESETS["oasis-t"]["config"], init_checkpoint=str(tmp_path / "flow.ckpt"))
    for k, v in flow.net.state_dict().items():
        assert torch.equal(one.net.state_dict()[k], v), k


def test_feature_latent_refuses_the_flow_matching_objective():
    network = dict(PRESETS["oasis-t"]["config"], decoder_features=4)
    with pytest.raises(ValueError, match="one_step only"):
        OASISModule(network=network, objective="flow_matching")


def test_ema_callback_runs_and_leaves_averaged_weights(tmp_path):
    from pytorch_lightning.callbacks import EMAWeightAveraging

    torch.manual_seed(0)
    module = OASISModule(network=PRESETS["oasis-t"]["config"], lr=1e-2)
    ema = EMAWeightAveraging(decay=0.5)
    trainer(tmp_path, max_steps=3, callbacks=[ema]).fit(module, loader(), loader())
    averaged = dict(ema._average_model.module.net.named_parameters())
    for name, p in module.net.named_parameters():
        assert torch.equal(p, averaged[name]), name  # training ends with the averaged weights


def test_lightning_cli_builds_module_from_plain_values(tmp_path):
    from pytorch_lightning.cli import LightningCLI

    cli = LightningCLI(
        OASISModule, run=False, save_config_callback=None,
        args=["--model.network", json.dumps(PRESETS["oasis-t"]["config"]), "--model.objective", "flow_matching",
              "--model.betas", "[0.9, 0.95]", "--trainer.accelerator", "cpu", f"--trainer.default_root_dir={tmp_path}"],
    )
    assert cli.model.hparams.objective == "flow_matching" and cli.model.net.scale == 4
    assert tuple(cli.model.hparams.betas) == (0.9, 0.95)
