"""Atomic outputs: write under a temporary name in the destination folder, rename when complete."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path


def temporary_sibling(path: Path, tag: str = "partial") -> Path:
    """A unique hidden name beside ``path`` with the same suffix (muxers pick formats by suffix)."""
    return path.with_name(f".{path.stem}.{tag}-{uuid.uuid4().hex[:8]}{path.suffix}")


def remove(path: Path) -> None:
    """Remove a file or folder if it exists."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def atomic_path(path: Path, tmp: Path | None = None) -> Iterator[Path]:
    """Yield a temporary path to write; on success rename it to ``path``, on failure remove it.

    Works for files and for folders (a PNG frame folder). ``path`` must not exist yet, unless it
    is a file (then it is replaced; callers check ``--overwrite`` before). ``tmp`` is the
    temporary path (on the file system of ``path``), by default a hidden sibling of ``path``; a
    caller with a folder of its own that a later run cleans up puts it there, so that not even a
    kill (which no ``except`` sees) leaves it behind.
    """
    tmp = tmp or temporary_sibling(path)
    try:
        yield tmp
        if path.is_dir():
            remove(path)
        os.replace(tmp, path)
    except BaseException:
        remove(tmp)
        raise


def write_json_atomic(path: Path, data: object) -> None:
    with atomic_path(Path(path)) as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
