"""The layers import one way only: cli/app -> datasets -> restore -> models (see docs/ARCHITECTURE.md)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "models": {"restore", "datasets", "cli", "app"},
    "restore": {"datasets", "cli", "app"},
    "datasets": {"cli", "app"},
}


def _imported_top_levels(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_only_go_downwards(package):
    offenders = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        bad = _imported_top_levels(path) & FORBIDDEN[package]
        if bad:
            offenders[str(path.relative_to(ROOT))] = sorted(bad)
    assert not offenders, f"imports that run back up the layers: {offenders}"


def test_a_foreign_datasets_package_is_detected(tmp_path):
    """If another distribution's `datasets` wins on sys.path, importing restore says so clearly."""
    fake = tmp_path / "datasets"
    fake.mkdir()
    (fake / "__init__.py").write_text("VERSION = 'someone else'\n")
    code = f"import sys; sys.path.insert(0, {str(tmp_path)!r}); import restore"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode != 0
    assert "'datasets' resolves to" in proc.stderr and "not restore's" in proc.stderr


def test_dependencies_import_alongside_our_top_level_packages():
    code = "import restore, models, datasets, diffusers, monai, pytorch_lightning, segment_anything, pydicom, av, decord, cv2, skimage"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
