"""The platform's public keys, fetched without blocking the hub and cached.

Upstream ltiauthenticator builds a new PyJWKClient per launch and fetches the keyset
with blocking urllib inside the hub's event loop: one slow LMS stalls every user of
the hub. Here the keyset is fetched with tornado's AsyncHTTPClient, once for any number
of concurrent launches, cached, and fetched again only when a token names a key id we
do not know (the platform rotated its keys) or the cache is old.
"""

import asyncio
import json
import time

import jwt
from ltiauthenticator.lti13.error import ValidationError
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest


class PlatformKeysUnavailable(ValidationError):
    """The platform's keyset could not be fetched or read."""


class UnknownSigningKey(ValidationError):
    """The id_token names a key id the platform does not publish."""


class PlatformKeySet:
    """A cached view of one platform JWKS URL (IMS Security Framework 6.3)."""

    def __init__(
        self,
        url: str,
        *,
        max_age: float = 3600,
        min_refetch_interval: float = 10,
        timeout: float = 10,
        log=None,
    ):
        self.url = url
        self.max_age = max_age
        self.min_refetch_interval = min_refetch_interval
        self.timeout = timeout
        self.log = log
        self._keys: dict[str | None, jwt.PyJWK] = {}
        self._fetched_at = float("-inf")
        self._inflight: asyncio.Future | None = None
        self.fetch_count = 0

    async def _fetch(self) -> None:
        self.fetch_count += 1
        request = HTTPRequest(
            self.url,
            connect_timeout=self.timeout,
            request_timeout=self.timeout,
            headers={"Accept": "application/json"},
        )
        try:
            response = await AsyncHTTPClient().fetch(request)
        except HTTPClientError as exc:
            answer = (
                f"did not answer within {self.timeout:g} s"
                if exc.code == 599
                else (f"answered HTTP {exc.code}")
            )
            raise PlatformKeysUnavailable(
                f"The LMS keyset at {self.url} {answer}. Check "
                "LMSRegistration.jwks_url in 30_lms.py, or try again when the LMS is up."
            ) from exc
        except (TimeoutError, OSError) as exc:
            raise PlatformKeysUnavailable(
                f"The LMS keyset at {self.url} cannot be reached ({exc}). Try again later; "
                "if it persists, check LMSRegistration.jwks_url in 30_lms.py."
            ) from exc
        try:
            keyset = jwt.PyJWKSet.from_dict(json.loads(response.body))
        except (ValueError, jwt.PyJWTError) as exc:
            raise PlatformKeysUnavailable(
                f"The LMS keyset at {self.url} is not a valid JWKS ({exc})."
            ) from exc
        keys: dict[str | None, jwt.PyJWK] = {k.key_id: k for k in keyset.keys}
        if len(keyset.keys) == 1:
            keys.setdefault(None, keyset.keys[0])  # a token without kid may use the only key
        self._keys = keys
        self._fetched_at = time.monotonic()

    async def refresh(self) -> None:
        """Fetch the keyset; concurrent callers share one request."""
        if self._inflight is None:
            self._inflight = asyncio.ensure_future(self._fetch())
            self._inflight.add_done_callback(lambda _: setattr(self, "_inflight", None))
        await asyncio.shield(self._inflight)

    async def get_key(self, kid: str | None) -> jwt.PyJWK:
        """The platform key with id ``kid``, fetching the keyset when needed."""
        age = time.monotonic() - self._fetched_at
        if age > self.max_age:
            try:
                await self.refresh()
            except PlatformKeysUnavailable:
                if kid not in self._keys:
                    raise
                # The LMS is down but we know this key: keep serving launches.
                if self.log:
                    self.log.warning("lti: keyset refresh failed, using cached keys")
        elif kid not in self._keys and age > self.min_refetch_interval:
            await self.refresh()  # maybe the platform rotated its keys
        try:
            return self._keys[kid]
        except KeyError:
            raise UnknownSigningKey(
                f"The id_token was signed with key id {kid!r}, which the LMS keyset at "
                f"{self.url} does not contain."
            ) from None
