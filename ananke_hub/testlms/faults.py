"""Injected failures and latency for the platform's services, for tests and benchmarks.

A test (through ``POST /_test/faults``, only with ``--test-api``) adds rules; each
request to the token endpoint, AGS or NRPS takes the rules whose path prefix (and
method, if given) match it:

- ``{"delay": 0.02}``: every matching request waits 20 ms first (the benchmark's slow LMS);
- ``{"status": 500, "count": 3}``: the next 3 matching requests fail with 500;
- ``{"status": 429, "retry_after": 1, "count": 2}``: ... with 429 and ``Retry-After: 1``;
- ``{"garbage": true, "count": 1, "methods": ["GET"]}``: one answer 200 with a body that
  is not JSON. The request is not carried out, so aim garbage at reads (GET): a score
  POST answered with 200 garbage would be lost without the tool knowing.

- ``{"after": "late", "delay": 5, "count": 1, "methods": ["POST"]}``: the request is
  carried out, then answered 5 s late (a tool with a shorter timeout never learns that
  it worked);
- ``{"after": "drop", "count": 1}``: the request is carried out, then the connection
  is closed without an answer.

- ``{"status": 500, "user_id": "102", "methods": ["POST"], "path_suffix": "/scores"}``:
  only the score posts for learner 102 fail (Moodle failing on one gradebook row);
- ``{"status": 200, "body": "<html>log in</html>", "headers": {"Content-Type":
  "text/html"}}``: an answer the tool did not ask for (a login page of a proxy, a
  truncated document, a `Link` to another site); the request is not carried out, so
  aim 2xx answers at reads.

``path_prefix`` defaults to "/ags/"; "/nrps/" and "/token" are the other services;
``path_suffix`` narrows to paths that end so ("/lineitems": the container, "/scores").
``count`` left out means every matching request. A failure answers before the access
token is checked, like a proxy or an overloaded LMS would; ``body`` replaces the
platform's JSON error document.
"""

import json
from dataclasses import asdict, dataclass, field

#: What a garbage answer carries: a JSON document cut short.
GARBAGE = b'{"id": "https://lms.example/garbage", "members": [{"user_id": "3", "rol'
MAX_DELAY = 30.0


class FaultRuleError(ValueError):
    """A fault rule the test API cannot use; the message says which field."""


@dataclass
class FaultRule:
    id: int
    path_prefix: str = "/ags/"
    path_suffix: str = ""
    methods: tuple[str, ...] = ()
    #: Only requests whose JSON body's `userId` is this (one learner's score posts).
    user_id: str | None = None
    status: int | None = None
    retry_after: float | None = None
    garbage: bool = False
    delay: float = 0.0
    #: "late" or "drop": act after the request was carried out (``delay`` is then the
    #: wait before the answer, not before the work).
    after: str = ""
    #: The answer's body instead of the JSON error document, and headers to add.
    body: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    #: Requests still to affect; None for all.
    count: int | None = None
    #: Requests affected so far.
    served: int = 0

    @property
    def fails(self) -> bool:
        return self.status is not None or self.garbage or bool(self.after)

    def matches(self, method: str, path: str, body: bytes = b"") -> bool:
        return (
            path.startswith(self.path_prefix)
            and path.endswith(self.path_suffix)
            and (not self.methods or method in self.methods)
            and (self.count is None or self.count > 0)
            and (self.user_id is None or _user_id(body) == self.user_id)
        )

    def use(self) -> None:
        self.served += 1
        if self.count is not None:
            self.count -= 1

    def to_json(self) -> dict:
        return {**asdict(self), "methods": list(self.methods)}


@dataclass(frozen=True)
class FaultAction:
    """What to do to one request: wait ``delay`` seconds, then maybe answer with ``rule``."""

    delay: float
    rule: FaultRule | None


def _user_id(body: bytes) -> str | None:
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    return doc.get("userId") if isinstance(doc, dict) else None


def _number(doc: dict, name: str, minimum: float, maximum: float) -> float | None:
    value = doc.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FaultRuleError(f"{name} must be a number, got {value!r}.")
    if not minimum <= value <= maximum:
        raise FaultRuleError(f"{name} must be between {minimum} and {maximum}, got {value}.")
    return value


def parse_rule(doc: object, rule_id: int) -> FaultRule:
    if not isinstance(doc, dict):
        raise FaultRuleError('A fault rule is a JSON object, e.g. {"status": 500, "count": 3}.')
    known = {
        "path_prefix",
        "path_suffix",
        "methods",
        "user_id",
        "status",
        "retry_after",
        "garbage",
        "delay",
        "count",
        "after",
        "body",
        "headers",
    }
    unknown = sorted(set(doc) - known)
    if unknown:
        raise FaultRuleError(f"Unknown fields {unknown}; a rule has {sorted(known)}.")
    prefix = doc.get("path_prefix", "/ags/")
    if not isinstance(prefix, str) or not prefix.startswith("/"):
        raise FaultRuleError(f"path_prefix must be a path starting with /, got {prefix!r}.")
    if prefix.startswith("/_test"):
        raise FaultRuleError("The test API itself cannot be made to fail.")
    suffix = doc.get("path_suffix", "")
    if not isinstance(suffix, str):
        raise FaultRuleError(f"path_suffix must be a string, got {suffix!r}.")
    user_id = doc.get("user_id")
    if user_id is not None and (not isinstance(user_id, str) or not user_id):
        raise FaultRuleError(f"user_id must be a learner's LTI user id, got {user_id!r}.")
    body = doc.get("body")
    if body is not None and not isinstance(body, str):
        raise FaultRuleError(f"body must be a string (the answer's body), got {body!r}.")
    headers = doc.get("headers", {})
    if not isinstance(headers, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
    ):
        raise FaultRuleError(f"headers must be an object of strings, got {headers!r}.")
    methods = doc.get("methods", [])
    if not isinstance(methods, list) or not all(isinstance(m, str) for m in methods):
        raise FaultRuleError(f"methods must be a list of HTTP methods, got {methods!r}.")
    status = _number(doc, "status", 200, 599)
    if status is not None and status != int(status):
        raise FaultRuleError(f"status must be a whole number, got {status}.")
    if status is not None and status < 400 and body is None:
        raise FaultRuleError(
            "A status below 400 needs body: the answer given instead of carrying the "
            "request out."
        )
    if (body is not None or headers) and status is None:
        raise FaultRuleError("body and headers go with a status.")
    garbage = doc.get("garbage", False)
    if not isinstance(garbage, bool):
        raise FaultRuleError(f"garbage must be true or false, got {garbage!r}.")
    if status is not None and garbage:
        raise FaultRuleError("A rule answers with a status or with garbage, not both.")
    after = doc.get("after", "")
    if after not in ("", "late", "drop"):
        raise FaultRuleError(f'after must be "late" or "drop", got {after!r}.')
    if after and (status is not None or garbage):
        raise FaultRuleError("A rule with after answers nothing else (no status, no garbage).")
    if after == "late" and not doc.get("delay"):
        raise FaultRuleError('after "late" needs delay: the seconds before the answer.')
    count = _number(doc, "count", 1, 10**9)
    if count is not None and count != int(count):
        raise FaultRuleError(f"count must be a whole number, got {count}.")
    rule = FaultRule(
        id=rule_id,
        path_prefix=prefix,
        path_suffix=suffix,
        methods=tuple(m.upper() for m in methods),
        user_id=user_id,
        status=None if status is None else int(status),
        retry_after=_number(doc, "retry_after", 0, 3600),
        garbage=garbage,
        delay=_number(doc, "delay", 0, MAX_DELAY) or 0.0,
        count=None if count is None else int(count),
        after=after,
        body=body,
        headers=dict(headers),
    )
    if rule.retry_after is not None and rule.status is None:
        raise FaultRuleError("retry_after goes with a status (429 or 503).")
    if not rule.fails and not rule.delay:
        raise FaultRuleError("A rule needs status, garbage or delay (or it does nothing).")
    return rule


class Faults:
    """The rules in force, in the order they were added."""

    def __init__(self):
        self.rules: list[FaultRule] = []
        self._next_id = 1

    def add(self, doc: object) -> FaultRule:
        rule = parse_rule(doc, self._next_id)
        self._next_id += 1
        self.rules.append(rule)
        return rule

    def clear(self) -> None:
        self.rules.clear()

    def take(self, method: str, path: str, body: bytes = b"") -> FaultAction | None:
        """The fault for this request, counting it against the rules it uses."""
        matching = [rule for rule in self.rules if rule.matches(method, path, body)]
        if not matching:
            return None
        delays = [rule for rule in matching if rule.delay and not rule.after]
        failing = next((rule for rule in matching if rule.fails), None)
        for rule in {id(r): r for r in [*delays, failing] if r is not None}.values():
            rule.use()
        return FaultAction(sum(rule.delay for rule in delays), failing)
