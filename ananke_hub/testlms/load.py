"""The platform under load, for tests and benchmarks: slower answers the more requests
are in flight, 429 beyond a limit, and counters of what the tool did.

A real LMS (PHP workers behind a web server) answers slower when more requests arrive
at once and refuses some when its workers are all busy. Set with ``--load-delay`` and
``--load-limit`` at start, or ``POST /_test/load`` (test API); read with
``GET /_test/load``. Applies to the token endpoint, AGS and NRPS; the counters also
tell how many TCP connections carried those requests (keep-alive reuse).
"""

from dataclasses import dataclass, field

MAX_PER_REQUEST = 1.0


class LoadSettingError(ValueError):
    """A load setting the test API cannot use; the message says which field."""


@dataclass
class Load:
    #: Seconds each request waits per request in flight when it arrives (itself included).
    per_request: float = 0.0
    #: A request arriving while this many are in flight is answered 429 (0: never).
    limit: int = 0
    #: The Retry-After of those 429s, in seconds.
    retry_after: int = 1
    in_flight: int = 0
    #: The most requests in flight at once, 429s answered, requests served, and the
    #: TCP connections that carried them, since the last setting.
    peak: int = 0
    overloaded: int = 0
    served: int = 0
    connections: int = 0
    #: The connection each request came on (1: the first since the last setting), in
    #: the order they arrived: shows a connection closed and a new one opened.
    request_connections: list[int] = field(default_factory=list)
    #: The method and path of each request, in the order they arrived (as
    #: ``request_connections``).
    requests: list[tuple[str, str]] = field(default_factory=list)
    #: Counted since which setting: a kept-alive connection counts again after one.
    epoch: int = field(default=0, repr=False)

    def configure(self, doc: object) -> None:
        """Set from a JSON object; the counters start again."""
        if not isinstance(doc, dict):
            raise LoadSettingError('Send a JSON object, e.g. {"per_request": 0.002, "limit": 40}.')
        unknown = sorted(set(doc) - {"per_request", "limit", "retry_after"})
        if unknown:
            raise LoadSettingError(
                f"Unknown fields {unknown}; send per_request, limit, retry_after."
            )
        per_request = doc.get("per_request", 0.0)
        limit = doc.get("limit", 0)
        retry_after = doc.get("retry_after", 1)
        if isinstance(per_request, bool) or not isinstance(per_request, int | float):
            raise LoadSettingError(f"per_request must be a number of seconds, got {per_request!r}.")
        if not 0 <= per_request <= MAX_PER_REQUEST:
            raise LoadSettingError(
                f"per_request must be 0 to {MAX_PER_REQUEST} s, got {per_request}."
            )
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise LoadSettingError(f"limit must be a whole number, 0 or more, got {limit!r}.")
        if isinstance(retry_after, bool) or not isinstance(retry_after, int) or retry_after < 0:
            raise LoadSettingError(f"retry_after must be whole seconds, got {retry_after!r}.")
        self.per_request, self.limit, self.retry_after = float(per_request), limit, retry_after
        self.peak = self.overloaded = self.served = self.connections = 0
        self.request_connections = []
        self.requests = []
        self.epoch += 1

    def to_json(self) -> dict:
        return {
            "per_request": self.per_request,
            "limit": self.limit,
            "retry_after": self.retry_after,
            "in_flight": self.in_flight,
            "peak": self.peak,
            "overloaded": self.overloaded,
            "served": self.served,
            "connections": self.connections,
            "request_connections": list(self.request_connections),
            "requests": [list(request) for request in self.requests],
        }

    def record(self, method: str, path: str) -> None:
        self.requests.append((method, path))

    def seen(self, connection) -> None:
        """Count the TCP connection of a request once (tornado keeps one stream per
        connection across its kept-alive requests)."""
        stream = getattr(connection, "stream", None)
        if stream is None:
            return
        seen = getattr(stream, "_platform_load", None)
        if seen is None or seen[0] is not self or seen[1] != self.epoch:
            self.connections += 1
            stream._platform_load = (self, self.epoch, self.connections)
        self.request_connections.append(stream._platform_load[2])

    def arrive(self) -> float | None:
        """A request arrives: the seconds it waits, or None if it is refused (429)."""
        if self.limit and self.in_flight >= self.limit:
            self.overloaded += 1
            return None
        self.in_flight += 1
        wait = self.per_request * self.in_flight
        self.served += 1
        self.peak = max(self.peak, self.in_flight)
        return wait

    def leave(self) -> None:
        self.in_flight -= 1
