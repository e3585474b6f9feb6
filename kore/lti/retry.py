"""When to try an LMS request again, and how long to wait first.

Retried: 408, 429 and the 5xx that mean "try later" (500, 502, 503, 504), timeouts and
connection errors, for reads and other idempotent requests. A write (POST: a new line
item, a score) is retried only when the LMS said it did not carry it out (408, 429,
503) or no connection was made; otherwise its outcome is unknown and the caller checks. Never retried: other 4xx (the request itself is wrong, or the LMS
refuses it: sending it again changes nothing). A 429 or 503 with ``Retry-After`` waits
as long as the LMS asks (RFC 9110 section 10.2.3), up to a limit; otherwise the wait
doubles per attempt with random jitter, so that many sync jobs retrying together do
not hit the LMS in step.
"""

import random
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
#: Answers that say the request was not carried out (RFC 9110 sections 15.5.9, 15.6.4;
#: RFC 6585 section 4): a write may be sent again after these, and only after these.
NOT_PROCESSED_STATUSES = frozenset({408, 429, 503})
#: Methods that may be repeated without changing the result (RFC 9110 section 9.2.2).
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})


@dataclass(frozen=True)
class RetryPolicy:
    #: Attempts in all, the first included.
    attempts: int = 5
    #: Seconds before the first retry; doubled per retry, up to ``max_delay``.
    base_delay: float = 0.5
    max_delay: float = 30.0
    #: The longest ``Retry-After`` honoured; a longer one waits this long.
    max_retry_after: float = 120.0

    def delay(self, retry: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number ``retry`` (1 for the first retry)."""
        if retry_after is not None:
            return max(0.0, min(retry_after, self.max_retry_after))
        cap = min(self.max_delay, self.base_delay * 2 ** (retry - 1))
        # "Equal jitter": at least half the back-off, so retries still spread out in time.
        return cap / 2 + random.uniform(0, cap / 2)  # noqa: S311 (jitter, not a secret)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delay-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None or when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))
