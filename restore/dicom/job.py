"""The ``restore dicom`` batch job: discover, plan, run every image series, report.

Output layout (documented for users)::

    OUTDIR/
      <series-id>/                    one derived series per input SeriesInstanceUID and task
        IM00001.dcm ...               one file per input instance, in slice order
        <series-id>.nii.gz            with --nifti: the series as a NIfTI volume (<series-id>-<k>.nii.gz per stack)
        restore-series.json           manifest: settings, source and output UIDs, file hashes (for --resume)
      .<series-id>.partial/           a series being written (renamed when complete)

``series-id`` is ``<modality>-<16 hex digits of sha256(input SeriesInstanceUID)>-<task>``: stable
across runs (so ``--resume`` finds it), free of patient-identifying values, and apart for each
task (two tasks can share one OUTDIR). The derived UIDs are derived from the source's and the
settings (task, model, weights, regions, tile): a re-run makes the same UIDs, so a PACS replaces
what it was sent before instead of keeping two copies.

A series is written into its ``.partial`` folder, every file re-read and checked, the manifest
written last, then the folder renamed: a folder named ``<series-id>`` is always complete.
``--resume`` keeps a series whose manifest matches the current inputs and settings and whose files
still hash as recorded, and refuses, before any work, to continue an OUTDIR made with other
settings (it would replace their series). Exit codes: 0 every image series processed, 2 some image
data was skipped (unsupported, corrupt, inconsistent geometry, conflicting copies of an instance;
non-image objects, exact duplicates and excluded modalities do not count), 1 a fatal error, a
series that could not be written, or nothing processed at all.

The steps live in their own modules: ``restore.dicom.plan`` (options, series jobs, settings, OUTDIR
checks), ``restore.dicom.runner`` (one series), ``restore.dicom.distributed`` (the runner on DDP
ranks), ``restore.dicom.report`` (the report).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from restore.atomic import write_json_atomic
from restore.dicom.plan import (
    DicomJobConfig, SeriesJob, check_destinations, check_outdir, output_settings, series_jobs,
)
from restore.dicom.processing import ProcessingConfig, build_processor, choose_model
from restore.dicom.report import DONE_STATUSES, FileRecord, Report, SeriesRecord
from restore.dicom.runner import SeriesOutcome, SeriesRunner, exclusion
from restore.io.dicom import LOST_KINDS, DiscoveryResult, discover

# the job's entry points; DicomJobConfig (from plan) is what callers build to run it
__all__ = ["DicomJobConfig", "build_report", "run_dicom_job"]


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
            geometry=sorted(set(geometry), key=geometry.index), nifti=out.nifti,
            notes=list(dict.fromkeys(out.notes + [f.note for f in out.files if f.note])),
        ))
        report.files.extend(out.files)
    report.files.extend(FileRecord(str(k.ref), "skipped", k.reason, k.kind) for k in found.skipped)
    lost = any(f.status == "skipped" and f.kind in LOST_KINDS for f in report.files)
    failed = any(s.status == "failed" for s in report.series)
    nothing = not any(s.status in DONE_STATUSES for s in report.series)
    report.exit_code = 1 if failed or nothing else 2 if lost or any(s.status == "skipped" for s in report.series) else 0
    return report


def run_dicom_job(config: DicomJobConfig, log: Callable[[str], None] = print) -> Report:
    """Run the whole job; returns the :class:`Report` (``exit_code`` set). Raises ``RestoreError``
    for fatal problems (missing input, unusable model, OUTDIR or ``--report``) before anything is
    written."""
    from restore.devices import resolve_device

    # 1. Check where the outputs go, before any work
    check_destinations(config)
    # 2. Plan: the model, the series, the outputs they will take, the series left out
    choice = choose_model(config.task, config.model, config.weights)
    found = discover(config.inputs)
    jobs = series_jobs(found, config.task)
    check_outdir(config, jobs, output_settings(config, choice.name))
    outcomes = {job.series_id: out for job in jobs if (out := exclusion(config, job))}
    todo = [job for job in jobs if job.series_id not in outcomes]
    kind = "baseline" if choice.baseline else "model"
    header = (f"restore dicom: {len(todo)} series, {sum(j.slices for j in todo)} slices "
              f"({len(outcomes)} series excluded, {len(found.skipped)} files skipped); "
              f"{config.task} with {kind} {choice.name} ({choice.description})")

    def announce() -> None:
        if not config.quiet:
            log(header)

    processing = ProcessingConfig(tile=config.tile, batch_size=config.batch_size, regions=config.regions,
                                  sam_checkpoint=config.sam_checkpoint)
    # 3. Run every series asked for: on DDP ranks (the header from global rank 0), or here
    if todo and (config.devices > 1 or config.num_nodes > 1) and not config.dry_run:
        from restore.dicom.distributed import predict_series

        results = predict_series(config, todo, choice, processing, announce)
        if results is None:  # not the reporting rank
            return Report(config.task, choice.name, choice.description, choice.baseline, exit_code=0)
    else:
        announce()
        processor = None
        if todo and not config.dry_run:
            processor = build_processor(config.task, choice, weights=config.weights, config=processing,
                                        device=resolve_device(config.device))
        runner = SeriesRunner(config, choice.name, choice.description, processor)
        results = _run_local(runner, todo, quiet=config.quiet)
    outcomes.update((o.series_id, o) for o in results)
    # 4. Report
    report = build_report(config, found, jobs, outcomes, choice.name, choice.description, choice.baseline)
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
            before = bar.n
            results.append(runner(job, bar.update))
            bar.update(job.slices - (bar.n - before))  # slices skipped inside the series: the bar still ends full
    return results
