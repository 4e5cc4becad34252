"""``-`` as the input (stdin) or the output (stdout) of ``restore upscale``.

A pipe is read or written once, start to end, so around the batch it becomes a plain file and
everything else (probe, segments, the join, the report) works as for any file:

* ``restore upscale - -o out.mkv``: stdin is spooled to a hidden temporary file in the output's
  folder (bounded by disk, not memory), upscaled from there, and removed when the batch ends.
  Any container FFmpeg reads from a pipe (Matroska, MPEG-TS, ``-f nut``; MP4 only when written
  with ``-movflags frag_keyframe+empty_moov``), GIF and animated WebP. Stdin is read once, so it
  cannot be resumed: ``--resume`` is refused.
* ``restore upscale in.mp4 -o -``: the video is made in a temporary folder (``TMPDIR``) as
  Matroska, a container that plays from a pipe (``| ffplay -``, ``| ffmpeg -i - ...``), and copied
  to stdout once complete: a failed or interrupted run writes nothing to stdout, so the reader
  never gets half a video. The summary goes to stderr; the folder is removed, so ``--resume`` is
  refused here too.

Combinations that cannot work (``-`` among other inputs, ``-o -`` for several inputs, a folder or
an image, ``--codec png``, a terminal instead of a pipe) raise a one-line
:class:`~restore.errors.OptionError` before any work.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from ..atomic import remove, write_json_atomic
from ..errors import OptionError
from .animation import is_animation
from .formats import is_image

if TYPE_CHECKING:
    from ..batch import BatchReport
    from ..jobs import UpscaleOptions

STDIO = "-"
# the container written to stdout: it holds every codec, audio and subtitle we write, and plays
# from a pipe (its index is optional)
STDOUT_SUFFIX = ".mkv"
_COPY_CHUNK = 1 << 20


def is_piped(inputs: Sequence[str | os.PathLike], output: str | os.PathLike) -> bool:
    """Whether ``-`` is among ``inputs`` or is ``output``."""
    return str(output) == STDIO or any(str(i) == STDIO for i in inputs)


def check_pipes(inputs: Sequence[str], output: str, *, resume: bool, codec: str) -> None:
    """Raise a one-line ``OptionError`` for a use of ``-`` that cannot work."""
    if STDIO in inputs:
        if len(inputs) > 1:
            raise OptionError(None, "`-` (stdin) must be the only input")
        if resume:
            raise OptionError(None, "--resume cannot continue from `-`: stdin is read once; save it to a file to resume")
        if sys.stdin.isatty():
            raise OptionError(None, "`-` reads a video from stdin, which is a terminal here; pipe one in")
        if output != STDIO and Path(output).is_dir():
            raise OptionError(None, "with `-` (stdin) as the input, -o names the output file, not a folder")
    if output == STDIO:
        if len(inputs) > 1 or (inputs[0] != STDIO and Path(inputs[0]).is_dir()):
            raise OptionError(None, "-o - (stdout) takes one input file, not several or a folder")
        if inputs[0] != STDIO and is_image(inputs[0]) and not is_animation(inputs[0]):
            raise OptionError(None, "-o - (stdout) writes a video; name an image output file instead")
        if resume:
            raise OptionError(None, "--resume cannot continue a run written to stdout; write to a file to resume")
        if codec == "png":
            raise OptionError(None, "-o - (stdout) writes one Matroska stream; --codec png makes a folder of frames")
        if sys.stdout.isatty():
            raise OptionError(None, "-o - writes the video to stdout, which is a terminal here; pipe it (| ffplay -)")


@contextlib.contextmanager
def spooled_stdin(folder: Path) -> Iterator[Path]:
    """Copy stdin to a hidden temporary file in ``folder`` (made if missing) and yield its path;
    the file is removed on leaving, however the block ends."""
    folder.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=".restore-stdin-", dir=folder)
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as spool:
            shutil.copyfileobj(sys.stdin.buffer, spool, _COPY_CHUNK)
        yield path
    finally:
        remove(path)


def copy_to_stdout(path: Path, stdout: BinaryIO) -> None:
    """Write the file at ``path`` to ``stdout`` (the process's, as bytes). Raises
    ``BrokenPipeError`` when the reader has gone; the descriptor is then pointed at /dev/null, so
    that the interpreter's final flush does not fail too."""
    try:
        with open(path, "rb") as fh:
            shutil.copyfileobj(fh, stdout, _COPY_CHUNK)
        stdout.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stdout.fileno())
        os.close(devnull)
        raise


def run_piped(
    run: Callable[..., BatchReport],
    inputs: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    opts: UpscaleOptions,
    *,
    report_path: str | os.PathLike | None = None,
    **kwargs,
) -> BatchReport:
    """Run the batch ``run`` (:func:`restore.batch.run_batch`, given so that this module stays
    below it) with stdin spooled to a file and stdout replaced by a temporary file that is copied
    to stdout when its job is ``ok``; the report names them ``-``. ``kwargs`` go to ``run``."""
    names, target_name = [str(i) for i in inputs], str(output)
    check_pipes(names, target_name, resume=opts.resume, codec=opts.codec)
    to_stdout, stdout = target_name == STDIO, sys.stdout.buffer
    with contextlib.ExitStack() as stack:
        if to_stdout:
            target = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="restore-stdout-"))) / f"stdout{STDOUT_SUFFIX}"
            stack.enter_context(contextlib.redirect_stdout(sys.stderr))  # the summary; stdout carries the video
        else:
            target = Path(target_name)
        pseudonyms = {str(target): STDIO} if to_stdout else {}
        sources = []
        for name in names:
            if name == STDIO:
                spool = stack.enter_context(spooled_stdin(target.parent))
                pseudonyms[str(spool)] = STDIO
                sources.append(spool)
            else:
                sources.append(Path(name))
        report = run(sources, target, opts, report_path=report_path, **kwargs)
        report.results = [
            replace(r, input=pseudonyms.get(r.input, r.input), output=pseudonyms.get(r.output, r.output)) for r in report.results
        ]
        if to_stdout and report.results and report.results[0].status == "ok":
            try:
                copy_to_stdout(target, stdout)
            except BrokenPipeError:
                report.results[0] = replace(report.results[0], status="failed", error="-: stdout was closed before the whole video was written")
                print(f"error: {report.results[0].error}", file=sys.stderr)
    if report_path is not None and pseudonyms:
        write_json_atomic(Path(report_path), report.as_dict())  # again, with `-` for the temporary files
    return report
