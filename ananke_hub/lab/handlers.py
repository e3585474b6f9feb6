"""The lab's ``/formgraders`` and ``/nbgrader_version`` routes, in place of nbgrader's,
and ``/ananke/kore``, which the lab's "Kore" menu asks (:mod:`.kore_entry`).

nbgrader's JupyterLab "Courses" panel fetches ``<server>/formgraders`` and shows
``{"success": true, "value": [{"course_id", "url", "kind"}, ...]}`` as links. nbgrader's
own handler only finds formgraders that are hub services named after the course; ours
asks Kore (:mod:`.kore_client`). ``/nbgrader_version`` belongs to the same nbgrader
extension, which Ananke disables, so it is served here too.

Errors are answered with HTTP 200 and ``{"success": false, "value": {"message": ...}}``:
the panel shows ``value.message`` of such an answer, while a non-200 answer (or a string
``value``) leaves it with an empty error box.
"""

import json
from importlib.metadata import PackageNotFoundError, version

from jupyter_server.base.handlers import APIHandler
from tornado import web

from .kore_client import KoreUnavailable
from .kore_entry import browser_kore_url, kore_entry


def nbgrader_version() -> str:
    try:
        return version("nbgrader")
    except PackageNotFoundError:
        return "(not installed)"


UNEXPECTED = "Listing your courses failed unexpectedly; the details are in this server's log."


class FormgradersHandler(APIHandler):
    """The formgraders of the courses the lab's owner teaches."""

    @property
    def course_list(self):
        return self.settings["ananke_course_list"]

    @web.authenticated
    async def get(self):
        try:
            courses = await self.course_list.formgraders()
        except KoreUnavailable as exc:
            self.log.warning("ananke formgraders: %s", exc.detail)
            reply = {"success": False, "value": {"message": str(exc)}}
        except Exception:
            # The panel cannot show a 500; say it in its own format and keep the trace here.
            self.log.exception("ananke formgraders: listing courses failed")
            reply = {"success": False, "value": {"message": UNEXPECTED}}
        else:
            reply = {"success": True, "value": courses}
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(reply))


class NbGraderVersionHandler(APIHandler):
    """Whether the panel's nbgrader version matches this server's nbgrader."""

    @web.authenticated
    def get(self):
        panel_version = self.get_argument("version", "")
        server_version = nbgrader_version()
        if panel_version == server_version:
            reply = {"success": True}
        else:
            reply = {
                "success": False,
                "message": (
                    f"nbgrader's JupyterLab extension is version {panel_version or '?'} but "
                    f"this server runs nbgrader {server_version}: the Courses and "
                    "Assignments panels may misbehave. Reinstall nbgrader so both match, "
                    "then restart the server."
                ),
            }
        self.finish(json.dumps(reply))


class KoreEntryHandler(APIHandler):
    """``{"instructor", "kore_url", "courses"}``: whether and what the lab's Kore menu shows.

    When Kore cannot be asked the answer is 503 with ``{"message": ...}``: the menu
    extension logs it in the browser's console and adds nothing, and the lab works on.
    """

    @property
    def course_list(self):
        return self.settings["ananke_course_list"]

    @web.authenticated
    async def get(self):
        self.set_header("Cache-Control", "no-store")
        try:
            courses = await self.course_list.fetch_courses()
        except KoreUnavailable as exc:
            self.log.warning("ananke kore menu: %s", exc.detail)
            self.set_status(503)
            self.finish(json.dumps({"message": str(exc)}))
            return
        self.finish(json.dumps(kore_entry(courses, browser_kore_url())))


def handlers() -> list[tuple[str, type]]:
    """Paths relative to the server's base URL."""
    return [
        ("formgraders", FormgradersHandler),
        ("nbgrader_version", NbGraderVersionHandler),
        ("ananke/kore", KoreEntryHandler),
    ]
