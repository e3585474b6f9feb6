"""What every LMS sync job shares: its run record, its counters, writing results.

A job is started by a request (Kore's API or the CLI): :meth:`SyncJob.begin` records
the run and takes the course's lock for its kind (a second sync of the same kind is
refused with :class:`SyncAlreadyRunning`); :meth:`SyncJob.run` does the work and
always ends the run record. Results are kept in memory and written to the registry in
batches (every second, and at the end) with the counters and a heartbeat, so that
progress is readable from the registry while the job runs and a run whose process
died is recognised (:mod:`kore.sync.store`).
"""

import asyncio
import logging
import time
from collections.abc import Callable
from functools import partial

from sqlalchemy.exc import SQLAlchemyError

from ananke_hub.courses.registry import CourseRegistry
from kore.sync.store import (
    FAILED,
    FINISHED,
    HEARTBEAT_INTERVAL,
    RUNNING,
    DeliveryRecord,
    ResultRecord,
    RunProgress,
    SyncAlreadyRunning,
    SyncStore,
    UnknownCourse,
)

from ..lti import LTIServiceError
from .gradebook import GradebookUnreadable

__all__ = ["SyncAlreadyRunning", "SyncFailed", "SyncJob", "UnknownCourse"]

#: Statuses that count as failed: "unknown" too (no answer, so not confirmed at the LMS;
#: the next sync checks and sends what is missing).
FAILED_STATUSES = frozenset({"failed", "unknown"})


class SyncFailed(Exception):
    """The job cannot do its work at all; the message says why and what to do."""


class SyncJob:
    """One sync of one course; subclasses implement :meth:`work`."""

    kind = ""

    def __init__(
        self,
        course_id: str,
        *,
        registry: CourseRegistry,
        who: str = "",
        options: dict | None = None,
        listener: Callable[["SyncJob"], None] | None = None,
        log: logging.Logger | None = None,
        flush_interval: float = 1.0,
        owner: str = "",
    ):
        self.course_id = course_id
        self.registry = registry
        self.store = SyncStore(registry)
        self.who = who
        self.options = options or {}
        self.listener = listener
        self.log = log or logging.getLogger("kore.sync")
        self.flush_interval = flush_interval
        self.owner = owner
        self.run_id = ""
        self.state = RUNNING
        self.message = ""
        self.progress = RunProgress()
        self._results: list[ResultRecord] = []
        self._deliveries: list[DeliveryRecord] = []
        self._settled: list[tuple[str, str]] = []
        self._flush_lock = asyncio.Lock()
        self._last_flush = 0.0

    @property
    def log_prefix(self) -> str:
        return f"course:{self.course_id} {self.kind} sync {self.run_id[:8]}"

    # --- the run record -----------------------------------------------------------------

    async def begin(self) -> str:
        """Record the run; its id. Raises SyncAlreadyRunning or UnknownCourse."""
        self.run_id = await self.registry.run(
            partial(
                self.store.start_run,
                self.course_id,
                self.kind,
                self.who,
                self.options,
                owner=self.owner,
            )
        )
        self.log.info("%s started by %s %s", self.log_prefix, self.who or "-", self.options)
        return self.run_id

    def snapshot(self) -> dict:
        """The live counters, as the API shows them."""
        p = self.progress
        return {
            "run_id": self.run_id,
            "state": self.state,
            "total": p.total,
            "done": p.done,
            "failed": p.failed,
            "counts": dict(p.counts),
            "message": self.message,
            "warnings": list(p.warnings),
        }

    def set_total(self, total: int) -> None:
        self.progress.total = total
        self._notify()

    def warn(self, text: str) -> None:
        if text not in self.progress.warnings:
            self.progress.warnings.append(text)
            self.log.warning("%s: %s", self.log_prefix, text)

    def record(
        self,
        result: ResultRecord,
        delivery: DeliveryRecord | None = None,
        *,
        settled: bool = False,
    ) -> None:
        """Count a result; ``delivery``: what the LMS accepted; ``settled``: the score's
        intent is done without a delivery (refused for good)."""
        p = self.progress
        p.done += 1
        p.counts[result.status] = p.counts.get(result.status, 0) + 1
        if result.status in FAILED_STATUSES:
            p.failed += 1
        self._results.append(result)
        if delivery is not None:
            self._deliveries.append(delivery)
        elif settled:
            self._settled.append((result.username, result.item_key))
        self._notify()

    def _notify(self) -> None:
        if self.listener is not None:
            self.listener(self)

    async def flush(self, *, finish: str | None = None, message: str | None = None) -> None:
        """Write pending results, deliveries and counters (and the end of the run)."""
        async with self._flush_lock:
            results, self._results = self._results, []
            deliveries, self._deliveries = self._deliveries, []
            settled, self._settled = self._settled, []
            try:
                await self.registry.run(
                    partial(
                        self.store.save,
                        self.run_id,
                        self.course_id,
                        self.kind,
                        self.progress,
                        results,
                        deliveries,
                        finish=finish,
                        message=message,
                        settled=settled,
                    )
                )
            except SQLAlchemyError as exc:
                # Kept for the next write; what is never written is checked at the LMS
                # (its intent stays) and sent again only if missing.
                self._results[:0] = results
                self._deliveries[:0] = deliveries
                self._settled[:0] = settled
                self.log.error("%s: cannot write to the course registry: %s", self.log_prefix, exc)
                if finish:
                    raise
            self._last_flush = time.monotonic()

    async def _flusher(self) -> None:
        heartbeat = HEARTBEAT_INTERVAL.total_seconds() / 2
        while True:
            await asyncio.sleep(self.flush_interval)
            if self._results or self._deliveries or time.monotonic() - self._last_flush > heartbeat:
                await self.flush()

    # --- running ------------------------------------------------------------------------

    async def run(self) -> dict:
        """Do the work; always end the run record. The final run as a dict."""
        if not self.run_id:
            await self.begin()
        flusher = asyncio.create_task(self._flusher())
        message = ""
        try:
            await self.work()
        except (SyncFailed, LTIServiceError, GradebookUnreadable) as exc:
            message = str(exc)
        except asyncio.CancelledError:
            message = "Stopped before it finished (Kore is shutting down); sync again."
            raise
        except Exception:
            self.log.exception("%s failed", self.log_prefix)
            message = (
                "The sync failed unexpectedly; the hub admin finds why in Kore's log. "
                "What was sent is recorded; sync again to send the rest."
            )
        finally:
            flusher.cancel()
            self.state = FAILED if (message or self.progress.failed) else FINISHED
            self.message = message
            try:
                await self.flush(finish=self.state, message=message)
            except Exception as exc:  # the registry is gone (shutdown) or failing
                # The run shows as interrupted once its heartbeat is old; what was sent
                # and not recorded is sent again by the next sync.
                self.log.error("%s: its end could not be recorded: %s", self.log_prefix, exc)
            self.log.info(
                "%s %s: %s%s",
                self.log_prefix,
                self.state,
                ", ".join(f"{n} {s}" for s, n in sorted(self.progress.counts.items())) or "nothing",
                f" ({message})" if message else "",
            )
            self._notify()
        return self.snapshot()

    async def work(self) -> None:
        raise NotImplementedError
