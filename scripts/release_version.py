#!/usr/bin/env python3
"""Set the release version and date the changelog: the file edits of scripts/release.sh.

    scripts/release_version.py VERSION [--date YYYY-MM-DD] [--root DIR]

* The version: ``__version__`` in ``ananke_hub/__init__.py`` (what ``ananke --version``
  and the docs show) and, while ``pyproject.toml`` still carries a static
  ``version = "..."`` in ``[project]``, that line too (both must be equal; with
  ``dynamic = ["version"]`` only the first is written).
* ``CHANGELOG.md``: the heading ``## Next`` becomes ``## VERSION (DATE)`` and a new,
  empty ``## Next`` goes above it.

Refuses (exit 2, nothing written) a version that is not PEP 440 ``X.Y.Z`` (with an
optional ``aN``/``bN``/``rcN``), one the changelog already has, and an empty ``Next``.
"""

import argparse
import datetime
import re
import sys
from pathlib import Path

VERSION_RE = re.compile(r"^[0-9]+\.[0-9]+\.[0-9]+((a|b|rc)[0-9]+)?$")
INIT_RE = re.compile(r'^__version__ = "[^"]*"$', re.MULTILINE)
# The [project] table's own version line (not a tool's), up to the next table.
PROJECT_RE = re.compile(r"(^\[project\]\n(?:(?!^\[).*\n)*?)^version = \"[^\"]*\"$", re.MULTILINE)
NEXT = "## Next"


class ReleaseError(Exception):
    pass


def new_changelog(text: str, version: str, date: str) -> str:
    if re.search(rf"^## {re.escape(version)}\b", text, re.MULTILINE):
        raise ReleaseError(f"CHANGELOG.md has a section {version} already: pick a new version.")
    lines = text.split("\n")
    try:
        start = lines.index(NEXT)
    except ValueError:
        raise ReleaseError(
            f"CHANGELOG.md has no '{NEXT}' heading to turn into {version}."
        ) from None
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    if not any(line.strip() for line in lines[start + 1 : end] if not line.startswith("#")):
        raise ReleaseError(f"CHANGELOG.md's '{NEXT}' section is empty: nothing to release.")
    lines[start : start + 1] = [NEXT, "", f"## {version} ({date})"]
    return "\n".join(lines)


def set_version(root: Path, version: str, date: str) -> list[Path]:
    if not VERSION_RE.fullmatch(version):
        raise ReleaseError(
            f"{version!r} is not a release version: write X.Y.Z, e.g. 0.2.0 (or 0.2.0rc1)."
        )
    init = root / "ananke_hub" / "__init__.py"
    pyproject = root / "pyproject.toml"
    changelog = root / "CHANGELOG.md"
    writes = {}
    init_text = init.read_text()
    if not INIT_RE.search(init_text):
        raise ReleaseError(f'{init} has no line __version__ = "...".')
    writes[init] = INIT_RE.sub(f'__version__ = "{version}"', init_text, count=1)
    py_text = pyproject.read_text()
    if PROJECT_RE.search(py_text):
        writes[pyproject] = PROJECT_RE.sub(rf'\g<1>version = "{version}"', py_text, count=1)
    writes[changelog] = new_changelog(changelog.read_text(), version, date)
    for path, text in writes.items():  # all checks passed: now write
        path.write_text(text)
    return list(writes)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("version")
    parser.add_argument("--date", default=datetime.date.today().isoformat())
    parser.add_argument("--root", default=str(Path(__file__).resolve().parents[1]))
    args = parser.parse_args(argv)
    try:
        written = set_version(Path(args.root), args.version, args.date)
    except ReleaseError as exc:
        print(f"release: {exc}", file=sys.stderr)
        return 2
    for path in written:
        print(f"release: wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
