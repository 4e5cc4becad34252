"""Subprocess helpers for the tests that signal a process they start."""

from __future__ import annotations

import signal


def default_sigint() -> None:
    """``preexec_fn`` that gives the child the default SIGINT disposition.

    A shell without job control (a CI script running ``make test &``) starts background commands
    with SIGINT ignored, children inherit that, and Python then installs no KeyboardInterrupt
    handler: a test that sends SIGINT must not depend on how the suite was launched.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)
