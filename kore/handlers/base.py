"""Base classes of Kore's request handlers.

Two kinds of routes, one error format each, chosen by the handler class:

- browser pages (:class:`PageHandler`): an anonymous visitor is sent through the hub's
  OAuth login; errors are an HTML page;
- JSON APIs (:class:`APIHandler`, and the public :class:`PublicAPIHandler`): no
  redirects; errors are ``{"status": <code>, "message": "..."}``.

Who the user is comes only from the hub (``jupyterhub.services.auth.HubOAuth``): an
OAuth token in Kore's cookie, or a hub token in the ``Authorization`` header. No route
takes a user name from the request.
"""

import json
from http.client import responses

from jupyterhub.services.auth import HubOAuth, HubOAuthenticated, UserNotAllowed
from tornado import web

from ..openapi import BodyError, request_bodies

#: Shown instead of the real error when something unexpected failed: the details
#: (which may name files or hosts) go to Kore's log only.
UNEXPECTED_ERROR = (
    "Kore failed to handle this request. The hub admin finds the reason in Kore's log."
)


class KoreRequestHandler(web.RequestHandler):
    """What every Kore handler shares: settings access and the one error format."""

    #: True: errors are JSON (API routes). False: errors are an HTML page (browser routes).
    json_errors = False

    @property
    def log(self):
        return self.settings["kore_log"]

    def set_default_headers(self):
        # Kore's pages are never framed by another site (clickjacking).
        self.set_header("X-Frame-Options", "SAMEORIGIN")
        self.set_header("Content-Security-Policy", "frame-ancestors 'self'")
        self.set_header("X-Content-Type-Options", "nosniff")

    def get_template_namespace(self):
        namespace = super().get_template_namespace()
        namespace.update(prefix=self.settings["kore_prefix"], hub_user=self.current_user)
        return namespace

    def log_exception(self, typ, value, tb):
        # Expected refusals (HTTPError below 500) show in the request log line already;
        # their message is detail for debugging. Failures keep tornado's loud logging.
        if isinstance(value, web.HTTPError) and value.status_code < 500:
            self.log.debug(
                "%d %s %s: %s",
                value.status_code,
                self.request.method,
                self.request.path,
                self.error_message(value.status_code, (typ, value, tb)),
            )
            return
        super().log_exception(typ, value, tb)

    def error_message(self, status_code: int, exc_info) -> str:
        """The message a person reads: ours for HTTPErrors we raise, a generic one otherwise."""
        exception = exc_info[1] if exc_info else None
        if isinstance(exception, web.HTTPError) and exception.log_message:
            if exception.args:
                return exception.log_message % exception.args
            return exception.log_message
        if status_code >= 500:
            return UNEXPECTED_ERROR
        return responses.get(status_code, "Unknown error")

    def write_error(self, status_code: int, **kwargs):
        message = self.error_message(status_code, kwargs.get("exc_info"))
        # An error page is about this request only; never cache it.
        self.set_header("Cache-Control", "no-store")
        if self.json_errors:
            self.set_header("Content-Type", "application/json; charset=UTF-8")
            self.finish(json.dumps({"status": status_code, "message": message}))
        else:
            self.render(
                "error.html",
                status_code=status_code,
                reason=responses.get(status_code, "Error"),
                message=message,
            )

    def write_json(self, data) -> None:
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(json.dumps(data))


class HubUserHandler(HubOAuthenticated, KoreRequestHandler):
    """A handler whose user is a hub user, identified through the hub's OAuth.

    ``HubAuthenticated.get_current_user`` asks the hub synchronously (it blocks on a
    thread); Kore must not block its event loop, so :meth:`prepare` asks the hub
    asynchronously and ``get_current_user`` only returns that answer.
    """

    @property
    def hub_auth(self) -> HubOAuth:
        return self.settings["hub_auth"]

    def get_current_user(self):
        # Only what prepare() found; never the blocking lookup of the mixin.
        return getattr(self, "_hub_auth_user_cache", None)

    async def prepare(self):
        self._hub_auth_user_cache = None
        if not self.settings.get("hub_login_enabled"):
            raise web.HTTPError(
                503,
                "Kore is not connected to a JupyterHub (no API token or OAuth client id "
                "in its environment), so nobody can log in. Start Kore through the hub.",
            )
        # While the user is resolved, HubOAuth checks the XSRF token of cookie-
        # authenticated requests that change something, and ignores the cookie if it fails.
        model = await self.hub_auth.get_user(self, sync=False)
        user = None
        if model:
            try:
                user = self.check_hub_user(model)
            except UserNotAllowed:
                self._hub_user_not_allowed = model
                self.log.warning(
                    "user:%s not allowed to use Kore (missing scope %s)",
                    model.get("name"),
                    " or ".join(sorted(self.hub_scopes or [])),
                )
        self._hub_auth_user_cache = user
        if user:
            await self._keep_url_token(user)

    async def _keep_url_token(self, user: dict) -> None:
        """Keep a ``?token=`` login in the OAuth cookie for the next requests, as
        JupyterHub's ``HubOAuthenticated`` does (its private
        ``_persist_url_token_if_set``), with ``HubOAuth``'s public API only.
        """
        url_token = self.get_argument("token", "")
        if not url_token or not self.hub_auth.allow_token_in_url:
            return
        # A page's scripts (fetch, XHR) must not turn a token into a cookie.
        if self.request.headers.get("Sec-Fetch-Mode", "navigate") != "navigate":
            return
        # Only when the URL's token identified the user: not when the hub refused it and
        # the cookie did. The hub's answer for it is in HubAuth's cache already.
        owner = await self.hub_auth.user_for_token(
            url_token, session_id=self.hub_auth.get_session_id(self), sync=False
        )
        if owner and (owner.get("kind"), owner.get("name")) == (user.get("kind"), user.get("name")):
            self.hub_auth.set_cookie(self, url_token)

    def get_login_url(self):
        not_allowed = getattr(self, "_hub_user_not_allowed", None)
        if not_allowed:
            # Logged in to the hub but without access to Kore: logging in again won't help.
            raise web.HTTPError(
                403,
                "The hub user %s may not use Kore. Ask the hub admin for access.",
                not_allowed.get("name"),
            )
        if self.json_errors:
            # API clients get a status they can act on, not an HTML login page.
            raise web.HTTPError(
                403,
                "Not logged in: send a hub token (Authorization: token ...) "
                "or log in to the hub first.",
            )
        return super().get_login_url()

    @property
    def hub_user(self) -> dict:
        """The current hub user's model (name, admin, groups, scopes) from the hub."""
        return self.current_user


class PageHandler(HubUserHandler):
    """A browser page: anonymous visitors go through the hub's OAuth login."""

    json_errors = False

    @property
    def xsrf_text(self) -> str:
        """The XSRF token for the page's forms and API calls (field ``_xsrf``, header
        X-XSRFToken), as text; reading it sets the matching ``_xsrf`` cookie."""
        xsrf = self.xsrf_token
        return xsrf.decode() if isinstance(xsrf, bytes) else xsrf


class APIHandler(HubUserHandler):
    """A JSON API for logged-in hub users: no login redirect, 403 without credentials."""

    json_errors = True

    def set_default_headers(self):
        super().set_default_headers()
        # Answers are per user: no shared caches.
        self.set_header("Cache-Control", "no-store")


class PublicAPIHandler(KoreRequestHandler):
    """A JSON route anyone may fetch (the LMS fetching the keyset)."""

    json_errors = True


class NotFoundHandler(PageHandler):
    """Unknown paths: after login, a 404 in the format of the route's kind."""

    @property
    def json_errors(self):
        return self.request.path.startswith(self.settings["kore_prefix"] + "api/")

    @web.authenticated
    def get(self, *args, **kwargs):
        raise web.HTTPError(404, "There is no page %s in Kore.", self.request.path)

    post = put = patch = delete = get


#: Largest JSON body Kore's changing routes accept: their bodies are a few options; a
#: bigger one is a mistake or an attack, refused without keeping it in memory.
MAX_BODY = 16 * 1024


class ChangeRequestMixin:
    """For POST/PATCH API routes: a bounded body and an explained refusal of a login.

    Handlers using it are decorated with ``@web.stream_request_body``, so an oversized
    body is counted and dropped as it arrives, never held in memory.
    """

    async def prepare(self):
        self._body = bytearray()
        self._body_too_large = False
        await super().prepare()

    def data_received(self, chunk: bytes) -> None:
        if self._body_too_large or len(self._body) + len(chunk) > MAX_BODY:
            self._body_too_large = True
            self._body.clear()
            return
        self._body.extend(chunk)

    def body_bytes(self, too_large: str = "The body is larger than %d bytes.") -> bytes:
        """The request body; 413 with ``too_large`` (a %d gets MAX_BODY) if it was cut."""
        if self._body_too_large:
            raise web.HTTPError(413, too_large, MAX_BODY)
        return bytes(self._body)

    def json_body(self, too_large: str = "The body is larger than %d bytes."):
        """The body, validated against this route's operation in Kore's OpenAPI document.

        The one check of request bodies (:mod:`kore.openapi`): 413 when too large, 400
        naming the field and what it takes; None for an allowed empty body.
        """
        raw = self.body_bytes(too_large)
        path = self.request.path.removeprefix(self.settings["kore_prefix"])
        try:
            return request_bodies().parse(path, self.request.method, raw)
        except BodyError as exc:
            raise web.HTTPError(400, "%s", str(exc)) from None

    def require_user(self) -> None:
        """Like ``@web.authenticated``, which answers a bare 403 to a change: say why."""
        if self.current_user:
            return
        if self.get_cookie(self.hub_auth.cookie_name):
            # HubOAuth ignored the login cookie: no valid XSRF token, or an expired login.
            raise web.HTTPError(
                403,
                "Kore did not accept its login cookie for this request: it needs the XSRF "
                "token of Kore's page (header X-XSRFToken) and a current login (reload "
                "Kore's page). Scripts may send a hub token instead (Authorization: token ...).",
            )
        self.get_login_url()  # APIs raise a 403 there: not logged in, or not allowed
        raise web.HTTPError(403)
