"""A course's nbgrader settings: ``<prefix>api/courses/<course id>/settings``.

- ``GET``: the course's settings (what the instructors set, defaults for the rest) and
  the defaults, as ``{"course_id", "settings", "defaults"}``.
- ``PATCH`` with a JSON object of changes, e.g. ``{"remove_hidden_tests_in_feedback":
  false}``: checked against the OpenAPI document (:mod:`kore.openapi`), merged into the
  stored settings (:meth:`ananke_hub.courses.settings.CourseSettings.from_dict`), stored in the course
  registry, then written to the course's ``nbgrader_config.json`` in the grader's home,
  which the formgrader reads on its next command. The answer is the GET answer.

Instructors and teaching assistants of the course may read and change them, and hub
admins. Who asks comes only from the hub (a hub token, or Kore's login cookie; a
cookie-authenticated PATCH must carry the XSRF token, see :mod:`kore.handlers.base`).
The course is an id checked against the id format, never a path.
"""

import asyncio
import json

from tornado import web

from ananke_hub.courses.models import Course
from ananke_hub.courses.nbgrader_setup import write_settings
from ananke_hub.courses.settings import CourseSettings, SettingsError

from .base import APIHandler, ChangeRequestMixin
from .courses import CourseHandlerMixin

SETTINGS_ACTION = "see or change its settings"

# Changes of one course are applied one after the other, so that the file in the
# grader's home ends up as the registry's last state, not an older one written late.
_course_locks: dict[str, asyncio.Lock] = {}


def _course_lock(course_id: str) -> asyncio.Lock:
    return _course_locks.setdefault(course_id, asyncio.Lock())


@web.stream_request_body
class CourseSettingsHandler(ChangeRequestMixin, CourseHandlerMixin, APIHandler):
    """Read and change the nbgrader settings of one course."""

    # --- who may ------------------------------------------------------------------------

    # --- the settings ---------------------------------------------------------------------

    def answer(self, course_id: str, settings: CourseSettings) -> None:
        self.write_json(
            {
                "course_id": course_id,
                "settings": settings.to_dict(),
                "defaults": CourseSettings().to_dict(),
            }
        )

    def stored_settings(self, course: Course) -> CourseSettings:
        try:
            return CourseSettings.from_dict(course.settings or {})
        except SettingsError as exc:
            # Only possible if the database was edited by hand or a setting was
            # removed from Ananke: the course cannot be provisioned either.
            self.log.error("course:%s stored settings are unusable: %s", course.id, exc)
            raise web.HTTPError(
                409,
                "The stored settings of this course are unusable (%s) Ask the hub admin "
                "to correct them in the course registry.",
                exc,
            ) from exc

    @web.authenticated
    async def get(self, raw_course_id):
        course_id = self.checked_course_id(raw_course_id)
        course = await self.staff_course(course_id, SETTINGS_ACTION)
        self.answer(course_id, self.stored_settings(course))

    async def patch(self, raw_course_id):
        self.require_user()
        course_id = self.checked_course_id(raw_course_id)
        course = await self.staff_course(course_id, SETTINGS_ACTION)
        # Checked against the document's SettingsChange (kore/openapi.json), which
        # tests/test_kore_settings.py keeps equal to CourseSettings' fields.
        changes = self.json_body("The settings sent are larger than %d bytes: send only the changes.")
        user = self.hub_user["name"]
        async with _course_lock(course_id):
            # Read again under the lock: the check sees what the change is merged into.
            course = await self._registry(self.registry.get, course_id) or course
            try:
                settings = CourseSettings.from_dict({**(course.settings or {}), **changes})
            except SettingsError as exc:
                raise web.HTTPError(400, "%s", str(exc)) from None
            try:
                stored = await self._registry(self.registry.update_settings, course_id, changes)
            except KeyError:
                raise web.HTTPError(404, "There is no course %s on this hub.", course_id) from None
            settings = self.stored_settings_after_update(course, stored, settings)
            # Audit: who changed what (validated booleans and numbers only).
            self.log.info(
                "course:%s user:%s settings %s",
                course_id,
                user,
                json.dumps(changes, sort_keys=True),
            )
            await self.settings["audit_log"].record(
                user, "settings.update", course_id, changes, "ok"
            )
            await self.apply_to_course_files(course, settings, user)
        self.answer(course_id, settings)

    def stored_settings_after_update(
        self, course: Course, stored: dict, checked: CourseSettings
    ) -> CourseSettings:
        try:
            return CourseSettings.from_dict(stored)
        except SettingsError:
            # Another writer stored something else meanwhile; ours was checked.
            self.log.warning("course:%s settings changed meanwhile by another writer", course.id)
            return checked

    async def apply_to_course_files(self, course: Course, settings: CourseSettings, user: str):
        """Write the course's nbgrader_config.json (in a thread: it is file I/O)."""
        paths = self.settings["course_layout"].course(course.id)
        try:
            written = await asyncio.to_thread(write_settings, paths, settings)
        except FileNotFoundError:
            # The course is in the registry but not on disk yet (its first launch is
            # still provisioning it): provisioning writes the stored settings.
            self.log.warning(
                "course:%s user:%s settings stored; no course directory %s yet",
                course.id,
                user,
                paths.home,
            )
            return
        except OSError as exc:  # fsutil.UnsafePath too: a link or a FIFO in the way
            self.log.error(
                "course:%s user:%s settings stored but %s not written: %s",
                course.id,
                user,
                paths.nbgrader_config,
                exc,
            )
            raise web.HTTPError(
                503,
                "The settings of %s are saved, but Kore could not give them to nbgrader yet. "
                "The next launch of the activity does, or send them again later; the hub "
                "admin finds why in Kore's log.",
                course.title,
            ) from exc
        if written:
            self.log.info("course:%s wrote %s", course.id, paths.nbgrader_config)


handlers = [(r"api/courses/([^/]+)/settings", CourseSettingsHandler)]
