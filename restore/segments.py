"""The output of one video as resumable segments: :class:`SegmentSink`.

A video is encoded as a sequence of segments (``seg_000000.mkv``, ...), each renamed into place
only when it is complete and flushed to disk, in a hidden folder ``.NAME.restore-partial`` beside
the output. A run killed at any moment leaves only complete segments; ``--resume`` re-encodes from
the first missing one. ``state.json`` records the settings, so a resume with other settings is
refused instead of mixing two runs into one file. A failure keeps the finished segments too (a
corrupt packet, a full disk), unless there are none. When the last segment is in, the segments are
joined without re-encoding (with the source's audio, subtitles, chapters and tags) into the
output, which is written inside the folder (a kill during the join leaves nothing beside it
that ``--resume`` would not clean up), appears under its name only when complete, and the
folder is removed.

Segment ``k`` holds the frames finalised by chunks ``[k*P, (k+1)*P)`` of the engine's
:class:`~restore.engine.ChunkPlan`, ``P = ceil(segment_frames / stride)``: segments start on chunk
boundaries, so the engine can skip the chunks of finished segments and still make the remaining
frames identical to those of an uninterrupted run.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from .atomic import atomic_path, remove, write_json_atomic
from .engine import ChunkPlan, ChunkResult
from .errors import OutputError

if TYPE_CHECKING:  # PyAV is imported only once a video is really written
    from .io.video import VideoWriter

STATE_FILE = "state.json"
# the output while it is being joined, inside the folder
JOINED = "joined"
# a fingerprint value that any value matches on --resume: a setting that made no difference to the
# finished segments (the resumed run then records its own value)
MATCHES_ANY = "any"


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SegmentSink:
    """Chunks of upscaled frames in, the finished video out. Use :meth:`open`, then as a context:

    ``write`` every chunk the engine yields (in order, skipped ones included), leave the ``with``
    block, then ``finish``. Leaving it on an error (a corrupt packet, a full disk, Ctrl-C) drops
    the half-written segment and keeps the finished ones for ``--resume``, or removes the folder
    when there are none; an ``OSError`` (disk full, quota) becomes an :class:`OutputError` naming
    the output.
    """

    def __init__(
        self, output: Path, muxer: str | None, chunks_per_segment: int, open_writer: Callable[[Path], VideoWriter]
    ):
        self.output = output
        self.muxer = muxer
        self.folder = output.parent / f".{output.name}.restore-partial"
        self.chunks_per_segment = chunks_per_segment
        # segments use the output's own container, so its time base (and so every timestamp) is
        # kept; the segments of a frame folder (no muxer) are frame folders
        self.segment_suffix = "" if muxer is None else output.suffix
        self._open_writer = open_writer
        self._writer: VideoWriter | None = None
        self._done: set[int] = set()
        self._segments = 0  # segments seen so far, finished earlier or now

    @classmethod
    def open(
        cls,
        output: Path,
        fingerprint: dict,
        *,
        muxer: str | None,
        plan: ChunkPlan,
        segment_frames: int,
        open_writer: Callable[[Path], VideoWriter],
        resume: bool,
        overwrite: bool,
    ) -> SegmentSink:
        """Create the folder, or reuse it when ``resume`` and the settings (``fingerprint``) match.

        ``muxer`` is the FFmpeg muxer of the output (None: a folder of PNG frames, see
        :func:`restore.io.formats.muxer_for`); ``segment_frames`` is the least number of frames
        per segment (the most work a crash can lose); ``open_writer(path)`` opens the encoder of
        one segment. Raises ``OutputError`` when
        partial results exist and neither ``resume`` nor ``overwrite`` is set, or when ``resume``
        finds results made with other settings (a saved value :data:`MATCHES_ANY` matches any).
        """
        sink = cls(output, muxer, max(1, math.ceil(segment_frames / plan.stride)), open_writer)
        if sink.folder.exists():
            if overwrite:
                remove(sink.folder)
            elif not resume:
                raise OutputError(output, "an interrupted run left partial results; pass --resume to continue or --overwrite to restart")
            else:
                saved = sink._read_fingerprint()
                keys = set(saved) | set(fingerprint)
                changed = sorted(k for k in keys if saved.get(k) not in (fingerprint.get(k), MATCHES_ANY))
                if changed:
                    raise OutputError(
                        output,
                        f"partial results were made with other settings ({', '.join(changed)}); pass --overwrite to restart",
                    )
                if saved != fingerprint:  # a value that matched any is now this run's
                    write_json_atomic(sink.folder / STATE_FILE, fingerprint)
                sink._done = sink.completed()
                return sink
        sink.folder.mkdir(parents=True)
        write_json_atomic(sink.folder / STATE_FILE, fingerprint)
        return sink

    def _read_fingerprint(self) -> dict:
        try:
            return json.loads((self.folder / STATE_FILE).read_text())
        except (OSError, json.JSONDecodeError):
            return {}

    # ------------------------------------------------------------------ the engine's side

    def needs(self, chunk: int) -> bool:
        """Whether chunk ``chunk`` (an index of the chunk plan) belongs to a segment still to write."""
        return chunk // self.chunks_per_segment not in self._done

    def write(self, chunk: ChunkResult) -> None:
        """Encode ``chunk.frames`` (``(n, H, W, 3)`` uint8/uint16, at ``chunk.pts``) into its segment.

        The segment's encoder opens at its first frames; at the segment's last chunk it is closed
        and the segment committed. A chunk without frames (its segment is done) is only counted.
        """
        segment = chunk.index // self.chunks_per_segment
        if chunk.frames is not None:
            if self._writer is None:
                self._writer = self._open_writer(self.temporary_segment_path(segment))
            for frame, pts in zip(chunk.frames, chunk.pts):
                self._writer.write(frame, pts)
        if self._writer is not None and (chunk.is_last or (chunk.index + 1) % self.chunks_per_segment == 0):
            self._writer.close()
            self._writer = None
            self.commit(segment)
        self._segments = segment + 1

    def __enter__(self) -> SegmentSink:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is None:
            return
        if self._writer is not None:
            try:
                self._writer.close()
            except Exception:  # noqa: BLE001 - already failing; the original error is what matters
                pass
            self._writer = None
        if not self.completed():
            self.cleanup()  # nothing finished to keep: no partial results to be told about next time
        else:
            self.discard_temporary()
        if isinstance(exc, OSError):  # disk full, quota, I/O error: finished segments stay for --resume
            raise self._writing_failed(exc) from None

    def finish(self, source: Path, *, copy_streams: bool = True, keep_start_time: bool = False) -> None:
        """Join the segments into the output, with the chapters and tags of ``source`` (the input
        video) and, with ``copy_streams``, its audio and subtitles, and remove the folder. The
        output starts at 0 unless ``keep_start_time``; it appears under its name when complete.

        The join copies the segment files, so it needs about their size again on disk: with less
        free, an :class:`OutputError` says so before it starts (segments kept for ``--resume``).
        """
        from .io.video import concat_segments

        segments = [self.segment_path(i) for i in range(self._segments)]
        joined = self.folder / f"{JOINED}{self.segment_suffix}"
        remove(joined)  # what a join killed in an earlier run left
        # frame folders are linked into place, not copied: they need no room
        needed = sum(s.stat().st_size for s in segments if s.is_file())
        free = shutil.disk_usage(self.folder).free
        if needed > free:
            cause = f"joining the segments needs {needed / 1e6:.1f} MB free, {free / 1e6:.1f} MB left; free some and --resume"
            raise OutputError(self.output, cause)
        try:
            with atomic_path(self.output, joined) as tmp:
                concat_segments(
                    segments, tmp, source=source, copy_audio=copy_streams, copy_subtitles=copy_streams,
                    keep_start_time=keep_start_time, format=self.muxer,
                )
        except OSError as exc:
            raise self._writing_failed(exc) from None
        self.cleanup()

    def _writing_failed(self, exc: OSError) -> OutputError:
        kept = "; finished segments kept for --resume" if self.folder.exists() else ""
        return OutputError(self.output, f"writing failed ({exc.strerror or exc}){kept}")

    # ------------------------------------------------------------------ the folder

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
