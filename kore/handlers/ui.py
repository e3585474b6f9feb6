"""Kore's web pages for instructors: a course's page, and the files the pages use.

- ``<prefix>courses/<course id>``: the course page of an instructor or teaching
  assistant (and of hub admins): grade and roster sync with live progress and results,
  and course management (backups, reset, delete, import) when Kore offers it. The page
  is rendered on the server with the data it can show without JavaScript; its buttons
  work through Kore's JSON API (``kore/static/kore.js``), the same routes scripts use.
  A student who opens it gets the "Kore is for instructors" page (403).
  Its "Course settings" panel shows the course's nbgrader settings filled in on the
  server (:func:`setting_fields`); saving sends the changes to the settings API
  (``PATCH <prefix>api/courses/<course id>/settings``), which checks and applies them.
- ``<prefix>static/<file>``: Kore's stylesheet and script.

The pages take the hub's look from the hub itself: JupyterHub serves its stylesheet
(Bootstrap and its own rules) at ``<hub base>hub/static/css/style.min.css``.
"""

import os
from dataclasses import fields
from pathlib import Path

from tornado import web

from ananke_hub.courses.settings import CourseSettings, SettingsError
from kore.sync.store import SyncStore

from ..manage.errors import ManageError
from ..sync.grades import KIND as GRADES
from ..sync.roster import KIND as ROSTER
from .base import PageHandler
from .courses import STAFF_ROLES, CourseHandlerMixin, formgrader_path

STATIC = Path(__file__).resolve().parent.parent / "static"

ROLE_NAMES = {
    "instructor": "Instructor",
    "teaching_assistant": "Teaching assistant",
    "learner": "Student",
    "admin": "Hub admin",
}

#: Runs listed on the course page without JavaScript (the script shows the latest).
RUNS_SHOWN = 5

#: How the course page names and explains each course setting
#: (:class:`ananke_hub.courses.settings.CourseSettings`, whose module docstring says how
#: each maps onto nbgrader): a label, a help text, and for numbers their limits and unit.
def hub_base_url() -> str:
    """The hub's public base path (``/`` or ``/jupyter/``), which the hub gives its services."""
    base = os.environ.get("JUPYTERHUB_BASE_URL", "/").strip("/")
    return f"/{base}/" if base else "/"


def hub_css_url() -> str:
    """JupyterHub's own stylesheet, served by the hub (the pages look like the hub's)."""
    return f"{hub_base_url()}hub/static/css/style.min.css"


def human_size(size) -> str:
    """1536 -> "1.5 KB", as the page's script shows sizes."""
    if size is None:
        return ""
    value, unit = float(size), "B"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1024 or unit == "TB":
            break
        value /= 1024
    return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"


#: What a backup counts, plural and singular ("1 assignment", "2 assignments").
CONTENTS_WORDS = {
    "assignments": "assignment",
    "students": "student",
    "submissions": "submission",
    "files": "file",
}


def contents_summary(contents) -> str:
    """A backup's contents in words: "1 assignment, 26 students, ..."."""
    if not isinstance(contents, dict):
        return ""
    parts = []
    for key, singular in CONTENTS_WORDS.items():
        if key in contents:
            value = contents[key]
            count = len(value) if isinstance(value, list) else value
            parts.append(f"{count} {singular if count == 1 else key}")
    return ", ".join(parts)


def setting_fields(stored: dict | None) -> list[dict]:
    """The settings panel's controls: one per course setting, with the current value.

    Each is ``{"name", "kind" ("checkbox" or "number"), "value", "default", "label",
    "help", ...}``; the value is what the course stores, or the default. Raises
    :class:`SettingsError` if the stored settings are unusable (the API answers 409 then).
    """
    current = CourseSettings.from_dict(stored or {}).to_dict()
    defaults = CourseSettings().to_dict()
    controls = []
    for f in fields(CourseSettings):
        # A setting added without page text still gets a control, named by its key.
        text = {"label": f.name, "help": "", **f.metadata}
        kind = "checkbox" if f.type is bool else "number"
        controls.append(
            {
                **text,
                "name": f.name,
                "kind": kind,
                "value": current[f.name],
                "default": defaults[f.name],
            }
        )
    return controls


def static_url(prefix: str, name: str) -> str:
    """A file of kore/static with a version in the query, so browsers refetch changes."""
    version = web.StaticFileHandler.get_version({"static_path": str(STATIC)}, name)
    return f"{prefix}static/{name}?v={version}" if version else f"{prefix}static/{name}"


class KoreStaticHandler(web.StaticFileHandler):
    """Kore's CSS and JavaScript: public files, with the headers of Kore's pages."""

    def set_default_headers(self):
        self.set_header("X-Content-Type-Options", "nosniff")

    def validate_absolute_path(self, root, absolute_path):
        # tornado's os.stat fails with a ValueError (a 500) on a NUL byte in the path.
        if "\0" in absolute_path:
            raise web.HTTPError(404)
        return super().validate_absolute_path(root, absolute_path)


class CoursePageHandler(CourseHandlerMixin, PageHandler):
    """``<prefix>courses/<course id>``: what staff can do with one course."""

    @web.authenticated
    async def get(self, raw_course_id):
        course_id = self.checked_course_id(raw_course_id)
        memberships = await self.my_courses()
        try:
            course = await self.staff_course(course_id, "manage it in Kore")
        except web.HTTPError as exc:
            if exc.status_code != 403:
                raise
            # A student (or someone outside the course): the friendly page, no controls.
            self.set_status(403)
            self.set_header("Cache-Control", "no-store")
            self.render(
                "for_instructors.html",
                user=self.hub_user,
                person=await self.person_name(),
                message=self.error_message(403, (type(exc), exc, None)),
            )
            return
        role = next((r for c, r in memberships if c.id == course_id), "")
        if role not in STAFF_ROLES:
            role = "admin"  # staff_course let a hub admin in
        store = SyncStore(self.registry)
        runs = {
            kind: await self._registry(store.runs, course_id, kind, RUNS_SHOWN)
            for kind in (GRADES, ROSTER)
        }
        prefix = self.settings["kore_prefix"]
        staff_ids = [c.id for c, r in memberships if r in STAFF_ROLES]
        backups = await self.course_backups(course.id, staff_ids)
        try:
            settings_fields, settings_problem = setting_fields(course.settings), ""
        except SettingsError as exc:
            # The settings API refuses them too (409): say so instead of a form.
            self.log.error("course:%s stored settings are unusable: %s", course.id, exc)
            settings_fields = []
            settings_problem = (
                f"The stored settings of this course are unusable ({exc}) Ask the hub admin "
                "to correct them in the course registry."
            )
        # The page carries the XSRF token for its API calls (header X-XSRFToken);
        # reading it also sets the matching _xsrf cookie (jupyterhub.services.auth).
        self.set_header("Cache-Control", "no-store")
        self.render(
            "course.html",
            course=course,
            role=role,
            role_names=ROLE_NAMES,
            runs=runs,
            api=f"{prefix}api/courses/{course.id}/",
            formgrader_url=formgrader_path(prefix, course.id),
            xsrf=self.xsrf_text,
            manage=self.settings.get("course_manager") is not None,
            backups=backups,
            human_size=human_size,
            contents_summary=contents_summary,
            setting_fields=settings_fields,
            settings_problem=settings_problem,
            other_courses=[
                {"course_id": c.id, "title": c.title}
                for c, r in memberships
                if c.id != course.id and r in STAFF_ROLES
            ],
        )

    async def course_backups(self, course_id: str, staff_ids: list[str]) -> list[dict] | None:
        """The course's backups for the page without its script; None if unknown.

        The script reads them again from the API (and says what went wrong, if anything).
        """
        manager = self.settings.get("course_manager")
        if manager is None:
            return None
        user = self.hub_user
        try:
            return await manager.list_backups(
                user["name"],
                bool(user.get("admin")),
                course_id=course_id,
                staff_course_ids=staff_ids,
            )
        except ManageError as exc:
            self.log.warning("course:%s backups not listed on the page: %s", course_id, exc)
            return None


handlers = [
    (r"static/(.*)", KoreStaticHandler, {"path": str(STATIC)}),
    (r"courses/([^/]+)", CoursePageHandler),
]
