"""The layout by where code runs: what importing a package drags in.

Each check runs in a fresh interpreter (``sys.modules`` of the test process holds
everything the suite imported).
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def imported_after(statement: str, modules: list[str]) -> dict[str, bool]:
    code = (
        "import json, sys\n"
        f"{statement}\n"
        f"print(json.dumps({{m: m in sys.modules for m in {modules!r}}}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("module", ["kore.app", "kore"])
def test_kore_does_not_import_the_spawner_systemdspawner_or_nbgrader(module):
    loaded = imported_after(
        f"import {module}",
        ["ananke_hub.spawner", "systemdspawner", "nbgrader", "ananke_hub.hubconfig"],
    )
    assert loaded == {
        "ananke_hub.spawner": False,
        "systemdspawner": False,
        "nbgrader": False,
        "ananke_hub.hubconfig": False,
    }


def test_the_hub_package_does_not_import_kore():
    loaded = imported_after(
        "import ananke_hub.cli, ananke_hub.hubconfig, ananke_hub.auth, ananke_hub.spawner",
        ["kore", "kore.models", "kore.sync.store"],
    )
    assert loaded == {"kore": False, "kore.models": False, "kore.sync.store": False}


def test_cli_imports_no_kore_internals():
    """ananke_hub/cli.py drives Kore's syncs through kore.cli only (the public entry)."""
    source = (REPO / "ananke_hub" / "cli.py").read_text()
    kore_imports = [
        line.strip()
        for line in source.splitlines()
        if line.strip().startswith(("from kore", "import kore"))
    ]
    assert kore_imports
    assert all(line.startswith("from kore.cli import") for line in kore_imports), kore_imports


def loaded_after(statement: str) -> list[str]:
    """The modules a fresh interpreter holds after ``statement`` that it did not before."""
    code = (
        "import json, sys\n"
        "before = set(sys.modules)\n"
        f"{statement}\n"
        "print(json.dumps(sorted(set(sys.modules) - before)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_fsutil_imports_the_standard_library_only():
    """The hub, Kore and the labs all import it: it drags nothing of theirs in."""
    loaded = loaded_after("import ananke_hub.fsutil")
    foreign = [
        name
        for name in loaded
        if name.split(".")[0] not in sys.stdlib_module_names
        and name not in ("ananke_hub", "ananke_hub.fsutil")
    ]
    assert foreign == []


def test_the_exchange_plugins_import_no_hub_module_but_fsutil():
    """nbgrader's processes import the exchange plugins: they copy files through fsutil
    and take nothing else of the hub."""
    loaded = loaded_after("import ananke_hub.lab.exchange")
    hub = [
        name
        for name in loaded
        if name.split(".")[0] in ("ananke_hub", "kore")
        and not name.startswith("ananke_hub.lab")
        and name not in ("ananke_hub", "ananke_hub.fsutil")
    ]
    assert "ananke_hub.fsutil" in loaded
    assert hub == []


PACKAGE_ROOTS = [
    "ananke_hub",
    "ananke_hub/auth",
    "ananke_hub/container",
    "ananke_hub/courses",
    "ananke_hub/lab",
    "ananke_hub/testlms",
    "kore",
    "kore/handlers",
    "kore/lti",
    "kore/manage",
    "kore/sync",
]


@pytest.mark.parametrize("root", PACKAGE_ROOTS)
def test_every_package_root_says_where_it_runs_and_what_it_may_import(root):
    doc = (REPO / root / "__init__.py").read_text()
    assert doc.startswith('"""')
    head = doc.split('"""')[1]
    assert "Runs " in head and "import" in head


def test_every_package_is_in_the_list():
    found = {
        p.parent.relative_to(REPO).as_posix()
        for top in ("ananke_hub", "kore")
        for p in (REPO / top).glob("*/__init__.py")
    } | {"ananke_hub", "kore"}
    assert found == set(PACKAGE_ROOTS)


def test_shipped_fragments_come_from_the_root_config_d():
    """One source: the package's share/config.d is a link to the repository's config.d
    (the wheel gets the files themselves)."""
    from ananke_hub.paths import SHIPPED_CONFIG_DIR, shipped_fragments

    assert SHIPPED_CONFIG_DIR.resolve() == (REPO / "config.d").resolve()
    assert [p.name for p in shipped_fragments()] == sorted(
        p.name for p in (REPO / "config.d").iterdir() if p.suffix in (".py", ".disabled")
    )


def test_the_architecture_pages_package_map_names_every_module_of_ananke_hub():
    """docs/developer/architecture.md's map of ``ananke_hub`` matches the tree: every
    module and subpackage has its row (a new module without one fails here)."""
    page = (REPO / "docs" / "developer" / "architecture.md").read_text()
    section = page[page.index("## `ananke_hub`") :]
    section = section[: section.index("\n## ", 1)]
    rows = {line.split("|")[1].strip().strip("`") for line in section.splitlines() if line.startswith("| `")}
    package = REPO / "ananke_hub"
    names = {p.stem for p in package.glob("*.py") if p.stem != "__init__"}
    names |= {p.name + "/" for p in package.iterdir() if (p / "__init__.py").exists() or p.name == "share"}
    assert sorted(names - rows) == []


def test_the_architecture_page_names_every_module_of_kore():
    page = (REPO / "docs" / "developer" / "architecture.md").read_text()
    kore = REPO / "kore"
    missing = [
        str(path.relative_to(REPO))
        for path in sorted(kore.rglob("*.py"))
        if path.stem not in ("__init__", "__main__")
        and str(path.relative_to(REPO)) not in page
        and f"`{path.stem}`" not in page
        and f"`{path.name}`" not in page
        and f"{path.name}`" not in page  # `kore/handlers/ui.py`, `home.py`
    ]
    assert missing == []
