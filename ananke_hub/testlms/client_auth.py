"""Client authentication at the token endpoint: the tool's signed JWT assertion.

IMS Security Framework 1.0 section 4.1
(https://www.imsglobal.org/spec/security/v1p0/#using-json-web-tokens-with-oauth-2-0-client-credentials-grant)
and RFC 7523 section 3: the tool signs a JWT with its private key (header `kid`,
RS256), with `iss` = `sub` = its client id, `aud` = the platform's token URL, `iat`,
`exp` and a unique `jti`. The platform checks it against the tool's public keyset,
fetched from the tool's keyset URL without blocking, cached, and fetched again when the
assertion names a `kid` the cache does not hold (the tool rotated its key).

About `aud`: Moodle 5 does not look at it (it verifies only signature and times), and
the spec says the token URL SHOULD be the audience. We accept exactly the token URL
(alone or in a list), so a tool that works here works with Moodle and with platforms
that check.
"""

import asyncio
import json
import time

import jwt
from tornado.httpclient import AsyncHTTPClient, HTTPClientError

from . import constants as C

SPEC = "IMS Security Framework 1.0 section 4.1"


class OAuthError(Exception):
    """A token request the platform refuses, as an OAuth 2 error (RFC 6749 section 5.2)."""

    def __init__(self, error: str, description: str, status: int = 400):
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status


def invalid_client(description: str) -> OAuthError:
    # RFC 6749 section 5.2: client authentication failed; 401 says so plainly
    # (Moodle answers 400 for every token error).
    return OAuthError("invalid_client", description, 401)


class KeysetError(Exception):
    """The tool's keyset could not be fetched or read; the message says why."""


class ToolKeyset:
    """The tool's public keys by `kid`, from its keyset URL, fetched asynchronously."""

    def __init__(self, url: str, max_age: float = C.TOOL_KEYSET_MAX_AGE):
        self.url = url
        self.max_age = max_age
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched = 0.0
        self._pending: asyncio.Future | None = None

    async def key(self, kid: str) -> jwt.PyJWK | None:
        """The key named ``kid``; None if the tool's current keyset does not have it."""
        stale = time.monotonic() - self._fetched > self.max_age
        if stale or kid not in self._keys:
            await self._refresh()
        return self._keys.get(kid)

    async def _refresh(self) -> None:
        # Concurrent token requests share one fetch.
        if self._pending is None:
            self._pending = asyncio.ensure_future(self._fetch())
            self._pending.add_done_callback(lambda _: setattr(self, "_pending", None))
        self._keys = await asyncio.shield(self._pending)
        self._fetched = time.monotonic()

    async def _fetch(self) -> dict[str, jwt.PyJWK]:
        if not self.url:
            raise KeysetError(
                "The platform does not know the tool's keyset URL: start it with "
                "--tool-jwks-url=<hub>/services/kore/jwks."
            )
        try:
            response = await AsyncHTTPClient().fetch(
                self.url, request_timeout=C.TOOL_KEYSET_TIMEOUT, raise_error=True
            )
            document = json.loads(response.body)
            if not isinstance(document, dict):
                raise ValueError("not a JSON object with keys")
            keyset = jwt.PyJWKSet.from_dict(document)
        except HTTPClientError as exc:
            raise KeysetError(f"The tool's keyset {self.url} answered {exc.code}.") from None
        except (OSError, ValueError, jwt.PyJWKSetError) as exc:
            raise KeysetError(f"The tool's keyset {self.url} is not usable: {exc}.") from None
        return {key.key_id: key for key in keyset.keys if key.key_id}


class ReplayGuard:
    """Remembers each assertion's `jti` until the assertion expires (RFC 7523 section 3,
    point 7: the platform may refuse a JWT it has seen)."""

    def __init__(self):
        self._seen: dict[str, float] = {}

    def first_use(self, jti: str, expires: float) -> bool:
        now = time.time()
        for old in [j for j, exp in self._seen.items() if exp + C.ASSERTION_LEEWAY < now]:
            del self._seen[old]
        if jti in self._seen:
            return False
        self._seen[jti] = expires
        return True


async def verify_assertion(
    assertion: str, *, client_id: str, token_url: str, keyset: ToolKeyset, replay: ReplayGuard
) -> dict:
    """The verified claims of ``assertion``; raises OAuthError saying what is wrong."""
    try:
        header = jwt.get_unverified_header(assertion)
        unverified = jwt.decode(assertion, options={"verify_signature": False})
    except jwt.DecodeError:
        raise OAuthError(
            "invalid_request", "client_assertion is not a JWT (header.payload.signature)."
        ) from None
    if header.get("alg") != C.SIGNING_ALGORITHM:
        raise invalid_client(
            f"The client assertion must be signed {C.SIGNING_ALGORITHM}, not {header.get('alg')!r}."
        )
    if unverified.get("sub") != client_id:
        # Moodle finds the tool by `sub`.
        raise invalid_client(
            f"Unknown client: the assertion's sub is {unverified.get('sub')!r}; the tool "
            f"registered here has client_id {client_id!r} ({SPEC}: iss and sub are the client id)."
        )
    kid = header.get("kid")
    if not kid:
        raise invalid_client("The client assertion has no kid header: name the signing key.")
    try:
        key = await keyset.key(kid)
    except KeysetError as exc:
        raise invalid_client(str(exc)) from None
    if key is None:
        raise invalid_client(
            f"No key with kid {kid!r} in the tool's keyset {keyset.url}: publish the "
            "signing key there before using it."
        )
    try:
        claims = jwt.decode(
            assertion,
            key.key,
            algorithms=[C.SIGNING_ALGORITHM],
            audience=token_url,
            issuer=client_id,
            leeway=C.ASSERTION_LEEWAY,
            options={"require": ["iss", "sub", "aud", "exp", "iat", "jti"]},
        )
    except jwt.InvalidSignatureError:
        raise invalid_client(f"The signature does not verify with key {kid!r}.") from None
    except jwt.ExpiredSignatureError:
        raise invalid_client("The client assertion has expired (exp): sign a new one.") from None
    except jwt.ImmatureSignatureError:
        raise invalid_client("The client assertion is issued in the future (iat).") from None
    except jwt.InvalidAudienceError:
        raise invalid_client(
            f"The client assertion's aud must be the token URL {token_url!r}."
        ) from None
    except jwt.InvalidIssuerError:
        raise invalid_client(
            f"The client assertion's iss must be the client id {client_id!r}."
        ) from None
    except jwt.MissingRequiredClaimError as exc:
        raise invalid_client(
            f"The client assertion lacks the {exc.claim} claim ({SPEC})."
        ) from None
    except jwt.InvalidTokenError as exc:
        raise invalid_client(f"The client assertion is not valid: {exc}.") from None
    if not isinstance(claims["jti"], str) or not claims["jti"]:
        raise invalid_client("The client assertion's jti must be a non-empty string.")
    if not replay.first_use(claims["jti"], float(claims["exp"])):
        raise invalid_client(
            "This client assertion was used before (same jti): sign a new one per request."
        )
    return claims
