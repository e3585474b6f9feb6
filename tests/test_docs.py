"""The documentation builds, and its configuration reference is generated from the code.

One Sphinx build (HTML, into a temporary directory) serves every test in this module.
Skipped when the docs extra (sphinx, myst-parser, sphinx-book-theme, autodoc-traits)
is not installed.
"""

import html
import importlib
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
DOCS_PACKAGES = ("sphinx", "myst_parser", "sphinx_book_theme", "autodoc_traits")
MAIN_PAGES = [
    "index.html",
    "user/getting-started.html",
    "admin/lms.html",
    "admin/config.html",
    "admin/security.html",
    "admin/reference.html",
    "developer/index.html",
]

_missing = [name for name in DOCS_PACKAGES if importlib.util.find_spec(name) is None]
pytestmark = pytest.mark.skipif(
    bool(_missing),
    reason=f"docs extra not installed (missing {', '.join(_missing)}): "
    "pip install -e '.[docs]' to build the documentation",
)


def _text(fragment: str) -> str:
    """Visible text of HTML (or of a help string), whitespace collapsed, backticks dropped."""
    without_tags = re.sub(r"<[^>]+>", " ", fragment)
    return " ".join(html.unescape(without_tags).replace("`", " ").split())


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("docs-html")
    doctrees = tmp_path_factory.mktemp("docs-doctrees")
    # -E: read every page again, so the reference reflects the code as it is now.
    argv = [sys.executable, "-m", "sphinx", "-b", "html", "-E", "-d", str(doctrees)]
    result = subprocess.run(
        [*argv, str(DOCS), str(out)],
        capture_output=True,
        text=True,
        timeout=600,  # a hung build fails the test instead of hanging CI
        check=False,
    )
    return out, result


def test_build_succeeds(built):
    _, result = built
    assert result.returncode == 0, f"sphinx-build failed:\n{result.stdout}\n{result.stderr}"


@pytest.mark.parametrize("page", MAIN_PAGES)
def test_main_pages_exist(built, page):
    out, _ = built
    assert (out / page).is_file(), f"{page} missing from the built documentation"


def test_reference_shows_the_help_text_of_the_code(built):
    from ananke_hub.registration import LMSRegistration

    out, _ = built
    page = _text((out / "admin/reference.html").read_text("utf8"))
    help_text = LMSRegistration.class_traits()["issuer"].help
    first_paragraph = _text(help_text.split("\n\n")[0])
    assert first_paragraph, "LMSRegistration.issuer has no help text"
    assert first_paragraph in page
    assert "c.LMSRegistration.issuer = Unicode(" in page


def _documented_classes() -> list[str]:
    source = (DOCS / "admin" / "reference.md").read_text("utf8")
    return re.findall(r"autoconfigurable::\s*([\w.]+)", source)


def test_reference_lists_every_setting_of_importable_classes(built):
    """Each configurable class named in reference.md that imports shows all its own settings."""
    out, _ = built
    page = _text((out / "admin/reference.html").read_text("utf8"))
    classes = _documented_classes()
    assert "ananke_hub.registration.LMSRegistration" in classes
    checked = 0
    for dotted in classes:
        module_name, _, class_name = dotted.rpartition(".")
        try:
            cls = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError):
            continue  # documented ahead of the code: the build warns, it does not fail
        own = {
            name: trait
            for name, trait in cls.class_traits(config=True).items()
            if getattr(trait, "this_class", None) is cls
        }
        for name, trait in own.items():
            # The signature line autodoc_traits writes: c.Class.name = Type(default)
            entry = f"c.{class_name}.{name} = {type(trait).__name__}("
            assert entry in page, f"{dotted}.{name} missing from the reference"
        checked += 1
    assert checked >= 1
