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
frames identical to those of an uninterrupted run. The sink that meets the video's last chunk
records how many segments there are (``end.json``, before the last segment is committed), so that
whoever joins knows when every segment is in.

Several processes may write the segments of one output at once (``restore upscale --devices N``,
each its own segments; :mod:`restore.video_distributed`): they open the folder ``shared`` after
one of them has opened it alone, an error of one never removes what the others write, and the
first to :meth:`~SegmentSink.claim_join` a complete folder joins it.
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
# how many segments the video has: {"segments": n}, written by the sink that meets the last chunk
END_FILE = "end.json"
# made (exclusively) by the one process that joins the segments of a shared folder
JOIN_CLAIM = "join.claim"
# a fingerprint value that any value matches on --resume: a setting that made no difference to the
# finished segments (the resumed run then records its own value)
MATCHES_ANY = "any"


def chunks_per_segment(plan: ChunkPlan, segment_frames: int) -> int:
    """``P``: chunks of ``plan`` per segment of at least ``segment_frames`` frames (>= 1)."""
    return max(1, math.ceil(segment_frames / plan.stride))


def segment_lengths(plan: ChunkPlan, segment_frames: int, frames: int) -> list[int]:
    """Frames of each segment of a ``frames``-frame video (``frames >= 1``): ``P * stride`` each,
    the last holding the rest (the engine's last chunk finalises every frame left)."""
    span = chunks_per_segment(plan, segment_frames) * plan.stride
    chunks = 1 if frames <= plan.chunk else math.ceil((frames - plan.chunk) / plan.stride) + 1
    count = math.ceil(chunks / chunks_per_segment(plan, segment_frames))
    return [span] * (count - 1) + [frames - span * (count - 1)]


def partial_folder(output: Path) -> Path:
    """The hidden folder beside ``output`` that holds its segments while it is being made."""
    return output.parent / f".{output.name}.restore-partial"


def recorded_settings(output: Path) -> dict:
    """The settings (fingerprint) recorded with the segments of ``output``, {} when there are none.
    A setting chosen while running, such as the automatic tile, is read back from here so that
    resumed segments are made the same way as the finished ones."""
    try:
        return json.loads((partial_folder(output) / STATE_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return {}


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
    when there are none (never when ``shared``: other processes write there); an ``OSError``
    (disk full, quota) becomes an :class:`OutputError` naming the output.
    """

    def __init__(
        self, output: Path, muxer: str | None, chunks_per_segment: int, open_writer: Callable[[Path], VideoWriter],
        shared: bool = False,
    ):
        self.output = output
        self.muxer = muxer
        self.folder = partial_folder(output)
        self.chunks_per_segment = chunks_per_segment
        # segments use the output's own container, so its time base (and so every timestamp) is
        # kept; the segments of a frame folder (no muxer) are frame folders
        self.segment_suffix = "" if muxer is None else output.suffix
        self._open_writer = open_writer
        self.shared = shared
        self._writer: VideoWriter | None = None
        self._writing: int | None = None  # the segment whose temporary file the writer fills
        self._done: set[int] = set()

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
        shared: bool = False,
    ) -> SegmentSink:
        """Create the folder, or reuse it when ``resume`` and the settings (``fingerprint``) match.

        ``muxer`` is the FFmpeg muxer of the output (None: a folder of PNG frames, see
        :func:`restore.io.formats.muxer_for`); ``segment_frames`` is the least number of frames
        per segment (the most work a crash can lose); ``open_writer(path)`` opens the encoder of
        one segment. Raises ``OutputError`` when
        partial results exist and neither ``resume`` nor ``overwrite`` is set, or when ``resume``
        finds results made with other settings (a saved value :data:`MATCHES_ANY` matches any).

        ``shared``: join a folder that one process has opened alone first, with this fingerprint
        (``resume=True``), while other processes write other segments of it.
        """
        sink = cls(output, muxer, chunks_per_segment(plan, segment_frames), open_writer, shared)
        if sink.folder.exists():
            if overwrite:
                remove(sink.folder)
            elif not resume:
                raise OutputError(output, "an interrupted run left partial results; pass --resume to continue or --overwrite to restart")
            else:
                saved = recorded_settings(output)
                keys = set(saved) | set(fingerprint)
                changed = sorted(k for k in keys if saved.get(k) not in (fingerprint.get(k), MATCHES_ANY))
                if changed:
                    raise OutputError(
                        output,
                        f"partial results were made with other settings ({', '.join(changed)}); pass --overwrite to restart",
                    )
                if saved != fingerprint:  # a value that matched any is now this run's
                    write_json_atomic(sink.folder / STATE_FILE, fingerprint)
                if not shared:
                    remove(sink.folder / JOIN_CLAIM)  # a join that a killed run began
                sink._done = sink.completed()
                return sink
        sink.folder.mkdir(parents=True)
        write_json_atomic(sink.folder / STATE_FILE, fingerprint)
        return sink

    # ------------------------------------------------------------------ the engine's side

    def segment_of(self, chunk: int) -> int:
        """The segment that chunk ``chunk`` (an index of the chunk plan) belongs to."""
        return chunk // self.chunks_per_segment

    def needs(self, chunk: int) -> bool:
        """Whether chunk ``chunk`` belongs to a segment still to write."""
        return self.segment_of(chunk) not in self._done

    def write(self, chunk: ChunkResult) -> None:
        """Encode ``chunk.frames`` (``(n, H, W, 3)`` uint8/uint16, at ``chunk.pts``) into its segment.

        The segment's encoder opens at its first frames; at the segment's last chunk it is closed
        and the segment committed. A chunk without frames (its segment is done, or another
        process's) is only looked at: the last one says how many segments there are.
        """
        segment = self.segment_of(chunk.index)
        if chunk.frames is not None:
            if self._writer is None:
                self._writer, self._writing = self._open_writer(self.temporary_segment_path(segment)), segment
            for frame, pts in zip(chunk.frames, chunk.pts):
                self._writer.write(frame, pts)
        if chunk.is_last:  # before the commit: a complete last segment implies a known count
            write_json_atomic(self.folder / END_FILE, {"segments": segment + 1})
        if self._writer is not None and (chunk.is_last or (chunk.index + 1) % self.chunks_per_segment == 0):
            self._writer.close()
            self._writer = None
            self.commit(segment)

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
            remove(self.temporary_segment_path(self._writing))  # only our own: others may be writing theirs
        if not self.shared and not self.completed():
            self.cleanup()  # nothing finished to keep: no partial results to be told about next time
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

        segments = [self.segment_path(i) for i in range(self.segment_count() or 0)]
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

    def segment_count(self) -> int | None:
        """How many segments the video has, once a sink has met its last chunk; else None."""
        try:
            return json.loads((self.folder / END_FILE).read_text())["segments"]
        except (OSError, json.JSONDecodeError, KeyError):
            return None

    def complete(self) -> bool:
        """Whether every segment of the video is in (and so the folder can be joined)."""
        count = self.segment_count()
        return count is not None and self.completed() >= set(range(count))

    def claim_join(self) -> bool:
        """Whether this process is to join the folder: it is complete and no other process has
        claimed it (the claim is an exclusively created file, so of two asking at once one wins)."""
        if not self.complete():
            return False
        try:
            os.close(os.open(self.folder / JOIN_CLAIM, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return False
        return True

    def commit(self, index: int) -> None:
        """Flush the finished temporary segment to disk and rename it into place."""
        tmp = self.temporary_segment_path(index)
        if tmp.is_file():
            _fsync(tmp)
        os.replace(tmp, self.segment_path(index))
        _fsync(self.folder)

    def cleanup(self) -> None:
        remove(self.folder)
