"""Kore's home page: ``<prefix>``, for logged-in hub users.

Later the course pages hang off here; for now it greets the user.
"""

from tornado import web

from .base import PageHandler


class HomeHandler(PageHandler):
    @web.authenticated
    def get(self):
        self.render("home.html", user=self.hub_user)


handlers = [("", HomeHandler)]
