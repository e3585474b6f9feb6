"""Kore's home page: ``<prefix>``, for logged-in hub users.

Instructors and teaching assistants see their courses, the current one (the activity
they launched last) first and marked, each with its course page and formgrader.
Students see the friendly "Kore is for instructors" page instead: Kore has nothing for
them, and their work is in their JupyterLab.
"""

from tornado import web

from .base import PageHandler
from .courses import STAFF_ROLES, CourseHandlerMixin
from .ui import ROLE_NAMES


def course_page_path(prefix: str, course_id: str) -> str:
    return f"{prefix}courses/{course_id}"


class HomeHandler(CourseHandlerMixin, PageHandler):
    @web.authenticated
    async def get(self):
        prefix = self.settings["kore_prefix"]
        courses = await self.course_entries()
        for entry in courses:
            if entry["role"] in STAFF_ROLES:
                entry["course_url"] = course_page_path(prefix, entry["course_id"])
        teaches = any(entry["role"] in STAFF_ROLES for entry in courses)
        self.set_header("Cache-Control", "no-store")
        if courses and not teaches and not self.hub_user.get("admin"):
            self.render(
                "for_instructors.html",
                user=self.hub_user,
                person=await self.person_name(),
                message="",
            )
            return
        self.render(
            "home.html",
            user=self.hub_user,
            person=await self.person_name(),
            courses=courses,
            role_names=ROLE_NAMES,
        )


handlers = [("", HomeHandler)]
