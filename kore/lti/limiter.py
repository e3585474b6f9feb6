"""How many requests Kore has in flight to the LMS: adaptive, under a ceiling.

AIMD, as TCP finds a link's speed: the limit starts moderate and doubles per round of
answers while the LMS answers as fast as it did (slow start), then grows by one per
round; it halves on a 429 or 503 (the LMS said "too many"), on a request that got no
answer, and shrinks by a quarter when the answers of a round took on average more than
``tolerance`` times those of the fastest round lately (the LMS queues requests: more
in flight only adds waiting). A ``Retry-After`` stops new requests until it has passed, not only
the one that got it. It never exceeds ``ceiling`` (``c.LTIAdvantage.concurrency``).
Not adaptive: always ``ceiling`` slots, and only the refused request waits.

A round is as many answers as the limit was when it began, about one round trip of
every request in flight. Answers to requests sent before the last decrease cannot
cause another one: a burst of 429s to one round halves the limit once.
"""

import asyncio
import time
from collections import deque
from statistics import fmean

#: Rounds whose fastest mean answer time is the latency the LMS is known to manage.
BASELINE_ROUNDS = 30


class AdaptiveLimit:
    """Slots for requests; ``acquire`` before sending, ``release`` with what happened."""

    def __init__(
        self,
        ceiling: int,
        *,
        start: int = 8,
        adaptive: bool = True,
        tolerance: float = 2.0,
        clock=time.monotonic,
    ):
        if ceiling < 1:
            raise ValueError(f"the ceiling must be 1 or more, not {ceiling}")
        self.ceiling = ceiling
        self.adaptive = adaptive
        self.tolerance = tolerance
        self.clock = clock
        self.limit = float(max(1, min(start, ceiling)) if adaptive else ceiling)
        self.in_flight = 0
        #: The most requests in flight at once so far (tests, benchmarks).
        self.peak = 0
        #: Answers that asked Kore to slow down (429, 503), requests without an answer,
        #: and the decreases they and rising latency caused.
        self.throttled = 0
        self.no_answer = 0
        self.decreases = 0
        self._slow_start = adaptive
        self._paused_until = 0.0
        self._seq = 0
        self._decreased_at = 0
        self._round: list[float] = []
        self._means: deque[float] = deque(maxlen=BASELINE_ROUNDS)
        self._waiters: deque[asyncio.Future] = deque()

    @property
    def current(self) -> int:
        return max(1, int(self.limit))

    async def acquire(self) -> int:
        """Wait for a slot (and for a Retry-After to pass); the slot's sequence number."""
        while True:
            pause = self._paused_until - self.clock()
            if pause > 0:
                await asyncio.sleep(pause)
                continue
            if self.in_flight < self.current:
                break
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                if not waiter.done():
                    waiter.cancel()
                try:
                    self._waiters.remove(waiter)
                except ValueError:
                    pass
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        self._seq += 1
        return self._seq

    def release(
        self,
        slot: int,
        *,
        latency: float | None = None,
        throttled: bool = False,
        retry_after: float | None = None,
    ) -> None:
        """The request of ``slot`` ended: answered after ``latency`` seconds, or
        ``throttled`` (429/503; ``retry_after`` if the LMS gave one), or neither (no answer)."""
        self.in_flight -= 1
        if throttled:
            self.throttled += 1
            if retry_after and self.adaptive:
                self._paused_until = max(self._paused_until, self.clock() + retry_after)
            self._decrease(slot, 0.5)
        elif latency is None:
            self.no_answer += 1
            self._decrease(slot, 0.5)
        elif self.adaptive and slot > self._decreased_at:
            # Answers to requests sent before the last decrease belong to the old round.
            self._round.append(latency)
            if len(self._round) >= self.current:
                self._end_round(slot)
        self._wake()

    def forget(self, slot: int) -> None:
        """The request of ``slot`` ended in a way that says nothing about the LMS's load."""
        self.in_flight -= 1
        self._wake()

    def _end_round(self, slot: int) -> None:
        answers, self._round = self._round, []
        mean = fmean(answers)
        self._means.append(mean)
        if mean > self.tolerance * min(self._means):
            self._decrease(slot, 0.75)
        elif self._slow_start:
            self.limit = min(self.ceiling, self.limit * 2)
        else:
            self.limit = min(self.ceiling, self.limit + 1)

    def _decrease(self, slot: int, factor: float) -> None:
        if not self.adaptive or slot <= self._decreased_at:
            return  # sent before the last decrease: that one has answered for it
        self.limit = max(1.0, self.limit * factor)
        self._slow_start = False
        self._decreased_at = self._seq
        self._round = []
        self.decreases += 1

    def _wake(self) -> None:
        free = self.current - self.in_flight
        for waiter in list(self._waiters)[: max(0, free)]:
            if not waiter.done():
                waiter.set_result(None)
