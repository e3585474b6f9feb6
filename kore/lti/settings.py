"""How Kore talks to the LMS's LTI Advantage services: ``c.LTIAdvantage`` in 50_kore.py."""

from traitlets import Bool, Float, Integer, TraitError, validate
from traitlets.config import Configurable

from .limiter import AdaptiveLimit
from .retry import RetryPolicy


class LTIAdvantage(Configurable):
    """Limits, timeouts and retries of Kore's grade and roster syncs with the LMS."""

    concurrency = Integer(
        64,
        config=True,
        help="""The most requests Kore has in flight to the LMS at once (1 to 64), over all
        its grade and roster syncs together; also the most connections it keeps open to
        the LMS (they are reused, and closed when no sync runs or Kore stops).

        A ceiling, not a fixed number (see adaptive_concurrency): a sync
        starts with start_concurrency requests at a time, sends more while the LMS answers
        as fast as before, and fewer when it answers 429 (too many requests) or 503, or
        slower. Lower it for a small LMS server that must never see more than this many
        requests of the hub at once.""",
    )

    adaptive_concurrency = Bool(
        True,
        config=True,
        help="""Adapt the number of requests in flight to the LMS (AIMD: grow while its
        answers stay as fast, halve on 429/503 or no answer, shrink when answers slow
        down; a Retry-After holds every new request until it has passed). Off: always
        `concurrency` requests at a time.""",
    )

    start_concurrency = Integer(
        8,
        config=True,
        help="""Requests in flight when a sync starts, if adaptive_concurrency is on
        (at most `concurrency`). It doubles per round of answers as long as the LMS keeps
        up.""",
    )

    request_timeout = Float(
        30.0,
        config=True,
        help="Seconds Kore waits for one answer of the LMS before it tries again.",
    )

    connect_timeout = Float(
        10.0,
        config=True,
        help="Seconds Kore waits for a connection to the LMS before it tries again.",
    )

    max_attempts = Integer(
        5,
        config=True,
        help="""Attempts per request when the LMS does not answer, answers 429 or a 5xx
        error (the first one included). Other errors (400, 403, 404, ...) are not retried.""",
    )

    retry_delay = Float(
        0.5,
        config=True,
        help="""Seconds before the first retry; doubled for each further one (with random
        jitter), up to max_retry_delay. A Retry-After of the LMS wins.""",
    )

    max_retry_delay = Float(
        30.0,
        config=True,
        help="The longest wait between two attempts, in seconds (Retry-After up to 4 times it).",
    )

    max_pages = Integer(
        100,
        config=True,
        help="""Most pages Kore reads of a paged list (line items, roster). A roster of
        more pages is refused with an error rather than read forever.""",
    )

    abort_after = Integer(
        20,
        config=True,
        help="""A grade sync stops sending when this many scores in a row failed because
        the LMS did not answer (after all retries); the rest are reported as not sent, and
        the next sync sends them.""",
    )

    @validate("concurrency")
    def _concurrency(self, proposal):
        if not 1 <= proposal.value <= 64:
            raise TraitError(f"LTIAdvantage.concurrency must be 1 to 64, not {proposal.value}.")
        return proposal.value

    @validate("start_concurrency")
    def _start(self, proposal):
        if not 1 <= proposal.value <= 64:
            raise TraitError(
                f"LTIAdvantage.start_concurrency must be 1 to 64, not {proposal.value}."
            )
        return proposal.value

    @validate("max_attempts", "max_pages", "abort_after")
    def _at_least_one(self, proposal):
        if proposal.value < 1:
            raise TraitError(
                f"LTIAdvantage.{proposal.trait.name} must be 1 or more, not {proposal.value}."
            )
        return proposal.value

    @validate("request_timeout", "connect_timeout", "retry_delay", "max_retry_delay")
    def _positive(self, proposal):
        if proposal.value < 0 or (proposal.value == 0 and "timeout" in proposal.trait.name):
            raise TraitError(
                f"LTIAdvantage.{proposal.trait.name} must be more than 0 seconds, "
                f"not {proposal.value}."
            )
        return proposal.value

    def limiter(self) -> AdaptiveLimit:
        return AdaptiveLimit(
            self.concurrency,
            start=self.start_concurrency,
            adaptive=self.adaptive_concurrency,
        )

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(
            attempts=self.max_attempts,
            base_delay=self.retry_delay,
            max_delay=self.max_retry_delay,
            max_retry_after=4 * self.max_retry_delay,
        )
