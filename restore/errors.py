"""Errors that carry the offending file, so every failure prints as one line: ``PATH: cause``; and
:class:`Interrupted`, a stop signal raised as Ctrl-C is."""

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


class OptionError(RestoreError, ValueError):
    """A setting (a command-line option, or the API keyword of the same name) cannot work; the
    message names it. Also a ``ValueError``, as a bad argument to a function is one."""


class Interrupted(KeyboardInterrupt):
    """A stop signal other than Ctrl-C (``SIGTERM`` from ``kill``, a scheduler, a container
    runtime), raised where the program is, as Python raises ``KeyboardInterrupt`` for Ctrl-C, so
    that it stops the same way: partial work kept for ``--resume``, report written. ``signum`` is
    the signal; the exit code is ``128 + signum`` (143 for ``SIGTERM``)."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"signal {signum}")
