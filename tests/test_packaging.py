"""What pyproject.toml declares: every runtime import, bounds on the upstreams we
subclass, one version, the PostgreSQL extra."""

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

import pytest

import ananke_hub

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]


def requirement_name(spec: str) -> str:
    return re.split(r"[\s\[<>=!~;]", spec, maxsplit=1)[0].lower().replace("_", "-")


DEPENDENCIES = {requirement_name(s): s for s in PROJECT["dependencies"]}


def imported_top_level_names() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for package in ("ananke_hub", "kore"):
        for path in (REPO / package).rglob("*.py"):
            if "config.d" in path.parts:  # fragments run in the hub's config namespace
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    modules = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    modules = [node.module]
                else:
                    continue
                for module in modules:
                    found.setdefault(module.split(".")[0], set()).add(str(path.relative_to(REPO)))
    return found


def test_every_runtime_import_is_a_declared_dependency():
    distributions = importlib.metadata.packages_distributions()
    missing = {}
    for module, files in imported_top_level_names().items():
        if module in sys.stdlib_module_names or module in ("ananke_hub", "kore"):
            continue
        names = {d.lower().replace("_", "-") for d in distributions.get(module, [module])}
        if not names & DEPENDENCIES.keys():
            missing[module] = sorted(files)
    # psycopg is optional: only with a PostgreSQL URL, from the `postgres` extra.
    missing.pop("psycopg", None)
    assert missing == {}


@pytest.mark.parametrize(
    "upstream",
    ["jupyterhub-ltiauthenticator", "jupyterhub-systemdspawner", "nbgrader", "traitlets"],
)
def test_upstreams_we_subclass_have_an_upper_bound(upstream):
    assert "<" in DEPENDENCIES[upstream], DEPENDENCIES[upstream]


def test_the_version_is_written_once():
    assert "version" not in PROJECT and "version" in PROJECT["dynamic"]
    dynamic = PYPROJECT["tool"]["setuptools"]["dynamic"]["version"]
    assert dynamic == {"attr": "ananke_hub.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+(\.dev\d+|rc\d+)?", ananke_hub.__version__)


def test_postgres_is_an_extra_and_the_asserted_test_tools_are_pinned():
    extras = PROJECT["optional-dependencies"]
    assert [requirement_name(s) for s in extras["postgres"]] == ["psycopg"]
    pinned = {requirement_name(s): s for s in extras["test"]}
    assert "==" in pinned["lti1p3platform"] and "==" in pinned["ruff"]
