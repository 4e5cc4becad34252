"""What a ``restore dicom`` job will do, decided before anything is written.

The job's options (:class:`DicomJobConfig`, which are also the command's flags), its units of work
(one :class:`SeriesJob` per input SeriesInstanceUID, named by a stable id), the settings that
decide a derived series (:func:`output_settings`, from which its UIDs are derived) and the checks
that OUTDIR and ``--report`` can take the outputs.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import MISSING, dataclass
from pathlib import Path

from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from restore.dicom.processing import REGION_METHODS, TASK_SCALES
from restore.dicom.writer import COMPRESSIONS, output_syntax
from restore.errors import ModelError, OptionError, OutputError
from restore.io.dicom import DiscoveryResult, Instance, Series
from restore.options import option

# in every derived series folder, written last: what it was made from and with (see restore.dicom.job)
MANIFEST = "restore-series.json"
# settings that change how the outputs are stored, not a value: --resume requires them, UIDs leave them out
STORAGE_SETTINGS = ("compress", "nifti")


@dataclass
class DicomJobConfig:
    """Options of ``restore dicom``: ``inputs`` and ``outdir`` are its positional arguments and
    ``-o``, every other field one of its flags (``restore.options.add_arguments``). Settings that
    cannot work raise :class:`~restore.errors.OptionError` when it is built."""

    inputs: list[Path]
    outdir: Path
    task: str = option(MISSING, "what to do to every series", choices=tuple(TASK_SCALES))
    model: str | None = option(None, "model from `restore models` (default: the task's default, `restore models`)")
    weights: str | None = option(None, "weights for --model (.safetensors or a torch checkpoint)")
    regions: str = option("auto", "region partition per slice, for region-attention (RAT) models only",
                          choices=REGION_METHODS)
    sam_checkpoint: str | None = option(None, "segment-anything checkpoint for --regions sam/auto")
    resume: bool = option(False, "keep series whose output is complete and verified")
    report: Path | None = option(None, "write the JSON report of every input file here", metavar="PATH")
    dry_run: bool = option(False, "discover and report only; load no model, write nothing")
    device: str = option("auto", "auto | cpu | cuda | cuda:N")
    modalities: str = option("task", "series to process: task (CT for ct-denoise, MR for mr-denoise, any for "
                             "sr-x2), any, or a list such as CT,MR; others are reported as skipped")
    tile: int = option(512, "sliding-window size in pixels")
    batch_size: int = option(4, "slices (and windows) per model call")
    compress: str = option("keep", "transfer syntax of the outputs, lossless only: keep (the input's when it is "
                           "lossless and encodable, else uncompressed), none (Explicit VR Little Endian), rle, "
                           "jpeg-ls, j2k", choices=tuple(COMPRESSIONS))
    nifti: bool = option(False, "also write each derived series as a NIfTI volume (<series-id>.nii.gz in its "
                         "folder; RAS affine, HU for CT, rescaled values otherwise)")
    devices: int = option(1, "processes per node; >1 runs Lightning DDP, series per rank")
    num_nodes: int = option(1, "nodes for DDP")
    quiet: bool = option(False, "no progress bar or summary", flag=("-q", "--quiet"))

    def __post_init__(self) -> None:
        for name in ("tile", "batch_size", "devices", "num_nodes"):
            if (value := getattr(self, name)) < 1:
                raise OptionError(None, f"--{name.replace('_', '-')} must be at least 1, got {value}")
        output_syntax(ExplicitVRLittleEndian, self.compress)  # an encoder that is not installed: refused now


@dataclass
class SeriesJob:
    """One unit of work: every stack of one input SeriesInstanceUID, written as one derived series."""

    series_id: str
    stacks: list[Series]

    @property
    def instances(self) -> list[Instance]:
        """Instances in slice order (stack by stack), each once."""
        seen: dict[str, Instance] = {}
        for stack in self.stacks:
            for inst in stack.instances:
                seen.setdefault(inst.sop_instance_uid, inst)
        return list(seen.values())

    @property
    def slices(self) -> int:
        return sum(len(s.slices) for s in self.stacks)


def series_jobs(found: DiscoveryResult, task: str) -> list[SeriesJob]:
    """Group discovered stacks by SeriesInstanceUID into jobs, in a stable order.

    A job's ``series_id`` is ``<modality>-<16 hex digits of sha256(SeriesInstanceUID)>-<task>``:
    the same in every run (so ``--resume`` finds its output), free of patient-identifying values,
    and apart for each task, so that two tasks can write into one OUTDIR.
    """
    by_uid: dict[str, list[Series]] = {}
    for s in found.series:
        by_uid.setdefault(s.series_uid, []).append(s)
    jobs = []
    for uid, stacks in by_uid.items():
        digest = hashlib.sha256(uid.encode()).hexdigest()[:16]
        jobs.append(SeriesJob(f"{stacks[0].modality.lower()}-{digest}-{task}", stacks))
    return sorted(jobs, key=lambda j: j.series_id)


def output_settings(config: DicomJobConfig, model: str) -> dict[str, str | int | None]:
    """What decides a derived series, ``model`` being the registry name the job resolved: kept in
    its manifest, hashed into its UIDs, and what ``--resume`` requires to be unchanged.

    User weights count by their sha256, so that a file retrained in place makes other UIDs; raises
    ``ModelError`` when they are missing. The device and batch size change no value and are left out;
    so, from the UIDs, do :data:`STORAGE_SETTINGS`.
    """
    weights = config.weights
    if weights is not None:
        from restore.registry import sha256_of

        try:
            weights = f"sha256:{sha256_of(Path(weights))}"
        except OSError as exc:
            raise ModelError(weights, f"cannot read the weights ({exc.strerror})") from None
    return {"task": config.task, "model": model, "weights": weights, "regions": config.regions,
            "sam_checkpoint": config.sam_checkpoint, "tile": config.tile, "compress": config.compress,
            "nifti": config.nifti}


def derived_series_uid(job: SeriesJob, settings: dict) -> str:
    """The SeriesInstanceUID of ``job``'s derived series: the same for the same source series and
    settings, so that sending a re-run to a PACS replaces the earlier copy instead of adding one; the
    same whatever :data:`STORAGE_SETTINGS` say (a lossless re-encoding is the same instance)."""
    values = {key: value for key, value in settings.items() if key not in STORAGE_SETTINGS}
    return generate_uid(entropy_srcs=[job.stacks[0].series_uid, json.dumps(values, sort_keys=True)])


def read_manifest(folder: Path) -> dict | None:
    """The manifest of a derived series folder, or None when it has none or it is unreadable."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def check_destinations(config: DicomJobConfig) -> None:
    """Raise ``OutputError`` before any work when the outputs cannot be written: OUTDIR or a folder
    above it is a file, OUTDIR lies inside an input folder, or ``--report`` names a folder or a
    file in a folder that does not exist."""
    outdir = Path(config.outdir)
    existing = next(p for p in (outdir, *outdir.parents) if p.exists())
    if not existing.is_dir():
        raise OutputError(existing, "is a file, not a folder" if existing == outdir else
                          f"is a file, so OUTDIR {outdir} cannot be made inside it")
    for source in config.inputs:  # writing inside an input folder would be re-read as input next time
        if Path(source).is_dir() and outdir.resolve().is_relative_to(Path(source).resolve()):
            raise OutputError(outdir, "OUTDIR lies inside an input folder")
    if config.report is not None:
        report = Path(config.report)
        if report.is_dir():
            raise OutputError(report, "--report names a folder; give a file name such as report.json")
        if not report.parent.is_dir():
            raise OutputError(report, f"--report: folder {report.parent} does not exist")


def check_outdir(config: DicomJobConfig, jobs: list[SeriesJob], settings: dict) -> None:
    """Raise ``OutputError`` when writing ``jobs`` would replace earlier outputs: any, without
    ``--resume``; with it, one made with other ``settings`` (:func:`output_settings`), which
    ``--resume`` must not delete. Dry runs write nothing and pass."""
    if config.dry_run:
        return
    existing = [config.outdir / j.series_id for j in jobs if (config.outdir / j.series_id).exists()]
    if existing and not config.resume:
        raise OutputError(existing[0],
                          f"already exists ({len(existing)} series output(s) present): pass --resume or use another OUTDIR")
    for folder in existing:
        earlier = (read_manifest(folder) or {}).get("settings")
        if earlier is not None and earlier != settings:
            changed = ", ".join(f"{key} {earlier.get(key)} (now {value})" for key, value in settings.items()
                                if earlier.get(key) != value)
            raise OutputError(folder, f"made with other settings ({changed}); --resume continues only a run with "
                              "the same settings: use another OUTDIR or the earlier settings")
