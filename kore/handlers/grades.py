"""Grade sync routes: send a course's nbgrader scores to the LMS (LTI AGS).

- ``POST <prefix>api/courses/<course id>/grades/sync`` with an optional JSON body
  ``{"missing": "zero" | "not_submitted", "resend": false}`` starts a sync and answers
  ``202 {"run_id", "url", ...}`` at once; the sync runs on in Kore. While one runs for
  the course, another is refused with ``409`` and the running one's ``run_id``.
- ``GET <prefix>api/courses/<course id>/grades/sync``: the latest runs, newest first
  (``?limit=`` up to 100).
- ``GET <prefix>api/courses/<course id>/grades/sync/<run id>``: the run's progress
  (``total``, ``done``, ``failed``, ``counts`` per status, ``state``: running, finished,
  failed, interrupted; ``message``, ``warnings``) and its results per student and item,
  paged with ``?offset=`` and ``?limit=`` (default 1000, at most 5000); ``?status=failed``
  shows only those.

Instructors and teaching assistants of the course may use them, and hub admins. Who
asks comes only from the hub; a cookie-authenticated POST needs the XSRF token (see
:mod:`kore.handlers.base`). The course and the run are ids checked against their
formats, never paths. The roster routes (:mod:`.roster`) work the same way.
"""

import re

from sqlalchemy.exc import SQLAlchemyError
from tornado import web

from kore.sync.store import SyncAlreadyRunning, SyncStore, UnknownCourse

from ..sync.grades import KIND as GRADES
from ..sync.grades import GradeSyncOptions
from ..sync.job import SyncJob
from ..sync.manager import SyncManager, sync_manager
from .base import APIHandler, ChangeRequestMixin
from .courses import CourseHandlerMixin

RUN_ID = re.compile(r"^[0-9a-f]{32}$")
DEFAULT_PAGE, MAX_PAGE, MAX_RUNS = 1000, 5000, 100
STATUSES = frozenset(
    {
        "sent",
        "unchanged",
        "skipped",
        "failed",
        "not_gradable",
        "unknown",
        "added",
        "updated",
        "deactivated",
    }
)


class SyncRoutesMixin(CourseHandlerMixin):
    """What the grade and roster routes share; ``kind``, ``noun`` and ``action`` differ."""

    kind = GRADES
    noun = "grade sync"
    path = "grades/sync"
    action = "send its grades to the LMS"

    @property
    def manager(self) -> SyncManager:
        return sync_manager(self.settings)

    @property
    def store(self) -> SyncStore:
        return SyncStore(self.registry)

    def run_url(self, course_id: str, run_id: str) -> str:
        return f"{self.settings['kore_prefix']}api/courses/{course_id}/{self.path}/{run_id}"

    def with_live_counters(self, run: dict) -> dict:
        live = self.manager.live(run["run_id"]) if run["state"] == "running" else None
        if live:
            run.update({k: live[k] for k in ("total", "done", "failed", "counts", "warnings")})
        run["url"] = self.run_url(run["course_id"], run["run_id"])
        return run

    def int_argument(self, name: str, default: int, low: int, high: int) -> int:
        raw = self.get_query_argument(name, None)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            value = None
        if value is None or not low <= value <= high:
            raise web.HTTPError(400, "?%s= must be a whole number from %d to %d.", name, low, high)
        return value

    async def store_call(self, func, *args):
        return await self._registry(func, *args)


@web.stream_request_body
class SyncRunsHandler(ChangeRequestMixin, SyncRoutesMixin, APIHandler):
    """Start a sync (POST) or list the latest ones (GET)."""

    def make_job(self, course_id: str, body, who: str) -> SyncJob:
        # The body was checked against the document's GradeSyncOptions.
        options = GradeSyncOptions.from_json(body)
        return self.manager.grade_job(course_id, options, who)

    @web.authenticated
    async def get(self, raw_course_id):
        course_id = self.checked_course_id(raw_course_id)
        await self.staff_course(course_id, self.action)
        limit = self.int_argument("limit", 20, 1, MAX_RUNS)
        runs = await self.store_call(self.store.runs, course_id, self.kind, limit)
        self.write_json(
            {"course_id": course_id, "runs": [self.with_live_counters(r) for r in runs]}
        )

    async def post(self, raw_course_id):
        self.require_user()
        course_id = self.checked_course_id(raw_course_id)
        await self.staff_course(course_id, self.action)
        user = self.hub_user["name"]
        job = self.make_job(course_id, self.json_body(), user)
        try:
            await self.manager.start(job)
        except SyncAlreadyRunning as exc:
            self.set_status(409)
            self.write_json(
                {
                    "status": 409,
                    "message": f"A {self.noun} of this course is running; wait for it to end "
                    "(see url) and start another then.",
                    "run_id": exc.run_id,
                    "url": self.run_url(course_id, exc.run_id),
                }
            )
            return
        except UnknownCourse:
            raise web.HTTPError(404, "There is no course %s on this hub.", course_id) from None
        except SQLAlchemyError as exc:
            self.log.error("course registry: %s", exc)
            raise web.HTTPError(
                503, "The course registry cannot be written right now. Try again in a minute."
            ) from exc
        url = self.run_url(course_id, job.run_id)
        self.log.info("course:%s user:%s started %s %s", course_id, user, self.noun, job.run_id)
        await self.settings["audit_log"].record(
            user, f"{self.kind}.sync", course_id, {"run_id": job.run_id}, "started"
        )
        self.set_status(202)
        self.set_header("Location", url)
        self.write_json(
            {
                "run_id": job.run_id,
                "course_id": course_id,
                "kind": self.kind,
                "state": "running",
                "options": job.options,
                "url": url,
            }
        )


class SyncRunHandler(SyncRoutesMixin, APIHandler):
    """One run: progress, then results."""

    @web.authenticated
    async def get(self, raw_course_id, raw_run_id):
        course_id = self.checked_course_id(raw_course_id)
        await self.staff_course(course_id, self.action)
        store = self.store
        run = None
        if RUN_ID.match(raw_run_id):
            run = await self.store_call(store.get_run, course_id, raw_run_id)
        if run is None or run["kind"] != self.kind:
            raise web.HTTPError(404, "There is no %s %s in this course.", self.noun, raw_run_id)
        offset = self.int_argument("offset", 0, 0, 10**9)
        limit = self.int_argument("limit", DEFAULT_PAGE, 1, MAX_PAGE)
        status = self.get_query_argument("status", None)
        if status is not None and status not in STATUSES:
            raise web.HTTPError(400, "?status= must be one of %s.", ", ".join(sorted(STATUSES)))
        count, results = await self.store_call(
            lambda: store.results(run["run_id"], offset=offset, limit=limit, status=status)
        )
        run = self.with_live_counters(run)
        run.update(results_total=count, offset=offset, limit=limit, results=results)
        self.write_json(run)


handlers = [
    (r"api/courses/([^/]+)/grades/sync", SyncRunsHandler),
    (r"api/courses/([^/]+)/grades/sync/([^/]+)", SyncRunHandler),
]
