"""nbgrader's formgrader, with links that work when it is opened on its own.

Kore and the Course List open a course's formgrader as a page of its own, at
``/user/grader-<course>/formgrader``. nbgrader (0.9.6, ``static/js/utils.js``,
``linkTo``) links the assignment name and the release folder to ``/tree/<path>`` at the
host's root when the page is not in JupyterLab's frame: outside the grader's server, a
404. The path is not configurable (``FormgradeExtension.url_prefix`` is the course
directory relative to the server's root, the ``/tree/`` prefix is a literal).

This extension loads nbgrader's formgrader unchanged, then puts a template in front of
its ``manage_assignments.tpl`` that links those folders into the grader's own
JupyterLab (``<base_url>/lab/tree/<path>``). Enabled instead of
``nbgrader.server_extensions.formgrader`` by ``jupyter_server_config.d/ananke.json``.
"""

from pathlib import Path

from jinja2 import ChoiceLoader, FileSystemLoader, PrefixLoader

EXTENSION = "ananke_hub.lab.formgrader"
TEMPLATES = Path(__file__).with_name("templates")
#: The tornado setting where nbgrader keeps the formgrader's jinja environment.
JINJA_ENV = "nbgrader_jinja2_env"


def _jupyter_server_extension_points():
    return [{"module": EXTENSION}]


def _load_jupyter_server_extension(serverapp):
    from nbgrader.server_extensions.formgrader import load_jupyter_server_extension

    load_jupyter_server_extension(serverapp)
    env = serverapp.web_app.settings.get(JINJA_ENV)
    if env is None or env.loader is None:
        # A newer nbgrader keeps its templates elsewhere: say so instead of guessing.
        raise RuntimeError(
            f"nbgrader's formgrader has no {JINJA_ENV!r} setting (nbgrader "
            "changed): Ananke cannot fix its folder links; pin nbgrader 0.9.x."
        )
    nbgrader_templates = env.loader
    # Ours first; "nbgrader/<name>" reaches nbgrader's own template of the same name.
    env.loader = ChoiceLoader(
        [
            FileSystemLoader(str(TEMPLATES)),
            PrefixLoader({"nbgrader": nbgrader_templates}),
            nbgrader_templates,
        ]
    )
    serverapp.log.info("ananke: formgrader folder links point into this server's JupyterLab")
