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
    "user/instructors.html",
    "admin/lms.html",
    "admin/config.html",
    "admin/courses.html",
    "admin/grades.html",
    "admin/security.html",
    "admin/reference.html",
    "developer/index.html",
    "developer/architecture.html",
    "developer/testing.html",
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


def _help_paragraph(cls, name: str) -> str:
    """The first paragraph of a setting's help, as the reference page shows it."""
    help_text = cls.class_traits()[name].help
    return _text(help_text.split("\n\n")[0])


@pytest.mark.parametrize(
    ("module", "class_name", "setting"),
    [
        ("ananke_hub.courses.registry", "CourseRegistry", "url"),
        ("ananke_hub.courses.layout", "CourseLayout", "exchange_root"),
        ("ananke_hub.auth", "AnankeLTI13Authenticator", "provision_courses"),
        ("kore.app", "Kore", "formgrader_wait"),
        ("ananke_hub.lab.kore_client", "KoreCourseList", "kore_url"),
        ("kore.lti.settings", "LTIAdvantage", "concurrency"),
        ("ananke_hub.registration", "LMSRegistration", "token_audience"),
    ],
)
def test_reference_shows_the_course_settings(built, module, class_name, setting):
    cls = getattr(importlib.import_module(module), class_name)
    out, _ = built
    page = _text((out / "admin/reference.html").read_text("utf8"))
    first_paragraph = _help_paragraph(cls, setting)
    assert first_paragraph, f"{class_name}.{setting} has no help text"
    assert first_paragraph in page, f"help of {class_name}.{setting} missing from the reference"
    assert f"c.{class_name}.{setting} = " in page


def test_toctree_reaches_the_course_pages(built):
    """The new pages are in the navigation, not only built as orphans."""
    out, _ = built
    index = (out / "index.html").read_text("utf8")
    for page in ("user/instructors.html", "admin/courses.html", "admin/grades.html"):
        assert f'href="{page}"' in index, f"{page} is not linked from the table of contents"


def test_internal_links_and_anchors_resolve(built):
    """No page links to a missing document or section (Sphinx warns, the build passes)."""
    _, result = built
    problems = [
        line
        for line in result.stderr.splitlines()
        if "WARNING" in line and any(
            phrase in line
            for phrase in ("local id not found", "unknown document", "undefined label",
                           "cross-reference target not found", "toctree contains reference")
        )
    ]
    assert not problems, "\n".join(problems)


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
