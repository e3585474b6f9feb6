"""Access tokens for LTI Advantage services: OAuth 2 client credentials with a signed JWT.

IMS Security Framework 1.0 section 4.1
(https://www.imsglobal.org/spec/security/v1p0/#using-json-web-tokens-with-oauth-2-0-client-credentials-grant)
and RFC 7523: the tool proves who it is with a short-lived JWT signed by its current
key (the LMS checks it against the tool's keyset, ``<hub>/services/kore/jwks``):
``iss`` = ``sub`` = the client id, ``aud`` = the token URL (or what the registration
says), ``iat``, ``exp`` five minutes later, a unique ``jti`` and the key id in the header.

Tokens are cached per (token URL, client id, scopes) until shortly before they expire;
concurrent requests for the same token wait for one request to the LMS.
"""

import asyncio
import json
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlencode

import jwt

from ananke_hub.keys import ALGORITHM, SigningKey
from ananke_hub.lti_spec import CLIENT_ASSERTION_TYPE, CLIENT_CREDENTIALS_GRANT, FORM_CONTENT_TYPE

from .errors import LTIServiceError, TokenRefused, clean
from .transport import LMSTransport

#: Lifetime of a client assertion (the spec asks for a short one).
ASSERTION_LIFETIME = 300
#: A cached token is renewed this many seconds before it expires, so that no request
#: goes out with a token that expires on the way.
EXPIRY_MARGIN = 60
#: Assumed lifetime when the LMS does not say (RFC 6749 makes expires_in optional).
DEFAULT_TOKEN_LIFETIME = 300


def client_assertion(
    key: SigningKey, *, client_id: str, audience: str, now: float | None = None
) -> str:
    """The signed JWT that authenticates Kore at the token endpoint."""
    issued = int(time.time() if now is None else now)
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": audience,
        "iat": issued,
        "exp": issued + ASSERTION_LIFETIME,
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(claims, key.private_key, algorithm=ALGORITHM, headers={"kid": key.kid})


@dataclass(frozen=True)
class AccessToken:
    value: str
    #: The scopes granted: what the LMS says it granted, else what was asked.
    scopes: frozenset[str]
    #: time.monotonic() after which the token is not used any more.
    renew_at: float

    def __repr__(self) -> str:  # never show the token itself in logs or tracebacks
        return f"AccessToken(scopes={sorted(self.scopes)}, renew_at={self.renew_at:.0f})"


class TokenService:
    """Gets and caches access tokens from the LMS's token endpoint."""

    def __init__(self, transport: LMSTransport, signing_key: Callable[[], SigningKey]):
        self.transport = transport
        self.signing_key = signing_key
        self._cache: dict[tuple, AccessToken] = {}
        self._locks: dict[tuple, asyncio.Lock] = {}
        #: Token requests sent to the LMS (for tests and logs).
        self.requests = 0

    async def token(
        self, *, token_url: str, client_id: str, audience: str, scopes: Iterable[str]
    ) -> AccessToken:
        scopes = frozenset(scopes)
        key = (token_url, client_id, audience, scopes)
        cached = self._cache.get(key)
        if cached and time.monotonic() < cached.renew_at:
            return cached
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            cached = self._cache.get(key)
            if cached and time.monotonic() < cached.renew_at:
                return cached
            token = await self._request(token_url, client_id, audience, scopes)
            self._cache[key] = token
            return token

    def invalidate(self, token: AccessToken) -> None:
        """Forget ``token`` (the LMS refused it: revoked, or expired early)."""
        for key, cached in list(self._cache.items()):
            if cached is token:
                del self._cache[key]

    async def _request(
        self, token_url: str, client_id: str, audience: str, scopes: frozenset[str]
    ) -> AccessToken:
        try:
            # The key store reads its directory (rotation may have added a key): a thread.
            key = await asyncio.to_thread(self.signing_key)
        except (LookupError, ValueError) as exc:
            raise TokenRefused(f"Kore has no usable signing key: {exc}") from exc
        form = {
            "grant_type": CLIENT_CREDENTIALS_GRANT,
            "client_assertion_type": CLIENT_ASSERTION_TYPE,
            "client_assertion": client_assertion(key, client_id=client_id, audience=audience),
            "scope": " ".join(sorted(scopes)),
        }
        self.requests += 1
        try:
            response = await self.transport.request(
                "POST",
                token_url,
                action="get an access token",
                headers={
                    # Moodle's token.php reads a form body only (see DESIGN.md).
                    "Content-Type": FORM_CONTENT_TYPE,
                    "Accept": "application/json",
                },
                content=urlencode(form).encode(),
                # A token request changes nothing at the LMS that a second one could
                # duplicate: it may be repeated after a timeout.
                idempotent=True,
            )
        except LTIServiceError as exc:
            if exc.status is not None and 400 <= exc.status < 500:
                raise TokenRefused(
                    f"The LMS refused Kore's access token request ({exc.status}"
                    + (f": {exc.lms_message}" if exc.lms_message else "")
                    + f"). Check that the LMS has the tool's keyset URL (<hub>/services/kore/"
                    f"jwks) and client id {client_id!r}, that c.LMSRegistration."
                    "access_token_url (and token_audience) in 30_lms.py match the LMS, and "
                    "that the tool may use these services: " + ", ".join(sorted(scopes)),
                    status=exc.status,
                    lms_message=exc.lms_message,
                ) from None
            raise
        data = response.json("the token request")
        access_token = data.get("access_token") if isinstance(data, dict) else None
        token_type = data.get("token_type", "Bearer") if isinstance(data, dict) else None
        if not isinstance(access_token, str) or not access_token:
            raise TokenRefused(
                f"The LMS's token endpoint {token_url} answered without an access_token "
                f"(got {clean(json.dumps(data)[:100]) if data is not None else 'nothing'}).",
                status=response.status,
            )
        if not isinstance(token_type, str) or token_type.lower() != "bearer":
            raise TokenRefused(
                f"The LMS issued a token of type {token_type!r}; LTI Advantage uses Bearer.",
                status=response.status,
            )
        expires_in = data.get("expires_in", DEFAULT_TOKEN_LIFETIME)
        if isinstance(expires_in, str) and expires_in.isdigit():
            expires_in = int(expires_in)
        if not isinstance(expires_in, int | float) or isinstance(expires_in, bool):
            expires_in = DEFAULT_TOKEN_LIFETIME
        granted = data.get("scope")
        granted_scopes = (
            frozenset(granted.split()) if isinstance(granted, str) and granted.strip() else scopes
        )
        margin = min(EXPIRY_MARGIN, max(0.0, expires_in) / 2)
        return AccessToken(
            value=access_token,
            scopes=granted_scopes,
            renew_at=time.monotonic() + max(0.0, expires_in - margin),
        )
