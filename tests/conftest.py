"""Suite-wide fixtures.

The behaviour tests must not depend on which trained weights happen to ship in ``weights/`` (a
shipped default would change what ``restore upscale`` runs by default, and how long it takes):
every test sees an empty weights folder unless it sets ``RESTORE_WEIGHTS_DIR`` itself. The
shipped files are tested on their own in ``tests/test_shipped_weights.py``.
"""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def no_shipped_weights(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("RESTORE_WEIGHTS_DIR", str(tmp_path_factory.mktemp("no-weights")))
