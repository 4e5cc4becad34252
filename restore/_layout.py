"""Guard against other distributions shadowing the top-level ``models`` / ``datasets`` packages.

``restore`` ships three top-level packages (``restore``, ``models``, ``datasets``), as fixed by the
project's design card. ``models`` and ``datasets`` are common names (Hugging Face ``datasets`` is
the usual culprit): if another distribution provides them and wins on ``sys.path``, imports would
silently resolve to foreign code. Each of our packages carries a marker attribute; we check it
once, when ``restore`` is imported, and fail with a message that says what to do.
"""

from __future__ import annotations

import importlib

MARKER = "__restore_package__"
SIBLING_PACKAGES = ("models", "datasets")


def check_sibling_packages() -> None:
    """Raise ``ImportError`` if ``models`` or ``datasets`` is not this project's package."""
    for name in SIBLING_PACKAGES:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            raise ImportError(
                f"restore: the top-level package {name!r} is missing ({exc}); reinstall with `pip install -e .`"
            ) from exc
        if not getattr(module, MARKER, False):
            where = getattr(module, "__file__", None) or list(getattr(module, "__path__", []))
            raise ImportError(
                f"restore: the top-level package {name!r} resolves to {where}, which is not restore's "
                f"(another distribution, e.g. Hugging Face 'datasets', shadows it). "
                f"Install restore in its own virtual environment or uninstall the other package."
            )
