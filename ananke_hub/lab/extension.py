"""Ananke's Jupyter server extension: the "Courses" list of a user's JupyterLab.

Instructors reach the formgrader of each of their courses from their lab: nbgrader's
Courses panel (Nbgrader menu -> Courses) lists the courses they teach, and one click
opens the course's formgrader through Kore, which starts the course's grader server.

It also answers ``ananke/kore``, from which the JupyterLab extension ``@ananke/lab-kore``
(prebuilt in ``lab/jupyter/labextensions``) draws the "Kore" menu of instructors
(:mod:`.kore_entry`).

Enabled, with nbgrader's own ``course_list`` extension disabled, by
``ananke_hub/lab/jupyter/jupyter_server_config.d/ananke.json``; the spawners put that
directory on every lab's ``JUPYTER_CONFIG_PATH``. Settings: ``c.KoreCourseList``.
"""

from jupyter_server.utils import url_path_join

from .handlers import handlers
from .kore_client import KoreCourseList

EXTENSION = "ananke_hub.lab.extension"


def _jupyter_server_extension_points():
    return [{"module": EXTENSION}]


def _load_jupyter_server_extension(serverapp):
    web_app = serverapp.web_app
    base_url = web_app.settings["base_url"]
    course_list = KoreCourseList(parent=serverapp)
    web_app.settings["ananke_course_list"] = course_list
    web_app.add_handlers(
        ".*$", [(url_path_join(base_url, path), handler) for path, handler in handlers()]
    )
    serverapp.log.info(
        "ananke: course list from Kore at %s", course_list.kore_url or "(not configured)"
    )
