"""Waiting in tests on a condition, never for a fixed time (import as ``tests.conditions``).

For state that no event announces (a server thread's cache, a killed process, a sweeper deleting
files), the condition is polled until it holds or the deadline passes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(condition: Callable[[], T], timeout: float = 60.0, what: str = "condition",
               poll: float = 0.05) -> T:
    """The first truthy value of ``condition()``; ``AssertionError`` naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(poll)  # the polling interval of this condition wait, not a wait for time to pass
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
