"""HTTP glue for the LTI Advantage services: the token endpoint, AGS and NRPS.

Each handler turns the tornado request into the library's request shape, calls the
library (``get_access_token``, or a ``handle_*`` method of a service class through its
``handle_resp``) and writes the library's ``Response`` as HTTP. What the library raises
instead of answering (a malformed or forged bearer token, a refused client assertion)
is mapped to 401/400 here, with OAuth 2 error codes at the token endpoint (RFC 6749
section 5.2).

Security Framework 1.0 section 4.1 (client credentials with a JWT assertion):
https://www.imsglobal.org/spec/security/v1p0/#using-json-web-tokens-with-oauth-2-0-client-credentials-grant
"""

import asyncio
import json

import jwt
from lti1p3platform.exceptions import (
    InvalidKeySetUrl,
    LtiException,
    MissingRequiredClaim,
    UnsupportedGrantType,
)
from lti1p3platform.response import Response, generate_next_link
from tornado import web

from . import people
from .lti import PlatformConf, TornadoRequest
from .services import AGSService, NRPSService, ServiceSettings
from .store import PlatformStore


class JSONHandler(web.RequestHandler):
    """Bearer-token and form APIs for tools: no cookies, so no XSRF check; JSON errors."""

    def check_xsrf_cookie(self):
        pass

    @property
    def conf(self) -> PlatformConf:
        return self.settings["lti_conf"]

    def send_json(self, status: int, document, media_type: str = "application/json") -> None:
        self.set_status(status)
        self.set_header("Content-Type", media_type)
        self.finish(json.dumps(document))

    def write_error(self, status_code: int, **kwargs) -> None:
        self.send_json(status_code, {"status": status_code, "message": self._reason})


class TokenHandler(JSONHandler):
    """``POST /token``: the library's ``get_access_token`` does the checking and signing."""

    async def post(self):
        form = {name: self.get_body_argument(name) for name in self.request.body_arguments}
        # The library fetches the tool's keyset with blocking ``requests`` the first
        # time, and keeps the JWT it decodes in an attribute of the shared conf object:
        # one worker thread runs them, one at a time, off the event loop.
        loop = asyncio.get_running_loop()
        try:
            answer = await loop.run_in_executor(
                self.settings["token_executor"], self.conf.get_access_token, form
            )
        except MissingRequiredClaim as exc:
            return self.oauth_error(400, "invalid_request", str(exc))
        except UnsupportedGrantType:
            return self.oauth_error(
                400, "unsupported_grant_type", "grant_type must be client_credentials."
            )
        except (LtiException, InvalidKeySetUrl, jwt.InvalidTokenError) as exc:
            # The client assertion: unreadable, no key with its kid in the tool's keyset,
            # a bad signature, expired.
            return self.oauth_error(
                401, "invalid_client", f"The client assertion was refused: {exc or type(exc)}"
            )
        self.set_header("Cache-Control", "no-store")  # RFC 6749 section 5.1
        self.set_header("Pragma", "no-cache")
        self.send_json(200, answer)

    def oauth_error(self, status: int, error: str, description: str) -> None:
        self.settings["platform_log"].warning("token refused (%s): %s", error, description)
        self.set_header("Cache-Control", "no-store")
        self.send_json(status, {"error": error, "error_description": description})


class ServiceHandler(JSONHandler):
    """A request to AGS or NRPS, for the one course."""

    @property
    def store(self) -> PlatformStore:
        return self.settings["platform_store"]

    @property
    def services(self) -> ServiceSettings:
        return self.settings["lti_services"]

    def library_request(self) -> TornadoRequest:
        request = TornadoRequest(self.request)
        if self.request.method in ("POST", "PUT"):
            try:
                body = json.loads(self.request.body or b"null")
            except ValueError:
                body = None
            if not isinstance(body, dict):
                # The library would hand None to the storage: refuse here instead.
                raise web.HTTPError(400, reason="Send a JSON object as the request body.")
            request.request["json"] = body
        return request

    def check_context(self, context_id: str) -> None:
        if context_id != people.COURSE.id:
            raise web.HTTPError(404, reason=f"No course {context_id} on this platform.")

    def ags(self, context_id: str, key: str | None = None) -> AGSService:
        self.check_context(context_id)
        return AGSService(
            self.library_request(),
            self.conf,
            store=self.store,
            settings=self.services,
            roster=people.ROSTER,
            lineitem_url=self.store.urls.lineitem(context_id, key) if key else None,
        )

    def answer(self, service, handler, **kwargs) -> None:
        """Run a library handler; write its ``Response``."""
        try:
            response: Response = service.handle_resp(handler, **kwargs)
        except (jwt.InvalidTokenError, LtiException) as exc:
            # validate_token raises for a token it cannot verify instead of answering 401.
            raise web.HTTPError(401, reason=f"Invalid LTI 1.3 access token: {exc}") from None
        if response.code >= 400:
            error = {"status": response.code, "message": response.message}
            return self.send_json(response.code, error)
        result = response.result
        if result is None:
            self.set_status(response.code)
            return self.finish()
        if isinstance(result, dict) and result.get("next"):
            # AGS 2.0 section 3.2.5 and NRPS 2.0 section 2.4.2: paging by Link header.
            self.set_header("Link", generate_next_link(result["next"]))
        if isinstance(result, dict) and "content" in result and "has_next" in result:
            # The library's page: the container document is its content (a JSON array).
            result = result["content"]
        self.send_json(response.code, result, response.media_type)


class LineItemsHandler(ServiceHandler):
    def get(self, context_id):
        service = self.ags(context_id)
        self.answer(service, service.handle_get_lineitems)

    def post(self, context_id):
        service = self.ags(context_id)
        self.answer(service, service.handle_create_lineitem)


class LineItemHandler(ServiceHandler):
    def get(self, context_id, key):
        service = self.ags(context_id, key)
        self.answer(service, service.handle_get_lineitem, line_item_id=key)

    def put(self, context_id, key):
        service = self.ags(context_id, key)
        self.answer(service, service.handle_update_lineitem, line_item_id=key)

    def delete(self, context_id, key):
        service = self.ags(context_id, key)
        self.answer(service, service.handle_delete_lineitem, line_item_id=key)


class ScoresHandler(ServiceHandler):
    def post(self, context_id, key):
        service = self.ags(context_id, key)
        self.answer(service, service.handle_update_score, line_item_id=key)


class ResultsHandler(ServiceHandler):
    def get(self, context_id, key):
        service = self.ags(context_id, key)
        self.answer(service, service.handle_get_results, line_item_id=key)


class MembershipsHandler(ServiceHandler):
    def get(self, context_id):
        self.check_context(context_id)
        request = self.library_request()
        # The library pages only when the tool sends a ``limit``; without one this
        # platform still pages, by its own page size, as an LMS with a large course does.
        request.get_data.setdefault("limit", str(self.services.nrps_page_size))
        service = NRPSService(
            request,
            self.conf,
            url=self.store.urls.memberships(context_id),
            course=people.COURSE,
            roster=people.ROSTER,
            links=people.LINKS,
        )
        self.answer(service, service.handle_get_members)


_ITEM = r"/ags/([^/]+)/lineitems/([^/]+)/lineitem"
ROUTES = [
    (r"/token", TokenHandler),
    (r"/ags/([^/]+)/lineitems", LineItemsHandler),
    (_ITEM, LineItemHandler),
    (_ITEM + r"/scores", ScoresHandler),
    (_ITEM + r"/results", ResultsHandler),
    (r"/nrps/([^/]+)/memberships", MembershipsHandler),
]
