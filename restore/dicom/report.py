"""The ``restore dicom`` report: every input file and every series with its status and reason.

Written as JSON (``--report``); :meth:`Report.table` is the short console version. Neither holds
patient-identifying DICOM values: series are named by their output folder id and modality, files
by their path, reasons by the kind of problem.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field

# series statuses: processed (written and verified now), resumed (verified output of an earlier
# run kept), skipped (nothing usable), failed (writing or verification failed), planned (--dry-run)
# "excluded": left out by the task's modality filter (not asked for; does not change the exit code)
SERIES_STATUSES = ("processed", "resumed", "skipped", "excluded", "failed", "planned")
# a job none of whose series reached one of these did nothing: it exits 1
DONE_STATUSES = ("processed", "resumed", "planned")


@dataclass
class FileRecord:
    """One input file: ``status`` processed | skipped | failed | planned; ``kind`` of skip reason."""

    path: str
    status: str
    reason: str | None = None
    kind: str | None = None
    series: str | None = None  # output series id
    output: str | None = None  # output file, relative to OUTDIR
    transfer_syntax: str | None = None  # of the output file
    note: str | None = None  # about a processed file, e.g. why its transfer syntax is not the input's


@dataclass
class SeriesRecord:
    """One input series (all stacks of one SeriesInstanceUID) and its derived series."""

    series_id: str
    input_series_uid: str
    modality: str
    stacks: int
    slices: int
    status: str
    reason: str | None = None
    output_dir: str | None = None
    output_series_uid: str | None = None
    clipped: int = 0
    seconds: float = 0.0
    geometry: list[str] = field(default_factory=list)
    nifti: list[str] = field(default_factory=list)  # NIfTI volumes (--nifti), relative to OUTDIR
    notes: list[str] = field(default_factory=list)  # what the series' output differs in from what was asked


@dataclass
class Report:
    task: str
    model: str
    model_description: str
    baseline: bool
    dry_run: bool = False
    series: list[SeriesRecord] = field(default_factory=list)
    files: list[FileRecord] = field(default_factory=list)
    exit_code: int = 0

    def to_dict(self) -> dict:
        counts = Counter(f.status for f in self.files)
        return {
            "task": self.task,
            "model": {"name": self.model, "description": self.model_description, "baseline": self.baseline},
            "dry_run": self.dry_run,
            "exit_code": self.exit_code,
            "summary": {
                "series": dict(Counter(s.status for s in self.series)),
                "files": dict(counts),
                "slices": sum(s.slices for s in self.series if s.status in ("processed", "resumed")),
                "clipped_values": sum(s.clipped for s in self.series),
            },
            "series": [asdict(s) for s in self.series],
            "files": [asdict(f) for f in sorted(self.files, key=lambda f: f.path)],
        }

    def table(self) -> str:
        """A short console summary: one row per series, skipped files counted by kind of reason."""
        rows = [("series", "modality", "slices", "status", "clipped", "notes")]
        for s in self.series:
            notes = "; ".join(([s.reason] if s.reason else []) + s.geometry + s.notes)
            rows.append((s.series_id, s.modality, str(s.slices), s.status, str(s.clipped), notes))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
        lines = ["  ".join([*(c.ljust(w) for c, w in zip(r, widths)), r[-1]]).rstrip() for r in rows]
        kinds = Counter(f.kind for f in self.files if f.status == "skipped")
        if kinds:
            lines.append("skipped files: " + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())))
        done = sum(1 for f in self.files if f.status == "processed")
        lines.append(
            f"{done} of {len(self.files)} input files processed; model {self.model} ({self.model_description})"
        )
        if not any(s.status in DONE_STATUSES for s in self.series):
            lines.append("nothing processed: " + ("every series was excluded or skipped (reasons above)" if self.series
                                                  else "no DICOM image series in the inputs"))
        return "\n".join(lines)
