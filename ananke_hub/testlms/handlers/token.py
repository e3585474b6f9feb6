"""The OAuth 2 token endpoint for LTI Advantage services: `POST /token`.

IMS Security Framework 1.0 section 4.1
(https://www.imsglobal.org/spec/security/v1p0/#using-json-web-tokens-with-oauth-2-0-client-credentials-grant):
the tool sends, as a form (`application/x-www-form-urlencoded`, the only body Moodle
reads), `grant_type=client_credentials`, `client_assertion_type=urn:ietf:params:oauth:
client-assertion-type:jwt-bearer`, `client_assertion=<signed JWT>` and `scope=<space
separated scopes>`. The answer is `{"access_token", "token_type": "Bearer",
"expires_in", "scope"}`: an opaque token for the granted scopes.

Scopes: like Moodle, the platform grants the requested scopes it allows
(`--ags-scopes` and NRPS) and drops the others; `scope` in the answer says which
(RFC 6749 section 3.3). A request for none it allows gets `invalid_scope`.
"""

import jwt

from .. import constants as C
from ..client_auth import OAuthError, verify_assertion
from .service import ServiceHandler, media_type

PARAMS = ("grant_type", "client_assertion_type", "client_assertion", "scope")


def granted_scopes(requested: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
    """The requested scopes the platform allows, in the order requested, once each."""
    return tuple(dict.fromkeys(s for s in requested.split() if s in allowed))


class TokenHandler(ServiceHandler):
    async def post(self):
        # What the tool sent, for the test API's GET /_test/token_requests.
        self._seen = {"form": {}, "header": None, "claims": None, "status": None}
        self.controls.token_requests.append(self._seen)
        try:
            await self._issue()
        except OAuthError as exc:
            self.log.warning("token: refused (%s): %s", exc.error, exc.description)
            self._oauth_answer(
                exc.status, {"error": exc.error, "error_description": exc.description}
            )

    async def _issue(self) -> None:
        sent = media_type(self.request.headers.get("Content-Type"))
        if sent != C.FORM_CONTENT_TYPE:
            raise OAuthError(
                "invalid_request",
                f"Send the token request as a form (Content-Type: {C.FORM_CONTENT_TYPE}), "
                f"not {sent or 'without a Content-Type'}; Moodle reads no other body.",
            )
        params = {name: self.get_body_argument(name, "") for name in PARAMS}
        self._seen["form"] = params
        missing = [name for name in PARAMS if not params[name]]
        if missing:
            raise OAuthError("invalid_request", f"Missing parameters: {', '.join(missing)}.")
        if params["grant_type"] != C.CLIENT_CREDENTIALS_GRANT:
            raise OAuthError(
                "unsupported_grant_type",
                f"grant_type must be {C.CLIENT_CREDENTIALS_GRANT}, got {params['grant_type']!r}.",
            )
        if params["client_assertion_type"] != C.CLIENT_ASSERTION_TYPE:
            raise OAuthError(
                "invalid_request", f"client_assertion_type must be {C.CLIENT_ASSERTION_TYPE}."
            )
        claims = await verify_assertion(
            params["client_assertion"],
            client_id=self.platform.client_id,
            token_url=self.controls.token_audience or self.platform.access_token_url,
            keyset=self.tool_keyset,
            replay=self.replay_guard,
        )
        self._seen["header"] = jwt.get_unverified_header(params["client_assertion"])
        self._seen["claims"] = claims
        scopes = granted_scopes(params["scope"], self.granted_scopes)
        if not scopes:
            raise OAuthError(
                "invalid_scope",
                f"None of the requested scopes is granted to this tool; it may have: "
                f"{' '.join(self.granted_scopes)}.",
            )
        token = self.store.issue_token(scopes, self.controls.token_lifetime)
        self.log.info("token: issued for %s", " ".join(s.rsplit("/", 1)[1] for s in scopes))
        self._oauth_answer(
            200,
            {
                "access_token": token.value,
                "token_type": "Bearer",
                "expires_in": self.controls.token_lifetime,
                "scope": " ".join(scopes),
            },
        )

    def _oauth_answer(self, status: int, document: dict) -> None:
        # RFC 6749 section 5.1: token answers must not be cached.
        self._seen["status"] = status
        self.set_status(status)
        self.set_header("Cache-Control", "no-store")
        self.set_header("Pragma", "no-cache")
        self.send_json(document)


ROUTES = [(r"/token", TokenHandler)]
