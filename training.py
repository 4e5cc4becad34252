"""``restore train``: the training recipes of ``configs/`` through LightningCLI, and weight export.

``restore train fit|validate|test|predict --config configs/X.yaml [--section.key=value ...]`` is
LightningCLI with the model and the data module chosen by ``class_path`` in the config; it saves
the resolved config as ``config.yaml`` in the run's log folder. Resume with ``--ckpt_path PATH``
(or ``last``). ``restore train export --ckpt PATH --out weights/NAME.safetensors`` writes the
weights and their model card (see ``restore.export``).

Every checkpoint also gets a ``restore_card`` entry (architecture, network config, scale, the
latest validation metrics and the resolved run config) so that it can be exported without
rebuilding the model.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
import warnings
from collections.abc import Sequence

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.cli import LightningCLI

from restore.export import CARD_KEY, export_checkpoint
from restore.registry import ARCHITECTURES


def _hardware(trainer: pl.Trainer) -> str:
    """What the run trains on, in words: GPU model and count, or the CPU model, cores and threads."""
    import torch

    if trainer.strategy.root_device.type == "cuda":
        gpus = trainer.num_devices * trainer.num_nodes
        return f"{gpus} x {torch.cuda.get_device_name(trainer.strategy.root_device)}, {trainer.precision}"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    threads = torch.get_num_threads()
    return f"CPU {cpu}, {os.cpu_count()} cores, {threads} torch thread{'s' * (threads != 1)}, {trainer.precision}"


class ModelCard(Callback):
    """Stores what a model card needs in every checkpoint, under ``restore_card``.

    The LightningModule must hold its network as ``self.net`` with ``config_dict()`` and ``scale``
    (the convention of ``models/``); ``run_config`` is the resolved YAML of the run. The training
    wall time adds up over resumed runs.
    """

    def __init__(self, run_config: str | None = None):
        self.run_config = run_config
        self.earlier_wall_s = 0.0
        self.started: float | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.started = time.monotonic()

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        self.earlier_wall_s = float((checkpoint.get(CARD_KEY) or {}).get("wall_time_s") or 0.0)

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        net = getattr(pl_module, "net", None)
        if net is None or not hasattr(net, "config_dict"):
            return  # not one of our model families: nothing to export later
        by_class = {path.split(":")[1]: name for name, path in ARCHITECTURES.items()}
        checkpoint[CARD_KEY] = {
            "architecture": by_class.get(type(net).__name__, type(net).__name__.lower()),
            "config": net.config_dict(),
            "scale": int(getattr(net, "scale", 1)),
            # the registry preset the run started from (e.g. RAT's `preset`): export takes its task
            "preset": pl_module.hparams.get("preset"),
            "metrics": {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")},
            "run_config": self.run_config,
            "wall_time_s": round(self.earlier_wall_s + (time.monotonic() - self.started if self.started else 0.0), 1),
            "hardware": _hardware(trainer),
        }


class RestoreCLI(LightningCLI):
    """LightningCLI over any ``LightningModule`` / ``LightningDataModule`` named by ``class_path``."""

    def __init__(self, args: Sequence[str] | None = None, **kwargs):
        super().__init__(
            pl.LightningModule,
            pl.LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            save_config_kwargs={"overwrite": True},
            parser_kwargs={"prog": "restore train"},
            args=list(args) if args is not None else None,
            **kwargs,
        )

    def instantiate_trainer(self, **kwargs) -> pl.Trainer:
        trainer = super().instantiate_trainer(**kwargs)
        run_config = self._parser(self.subcommand).dump(self.config[self.subcommand], skip_none=False)
        trainer.callbacks.append(ModelCard(run_config))
        return trainer


def _export(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="restore train export", description="write weights + model card")
    parser.add_argument("--ckpt", required=True, help="Lightning checkpoint saved by `restore train fit`")
    parser.add_argument("--out", required=True, help="weight file to write, e.g. weights/oasis-s-x4.safetensors")
    parser.add_argument("--name", help="model name in the card (default: the file stem)")
    parser.add_argument("--task", help="task in the card (default: the architecture's)")
    parser.add_argument("--data", help="what the model was trained on, in words (the card's training.data)")
    parser.add_argument("--benchmarks", metavar="JSON", action="append", default=[],
                        help="`restore bench ... --json` results to put in the card (repeatable)")
    parser.add_argument("--default", action="store_true",
                        help="mark the model the default of its task and scale (when it beats the baseline)")
    args = parser.parse_args(list(argv))
    card = export_checkpoint(args.ckpt, args.out, name=args.name, task=args.task, data=args.data,
                             benchmarks=args.benchmarks, default=args.default)
    print(f"wrote {args.out} and {card}")
    return 0


def main(argv: Sequence[str]) -> int:
    """Entry of ``restore train ARGS``."""
    argv = list(argv)
    if argv[:1] == ["export"]:
        return _export(argv[1:])
    # sys.argv stays `restore train ...` on purpose: Lightning's DDP launcher re-runs it on every rank
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
    RestoreCLI(args=argv)
    return 0
