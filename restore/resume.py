"""Resumable per-output state: completed segments kept beside the output until it is finished.

A video is encoded as a sequence of segments (``seg_000000.mkv``, ...), each renamed into place
only when it is complete and flushed to disk, in a hidden folder ``.NAME.restore-partial`` beside
the output. A run killed at any moment leaves only complete segments; ``--resume`` re-encodes from
the first missing one. ``state.json`` records the settings, so a resume with other settings is
refused instead of mixing two runs into one file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .atomic import remove, write_json_atomic
from .errors import OutputError

STATE_FILE = "state.json"


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class PartialState:
    """The partial-results folder of one output. Use :meth:`open`."""

    def __init__(self, output: Path, segment_suffix: str):
        self.output = output
        self.folder = output.parent / f".{output.name}.restore-partial"
        self.segment_suffix = segment_suffix

    @classmethod
    def open(cls, output: Path, fingerprint: dict, *, segment_suffix: str, resume: bool, overwrite: bool) -> "PartialState":
        """Create the folder, or reuse it when ``resume`` and the settings match.

        Raises ``OutputError`` when partial results exist and neither ``resume`` nor ``overwrite``
        is set, or when ``resume`` finds results made with other settings.
        """
        state = cls(output, segment_suffix)
        if state.folder.exists():
            if overwrite:
                remove(state.folder)
            elif not resume:
                raise OutputError(output, "an interrupted run left partial results; pass --resume to continue or --overwrite to restart")
            else:
                saved = state._read_fingerprint()
                if saved != fingerprint:
                    changed = sorted(k for k in set(saved) | set(fingerprint) if saved.get(k) != fingerprint.get(k))
                    raise OutputError(
                        output,
                        f"partial results were made with other settings ({', '.join(changed)}); pass --overwrite to restart",
                    )
                return state
        state.folder.mkdir(parents=True)
        write_json_atomic(state.folder / STATE_FILE, fingerprint)
        return state

    def _read_fingerprint(self) -> dict:
        try:
            return json.loads((self.folder / STATE_FILE).read_text())
        except (OSError, json.JSONDecodeError):
            return {}

    def segment_path(self, index: int) -> Path:
        return self.folder / f"seg_{index:06d}{self.segment_suffix}"

    def temporary_segment_path(self, index: int) -> Path:
        path = self.segment_path(index)
        return path.with_name("." + path.name)

    def completed(self) -> set[int]:
        """Indices of segments that were completely written."""
        return {int(p.name[4:10]) for p in self.folder.glob("seg_*")}

    def commit(self, index: int) -> None:
        """Flush the finished temporary segment to disk and rename it into place."""
        tmp = self.temporary_segment_path(index)
        if tmp.is_file():
            _fsync(tmp)
        os.replace(tmp, self.segment_path(index))
        _fsync(self.folder)

    def discard_temporary(self) -> None:
        for p in self.folder.glob(".seg_*"):
            remove(p)

    def cleanup(self) -> None:
        remove(self.folder)
