import pytest
import pytorch_lightning as pl
import torch

from datasets.curriculum import DegradationCurriculum
from datasets.synthetic import SyntheticClipDataModule


def test_switch_and_ramp_schedules():
    switch = DegradationCurriculum(consistent_steps=10)
    assert [switch.probability(s) for s in (0, 9, 10, 500)] == [0.0, 0.0, 1.0, 1.0]
    ramp = DegradationCurriculum(consistent_steps=10, ramp_steps=4, final_prob=0.8)
    assert [round(ramp.probability(s), 6) for s in (9, 10, 11, 13, 20)] == [0.0, 0.2, 0.4, 0.8, 0.8]
    with pytest.raises(ValueError):
        DegradationCurriculum(consistent_steps=-1)


class _Recorder(pl.LightningModule):
    """Tiny model that records the temporal mode of the clips it is trained on."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 1)
        self.seen: list[float] = []

    def training_step(self, batch, batch_idx):
        self.seen.append(self.trainer.datamodule.degradation.inconsistent_prob)
        lr = batch["lr"].flatten(0, 1)
        return (self.conv(lr) - lr).square().mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def test_callback_drives_the_datamodule_degradation_during_fit(tmp_path):
    data = SyntheticClipDataModule(num_train=8, num_val=1, num_frames=2, crop_size=16, batch_size=1, num_workers=0)
    data.degradation.config.codec.prob = 0.0
    model = _Recorder()
    trainer = pl.Trainer(
        max_steps=5, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, limit_val_batches=0, default_root_dir=tmp_path,
        callbacks=[DegradationCurriculum(consistent_steps=2, ramp_steps=2)],
    )
    trainer.fit(model, datamodule=data)
    assert model.seen == [0.0, 0.0, 0.5, 1.0, 1.0]
    assert trainer.callback_metrics["curriculum/inconsistent_prob"] == 1.0
