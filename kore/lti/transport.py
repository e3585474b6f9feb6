"""The one way Kore sends an HTTP request to the LMS: timeouts, retries, bounded bodies.

Asynchronous (aiohttp on the running loop: Kore's, or the CLI's): the event loop never
waits on the LMS. TLS is verified against the system's CA store
(``ssl.create_default_context()``: an institution's own CA installed on the host, or a
bundle named by ``SSL_CERT_FILE``, is trusted as everywhere else on it); verification is
never turned off.

Connections are kept alive and reused (a pool of at most ``c.LTIAdvantage.concurrency``
per transport): against an https LMS a new connection per score cost a TLS handshake
each. Why aiohttp: measured here (2,000 POSTs, 16 at a time, 2 cores) its CPU per
request is 0.2 ms against tornado's simple client's 0.6 (no keep-alive) and httpx's 3.3;
a grade sync of thousands of small requests is bound by that against a fast LMS.
How many requests are in flight at once is decided by an :class:`AdaptiveLimit`.
"""

import asyncio
import json
import logging
import re
import ssl
import time
from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import urljoin, urlsplit

import aiohttp
from multidict import CIMultiDict

from .errors import (
    BadLMSResponse,
    LMSUnavailable,
    LTIServiceError,
    OutcomeUnknown,
    lms_message,
)
from .limiter import AdaptiveLimit
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
#: Seconds an idle kept-alive connection stays open: under Apache's default
#: KeepAliveTimeout (5 s), so Kore closes it before the LMS may (a write sent on a
#: connection the server is closing has an unknown outcome).
KEEPALIVE_TIMEOUT = 4.0
#: Answers that mean "too many requests" (RFC 6585 section 4, RFC 9110 section 15.6.4).
SLOW_DOWN_STATUSES = frozenset({429, 503})


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
    #: Case-insensitive, several values per name (``getall``); values as the LMS sent
    #: them, also when they are not ASCII (Moodle's AGS ``Link`` headers).
    headers: CIMultiDict
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
        for value in self.headers.getall("link", ()):
            for target, params in _parse_links(value):
                rels = params.get("rel", "").split()
                if "next" in rels:
                    # Moodle's AGS pages write their URLs HTML-escaped ("&amp;from=100"):
                    # followed as they are, Moodle would not see its own parameters.
                    return urljoin(self.url, target.replace("&amp;", "&"))
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
                # quotes.
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
        limiter: AdaptiveLimit | None = None,
    ):
        self.retry = retry or RetryPolicy()
        self.request_timeout = request_timeout
        self.connect_timeout = connect_timeout
        self.max_connections = max_connections
        self.limiter = limiter or AdaptiveLimit(max_connections, adaptive=False)
        self._session: aiohttp.ClientSession | None = None
        #: Requests sent (attempts, retries included); for logs and tests.
        self.attempts = 0
        #: Attempts that found no connection to reuse and opened one (TLS: a handshake).
        self.connections_opened = 0
        #: Attempts answered 429 or 503, and retries of any kind; for benchmarks.
        self.throttled = 0
        self.retries = 0

    async def _http(self) -> aiohttp.ClientSession:
        if self._session is not None and not self._session.closed:
            return self._session
        # Reading the CA store is file work: not in the event loop.
        context = await asyncio.to_thread(ssl.create_default_context)
        if self._session is None or self._session.closed:  # not made meanwhile
            trace = aiohttp.TraceConfig()

            async def opened(session, context, params):
                self.connections_opened += 1

            trace.on_connection_create_end.append(opened)
            connector = aiohttp.TCPConnector(
                # The pool: never more connections than requests may be in flight.
                limit=self.max_connections,
                keepalive_timeout=KEEPALIVE_TIMEOUT,
                # The system's CA store (and SSL_CERT_FILE), with host name checks.
                ssl=context,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(
                    total=self.connect_timeout + self.request_timeout,
                    sock_connect=self.connect_timeout,
                    sock_read=self.request_timeout,
                ),
                # No proxy from the environment and no cookies: as the LMS's REST API needs.
                trust_env=False,
                cookie_jar=aiohttp.DummyCookieJar(),
                trace_configs=[trace],
            )
        return self._session

    async def aclose(self) -> None:
        """Close the kept-alive connections; a later request opens new ones."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def close_if_idle(self) -> None:
        """Close the kept-alive connections unless a request is in flight."""
        if self.limiter.in_flight == 0:
            await self.aclose()

    async def _once(self, method: str, url: str, headers: dict, content: bytes | None):
        """One attempt: the answer (any status), within the timeouts."""
        self.attempts += 1
        if content is None and method in ("POST", "PUT"):
            content = b""
        session = await self._http()
        async with session.request(
            method, url, headers=headers, data=content, allow_redirects=False
        ) as response:
            length = response.content_length
            body = bytearray()
            if length is None or length <= MAX_BODY:
                # The body is counted as it arrives; an oversized one is never kept whole.
                async for chunk in response.content.iter_chunked(65536):
                    body.extend(chunk)
                    if len(body) > MAX_BODY:
                        break
            if (length is not None and length > MAX_BODY) or len(body) > MAX_BODY:
                response.close()  # the rest is not read: the connection goes
                raise BadLMSResponse(
                    f"The LMS's answer from {url} is larger than {MAX_BODY} bytes; Kore "
                    "stopped reading it."
                )
            # Not tornado's HTTPHeaders: it refuses values that are not ASCII, and
            # Moodle's Link headers have typographic quotes (rel=“next”).
            fields = CIMultiDict(response.headers)
            return LMSResponse(response.status, fields, bytes(body), url)

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
            slot = await self.limiter.acquire()
            started = time.monotonic()
            response = None
            try:
                response = await self._once(method, url, headers, content)
            except aiohttp.ClientConnectorCertificateError as exc:
                self.limiter.forget(slot)
                raise self._untrusted(url, exc) from None
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                # No HTTP answer: a timeout, a refused, broken or dropped connection.
                self.limiter.release(slot)
                last_status = None
                connecting = isinstance(exc, aiohttp.ConnectionTimeoutError)
                if connecting:
                    last_problem = f"no connection within {self.connect_timeout:g} s"
                elif isinstance(exc, TimeoutError):
                    last_problem = f"no answer within {self.request_timeout:g} s"
                else:
                    detail = str(exc) or "no detail"
                    last_problem = f"connection failed ({type(exc).__name__}: {detail})"
                # Only a connection never made is sure not to have carried the write:
                # a dropped reused connection, a reset or a read timeout may come after
                # the LMS read the request.
                not_sent = connecting or isinstance(exc, aiohttp.ClientConnectorError)
                if not idempotent and not not_sent:
                    raise self._unknown(action, last_problem, None) from None
            except BaseException:
                self.limiter.forget(slot)  # a refused body, or the job was cancelled
                raise
            else:
                slow_down = response.status in SLOW_DOWN_STATUSES
                if slow_down:
                    self.throttled += 1
                    retry_after = parse_retry_after(response.headers.get("retry-after"))
                self.limiter.release(
                    slot,
                    latency=None if slow_down else time.monotonic() - started,
                    throttled=slow_down,
                    retry_after=retry_after,
                )
            if response is not None:
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
                self.retries += 1
                await asyncio.sleep(wait)
        raise LMSUnavailable(
            f"Kore could not {action}: {last_problem}, {policy.attempts} times. The LMS may "
            "be down or overloaded; sync again later (only what is missing is sent).",
            status=last_status,
        )

    @staticmethod
    def _untrusted(url: str, exc: aiohttp.ClientConnectorCertificateError) -> LTIServiceError:
        host = urlsplit(url).hostname
        why = getattr(exc.certificate_error, "verify_message", "") or str(exc.certificate_error)
        return LTIServiceError(
            f"Kore does not trust the TLS certificate of the LMS at {host} ({why}). If the "
            "LMS's certificate is issued by your institution's own CA, install that CA in "
            "the system's CA store of the hub's host or image (update-ca-certificates), or "
            "point SSL_CERT_FILE at a CA bundle that includes it, and restart the hub. Kore "
            "never sends grades over an unverified connection."
        )

    @staticmethod
    def _unknown(action: str, problem: str, status: int | None) -> OutcomeUnknown:
        return OutcomeUnknown(
            f"Kore could not {action}: {problem}. The LMS may have carried it out all the "
            "same, so Kore did not send it again blindly.",
            status=status,
        )
