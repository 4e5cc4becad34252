"""One series from its input files to a verified derived series: the unit both drivers run.

:class:`SeriesRunner` takes a :class:`~restore.dicom.plan.SeriesJob` and returns a
:class:`SeriesOutcome`; the local loop (``restore.dicom.job``) and every DDP rank
(``restore.dicom.distributed``) call the same runner.

It writes the series as ``restore.dicom.job`` documents (a ``.partial`` folder, every file
re-read and checked, the manifest last, then the rename) and keeps, with ``--resume``, an earlier
output whose manifest (settings, source instances) and file hashes still match. Series that the
modality filter leaves out never reach a runner (:func:`exclusion`).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from restore.atomic import write_json_atomic
from restore.dicom.plan import MANIFEST, DicomJobConfig, SeriesJob, derived_series_uid, output_settings, read_manifest
from restore.dicom.processing import TASK_SCALES, SliceProcessor, allowed_modalities
from restore.dicom.report import FileRecord
from restore.dicom.writer import Derivation, derive, encode_stored, resample_refusal, write_verified
from restore.errors import InputError, OutputError
from restore.io.dicom import padding_mask, read_instance_frames


@dataclass
class SeriesOutcome:
    """What happened to one :class:`SeriesJob`; ``dataclasses.asdict`` of it is JSON and travels
    between ranks, :meth:`from_dict` reads it back."""

    series_id: str
    status: str
    reason: str | None = None
    output_series_uid: str | None = None
    clipped: int = 0  # stored values clipped to the output's pixel representation
    seconds: float = 0.0
    files: list[FileRecord] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: dict) -> SeriesOutcome:
        return cls(**{**data, "files": [FileRecord(**f) for f in data["files"]]})


def _file_name(n: int) -> str:
    """The derived file of the ``n``-th (from 1) instance of a series, in slice order."""
    return f"IM{n:05d}.dcm"


def _records(job: SeriesJob, status: str, reason: str | None = None, kind: str | None = None, *,
             named: bool = False, leave_out: frozenset[str] = frozenset()) -> list[FileRecord]:
    """One record per instance of ``job`` whose path is not in ``leave_out``; ``named``: with its
    output file (relative to OUTDIR)."""
    return [FileRecord(str(inst.ref), status, reason, kind, job.series_id,
                       f"{job.series_id}/{_file_name(n)}" if named else None)
            for n, inst in enumerate(job.instances, start=1) if str(inst.ref) not in leave_out]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def exclusion(config: DicomJobConfig, job: SeriesJob) -> SeriesOutcome | None:
    """The outcome of a series that the task's modality filter (``--modalities``) leaves out, else None."""
    modality = job.stacks[0].modality
    allowed = allowed_modalities(config.task, config.modalities)
    if allowed is None or modality in allowed:
        return None
    reason = f"modality {modality or 'unknown'} is not processed by --task {config.task} (see --modalities)"
    return SeriesOutcome(job.series_id, "excluded", reason, files=_records(job, "skipped", reason, "modality"))


def _manifest_matches(job: SeriesJob, folder: Path, settings: dict) -> str | None:
    """The new SeriesInstanceUID when ``folder`` holds this job's complete, intact output made with
    ``settings``, else None."""
    manifest = read_manifest(folder)
    try:
        if manifest is None or manifest["settings"] != settings:
            return None
        if sorted(f["source_sop_instance_uid"] for f in manifest["files"]) != sorted(
            i.sop_instance_uid for i in job.instances
        ):
            return None
        if any(_sha256(folder / f["name"]) != f["sha256"] for f in manifest["files"]):
            return None
        return manifest["output_series_uid"]
    except (OSError, KeyError, TypeError):
        return None


class SeriesRunner:
    """Process one :class:`SeriesJob` into ``config.outdir``.

    ``model_name``/``method``: the registry name and description recorded in every derived file;
    ``processor``: runs the model on slices (None for dry runs, which load no model).
    """

    def __init__(self, config: DicomJobConfig, model_name: str, method: str, processor: SliceProcessor | None = None):
        self.config = config
        self.model_name = model_name
        self.method = method
        self.processor = processor
        self.settings = output_settings(config, model_name)

    def __call__(self, job: SeriesJob, on_slices: Callable[[int], None] = lambda n: None) -> SeriesOutcome:
        """Resume, plan or write ``job``; ``on_slices(n)`` is told of every ``n`` slices done."""
        final = self.config.outdir / job.series_id
        if self.config.resume and (uid := _manifest_matches(job, final, self.settings)):
            on_slices(job.slices)
            return SeriesOutcome(job.series_id, "resumed", "complete output of an earlier run verified",
                                 output_series_uid=uid, files=_records(job, "processed", named=True))
        first = job.stacks[0].first
        if self.config.dry_run:
            return SeriesOutcome(job.series_id, "planned", files=_records(job, "planned"))
        if reason := self.processor.unsupported(first.modality, first.samples_per_pixel):
            return SeriesOutcome(job.series_id, "skipped", reason, files=_records(job, "skipped", reason, "unsupported"))
        return self._write(job, final, on_slices)

    def _write(self, job: SeriesJob, final: Path, on_slices: Callable[[int], None]) -> SeriesOutcome:
        """Write ``job`` into its ``.partial`` folder, verify, add the manifest, rename to ``final``."""
        start = time.perf_counter()
        partial = self.config.outdir / f".{job.series_id}.partial"
        shutil.rmtree(partial, ignore_errors=True)  # left by a crashed run
        partial.mkdir(parents=True)
        derivation = Derivation(self.config.task, self.model_name, self.method, TASK_SCALES[self.config.task])
        new_uid = derived_series_uid(job, self.settings)
        outcome = SeriesOutcome(job.series_id, "processed", output_series_uid=new_uid)
        manifest_files = []
        try:
            for n, inst in enumerate(job.instances, start=1):
                name = _file_name(n)
                try:
                    frames, ds = read_instance_frames(inst)
                except InputError as exc:
                    outcome.files.append(FileRecord(str(inst.ref), "skipped", exc.cause, "corrupt", job.series_id))
                    continue
                if derivation.scale != 1 and (reason := resample_refusal(ds)):
                    outcome.files.append(FileRecord(str(inst.ref), "skipped", reason, "unsupported", job.series_id))
                    continue
                values = self.processor(frames, inst.units, inst.modality, padding_mask(ds, frames, inst.units))
                stored, clipped = encode_stored(values, ds, inst.units)
                derived = derive(ds, stored, series_uid=new_uid, derivation=derivation, clipped=clipped)
                write_verified(derived, partial / name, stored)
                outcome.clipped += clipped
                manifest_files.append({"name": name, "sha256": _sha256(partial / name),
                                       "source_sop_instance_uid": inst.sop_instance_uid,
                                       "sop_instance_uid": str(derived.SOPInstanceUID)})
                outcome.files.append(FileRecord(str(inst.ref), "processed", None, None, job.series_id,
                                                f"{job.series_id}/{name}"))
                on_slices(frames.shape[0])
            if not manifest_files:
                shutil.rmtree(partial, ignore_errors=True)
                reasons = {f.reason for f in outcome.files}  # one shared reason says more than a summary
                reason = reasons.pop() if len(reasons) == 1 else "no instance could be decoded or resampled"
                outcome.status, outcome.reason, outcome.output_series_uid = "skipped", reason, None
                return outcome
            write_json_atomic(partial / MANIFEST, {
                "settings": self.settings, "output_series_uid": new_uid,
                "source_series_uid": job.stacks[0].series_uid, "files": manifest_files,
            })
            if final.exists():  # same settings, but broken or of other input files (only with --resume)
                shutil.rmtree(final)
            os.replace(partial, final)
        except OutputError as exc:
            shutil.rmtree(partial, ignore_errors=True)
            skipped = [f for f in outcome.files if f.status == "skipped"]
            failed = _records(job, "failed", str(exc), leave_out=frozenset(f.path for f in skipped))
            return SeriesOutcome(job.series_id, "failed", str(exc), files=failed + skipped)
        outcome.seconds = round(time.perf_counter() - start, 3)
        return outcome
