"""One series from its input files to a verified derived series: the unit both drivers run.

:class:`SeriesRunner` takes a :class:`~restore.dicom.plan.SeriesJob` and returns a
:class:`SeriesOutcome`; the local loop (``restore.dicom.job``) and every DDP rank
(``restore.dicom.distributed``) call the same runner.

It writes the series as ``restore.dicom.job`` documents (a ``.partial`` folder, every file
re-read and checked, the NIfTI volumes of ``--nifti``, the manifest last, then the rename) and
keeps, with ``--resume``, an earlier output whose manifest (settings, source instances) and file
hashes still match. Series that the modality filter leaves out never reach a runner
(:func:`exclusion`).

Slices go to the model in batches: consecutive instances of one frame size are decoded until they
hold ``--batch-size`` slices (an instance with more frames goes alone; the processor splits it),
so a series of single-frame files takes one model call per batch, not one per file, and no more
than a batch of decoded slices is held at a time.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from restore.atomic import write_json_atomic
from restore.dicom.nifti import nifti_refusal, write_nifti
from restore.dicom.plan import MANIFEST, DicomJobConfig, SeriesJob, derived_series_uid, output_settings, read_manifest
from restore.dicom.processing import TASK_SCALES, SliceProcessor, allowed_modalities
from restore.dicom.report import FileRecord
from restore.dicom.writer import Derivation, derive, encode_stored, output_syntax, resample_refusal, write_verified
from restore.errors import InputError, OutputError
from restore.io.dicom import Instance, discover, padding_mask, read_instance_frames


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
    nifti: list[str] = field(default_factory=list)  # NIfTI volumes written, relative to OUTDIR
    notes: list[str] = field(default_factory=list)  # e.g. why a stack has no NIfTI volume

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


@dataclass
class _Decoded:
    """One input instance ready for the model: its place ``n`` in the series (from 1), its
    ``frames`` ``(F, H, W[, 3])`` float32 in ``instance.units`` and its dataset."""

    n: int
    instance: Instance
    frames: np.ndarray
    ds: Dataset

    def joins(self, batch: list[_Decoded], batch_size: int) -> bool:
        """Whether this instance can go to the model in one call with ``batch`` (same slice size
        and units, at most ``batch_size`` slices together)."""
        if not batch:
            return True
        first = batch[0]
        return (self.frames.shape[1:] == first.frames.shape[1:] and self.instance.units == first.instance.units
                and self.instance.modality == first.instance.modality
                and sum(d.frames.shape[0] for d in batch) + self.frames.shape[0] <= batch_size)


@dataclass
class _Output:
    """Where the batches of one series go: its ``.partial`` ``folder``, the new Series Instance
    UID, the derivation, and the outcome and manifest entries they add to."""

    job: SeriesJob
    folder: Path
    series_uid: str
    derivation: Derivation
    outcome: SeriesOutcome
    on_slices: Callable[[int], None]
    manifest_files: list[dict] = field(default_factory=list)


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
        if any(_sha256(folder / f["name"]) != f["sha256"] for f in manifest["files"] + manifest["nifti"]):
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
            nifti = [f"{job.series_id}/{f['name']}" for f in read_manifest(final)["nifti"]]
            return SeriesOutcome(job.series_id, "resumed", "complete output of an earlier run verified",
                                 output_series_uid=uid, files=_records(job, "processed", named=True), nifti=nifti)
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
        output = _Output(job, partial, new_uid, derivation, outcome, on_slices)
        try:
            # 1. Decode instances into batches of slices; each full batch goes through the model and is written
            batch: list[_Decoded] = []
            for n, inst in enumerate(job.instances, start=1):
                try:
                    frames, ds = read_instance_frames(inst)
                except InputError as exc:
                    outcome.files.append(FileRecord(str(inst.ref), "skipped", exc.cause, "corrupt", job.series_id))
                    continue
                if derivation.scale != 1 and (reason := resample_refusal(ds)):
                    outcome.files.append(FileRecord(str(inst.ref), "skipped", reason, "unsupported", job.series_id))
                    continue
                decoded = _Decoded(n, inst, frames, ds)
                if not decoded.joins(batch, self.config.batch_size):
                    self._write_batch(batch, output)
                    batch = []
                batch.append(decoded)
                if sum(d.frames.shape[0] for d in batch) >= self.config.batch_size:  # full: no need to hold it
                    self._write_batch(batch, output)
                    batch = []
            self._write_batch(batch, output)
            manifest_files = output.manifest_files
            if not manifest_files:
                shutil.rmtree(partial, ignore_errors=True)
                reasons = {f.reason for f in outcome.files}  # one shared reason says more than a summary
                reason = reasons.pop() if len(reasons) == 1 else "no instance could be decoded or resampled"
                outcome.status, outcome.reason, outcome.output_series_uid = "skipped", reason, None
                return outcome
            # 2. The NIfTI volumes, from the verified files
            nifti_files = self._write_nifti(job, partial, outcome) if self.config.nifti else []
            # 3. The manifest, then the rename: a folder of that name is complete
            write_json_atomic(partial / MANIFEST, {
                "settings": self.settings, "output_series_uid": new_uid,
                "source_series_uid": job.stacks[0].series_uid, "files": manifest_files, "nifti": nifti_files,
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

    def _write_batch(self, batch: list[_Decoded], output: _Output) -> None:
        """Run the slices of ``batch`` through the model in one call, then derive and write each instance."""
        if not batch:
            return
        first = batch[0].instance
        masks = [padding_mask(d.ds, d.frames, d.instance.units) for d in batch]
        padding = None if all(m is None for m in masks) else np.concatenate(
            [np.zeros(d.frames.shape[:3], bool) if m is None else m for d, m in zip(batch, masks)])
        values = self.processor(np.concatenate([d.frames for d in batch]), first.units, first.modality, padding)
        ends = np.cumsum([d.frames.shape[0] for d in batch])
        series_id = output.job.series_id
        for d, part in zip(batch, np.split(values, ends[:-1])):
            name = _file_name(d.n)
            syntax, note = output_syntax(d.ds.file_meta.TransferSyntaxUID, self.config.compress)
            stored, clipped = encode_stored(part, d.ds, d.instance.units)
            derived = derive(d.ds, stored, series_uid=output.series_uid, derivation=output.derivation, clipped=clipped,
                             syntax=syntax)
            write_verified(derived, output.folder / name, stored)
            output.outcome.clipped += clipped
            output.manifest_files.append({"name": name, "sha256": _sha256(output.folder / name),
                                          "source_sop_instance_uid": d.instance.sop_instance_uid,
                                          "sop_instance_uid": str(derived.SOPInstanceUID)})
            output.outcome.files.append(FileRecord(str(d.instance.ref), "processed", None, None, series_id,
                                                   f"{series_id}/{name}", transfer_syntax=syntax.name, note=note))
            output.on_slices(d.frames.shape[0])

    def _write_nifti(self, job: SeriesJob, partial: Path, outcome: SeriesOutcome) -> list[dict]:
        """One NIfTI volume per stack of the written series (``<series-id>.nii.gz``, or
        ``<series-id>-<k>.nii.gz`` for the k-th of several); -> their manifest entries. A stack
        that cannot be one volume gets a note instead."""
        stacks = discover([partial]).series
        entries = []
        for k, stack in enumerate(stacks, start=1):
            name = f"{job.series_id}.nii.gz" if len(stacks) == 1 else f"{job.series_id}-{k}.nii.gz"
            if reason := nifti_refusal(stack):
                outcome.notes.append(reason if len(stacks) == 1 else f"stack {k}: {reason}")
                continue
            try:
                write_nifti(stack, partial / name, f"restore {self.config.task} {self.model_name}")
            except OSError as exc:  # disk full, permissions
                raise OutputError(partial / name, f"cannot write the NIfTI volume ({type(exc).__name__}: {exc})") from None
            entries.append({"name": name, "sha256": _sha256(partial / name)})
            outcome.nifti.append(f"{job.series_id}/{name}")
        return entries
