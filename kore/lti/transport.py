"""The one way Kore sends an HTTP request to the LMS: timeouts, retries, bounded bodies.

Asynchronous (tornado's HTTP client on the running loop: Kore's, or the CLI's): the
event loop never waits on the LMS. TLS is verified against the system's CA store, so an
institution's own CA installed on the host is trusted as everywhere else on it.

Why tornado's simple client: a grade sync makes thousands of small requests, and with
many in flight its CPU cost per request is a third of httpx's (measured: 0.8 against
2.8 ms at 16 concurrent requests), which is what bounds a sync against a fast LMS. It
opens a connection per request; against a real LMS the request itself costs far more.
"""

import asyncio
import json
import logging
import re
from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import urljoin, urlsplit

from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.httputil import HTTPHeaders
from tornado.iostream import StreamClosedError
from tornado.simple_httpclient import SimpleAsyncHTTPClient

from .errors import (
    BadLMSResponse,
    LMSUnavailable,
    LTIServiceError,
    OutcomeUnknown,
    lms_message,
)
from .retry import (
    IDEMPOTENT_METHODS,
    NOT_PROCESSED_STATUSES,
    RETRY_STATUSES,
    RetryPolicy,
    parse_retry_after,
)

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
    headers: HTTPHeaders
    body: bytes
    url: str

    def json(self, what: str):
        """The body as JSON; garbage is a :class:`BadLMSResponse`, never a crash."""
        try:
            return json.loads(self.body)
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


_LINK_WORD = re.compile(r"[A-Za-z0-9._-]+", re.ASCII)


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
                # Keep the ASCII words only: Moodle writes rel=“next” with typographic
                # quotes, which arrive as UTF-8 bytes read as Latin-1 ("â\x80\x9c").
                params[name.strip().lower()] = " ".join(_LINK_WORD.findall(raw))
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
        self._client: SimpleAsyncHTTPClient | None = None
        #: Requests sent (attempts, retries included); for logs and tests.
        self.attempts = 0

    def _http(self) -> SimpleAsyncHTTPClient:
        if self._client is None:
            # Jobs bound their own concurrency; the client's limit is a backstop only,
            # with room for a few jobs at once (a request waiting for a slot times out).
            self._client = SimpleAsyncHTTPClient(
                force_instance=True, max_clients=4 * self.max_connections
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    async def _once(self, method: str, url: str, headers: dict, content: bytes | None):
        """One attempt: the answer (any status), within the timeouts."""
        self.attempts += 1
        body = bytearray()
        too_large = False

        def collect(chunk: bytes) -> None:
            # The body is counted as it arrives; an oversized one is never kept whole.
            nonlocal too_large
            if too_large or len(body) + len(chunk) > MAX_BODY:
                too_large = True
                body.clear()
                raise BadLMSResponse("oversized")  # ends the request (connection closed)
            body.extend(chunk)

        request = HTTPRequest(
            url,
            method=method,
            headers=headers,
            body=content if content is not None else (b"" if method in ("POST", "PUT") else None),
            connect_timeout=self.connect_timeout,
            request_timeout=self.request_timeout,
            follow_redirects=False,
            validate_cert=True,
            streaming_callback=collect,
        )
        try:
            response = await self._http().fetch(request, raise_error=False)
        except Exception:
            if not too_large:
                raise
            raise BadLMSResponse(
                f"The LMS's answer from {url} is larger than {MAX_BODY} bytes; Kore stopped "
                "reading it."
            ) from None
        return LMSResponse(response.code, response.headers, bytes(body), url)

    async def request(
        self,
        method: str,
        url: str,
        *,
        action: str,
        headers: dict | None = None,
        content: bytes | None = None,
        idempotent: bool | None = None,
    ) -> LMSResponse:
        """Send a request; the 2xx answer, or a :class:`LTIServiceError` saying why not.

        ``action`` says what Kore was doing, for messages ("post the score of u123").
        A write (POST, unless ``idempotent``) is never repeated once it may have reached
        the LMS: after a timeout, a dropped connection or a 500/502/504 it raises
        :class:`OutcomeUnknown`.
        """
        check_service_url(url)
        headers = dict(headers or {})
        policy = self.retry
        if idempotent is None:
            idempotent = method.upper() in IDEMPOTENT_METHODS
        last_problem = ""
        last_status = None
        for attempt in range(1, policy.attempts + 1):
            retry_after = None
            try:
                response = await self._once(method, url, headers, content)
            except (HTTPClientError, StreamClosedError, OSError) as exc:
                # No HTTP answer: a timeout (599), a refused or broken connection.
                last_status = None
                timeout = isinstance(exc, HTTPClientError) and "Timeout" in str(exc)
                if timeout:
                    last_problem = f"no answer within {self.request_timeout:g} s"
                else:
                    last_problem = f"connection failed ({type(exc).__name__}: {exc or 'no detail'})"
                # Only a connection never made is sure not to have carried the write.
                not_sent = isinstance(exc, ConnectionRefusedError) or (
                    timeout and "connecting" in str(exc)
                )
                if not idempotent and not not_sent:
                    raise self._unknown(action, last_problem, None) from None
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
                if not idempotent and response.status not in NOT_PROCESSED_STATUSES:
                    raise self._unknown(action, last_problem, response.status)
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

    @staticmethod
    def _unknown(action: str, problem: str, status: int | None) -> OutcomeUnknown:
        return OutcomeUnknown(
            f"Kore could not {action}: {problem}. The LMS may have carried it out all the "
            "same, so Kore did not send it again blindly.",
            status=status,
        )
