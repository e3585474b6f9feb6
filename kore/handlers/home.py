"""Kore's home page: ``<prefix>``, for logged-in hub users: their courses, with a link
to the formgrader of each course they teach."""

from tornado import web

from .base import PageHandler
from .courses import CourseHandlerMixin

ROLE_NAMES = {
    "instructor": "Instructor",
    "teaching_assistant": "Teaching assistant",
    "learner": "Student",
}


class HomeHandler(CourseHandlerMixin, PageHandler):
    @web.authenticated
    async def get(self):
        courses = await self.course_entries()
        self.render("home.html", user=self.hub_user, courses=courses, role_names=ROLE_NAMES)


handlers = [("", HomeHandler)]
