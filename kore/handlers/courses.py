"""The caller's courses and the way into each course's formgrader.

- ``<prefix>api/courses``: the courses of the hub user making the request, newest
  launch first, from the course registry. A hub token in ``Authorization: token ...``
  works as well as Kore's login cookie; the token of a user's lab (its
  ``JUPYTERHUB_API_TOKEN``) stands for the user who owns the lab, which is how the
  lab's "Courses" panel (``ananke_hub.lab.extension``) asks.
- ``<prefix>courses/<course id>/formgrader``: for instructors and teaching assistants
  of that course (and hub admins), starts the course's grader server if needed and
  sends the browser to its formgrader.

Who asks comes only from the hub; the course is an id checked against the id format,
never a path, and access is decided per course from the registry.
"""

from sqlalchemy.exc import SQLAlchemyError
from tornado import web

from ananke_hub.courses.layout import InvalidCourseId, check_course_id
from ananke_hub.courses.models import Course
from ananke_hub.roles import Role

from ..graders import GraderAccountMissing, GraderError, GraderState
from .base import APIHandler, HubUserHandler, PageHandler

#: Course roles that may grade: they see the formgrader link and may open it.
STAFF_ROLES = frozenset({str(Role.INSTRUCTOR), str(Role.TEACHING_ASSISTANT)})
#: Seconds between two reloads of the "formgrader is starting" page.
PROGRESS_REFRESH = 2


def formgrader_path(prefix: str, course_id: str) -> str:
    return f"{prefix}courses/{course_id}/formgrader"


def course_entry(prefix: str, course: Course, role: str, current: bool) -> dict:
    entry = {"course_id": course.id, "title": course.title, "role": role, "current": current}
    if role in STAFF_ROLES:
        entry["formgrader_url"] = formgrader_path(prefix, course.id)
    return entry


class CourseHandlerMixin(HubUserHandler):
    """Registry access for the course routes; a registry failure is a 503 to act on."""

    @property
    def registry(self):
        return self.settings["course_registry"]

    async def _registry(self, func, *args):
        try:
            return await self.registry.run(func, *args)
        except SQLAlchemyError as exc:
            self.log.error("course registry: %s", exc)
            raise web.HTTPError(
                503,
                "The course registry cannot be read right now. Try again in a minute; "
                "if it persists, the hub admin finds why in Kore's log.",
            ) from exc

    def checked_course_id(self, raw_course_id: str) -> str:
        """The course id of an API URL; 400 if it is not one (never a path)."""
        try:
            return check_course_id(raw_course_id)
        except InvalidCourseId:
            raise web.HTTPError(
                400,
                "The URL does not name a course (a course id is c- and 16 hex digits). "
                "Take the id from %sapi/courses.",
                self.settings["kore_prefix"],
            ) from None

    async def staff_course(self, course_id: str, action: str) -> Course:
        """The course if the caller may grade it (or is a hub admin); else 403 or 404.

        ``action`` completes the refusal: "Only instructors ... can <action>". Someone
        who is not in the course learns nothing about it, not even whether it exists:
        an unknown id and a course of others get the same answer. Hub admins may act on
        every course and are told when an id names none.
        """
        user = self.hub_user
        member = None
        for course, role in await self.my_courses():
            if course.id == course_id:
                member = (course, role)
                break
        if member and member[1] in STAFF_ROLES:
            return member[0]
        if user.get("admin"):
            course = await self._registry(self.registry.get, course_id)
            if course is None:
                raise web.HTTPError(404, "There is no course %s on this hub.", course_id)
            self.log.info("course:%s user:%s acts as hub admin", course_id, user["name"])
            return course
        if member:  # a student: they know the course, so name it
            raise web.HTTPError(
                403,
                f"Only instructors and teaching assistants of %s can {action}. "
                "You take part in it as a student.",
                member[0].title,
            )
        raise web.HTTPError(
            403,
            f"Only instructors and teaching assistants of this course can {action}. "
            "If you teach it, open the activity once from your LMS: the launch adds you.",
        )

    async def my_courses(self) -> list[tuple[Course, str]]:
        """The caller's active courses and their role in each, newest launch first."""
        return await self._registry(self.registry.memberships, self.hub_user["name"])

    async def person_name(self) -> str:
        """The caller's name for a greeting: from the LMS, else the hub user name."""
        name = await self._registry(self.registry.person_name, self.hub_user["name"])
        return name or self.hub_user["name"]

    async def course_entries(self) -> list[dict]:
        prefix = self.settings["kore_prefix"]
        return [
            course_entry(prefix, course, role, index == 0)
            for index, (course, role) in enumerate(await self.my_courses())
        ]


class CoursesAPIHandler(CourseHandlerMixin, APIHandler):
    @web.authenticated
    async def get(self):
        self.write_json(await self.course_entries())


class FormgraderHandler(CourseHandlerMixin, PageHandler):
    """Opens a course's formgrader: the default server of ``grader-<course id>``."""

    @web.authenticated
    async def get(self, raw_course_id):
        try:
            course_id = check_course_id(raw_course_id)
        except InvalidCourseId:
            raise web.HTTPError(
                400,
                "This link does not name a course (a course id is c- and 16 hex digits). "
                "Open the formgrader from the course list of Kore or of your JupyterLab.",
            ) from None
        course = await self.staff_course(course_id, "open its formgrader")
        user = self.hub_user["name"]
        try:
            server = await self.settings["grader_servers"].ensure_running(
                course_id, wait=self.settings["formgrader_wait"]
            )
        except GraderAccountMissing as exc:
            self.log.error("course:%s user:%s formgrader: %s", course_id, user, exc.admin_detail)
            raise web.HTTPError(
                503,
                "The formgrader of %s is not set up yet. Open the activity once more from "
                "your LMS (the launch finishes the setup); if that does not help, tell the "
                "hub admin.",
                course.title,
            ) from exc
        except GraderError as exc:
            self.log.error("course:%s user:%s formgrader: %s", course_id, user, exc.admin_detail)
            raise web.HTTPError(
                502,
                "Kore could not start the formgrader of %s. The hub admin finds why in Kore's log.",
                course.title,
            ) from exc
        self.set_header("Cache-Control", "no-store")
        if server.state is GraderState.READY:
            self.log.info("course:%s user:%s -> formgrader", course_id, user)
            self.redirect(server.url + "formgrader")
            return
        if server.state is GraderState.FAILED:
            raise web.HTTPError(
                503,
                "The formgrader of %s did not start. Reload this page to try again; if it "
                "fails again, the hub admin finds why in the hub's log (server of %s).",
                course.title,
                server.username,
            )
        self.set_status(202)
        self.render("formgrader_starting.html", course=course, refresh=PROGRESS_REFRESH)


handlers = [
    ("api/courses", CoursesAPIHandler),
    (r"courses/([^/]+)/formgrader", FormgraderHandler),
]
