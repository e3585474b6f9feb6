"""Kore's running syncs: started by API requests, run as tasks on Kore's event loop.

One :class:`SyncManager` per Kore, made on first use from Kore's settings
(:func:`sync_manager`): the LMS client with its token cache and connection pool, the
hub API client for groups, the username rule of the hub's authenticator. Jobs run as
asyncio tasks (their I/O is asynchronous; gradebook reads go to threads); the manager
keeps the running ones so their live counters can be shown.
"""

import asyncio
import logging

from ananke_hub.courses.layout import CourseLayout
from ananke_hub.courses.registry import CourseRegistry
from ananke_hub.registrations import RegistrationBook, RegistrationStore
from kore.sync.store import SyncStore

from ..lti import LTIAdvantage, LTIClient
from .grades import GradeSyncJob, GradeSyncOptions
from .hub_groups import HubGroups
from .job import SyncJob
from .roster import RosterSyncJob, UsernameRule

#: The owner of Kore's runs in the registry: one Kore per registry, so a starting Kore
#: knows that every "running" run of this owner belongs to a predecessor that died.
KORE_OWNER = "kore"
INTERRUPTED_MESSAGE = (
    "Interrupted: Kore stopped while this sync ran (it was restarted or killed). What "
    "was not recorded as sent is checked at the LMS and sent by the next sync; start "
    "it now."
)


def interrupt_predecessor(registry: CourseRegistry) -> list[str]:
    """Mark the runs a previous Kore left "running" as interrupted (blocking)."""
    return SyncStore(registry).interrupt_owned(KORE_OWNER, INTERRUPTED_MESSAGE)


class SyncManager:
    def __init__(
        self,
        *,
        registry: CourseRegistry,
        layout: CourseLayout,
        lti_client: LTIClient,
        hub: HubGroups | None = None,
        username_rule: UsernameRule | None = None,
        log: logging.Logger | None = None,
    ):
        self.registry = registry
        self.layout = layout
        self.lti_client = lti_client
        self.hub = hub
        self.username_rule = username_rule or UsernameRule()
        self.log = log or logging.getLogger("kore.sync")
        self.jobs: dict[str, SyncJob] = {}
        self._tasks: set[asyncio.Task] = set()
        self._closing: set[asyncio.Task] = set()

    def grade_job(self, course_id: str, options: GradeSyncOptions, who: str) -> GradeSyncJob:
        return GradeSyncJob(
            course_id,
            options,
            registry=self.registry,
            layout=self.layout,
            lti_client=self.lti_client,
            who=who,
            log=self.log,
        )

    def roster_job(self, course_id: str, who: str) -> RosterSyncJob:
        return RosterSyncJob(
            course_id,
            registry=self.registry,
            layout=self.layout,
            lti_client=self.lti_client,
            hub=self.hub,
            username_rule=self.username_rule,
            who=who,
            log=self.log,
        )

    async def start(self, job: SyncJob) -> SyncJob:
        """Record the run (SyncAlreadyRunning if one runs) and start it in the background."""
        job.owner = KORE_OWNER
        run_id = await job.begin()
        self.jobs[run_id] = job
        task = asyncio.create_task(job.run(), name=f"sync-{run_id}")
        self._tasks.add(task)

        def done(task: asyncio.Task):
            self._tasks.discard(task)
            self.jobs.pop(run_id, None)
            if not task.cancelled() and task.exception() is not None:
                self.log.error("%s ended with an error", job.log_prefix, exc_info=task.exception())
            self._close_idle_connections()

        task.add_done_callback(done)
        return job

    async def run(self, job: SyncJob) -> dict:
        """Record the run (SyncAlreadyRunning if one runs) and run it to its end here."""
        run_id = await job.begin()
        self.jobs[run_id] = job
        try:
            return await job.run()
        finally:
            self.jobs.pop(run_id, None)
            self._close_idle_connections()

    def _close_idle_connections(self) -> None:
        """The LMS's kept-alive connections are closed when no sync runs any more (the
        next sync opens new ones): an idle Kore holds no sockets to the LMS."""
        if self.jobs:
            return
        task = asyncio.ensure_future(self.lti_client.transport.close_if_idle())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def live(self, run_id: str) -> dict | None:
        job = self.jobs.get(run_id)
        return job.snapshot() if job else None

    async def wait(self) -> None:
        """Until every running job ended (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self.wait()
        await self.lti_client.aclose()


def sync_manager(settings: dict) -> SyncManager:
    """Kore's manager, made from its tornado settings on first use."""
    manager = settings.get("sync_manager")
    if manager is None:
        kore = settings["kore"]
        # Kore built it at start (a bad value stops Kore there); tests may leave it out.
        lti_settings = settings.get("lti_settings") or LTIAdvantage(parent=kore)
        hub_auth = settings["hub_auth"]
        hub = (
            HubGroups(api_url=hub_auth.api_url, token=hub_auth.api_token)
            if hub_auth.api_token
            else None
        )
        rule = UsernameRule.from_config(kore.config)
        manager = SyncManager(
            registry=settings["course_registry"],
            layout=settings["course_layout"],
            lti_client=LTIClient(
                registration=settings["lms_registration"],
                key_store=settings["key_store"],
                settings=lti_settings,
                # Each course's syncs use its own registration (registrations.py).
                registrations=RegistrationBook(
                    RegistrationStore(
                        settings["course_registry"], settings["lms_registration"], rule.prefix
                    )
                ),
            ),
            hub=hub,
            username_rule=rule,
            log=settings["kore_log"],
        )
        settings["sync_manager"] = manager
    return manager
