"""scripts/release_version.py: the version set in one go, CHANGELOG's Next dated, and
refusals that leave every file as it was."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "release_version.py"

CHANGELOG = """\
# Changelog

## Next

### Added
- Rootless containers.

## 0.1.0 (2026-01-01)

### Added
- The first release.
"""
PYPROJECT = """\
[build-system]
requires = ["setuptools"]

[project]
name = "ananke"
version = "0.1.0.dev0"
dependencies = []

[tool.ruff]
target-version = "py311"
"""


def tree(tmp_path: Path, pyproject: str = PYPROJECT, changelog: str = CHANGELOG) -> Path:
    (tmp_path / "ananke_hub").mkdir()
    (tmp_path / "ananke_hub" / "__init__.py").write_text(
        '"""Ananke."""\n\n__version__ = "0.1.0.dev0"\n'
    )
    (tmp_path / "pyproject.toml").write_text(pyproject)
    (tmp_path / "CHANGELOG.md").write_text(changelog)
    return tmp_path


def release(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args, "--root", str(root), "--date", "2027-03-01"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip


def test_sets_the_version_and_dates_next(tmp_path):
    root = tree(tmp_path)
    proc = release(root, "0.2.0")
    assert proc.returncode == 0, proc.stderr
    assert '__version__ = "0.2.0"' in (root / "ananke_hub" / "__init__.py").read_text()
    pyproject = (root / "pyproject.toml").read_text()
    assert 'version = "0.2.0"' in pyproject and 'target-version = "py311"' in pyproject
    assert (root / "CHANGELOG.md").read_text() == CHANGELOG.replace(
        "## Next\n", "## Next\n\n## 0.2.0 (2027-03-01)\n"
    )


def test_a_dynamic_pyproject_version_is_left_to_the_package(tmp_path):
    dynamic = PYPROJECT.replace('version = "0.1.0.dev0"', 'dynamic = ["version"]')
    root = tree(tmp_path, pyproject=dynamic)
    assert release(root, "0.2.0rc1").returncode == 0
    assert (root / "pyproject.toml").read_text() == dynamic
    assert '__version__ = "0.2.0rc1"' in (root / "ananke_hub" / "__init__.py").read_text()


@pytest.mark.parametrize(
    "version, changelog, words",
    [
        ("v0.2", CHANGELOG, "not a release version"),
        ("0.1.0", CHANGELOG, "has a section 0.1.0 already"),
        ("0.2.0", CHANGELOG.replace("### Added\n- Rootless containers.\n", ""), "is empty"),
        ("0.2.0", CHANGELOG.replace("## Next", "## Unreleased"), "no '## Next' heading"),
    ],
)
def test_refusals_change_nothing(tmp_path, version, changelog, words):
    root = tree(tmp_path, changelog=changelog)
    before = {p: p.read_text() for p in root.rglob("*") if p.is_file()}
    proc = release(root, version)
    assert proc.returncode == 2 and words in proc.stderr, proc.stderr
    assert {p: p.read_text() for p in root.rglob("*") if p.is_file()} == before


def test_release_sh_refuses_without_a_version_and_a_dirty_tree(tmp_path):
    proc = subprocess.run([str(REPO / "scripts" / "release.sh")], capture_output=True, text=True)
    assert proc.returncode == 2 and "usage: scripts/release.sh VERSION" in proc.stderr
