"""The one way Kore sends an HTTP request to the LMS: timeouts, retries, bounded bodies.

Asynchronous (httpx on the running asyncio loop: Kore's tornado loop or the CLI's):
the event loop never waits on the LMS. One connection pool per LMS client keeps
connections open between requests: a grade sync makes thousands of small requests, and
a new TLS handshake for each would cost more than the requests themselves. TLS is
verified against the system's CA store (``ssl.create_default_context``), so an
institution's own CA installed on the host is trusted as everywhere else on it.
"""

import asyncio
import logging
import ssl
from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import urljoin, urlsplit

import httpx

from .errors import BadLMSResponse, LMSUnavailable, LTIServiceError, lms_message
from .retry import RETRY_STATUSES, RetryPolicy, parse_retry_after

log = logging.getLogger("kore.lti")

#: The largest answer read from the LMS; a line item page or a roster page is far smaller.
MAX_BODY = 16 * 1024 * 1024


def reason(status: int) -> str:
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return str(status)


def check_service_url(url: str) -> str:
    """An LMS service URL must be absolute http(s): it receives an access token."""
    parts = urlsplit(url) if isinstance(url, str) else None
    if not parts or parts.scheme not in ("http", "https") or not parts.netloc:
        raise LTIServiceError(
            f"The LMS gave {url!r} as a service URL, which is not an http(s) URL; Kore "
            "sends no token there. Launch the activity again to refresh its URLs."
        )
    return url


@dataclass(frozen=True)
class LMSResponse:
    status: int
    headers: httpx.Headers
    body: bytes
    url: str

    def json(self, what: str):
        """The body as JSON; garbage is a :class:`BadLMSResponse`, never a crash."""
        try:
            return httpx.Response(200, content=self.body).json()
        except (ValueError, RecursionError):
            raise BadLMSResponse(
                f"The LMS answered {what} at {self.url} with something that is not JSON "
                f"({len(self.body)} bytes). Its LTI Advantage service may be misconfigured "
                "or behind a login page.",
                status=self.status,
            ) from None

    def next_link(self) -> str | None:
        """The ``Link: <...>; rel="next"`` URL (RFC 8288), absolute, or None."""
        for value in self.headers.get_list("link"):
            for target, params in _parse_links(value):
                rels = params.get("rel", "").split()
                if "next" in rels:
                    return urljoin(self.url, target)
        return None


def _parse_links(value: str):
    """``<url>; rel="next", <url>; rel=prev`` -> [(url, {"rel": "next"}), ...]."""
    position = 0
    while True:
        start = value.find("<", position)
        if start < 0:
            return
        end = value.find(">", start)
        if end < 0:
            return
        target = value[start + 1 : end]
        next_start = value.find("<", end)
        segment = value[end + 1 : next_start if next_start >= 0 else len(value)]
        params = {}
        for part in segment.split(";"):
            name, _, raw = part.strip().strip(",").partition("=")
            if name:
                params[name.strip().lower()] = raw.strip().strip('"')
        yield target, params
        position = end + 1


class LMSTransport:
    """Sends requests to the LMS with retries; one instance per event loop."""

    def __init__(
        self,
        *,
        retry: RetryPolicy | None = None,
        request_timeout: float = 30.0,
        connect_timeout: float = 10.0,
        max_connections: int = 16,
    ):
        self.retry = retry or RetryPolicy()
        self.request_timeout = request_timeout
        self.connect_timeout = connect_timeout
        self.max_connections = max_connections
        self._client: httpx.AsyncClient | None = None
        #: Requests sent (attempts, retries included); for logs and tests.
        self.attempts = 0

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                verify=ssl.create_default_context(),
                timeout=httpx.Timeout(self.request_timeout, connect=self.connect_timeout),
                limits=httpx.Limits(
                    max_connections=self.max_connections,
                    max_keepalive_connections=self.max_connections,
                ),
                follow_redirects=False,
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _once(self, method: str, url: str, headers: dict, content: bytes | None):
        """One attempt; the whole exchange, body included, within the request timeout."""
        self.attempts += 1
        async with asyncio.timeout(self.request_timeout):
            async with self._http().stream(method, url, headers=headers, content=content) as r:
                body = bytearray()
                async for chunk in r.aiter_bytes():
                    body.extend(chunk)
                    if len(body) > MAX_BODY:
                        raise BadLMSResponse(
                            f"The LMS's answer from {url} is larger than {MAX_BODY} bytes; "
                            "Kore stopped reading it.",
                            status=r.status_code,
                        )
                return LMSResponse(r.status_code, r.headers, bytes(body), str(r.url))

    async def request(
        self,
        method: str,
        url: str,
        *,
        action: str,
        headers: dict | None = None,
        content: bytes | None = None,
    ) -> LMSResponse:
        """Send a request; the 2xx answer, or a :class:`LTIServiceError` saying why not.

        ``action`` says what Kore was doing, for messages ("post the score of u123").
        """
        check_service_url(url)
        headers = dict(headers or {})
        policy = self.retry
        last_problem = ""
        last_status = None
        for attempt in range(1, policy.attempts + 1):
            retry_after = None
            try:
                response = await self._once(method, url, headers, content)
            except (TimeoutError, httpx.TimeoutException):
                last_status, last_problem = None, f"no answer within {self.request_timeout:g} s"
            except httpx.UnsupportedProtocol as exc:
                raise LTIServiceError(f"Kore cannot {action}: {exc}") from None
            except (httpx.TransportError, OSError) as exc:
                last_status = None
                last_problem = f"connection failed ({type(exc).__name__}: {exc or 'no detail'})"
            else:
                if 200 <= response.status < 300:
                    return response
                said = lms_message(response.body)
                if response.status not in RETRY_STATUSES:
                    raise LTIServiceError(
                        f"The LMS answered {reason(response.status)} when Kore tried to "
                        f"{action}" + (f": {said}" if said else "."),
                        status=response.status,
                        lms_message=said,
                    )
                last_status = response.status
                last_problem = f"the LMS answered {reason(response.status)}" + (
                    f" ({said})" if said else ""
                )
                retry_after = parse_retry_after(response.headers.get("retry-after"))
            if attempt < policy.attempts:
                wait = policy.delay(attempt, retry_after)
                log.debug("LMS: %s: %s; retry %d in %.2fs", action, last_problem, attempt, wait)
                await asyncio.sleep(wait)
        raise LMSUnavailable(
            f"Kore could not {action}: {last_problem}, {policy.attempts} times. The LMS may "
            "be down or overloaded; sync again later (only what is missing is sent).",
            status=last_status,
        )
