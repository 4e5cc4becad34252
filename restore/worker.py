"""Run jobs one at a time in a child process, so that a job can really be stopped.

A thread cannot be killed: a cancelled or overdue job left in one keeps computing and holding its
memory. :class:`ProcessWorker` owns one child process (``spawn``: no state shared with the
server) that runs one job at a time; cancelling the waiting coroutine, or passing ``timeout``,
kills the child, which frees everything the job held, and the next job starts a fresh one. The
child keeps what its jobs cache (loaded models) between jobs.

Job functions must be importable (module-level) and picklable with their arguments and results;
they receive ``progress(done, total, desc)`` as a keyword argument. Failures come back as
:class:`JobError` with a one-line message (:func:`one_line`), never as a traceback for the user.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import time
import traceback
from collections.abc import Callable
from typing import Any

from .errors import RestoreError

log = logging.getLogger("restore.worker")


class JobError(Exception):
    """A job failed; ``str()`` is one line for the user, ``detail`` the child's traceback (for
    unexpected errors only)."""

    def __init__(self, message: str, detail: str = ""):
        super().__init__(message)
        self.detail = detail


class JobTimeout(JobError):
    """The job ran past its time limit and was stopped."""


def one_line(exc: BaseException) -> tuple[str, bool]:
    """``(message, expected)``: a one-line message naming only a file's name (never a server path)
    for ``RestoreError`` and ``ValueError`` (``expected``), else ``unexpected error (Type: ...)``."""
    if isinstance(exc, JobError):
        return str(exc), not exc.detail
    if isinstance(exc, RestoreError):
        first = exc.cause.splitlines()[0] if exc.cause else ""
        return (f"{exc.path.name}: {first}" if exc.path is not None else first), True
    if isinstance(exc, ValueError):
        return (str(exc).splitlines() or [""])[0], True
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"unexpected error ({type(exc).__name__}: {text})", False


def _serve(conn) -> None:
    """The child's loop: receive ``(fn, args, kwargs)``, send progress, then a result or an error."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the server's; it stops us itself
    logging.basicConfig(level=logging.INFO)
    while True:
        try:
            fn, args, kwargs = conn.recv()
        except (EOFError, OSError):
            return

        def progress(done: int, total: int, desc: str = "") -> None:
            conn.send(("progress", (done, total, desc)))

        try:
            conn.send(("done", fn(*args, progress=progress, **kwargs)))
        except BaseException as exc:  # noqa: BLE001 - every failure goes back as one line
            message, expected = one_line(exc)
            conn.send(("error", (message, "" if expected else traceback.format_exc())))


class ProcessWorker:
    """One child process running one job at a time (see the module docstring)."""

    def __init__(self, name: str = "restore-worker"):
        self.name = name
        self._context = multiprocessing.get_context("spawn")
        self._process = None
        self._conn = None
        self._lock: asyncio.Lock | None = None
        self.busy = False
        self.jobs_started = 0

    @property
    def pid(self) -> int | None:
        """The child's process id while it exists."""
        return self._process.pid if self._process is not None and self._process.is_alive() else None

    def _start(self):
        if self._process is None or not self._process.is_alive():
            self.stop()
            parent, child = self._context.Pipe()
            self._process = self._context.Process(target=_serve, args=(child,), name=self.name, daemon=True)
            self._process.start()
            child.close()
            self._conn = parent
        return self._conn

    def stop(self) -> None:
        """Kill the child (whatever it is doing) and wait for it to exit."""
        if self._process is not None:
            if self._process.is_alive():
                self._process.kill()
            self._process.join(timeout=10)
            self._process = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def run(self, fn: Callable, *args, timeout: float, on_progress: Callable | None = None, **kwargs) -> Any:
        """``fn(*args, progress=..., **kwargs)`` in the child -> its result.

        Jobs wait for each other (one at a time). Raises :class:`JobTimeout` after ``timeout``
        seconds of running (the child is killed), :class:`JobError` when ``fn`` raised or the child
        died; cancelling the awaiting task kills the child too.
        """
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            conn = self._start()
            self.busy, self.jobs_started = True, self.jobs_started + 1
            deadline = time.monotonic() + timeout
            try:
                conn.send((fn, args, kwargs))
                while True:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        self.stop()
                        raise JobTimeout(f"stopped after {timeout:g} s, this demo's limit per job")
                    if not await asyncio.to_thread(conn.poll, min(left, 0.25)):
                        if not self._process.is_alive():
                            self.stop()
                            raise JobError("the job stopped unexpectedly (out of memory?)", "child process died")
                        continue
                    kind, payload = conn.recv()
                    if kind == "progress":
                        if on_progress is not None:
                            on_progress(*payload)
                    elif kind == "done":
                        return payload
                    else:
                        raise JobError(*payload)
            except asyncio.CancelledError:
                log.info("job cancelled: stopping the worker process")
                self.stop()
                raise
            except (EOFError, OSError, BrokenPipeError):
                self.stop()
                raise JobError("the job stopped unexpectedly (out of memory?)", "lost the worker process") from None
            finally:
                self.busy = False
