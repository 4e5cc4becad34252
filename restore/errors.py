"""Errors that carry the offending file, so every failure prints as one line: ``PATH: cause``."""

from __future__ import annotations

from pathlib import Path


class RestoreError(Exception):
    """Base class: an error about one file, printed as ``"{path}: {cause}"``."""

    def __init__(self, path: str | Path | None, cause: str):
        self.path = None if path is None else Path(path)
        self.cause = cause
        super().__init__(f"{self.path}: {cause}" if self.path is not None else cause)


class InputError(RestoreError):
    """An input file is missing, unreadable, corrupt or of an unsupported kind."""


class OutputError(RestoreError):
    """An output cannot be written (unwritable folder, disk full, exists without --overwrite)."""


class ModelError(RestoreError):
    """A model name, weight file or model card is unknown, corrupt or inconsistent."""
