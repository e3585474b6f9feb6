"""The LMS side of a launch: the course page and third-party login initiation.

`GET /` lists the demo people and activities with a Launch button each. `POST /launch`
logs the chosen person in to the platform (a signed cookie) and starts the OIDC
third-party-initiated login at the tool (Security Framework 1.0 section 5.1.1,
https://www.imsglobal.org/spec/security/v1p0/#step-1-third-party-initiated-login).
"""

from .. import demo_data
from .base import PlatformError, PlatformHandler


class LaunchPageHandler(PlatformHandler):
    def get(self):
        self.render(
            "launch_page.html",
            contexts=demo_data.CONTEXTS.values(),
            links_of=lambda context: self.settings["platform_store"].course(context.id).links,
            users=demo_data.USERS,
            current=self.session_user(),
            short_role=demo_data.short_role,
            launch_roles=demo_data.launch_roles,
        )


class LaunchHandler(PlatformHandler):
    def post(self):
        user = demo_data.find_user(self.get_body_argument("user", ""))
        if user is None:
            raise PlatformError("Unknown user: choose a person on the launch page.")
        found = self.settings["platform_store"].find_link(self.get_body_argument("link", ""))
        if found is None:
            raise PlatformError("Unknown activity: choose an activity on the launch page.")
        context, link = found
        if context.roles_of(user.sub) is None:
            raise PlatformError(f"{user.name} is not enrolled in {context.title}.")
        self.set_session_user(user)
        self.log.info(
            "launch: user:%s link:%s -> %s", user.sub, link.id, self.platform.tool_login_url
        )
        fields = self.login_initiation(user, self.platform.tool_target_link_uri, link.id)
        if self.platform.launch_container == "embed":
            self.set_header("Cache-Control", "no-store")
            self.render(
                "embedded.html", action=self.platform.tool_login_url, fields=fields, title=link.title
            )
            return
        self.render_autopost(self.platform.tool_login_url, fields, title=f"Opening {link.title}")


ROUTES = [
    (r"/", LaunchPageHandler),
    (r"/launch", LaunchHandler),
]
