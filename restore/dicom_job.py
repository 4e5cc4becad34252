"""The ``restore dicom`` batch job: discover, process every image series, write, verify, report.

Output layout (documented for users)::

    OUTDIR/
      <series-id>/                    one derived series per input SeriesInstanceUID
        IM00001.dcm ...               one file per input instance, in slice order
        restore-series.json           manifest: source and output UIDs, file hashes (for --resume)
      .<series-id>.partial/           a series being written (renamed when complete)

``series-id`` is ``<modality>-<16 hex digits of sha256(input SeriesInstanceUID)>``: stable across
runs (so ``--resume`` finds it) and free of patient-identifying values.

A series is written into its ``.partial`` folder, every file re-read and checked, the manifest
written last, then the folder renamed: a folder named ``<series-id>`` is always complete.
``--resume`` keeps a series whose manifest matches the current inputs, task and model and whose
files still hash as recorded. Exit codes: 0 every image series processed, 2 some image data was
skipped (unsupported, corrupt, inconsistent geometry; non-image objects and duplicates do not
count), 1 a fatal error or a series that could not be written.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from restore.atomic import write_json_atomic
from restore.dicom.report import FileRecord, Report, SeriesRecord
from restore.errors import InputError, OutputError
from restore.io.dicom import LOST_KINDS, DiscoveryResult, Instance, Series, discover, read_instance_frames

MANIFEST = "restore-series.json"


@dataclass
class DicomJobConfig:
    """Options of ``restore dicom`` (see the CLI help for each)."""

    inputs: list[Path]
    outdir: Path
    task: str = "ct-denoise"
    model: str | None = None
    weights: str | None = None
    regions: str = "auto"
    sam_checkpoint: str | None = None
    resume: bool = False
    report: Path | None = None
    dry_run: bool = False
    device: str = "auto"
    tile: int = 512
    batch_size: int = 4
    quiet: bool = False
    devices: int = 1
    num_nodes: int = 1
    modalities: str = "task"  # "task": the task's modalities (CT for ct-denoise, MR for mr-denoise); "any"; "CT,MR"


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


@dataclass
class SeriesOutcome:
    """What happened to one :class:`SeriesJob` (JSON-serialisable, travels between ranks)."""

    series_id: str
    status: str
    reason: str | None = None
    output_series_uid: str | None = None
    clipped: int = 0
    seconds: float = 0.0
    files: list[dict] = field(default_factory=list)  # FileRecord fields


def series_jobs(found: DiscoveryResult) -> list[SeriesJob]:
    """Group discovered stacks by SeriesInstanceUID into jobs, in a stable order."""
    by_uid: dict[str, list[Series]] = {}
    for s in found.series:
        by_uid.setdefault(s.series_uid, []).append(s)
    jobs = []
    for uid, stacks in by_uid.items():
        digest = hashlib.sha256(uid.encode()).hexdigest()[:16]
        jobs.append(SeriesJob(f"{stacks[0].modality.lower()}-{digest}", stacks))
    return sorted(jobs, key=lambda j: j.series_id)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _manifest_matches(job: SeriesJob, folder: Path, task: str, model: str) -> str | None:
    """The new SeriesInstanceUID when ``folder`` holds this job's complete, intact output, else None."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        if manifest["task"] != task or manifest["model"] != model:
            return None
        if sorted(f["source_sop_instance_uid"] for f in manifest["files"]) != sorted(
            i.sop_instance_uid for i in job.instances
        ):
            return None
        if any(_sha256(folder / f["name"]) != f["sha256"] for f in manifest["files"]):
            return None
        return manifest["output_series_uid"]
    except (OSError, KeyError, ValueError, TypeError):
        return None


class SeriesRunner:
    """Process one :class:`SeriesJob` into ``outdir`` (the unit both drivers, local and DDP, run)."""

    def __init__(self, config: DicomJobConfig, model_name: str, method: str, processor=None):
        self.config = config
        self.model_name = model_name
        self.method = method
        self.processor = processor  # a SliceProcessor; None for dry runs

    def __call__(self, job: SeriesJob, on_slices: Callable[[int], None] = lambda n: None) -> SeriesOutcome:
        from pydicom.uid import generate_uid

        from restore.dicom.processing import TASK_SCALES, allowed_modalities
        from restore.dicom.writer import Derivation, derive, encode_stored, write_verified

        outdir = self.config.outdir
        final = outdir / job.series_id
        if self.config.resume and (uid := _manifest_matches(job, final, self.config.task, self.model_name)):
            on_slices(job.slices)
            return SeriesOutcome(job.series_id, "resumed", "complete output of an earlier run verified",
                                 output_series_uid=uid, files=self._records(job, "processed", final))
        first = job.stacks[0].first
        allowed = allowed_modalities(self.config.task, self.config.modalities)
        if allowed is not None and first.modality not in allowed:
            reason = f"modality {first.modality or 'unknown'} is not processed by --task {self.config.task} (see --modalities)"
            return SeriesOutcome(job.series_id, "excluded", reason, files=[
                asdict(FileRecord(str(i.ref), "skipped", reason, "modality", job.series_id)) for i in job.instances
            ])
        if self.config.dry_run:
            return SeriesOutcome(job.series_id, "planned", files=self._records(job, "planned", None))
        if reason := self.processor.unsupported(first.modality, first.samples_per_pixel):
            return SeriesOutcome(job.series_id, "skipped", reason, files=[
                asdict(FileRecord(str(i.ref), "skipped", reason, "unsupported", job.series_id)) for i in job.instances
            ])
        start = time.perf_counter()
        partial = outdir / f".{job.series_id}.partial"
        shutil.rmtree(partial, ignore_errors=True)  # left by a crashed run
        partial.mkdir(parents=True)
        derivation = Derivation(self.config.task, self.model_name, self.method, TASK_SCALES[self.config.task])
        new_uid = generate_uid()
        outcome = SeriesOutcome(job.series_id, "processed", output_series_uid=new_uid)
        manifest_files = []
        try:
            for n, inst in enumerate(job.instances, start=1):
                name = f"IM{n:05d}.dcm"
                try:
                    frames, ds = read_instance_frames(inst)
                except InputError as exc:
                    outcome.files.append(asdict(FileRecord(str(inst.ref), "skipped", exc.cause, "corrupt", job.series_id)))
                    continue
                values = self.processor(frames, inst.units, inst.modality)
                stored, clipped = encode_stored(values, ds, inst.units)
                derived = derive(ds, stored, series_uid=new_uid, derivation=derivation, clipped=clipped)
                write_verified(derived, partial / name, stored)
                outcome.clipped += clipped
                manifest_files.append({"name": name, "sha256": _sha256(partial / name),
                                       "source_sop_instance_uid": inst.sop_instance_uid,
                                       "sop_instance_uid": str(derived.SOPInstanceUID)})
                outcome.files.append(asdict(FileRecord(str(inst.ref), "processed", None, None, job.series_id,
                                                       f"{job.series_id}/{name}")))
                on_slices(frames.shape[0])
            if not manifest_files:
                shutil.rmtree(partial, ignore_errors=True)
                outcome.status, outcome.reason, outcome.output_series_uid = "skipped", "no instance could be decoded", None
                return outcome
            write_json_atomic(partial / MANIFEST, {
                "task": self.config.task, "model": self.model_name, "output_series_uid": new_uid,
                "source_series_uid": job.stacks[0].series_uid, "files": manifest_files,
            })
            if final.exists():  # an outdated or broken earlier output (only reached with --resume)
                shutil.rmtree(final)
            os.replace(partial, final)
        except OutputError as exc:
            shutil.rmtree(partial, ignore_errors=True)
            done = {f["path"] for f in outcome.files if f["status"] == "skipped"}
            return SeriesOutcome(job.series_id, "failed", str(exc), files=[
                asdict(FileRecord(str(i.ref), "failed", str(exc), None, job.series_id))
                for i in job.instances if str(i.ref) not in done
            ] + [f for f in outcome.files if f["status"] == "skipped"])
        outcome.seconds = round(time.perf_counter() - start, 3)
        return outcome

    @staticmethod
    def _records(job: SeriesJob, status: str, folder: Path | None) -> list[dict]:
        return [asdict(FileRecord(str(i.ref), status, None, None, job.series_id,
                                  f"{job.series_id}/IM{n:05d}.dcm" if folder else None))
                for n, i in enumerate(job.instances, start=1)]


def _check_outdir(config: DicomJobConfig, jobs: list[SeriesJob]) -> None:
    if config.dry_run or config.resume:
        return
    existing = [j.series_id for j in jobs if (config.outdir / j.series_id).exists()]
    if existing:
        raise OutputError(config.outdir / existing[0],
                          f"already exists ({len(existing)} series output(s) present): pass --resume or use another OUTDIR")
    for source in config.inputs:  # writing inside an input folder would be re-read as input next time
        if Path(source).is_dir() and Path(config.outdir).resolve().is_relative_to(Path(source).resolve()):
            raise OutputError(config.outdir, "OUTDIR lies inside an input folder")


def build_report(config: DicomJobConfig, found: DiscoveryResult, jobs: list[SeriesJob],
                 outcomes: dict[str, SeriesOutcome], model: str, description: str, baseline: bool) -> Report:
    """Assemble the report; every input file once; the exit code from the statuses."""
    report = Report(config.task, model, description, baseline, dry_run=config.dry_run)
    for job in jobs:
        out = outcomes[job.series_id]
        # "stack k of n" notes collapse into one line per series
        geometry = [g for s in job.stacks for g in s.geometry.summary() if not g.startswith("stack ")]
        if len(job.stacks) > 1:
            geometry.insert(0, f"split into {len(job.stacks)} stacks (orientation, size, echo or time)")
        report.series.append(SeriesRecord(
            series_id=job.series_id, input_series_uid=job.stacks[0].series_uid, modality=job.stacks[0].modality,
            stacks=len(job.stacks), slices=job.slices, status=out.status, reason=out.reason,
            output_dir=job.series_id if out.status in ("processed", "resumed") else None,
            output_series_uid=out.output_series_uid, clipped=out.clipped, seconds=out.seconds,
            geometry=sorted(set(geometry), key=geometry.index),
        ))
        report.files.extend(FileRecord(**f) for f in out.files)
    report.files.extend(FileRecord(str(k.ref), "skipped", k.reason, k.kind) for k in found.skipped)
    lost = any(f.status == "skipped" and f.kind in LOST_KINDS for f in report.files)
    failed = any(s.status == "failed" for s in report.series)
    report.exit_code = 1 if failed else 2 if lost or any(s.status == "skipped" for s in report.series) else 0
    return report


def run_dicom_job(config: DicomJobConfig, log: Callable[[str], None] = print) -> Report:
    """Run the whole job; returns the :class:`Report` (``exit_code`` set). Raises ``RestoreError``
    for fatal problems (missing input, unusable model or OUTDIR) before anything is written."""
    from restore.devices import resolve_device
    from restore.dicom.processing import ProcessingConfig, build_processor, choose_model

    choice = choose_model(config.task, config.model, config.weights)
    found = discover(config.inputs)
    jobs = series_jobs(found)
    _check_outdir(config, jobs)
    distributed = config.devices > 1 or config.num_nodes > 1
    if not config.quiet:
        kind = "baseline" if choice.baseline else "model"
        log(f"restore dicom: {len(jobs)} series, {sum(j.slices for j in jobs)} slices, "
            f"{len(found.skipped)} files skipped; {config.task} with {kind} {choice.name} ({choice.description})")
    processing = ProcessingConfig(tile=config.tile, batch_size=config.batch_size, regions=config.regions,
                                  sam_checkpoint=config.sam_checkpoint)
    if distributed and not config.dry_run:
        from restore.dicom.distributed import predict_series

        results = predict_series(config, jobs, choice, processing)
        if results is None:  # not the reporting rank
            return Report(config.task, choice.name, choice.description, choice.baseline, exit_code=0)
    else:
        processor = None
        if not config.dry_run:
            processor = build_processor(config.task, choice, weights=config.weights, config=processing,
                                        device=resolve_device(config.device))
        runner = SeriesRunner(config, choice.name, choice.description, processor)
        results = _run_local(runner, jobs, quiet=config.quiet)
    report = build_report(config, found, jobs, {o.series_id: o for o in results}, choice.name,
                          choice.description, choice.baseline)
    if config.report:
        write_json_atomic(Path(config.report), report.to_dict())
    if not config.quiet:
        log(report.table())
    return report


def _run_local(runner: SeriesRunner, jobs: list[SeriesJob], quiet: bool) -> list[SeriesOutcome]:
    from tqdm import tqdm

    results = []
    with tqdm(total=sum(j.slices for j in jobs), unit="slice", disable=quiet or runner.config.dry_run, dynamic_ncols=True) as bar:
        for n, job in enumerate(jobs, start=1):
            bar.set_description(f"series {n}/{len(jobs)}")
            results.append(runner(job, bar.update))
    return results
