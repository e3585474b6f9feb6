"""What the LTI Advantage service handlers share (token endpoint, AGS, NRPS).

They speak JSON to a tool, not HTML to a person: errors are ``{"status", "message"}``
documents, requests carry an access token instead of cookies (so no XSRF check), and
each request first meets the injected faults of the test API, if any.
"""

import asyncio
import json
from urllib.parse import urlencode

from tornado import web

from .. import constants as C
from ..client_auth import ReplayGuard, ToolKeyset
from ..controls import ServiceControls
from ..documents import DocumentError, parse_json
from ..faults import GARBAGE, FaultAction, Faults
from ..load import Load
from ..store import AccessToken, Course, PlatformStore
from .base import PlatformHandler


class ServiceError(web.HTTPError):
    """A refused service request: the status, and a message for the tool's developer."""

    def __init__(self, status_code: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(status_code, "%s", message)
        self.message = message
        self.headers = headers or {}


def media_type(header: str | None) -> str:
    """`application/x; charset=utf-8` -> `application/x`."""
    return (header or "").split(";", 1)[0].strip().lower()


class ServiceHandler(PlatformHandler):
    def check_xsrf_cookie(self):
        # Tools authenticate with a client assertion or a bearer token, never a cookie.
        pass

    @property
    def store(self) -> PlatformStore:
        return self.settings["platform_store"]

    @property
    def faults(self) -> Faults:
        return self.settings["platform_faults"]

    @property
    def tool_keyset(self) -> ToolKeyset:
        return self.settings["platform_tool_keyset"]

    @property
    def replay_guard(self) -> ReplayGuard:
        return self.settings["platform_replay_guard"]

    @property
    def load(self) -> Load:
        return self.settings["platform_load"]

    @property
    def controls(self) -> ServiceControls:
        return self.settings["platform_controls"]

    _loaded = False

    async def prepare(self):
        load = self.load
        load.seen(self.request.connection)
        load.record(self.request.method, self.request.path)
        wait = load.arrive()
        if wait is None:
            self.set_status(429)
            self.set_header("Retry-After", str(load.retry_after))
            self.send_json({"status": 429, "message": "The platform is overloaded (load limit)."})
            return
        self._loaded = True
        if wait:
            await asyncio.sleep(wait)  # slower the more requests are in flight
        action = self.faults.take(self.request.method, self.request.path, self.request.body)
        if action is not None:
            await self._inject(action)

    def _left(self) -> None:
        if self._loaded:
            self._loaded = False
            self.load.leave()

    def on_finish(self) -> None:
        self._left()
        super().on_finish()

    def on_connection_close(self) -> None:
        self._left()
        super().on_connection_close()

    async def _inject(self, action: FaultAction) -> None:
        if action.delay:
            await asyncio.sleep(action.delay)  # the platform keeps serving meanwhile
        rule = action.rule
        if rule is None:
            return
        self.log.info("fault: rule %d on %s %s", rule.id, self.request.method, self.request.path)
        if rule.after:
            self._after = rule  # carried out first; the answer is late or never comes
            return
        if rule.garbage:
            self.set_header("Content-Type", "application/json")
            self.finish(GARBAGE)
            return
        self.set_status(rule.status)
        if rule.retry_after is not None:
            self.set_header("Retry-After", f"{rule.retry_after:g}")
        if rule.body is not None:
            self.set_header("Content-Type", "application/json")
            for name, value in rule.headers.items():
                self.set_header(name, value)
            self.finish(rule.body.encode())
            return
        for name, value in rule.headers.items():
            self.set_header(name, value)
        self.send_json({"status": rule.status, "message": f"Injected failure (rule {rule.id})."})

    # --- answers

    _after = None
    _deferred = False

    def finish(self, chunk=None):
        """Answer; under an ``after`` fault, late or not at all (the work is done)."""
        rule, self._after = self._after, None
        if self._deferred:  # tornado's own finish once the handler returned
            return asyncio.get_running_loop().create_future()
        if rule is None:
            return super().finish(chunk)
        self._deferred = True
        if rule.after == "drop":
            self.log.info("fault: rule %d drops the connection after the work", rule.id)
            self.request.connection.close()
            return asyncio.get_running_loop().create_future()

        async def later():
            await asyncio.sleep(rule.delay)  # the platform keeps serving meanwhile
            try:
                web.RequestHandler.finish(self, chunk)
            except Exception as exc:  # the tool gave up and closed the connection
                self.log.info("fault: rule %d: the late answer found no one: %s", rule.id, exc)

        return asyncio.ensure_future(later())

    def send_json(self, document, media: str = "application/json") -> None:
        self.set_header("Content-Type", media)
        self.finish(json.dumps(document, ensure_ascii=False))

    def write_error(self, status_code: int, **kwargs) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, ServiceError):
            message = exc.message
            for name, value in exc.headers.items():
                self.set_header(name, value)
        elif isinstance(exc, web.HTTPError) and status_code < 500:
            message = exc.log_message % exc.args if exc.log_message else self._reason
        else:
            message = "The platform failed on this request; its log says why."
        self.send_json({"status": status_code, "message": message})

    # --- reading requests

    def bearer(self, *scopes: str) -> AccessToken:
        """The request's access token, which must hold one of ``scopes``.

        RFC 6750 section 3.1: 401 with `invalid_token` for a missing, unknown or expired
        token; 403 with `insufficient_scope` for a token without the scope.
        """
        scheme, _, value = self.request.headers.get("Authorization", "").partition(" ")
        token_url = self.platform.access_token_url
        if scheme.lower() != "bearer" or not value.strip():
            raise ServiceError(
                401,
                f"This service needs an access token: send `Authorization: Bearer <token>` "
                f"with a token from {token_url}.",
                {"WWW-Authenticate": 'Bearer realm="lti"'},
            )
        token = self.store.find_token(value.strip())
        if token is None:
            raise ServiceError(
                401,
                f"The access token is unknown or expired: get a new one from {token_url}.",
                {"WWW-Authenticate": 'Bearer realm="lti", error="invalid_token"'},
            )
        if not any(scope in token.scopes for scope in scopes):
            raise ServiceError(
                403,
                f"This request needs a token with the scope {' or '.join(scopes)}. The token "
                f"has {' '.join(token.scopes)}; this platform grants "
                f"{' '.join(self.granted_scopes)}.",
                {
                    "WWW-Authenticate": (
                        f'Bearer realm="lti", error="insufficient_scope", scope="{scopes[0]}"'
                    )
                },
            )
        return token

    @property
    def granted_scopes(self) -> tuple[str, ...]:
        """The scopes the token endpoint grants: the platform's, or the test API's."""
        chosen = self.controls.scopes
        return self.platform.grantable_scopes if chosen is None else chosen

    def check_accept(self, media: str) -> None:
        """Moodle refuses an Accept that names other media types; so do we (406)."""
        accept = self.request.headers.get("Accept")
        if not accept:
            return
        offered = {media_type(part) for part in accept.split(",")}
        if not offered & {media, "*/*", "application/*"}:
            raise ServiceError(406, f"This resource answers {media}; the request accepts {accept}.")

    def json_body(self, media: str):
        """The request's JSON document, which must come as ``media``."""
        sent = media_type(self.request.headers.get("Content-Type"))
        if sent != media:
            raise ServiceError(
                415, f"Send this document as Content-Type: {media}, not {sent or 'none'}."
            )
        if len(self.request.body) > C.MAX_JSON_BODY:
            raise ServiceError(413, f"The body is larger than {C.MAX_JSON_BODY} bytes.")
        try:
            return parse_json(self.request.body)
        except DocumentError as exc:
            raise ServiceError(400, str(exc)) from None

    def course(self, context_id: str) -> Course:
        course = self.store.course(context_id)
        if course is None:
            raise ServiceError(404, f"No course {context_id!r} on this platform.")
        return course

    def _whole_number(self, name: str, default: int, minimum: int) -> int:
        text = self.get_query_argument(name, None)
        if text is None:
            return default
        if not text.isdigit() or int(text) < minimum:
            raise ServiceError(
                400, f"{name} must be a whole number of at least {minimum}, got {text!r}."
            )
        return int(text)

    def page(self, entries: list, moodle_links: bool = False) -> list:
        """The page of ``entries`` that `limit` and `from` ask for, with `Link` headers.

        AGS 2.0 section 3.2.7 / NRPS 2.0 section 2.4.2: the next page is given as
        `Link: <url>; rel="next"`, absent on the last page. The URLs keep the request's
        other query parameters (filters, type_id). ``moodle_links`` (AGS in the Moodle
        profile): as Moodle 5.1's line items and results write them, with typographic
        quotes (``rel=“next”``, UTF-8) and HTML-escaped URLs (``&amp;from=100``).
        """
        limit = min(self._whole_number("limit", C.DEFAULT_PAGE_SIZE, 1), self.controls.page_size)
        start = self._whole_number("from", 0, 0)
        others = {
            name: values[-1].decode()
            for name, values in self.request.query_arguments.items()
            if name not in ("limit", "from")
        }

        def link(offset: int, rel: str) -> str:
            query = urlencode({**others, "limit": limit, "from": offset})
            if moodle_links:
                query = query.replace("&", "&amp;")
                return f"<{self.platform.url(self.request.path)}?{query}>; rel=\u201c{rel}\u201d"
            return f'<{self.platform.url(self.request.path)}?{query}>; rel="{rel}"'

        links = [link(0, "first")]
        if start > 0:
            links.append(link(max(0, start - limit), "prev"))
        if start + limit < len(entries):
            links.append(link(start + limit, "next"))
        links.append(link(max(0, (len(entries) - 1) // limit * limit), "last"))
        # Tornado refuses a header value that is not Latin-1: the UTF-8 bytes of Moodle's
        # quotes go out as Latin-1 characters, which is the bytes Moodle sends.
        self.set_header("Link", ", ".join(links).encode().decode("latin-1"))
        return entries[start : start + limit]
