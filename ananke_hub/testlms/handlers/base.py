"""What every test-platform handler shares: settings, keys, the session, error pages."""

import logging

from tornado import web

from ...keys import KeyStore
from ..demo_data import User, find_user
from ..settings import PlatformSettings

#: The platform's "LMS session": which demo user is logged in. Named so that it cannot
#: collide with the hub's cookies, which share the jar when both run on 127.0.0.1
#: (cookies ignore ports, RFC 6265 section 8.5).
SESSION_COOKIE = "ananke-platform-user"
#: The xsrf cookie of the platform's own forms (tornado's default `_xsrf` is the hub's too).
XSRF_COOKIE = "ananke-platform-xsrf"


class PlatformError(web.HTTPError):
    """A request the platform refuses, with a message for the person who sent it."""

    def __init__(self, message: str, status_code: int = 400):
        super().__init__(status_code, "%s", message)
        self.message = message


class PlatformHandler(web.RequestHandler):
    @property
    def platform(self) -> PlatformSettings:
        return self.settings["platform"]

    @property
    def log(self) -> logging.Logger:
        return self.settings["platform_log"]

    @property
    def keys(self) -> KeyStore:
        return self.settings["platform_keys"]

    @property
    def content_selection_url(self) -> str:
        """The target_link_uri of content selections (Moodle: the tool's Content
        Selection URL, else its tool URL)."""
        return (
            self.settings["platform_tool_overrides"].get("content_selection_url")
            or self.platform.tool_content_selection_url
            or self.platform.tool_target_link_uri
        )

    def session_user(self) -> User | None:
        sub = self.get_signed_cookie(SESSION_COOKIE)
        return find_user(sub.decode()) if sub else None

    def set_session_user(self, user: User) -> None:
        # Lax: sent on the top-level GET redirect from the tool to /auth (same as an LMS
        # session cookie), not on cross-site POSTs.
        self.set_signed_cookie(
            SESSION_COOKIE, user.sub, expires_days=None, httponly=True, samesite="Lax"
        )

    def login_initiation(self, user: User, target_link_uri: str, message_hint: str) -> dict:
        """The fields of a third-party-initiated login at the tool (Security Framework 1.0
        section 5.1.1) for ``user``; /auth gets both hints back unchanged."""
        return {
            "iss": self.platform.issuer,
            "login_hint": user.sub,
            "target_link_uri": target_link_uri,
            "client_id": self.platform.client_id,
            "lti_deployment_id": self.platform.deployment_id,
            "lti_message_hint": message_hint,
        }

    def render_autopost(self, action: str, fields: dict[str, str], title: str) -> None:
        """A page that form-POSTs ``fields`` to ``action`` at once (button without JS)."""
        self.set_header("Cache-Control", "no-store")  # it may carry an id_token
        self.render("autopost.html", action=action, fields=fields, title=title)

    def on_finish(self) -> None:
        # Whatever a POST, PUT or DELETE changed goes to the gradebook file (--persist).
        store_file = self.settings.get("platform_store_file")
        if store_file is not None and self.request.method not in ("GET", "HEAD", "OPTIONS"):
            store_file.changed()

    def write_error(self, status_code: int, **kwargs) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, PlatformError):
            message = exc.message
        elif isinstance(exc, web.HTTPError) and exc.log_message and status_code < 500:
            message = exc.log_message % exc.args
        else:
            message = "The platform failed on this request; its log says why."
        self.render("error.html", status_code=status_code, reason=self._reason, message=message)
