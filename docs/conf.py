"""Sphinx configuration for Ananke's documentation.

Build with ``sphinx-build -b html docs docs/_build/html`` from the repository root.
The config reference (admin/reference.md) is generated from the ``help=`` strings of
the traitlets classes by autodoc_traits, so it cannot drift from the code.
"""

import sys
from pathlib import Path

# Import the packages from this checkout, installed or not.
REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from ananke_hub import __version__  # noqa: E402

project = "Ananke"
author = "The Ananke developers"
copyright = "The Ananke developers"
release = __version__
version = ".".join(__version__.split(".")[:2])

extensions = [
    "myst_parser",
    "autodoc_traits",
]

source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

# MyST: ``{directive}`` fences, ``:::`` colon fences for admonitions, and anchors for
# headings up to level 3 so pages can link to sections (``file.md#section``).
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

# Keep quotes as typed: the pages quote code, URLs and settings.
smartquotes = False

# autodoc: the reference documents configurable traits only. A class that cannot be
# imported yet gives a warning ("failed to import"), never a failed build.
autodoc_member_order = "groupwise"
autodoc_typehints = "none"
autodoc_default_options = {"show-inheritance": True}

# The build runs without network: no intersphinx, no remote images.
html_theme = "sphinx_book_theme"
html_title = f"Ananke {release}"
html_theme_options = {
    "show_toc_level": 2,
    "home_page_in_toc": True,
}
html_static_path = []

# In rST (the generated reference), `text` renders as code, like in the help strings'
# Markdown style.
default_role = "literal"

# The reference lists the settings Ananke defines. Inherited ones (JupyterHub's
# Authenticator, ltiauthenticator, systemdspawner, traitlets' Application) are
# documented by those projects; admin/config.md names the few that matter here.
ANANKE_PACKAGES = ("ananke_hub", "kore")


def _skip_foreign_traits(app, what, name, obj, skip, options):
    from traitlets import TraitType

    if isinstance(obj, TraitType):
        owner = getattr(obj, "this_class", None)
        module = getattr(owner, "__module__", "") or ""
        if not module.startswith(ANANKE_PACKAGES):
            return True
    return None  # let autodoc decide


def setup(app):
    app.connect("autodoc-skip-member", _skip_foreign_traits)
