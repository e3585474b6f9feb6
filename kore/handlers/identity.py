"""Who is logged in: ``<prefix>api/me``, the current hub user as JSON.

The answer is the hub's view of the user (name, admin, groups), never anything the
client sent; the UI and tests use it to see who Kore thinks they are.
"""

from tornado import web

from .base import APIHandler


class MeHandler(APIHandler):
    @web.authenticated
    def get(self):
        user = self.hub_user
        self.write_json(
            {
                "kind": user.get("kind", "user"),
                "name": user["name"],
                "admin": bool(user.get("admin", False)),
                "groups": sorted(user.get("groups") or []),
            }
        )


handlers = [("api/me", MeHandler)]
