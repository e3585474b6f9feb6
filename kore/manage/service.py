"""The course manager: backups, reset, delete and import of courses.

Kore's handlers (:mod:`kore.handlers.manage`) decide who may act (instructors and TAs
of a course, hub admins); the manager does the work, from ids only. Every path comes
from :class:`~ananke_hub.courses.layout.CourseLayout` and the state directory; the file
work is in :mod:`ananke_hub.fsutil` and :mod:`.archive` (no link is ever followed), the
gradebook work in :mod:`.gradebook` (confined to the grader's home), the hub calls in
:mod:`.hubapi`, the records in :mod:`.store`, the audit log in :mod:`kore.audit`.

:class:`CourseManager` holds the settings (``c.CourseManager``) and is the one entry of
the handlers; the work is split by concern:

- :mod:`.backups` (:class:`~.backups.Backups`): making, listing, using, deleting backups,
  retention; the archive itself is written by :mod:`.backups_files`.
- :mod:`.operations` (:class:`~.operations.Operations`): the journaled engine that runs
  backups, resets, deletions and imports in the background, with reset's and delete's
  steps; their file work in :mod:`.course_files`.
- :mod:`.importer` (:class:`~.importer.Importer`): an import's checks and its audit
  events; the copying in :mod:`.importer_files`.

The blocking halves (``*_files``, :mod:`.listing`) are separate objects whose methods
refuse to run on the event loop's thread (:mod:`.threads`); the async parts hold them
only as :class:`~.threads.InThread` wrappers, whose methods are coroutines.

Backups, resets, deletions and imports run as operations in the background (:meth:`CourseManager.start`
answers at once; the handlers answer 202 and the operation's entry shows its progress),
at most one per course at a time. Reset and delete are journaled (:class:`~kore.models.CourseOperation`):
each step is idempotent and the number of the last completed step is saved after it,
so an operation interrupted by a crash or a failing step is finished by running it
again (:meth:`CourseManager.resume_unfinished` at Kore's start does it for crashed ones).

- reset: 1 backup ("before-reset") - 2 gradebook: students, their submissions, grades
  and comments go (assignments, notebooks, cells stay) - 3 course directory:
  ``submitted/``, ``autograded/``, ``feedback/`` and the recorded student uids go
  (``source/``, ``release/`` stay) - 4 exchange: ``inbound/`` and ``feedback/`` emptied
  (``outbound/`` stays) - 5 hub: learners leave ``nbgrader-<course>`` - 6 registry:
  learner members, sync history and delivered scores go.
- delete: 1 backup ("before-delete") - 2 registry: the course is "deleting" (launches
  are refused) - 3 hub: the grader's server stops and the grader account goes - 4 hub:
  groups ``nbgrader-<course>`` and ``formgrade-<course>`` go, and the hub applies the
  registry to every member (the course no longer counts: its staff lose the role
  ``staff-<course>`` at once, not at their next login) - 5 files: the grader's
  home (and systemd's ``/var/lib/grader-<course>`` link) and the course's exchange
  directory go - 6 registry: the course goes (members and syncs with it). Backups and
  audit events stay; backups remain usable by their owners.
- backup: 1 backup ("manual"). Not resumed: a starting Kore marks a backup its
  predecessor left running "interrupted" (:meth:`CourseManager.interrupt_predecessor`).
- import: 1 import (checks first, before the operation starts: 4xx as before). Not
  resumed either: interrupted like a backup; a staged copy is never put in place half.
"""

import os
from datetime import datetime
from pathlib import Path

from traitlets import Integer, TraitError, Unicode, default, validate
from traitlets.config import LoggingConfigurable

from ananke_hub.courses.layout import CourseLayout
from ananke_hub.courses.registry import CourseRegistry
from ananke_hub.paths import StateLayout
from kore.audit import AuditLog

from .backups import KORE_ACTOR, REASONS, Backups, backup_entry, may_use_backup  # noqa: F401
from .backups_files import ARCHIVE_SUFFIX, archive_path  # noqa: F401
from .course_files import STUDENT_DIRS, STUDENT_EXCHANGE_DIRS  # noqa: F401
from .hubapi import HubAdmin
from .importer import WHAT, Importer  # noqa: F401
from .importer_files import REPLACED_DIR, ImportSource  # noqa: F401
from .operations import (  # noqa: F401
    DELETE_STEPS,
    INTERRUPTED_MESSAGE,
    KINDS,
    RESET_STEPS,
    STEPS,
    Operations,
    operation_entry,
)
from .store import ManageStore


class CourseManager(LoggingConfigurable):
    """Backups, reset, delete and import of courses (``c.CourseManager``)."""

    backups_dir = Unicode(
        config=True,
        help="""Directory of course backups (one .tar.gz per backup, mode 0600, the
        directory 0700). Default: backups/ in the state directory ($ANANKE_STATE_DIR).
        Backups hold students' work and grades: keep this directory as private as the
        registry, and back it up with the rest of the state directory.""",
    )

    @default("backups_dir")
    def _default_backups_dir(self):
        return str(StateLayout.from_env().backups)

    @validate("backups_dir")
    def _absolute_backups_dir(self, proposal):
        if not os.path.isabs(proposal.value):
            raise TraitError(
                f"CourseManager.backups_dir must be an absolute path, not {proposal.value!r}."
            )
        return proposal.value

    retention = Integer(
        10,
        config=True,
        help="""Backups kept per course: when a new backup is made, the oldest beyond
        this number are deleted (backups an unfinished reset or delete still needs are
        kept). 0 keeps all backups.""",
    )

    max_backup_bytes = Integer(
        0,
        config=True,
        help="""Refuse to back up (and so to reset or delete) a course whose files are
        bigger than this many bytes, uncompressed (0: no limit). The instructor is told
        to ask the hub's administrators.""",
    )

    sync_history_days = Integer(
        180,
        config=True,
        help="""Grade and roster sync runs, with their per-person results, are kept this
        many days after they started, then deleted (a 500-student course's grade sync
        writes thousands of result rows). A running sync is never deleted. What the LMS
        holds (one row per person and item, needed to send each score exactly once) is
        kept regardless. 0 keeps them regardless of age.""",
    )

    sync_history_runs = Integer(
        50,
        config=True,
        help="""At most this many ended sync runs are kept per course and kind (grades,
        roster), the newest; older ones go with their results. 0: no limit by count.""",
    )

    deleted_course_backups_days = Integer(
        365,
        config=True,
        help="""Backups of a course that was deleted are kept this many days after they
        were made, then deleted (archive and entry; the audit log says so). Backups of
        existing courses follow CourseManager.retention instead. 0 keeps them for good.""",
    )

    @validate(
        "retention",
        "max_backup_bytes",
        "sync_history_days",
        "sync_history_runs",
        "deleted_course_backups_days",
    )
    def _non_negative(self, proposal):
        if proposal.value < 0:
            raise TraitError(
                f"CourseManager.{proposal.trait.name} must be 0 or more, not {proposal.value}."
            )
        return proposal.value

    def __init__(
        self,
        *,
        registry: CourseRegistry,
        layout: CourseLayout,
        hub: HubAdmin | None,
        audit_log: AuditLog | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.registry = registry
        self.layout = layout
        self.hub = hub
        self.store = ManageStore(registry)
        self.audit_log = audit_log or AuditLog(registry, self.log)
        self.backups = Backups(self)
        self.engine = Operations(self)
        self.importer = Importer(self)

    def archive_path(self, backup_id: str) -> Path:
        return archive_path(self.backups_dir, backup_id)

    # --- the audit log (Kore's, kore.audit) ---------------------------------------------

    async def record(
        self, actor: str, action: str, course_id: str, target: dict, outcome: str, message=""
    ) -> None:
        """Write an audit event; a registry failure is logged, never raised."""
        await self.audit_log.record(actor, action, course_id, target, outcome, message)

    async def audit(
        self, *, course_id: str | None = None, limit: int = 100, before: int | None = None
    ) -> list[dict]:
        if course_id is not None:
            course_id = self.backups._course_id(course_id)
        return await self.audit_log.events(course_id=course_id, limit=limit, before=before)

    # --- backups (.backups) -------------------------------------------------------------

    async def backup(self, course_id: str, actor: str, reason: str = "manual") -> dict:
        """Back up a course now (and wait for it); its backup entry."""
        return await self.backups.backup(course_id, actor, reason)

    async def list_backups(
        self, username: str, is_admin: bool, course_id: str | None = None, staff_course_ids=()
    ) -> list[dict]:
        return await self.backups.list_backups(username, is_admin, course_id, staff_course_ids)

    async def get_backup(
        self, backup_id: str, username: str, is_admin: bool, staff_course_ids=()
    ) -> dict:
        return await self.backups.get_backup(backup_id, username, is_admin, staff_course_ids)

    def backup_path(self, backup_id: str) -> Path:
        return self.backups.backup_path(backup_id)

    async def delete_backup(
        self, backup_id: str, actor: str, is_admin: bool, staff_course_ids=()
    ) -> None:
        await self.backups.delete_backup(backup_id, actor, is_admin, staff_course_ids)

    async def prune_history(self, now: datetime | None = None) -> dict:
        return await self.backups.prune_history(now)

    # --- operations (.operations) -------------------------------------------------------

    async def start(self, kind: str, course_id: str, actor: str) -> dict:
        """Start a backup, reset or delete in the background; its entry (see Operations)."""
        return await self.engine.start(kind, course_id, actor)

    async def reset(self, course_id: str, actor: str) -> dict:
        return await self.engine.reset(course_id, actor)

    async def delete(self, course_id: str, actor: str) -> dict:
        return await self.engine.delete(course_id, actor)

    async def operation(self, course_id: str, operation_id: str) -> dict:
        return await self.engine.operation(course_id, operation_id)

    async def operations(self, course_id: str, limit: int = 50) -> list[dict]:
        return await self.engine.operations(course_id, limit)

    async def interrupt_predecessor(self) -> list[str]:
        return await self.engine.interrupt_predecessor()

    async def resume_unfinished(self) -> list[dict]:
        return await self.engine.resume_unfinished()

    async def aclose(self) -> None:
        await self.engine.aclose()

    # --- imports (.importer) ------------------------------------------------------------

    async def sources(self, source) -> dict:
        return await self.importer.sources(source)

    async def import_into(self, target_course_id: str, source, what: str, **options) -> dict:
        """Import and wait for it; the result (see :meth:`.importer.Importer.import_into`)."""
        return await self.importer.import_into(target_course_id, source, what, **options)

    async def start_import(self, target_course_id: str, source, what: str, **options) -> dict:
        """Start an import in the background; its operation's entry (state "running")."""
        return await self.importer.start_import(target_course_id, source, what, **options)
