"""``restore train``: the training recipes of ``configs/`` through LightningCLI, and weight export.

``restore train fit|validate|test|predict --config configs/X.yaml [--section.key=value ...]`` is
LightningCLI with the model and the data module chosen by ``class_path`` in the config; it saves
the resolved config as ``config.yaml`` in the run's log folder. Resume with ``--ckpt_path PATH``
(or ``last``: the newest ``last.ckpt`` under the run's ``default_root_dir``). ``restore train export --ckpt PATH --out weights/NAME.safetensors`` writes the
weights and their model card (see ``restore.export``).

Every checkpoint also gets a ``restore_card`` entry (architecture, network config, scale, the
latest validation metrics and the resolved run config) so that it can be exported without
rebuilding the model.
"""

from __future__ import annotations

import argparse
import os
import json
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.cli import LightningCLI
from pytorch_lightning.utilities.exceptions import SIGTERMException
from pytorch_lightning.utilities.rank_zero import rank_zero_info

from models.families import architecture_of
from restore.errors import InputError
from restore.export import CARD_KEY, export_checkpoint


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
    wall time and CPU time add up over resumed runs.
    """

    def __init__(self, run_config: str | None = None):
        self.run_config = run_config
        self.earlier_wall_s = self.earlier_cpu_s = 0.0
        self.started: float | None = None
        self.started_cpu: float | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.started, self.started_cpu = time.monotonic(), time.process_time()

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        earlier = checkpoint.get(CARD_KEY) or {}
        self.earlier_wall_s = float(earlier.get("wall_time_s") or 0.0)
        self.earlier_cpu_s = float(earlier.get("cpu_time_s") or 0.0)

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        net = getattr(pl_module, "net", None)
        try:
            architecture = architecture_of(net)
        except KeyError:
            return  # not one of our model families: nothing to export later
        checkpoint[CARD_KEY] = {
            "architecture": architecture,
            "config": net.config_dict(),
            "scale": int(getattr(net, "scale", 1)),
            # the registry preset the run started from (e.g. RAT's `preset`): export takes its task
            "preset": pl_module.hparams.get("preset"),
            "metrics": {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")},
            "run_config": self.run_config,
            "wall_time_s": round(self.earlier_wall_s + (time.monotonic() - self.started if self.started else 0.0), 1),
            # CPU seconds of the training process (all its threads; not DataLoader workers): the
            # budget of a run on a shared machine, where wall time depends on the neighbours
            "cpu_time_s": round(self.earlier_cpu_s + (time.process_time() - self.started_cpu if self.started_cpu else 0.0), 1),
            "hardware": _hardware(trainer),
        }


class LastCheckpointAtExit(Callback):
    """Writes ``last.ckpt`` however a run ends, so that ``--ckpt_path last`` loses no step.

    ``ModelCheckpoint(save_last=True)`` writes it only together with a scheduled save (every
    ``every_n_train_steps``, at validation), so a run that reaches ``max_steps`` between two saves,
    or is stopped by ``--trainer.max_time``, SIGTERM or Ctrl-C, would lose the steps since the
    last one. This callback writes ``last.ckpt`` into the folder of every ``ModelCheckpoint``
    with ``save_last`` when training ends or is interrupted, unless that step is already saved.
    """

    def __init__(self) -> None:
        self.saved_step: int | None = None

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        self.saved_step = checkpoint.get("global_step")

    def _save_last(self, trainer: pl.Trainer) -> None:
        if trainer.fast_dev_run or trainer.sanity_checking or self.saved_step == trainer.global_step:
            return
        for callback in trainer.checkpoint_callbacks:
            if callback.save_last and callback.dirpath:
                path = os.path.join(callback.dirpath, callback.CHECKPOINT_NAME_LAST + callback.FILE_EXTENSION)
                trainer.save_checkpoint(path)
                rank_zero_info(f"saved {path} at step {trainer.global_step} (continue with --ckpt_path last)")

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._save_last(trainer)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, (KeyboardInterrupt, SIGTERMException)):
            self._save_last(trainer)


class StepClock(Callback):
    """Writes the median seconds per optimizer step after ``warmup`` steps to ``path`` (JSON) when
    training ends; what ``restore bench train`` (``training_speed``) reads."""

    def __init__(self, path: str, warmup: int = 3):
        self.path, self.warmup = path, warmup
        self.ends: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.ends.append(time.perf_counter())

    def on_train_end(self, trainer, pl_module) -> None:
        steps = [b - a for a, b in zip(self.ends[self.warmup:], self.ends[self.warmup + 1:])]
        Path(self.path).write_text(json.dumps({"median_s_per_step": statistics.median(steps), "timed_steps": len(steps)}))


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

    def before_fit(self) -> None:
        """``--ckpt_path last`` means the newest ``last.ckpt`` of any earlier run of this recipe.

        Lightning looks only in the new run's own version folder, where nothing has been saved yet,
        and would silently start from scratch.
        """
        config = self.config_init[self.subcommand]
        if config.get("ckpt_path") != "last":
            return
        folders = {Path(self.trainer.default_root_dir)}
        folders |= {Path(cb.dirpath) for cb in self.trainer.checkpoint_callbacks if cb.dirpath}
        found = [p for folder in folders if folder.is_dir() for p in folder.rglob("last*.ckpt")]
        if not found:
            raise InputError(Path(self.trainer.default_root_dir),
                             "--ckpt_path last: no last.ckpt of an earlier run here (name a checkpoint, or start without it)")
        config["ckpt_path"] = str(max(found, key=lambda p: p.stat().st_mtime))

    def instantiate_trainer(self, **kwargs) -> pl.Trainer:
        trainer = super().instantiate_trainer(**kwargs)
        run_config = self._parser(self.subcommand).dump(self.config[self.subcommand], skip_none=False)
        trainer.callbacks += [ModelCard(run_config), LastCheckpointAtExit()]
        return trainer


def _config_override(text: str) -> tuple[str, object]:
    """``FIELD=VALUE`` with VALUE in JSON (a bare word is a string) -> (field, value)."""
    field, sep, value = text.partition("=")
    if not sep or not field:
        raise argparse.ArgumentTypeError(f"expected FIELD=VALUE, got {text!r}")
    try:
        return field, json.loads(value)
    except ValueError:
        return field, value


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
    parser.add_argument("--routing", metavar="JSON", help="routing.json of `restore calibrate-heads`: the head "
                        "groups the exported OASIS model runs (recorded in the card)")
    parser.add_argument("--routing-note", metavar="TEXT", help="how the routing was calibrated (clips, thresholds)")
    parser.add_argument("--tile", type=int, metavar="PX", help="largest sliding window restore dicom runs the model "
                        "in (the card's tile; RAT: near its training patch)")
    parser.add_argument("--set", metavar="FIELD=VALUE", action="append", default=[], type=_config_override,
                        help="network config field to set in the card, VALUE in JSON (repeatable); only fields "
                        "that run the trained weights differently, e.g. decoder_propagation_warmup=2")
    args = parser.parse_args(list(argv))
    card = export_checkpoint(args.ckpt, args.out, name=args.name, task=args.task, data=args.data,
                             benchmarks=args.benchmarks, default=args.default, routing=args.routing,
                             routing_note=args.routing_note, tile=args.tile, overrides=dict(args.set))
    print(f"wrote {args.out} and {card}")
    return 0


def main(argv: Sequence[str]) -> int:
    """Entry of ``restore train ARGS``."""
    argv = list(argv)
    if argv[:1] == ["export"]:
        return _export(argv[1:])
    # sys.argv stays `restore train ...` on purpose: Lightning's DDP launcher re-runs it on every rank
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
    try:
        RestoreCLI(args=argv)
    except SIGTERMException:  # Lightning's SystemExit without a code would exit 0, as if the run had finished
        print("restore train: stopped by SIGTERM (last.ckpt saved; continue with --ckpt_path last)", file=sys.stderr)
        return 143
    return 0
