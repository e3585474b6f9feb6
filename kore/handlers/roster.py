"""Roster sync routes: bring the LMS's course members into the hub (LTI NRPS).

- ``POST <prefix>api/courses/<course id>/roster/sync`` (no body, or ``{}``) starts a
  roster sync: ``202 {"run_id", "url", ...}``; ``409`` while one runs.
- ``GET <prefix>api/courses/<course id>/roster/sync``: the latest roster syncs.
- ``GET <prefix>api/courses/<course id>/roster/sync/<run id>``: progress and one result
  per person (added, updated, unchanged, deactivated, skipped, failed), paged as the
  grade sync's (:mod:`.grades`), whose rules for who may do what hold here too.
"""

from ..sync.job import SyncJob
from ..sync.roster import KIND as ROSTER
from .grades import SyncRunHandler, SyncRunsHandler


class RosterSettings:
    kind = ROSTER
    noun = "roster sync"
    path = "roster/sync"
    action = "sync its roster with the LMS"


class RosterSyncRunsHandler(RosterSettings, SyncRunsHandler):
    def make_job(self, course_id: str, body, who: str) -> SyncJob:
        # The body was checked against the document: none, or {}.
        return self.manager.roster_job(course_id, who)


class RosterSyncRunHandler(RosterSettings, SyncRunHandler):
    pass


handlers = [
    (r"api/courses/([^/]+)/roster/sync", RosterSyncRunsHandler),
    (r"api/courses/([^/]+)/roster/sync/([^/]+)", RosterSyncRunHandler),
]
