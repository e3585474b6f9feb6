"""The course manager: backups, reset, delete and import of courses, with an audit log.

Kore's handlers (:mod:`kore.handlers.manage`) decide who may act (instructors and TAs
of a course, hub admins); the manager does the work, from ids only. Every path comes
from :class:`~ananke_hub.courses.layout.CourseLayout` and the state directory; the file
work is in :mod:`.files` and :mod:`.archive` (no link is ever followed), the gradebook
work in :mod:`.gradebook` (confined to the grader's home), the hub calls in
:mod:`.hubapi`, the records in :mod:`.store`. Blocking work runs in threads.

Backups, resets and deletions run as operations in the background (:meth:`CourseManager.start`
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
"""

import asyncio
import errno
import json
import os
import secrets
import stat
import tempfile
from collections.abc import Awaitable, Callable
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path

from traitlets import Integer, TraitError, Unicode, default, validate
from traitlets.config import LoggingConfigurable

from ananke_hub import fsutil
from ananke_hub.courses import nbgrader_setup
from ananke_hub.courses.layout import (
    CourseLayout,
    CoursePaths,
    InvalidCourseId,
    check_course_id,
    grader_username,
)
from ananke_hub.courses.models import COURSE_DELETING, utcnow
from ananke_hub.courses.provision import learner_group, staff_group
from ananke_hub.courses.registry import CourseRegistry
from ananke_hub.courses.settings import CourseSettings, SettingsError
from ananke_hub.paths import StateLayout
from kore.models import Backup, CourseOperation

from . import archive, files, gradebook
from .errors import (
    Conflict,
    InvalidRequest,
    ManageError,
    NotFound,
    TooLarge,
    Unavailable,
    audited,
)
from .hubapi import HubAdmin
from .names import (
    InvalidName,
    check_assignment_id,
    check_backup_id,
    check_notebook_name,
    is_assignment_id,
    is_notebook_name,
    new_backup_id,
)
from .store import (
    FAILED,
    FINISHED,
    RUNNING,
    CourseFacts,
    ManageStore,
    OperationRunning,
    iso,
)

MANIFEST_FORMAT = "ananke-course-backup"
MANIFEST_VERSION = 1
ARCHIVE_SUFFIX = ".tar.gz"
#: Arcname prefixes in a backup archive.
COURSE_PREFIX = "course"
EXCHANGE_PREFIX = "exchange"
GRADEBOOK_MEMBER = f"{COURSE_PREFIX}/{gradebook.GRADEBOOK_FILE}"
#: SQLite's files next to the gradebook: the archive gets a consistent copy instead.
GRADEBOOK_FILES = frozenset(
    gradebook.GRADEBOOK_FILE + suffix for suffix in ("", "-journal", "-wal", "-shm")
)
#: Where an import puts what it replaced, in the target's home.
REPLACED_DIR = ".ananke/replaced"
#: Course directories of one semester's students, removed by a reset.
STUDENT_DIRS = ("submitted", "autograded", "feedback")
#: Exchange directories emptied by a reset (outbound holds the released assignments).
STUDENT_EXCHANGE_DIRS = ("inbound", "feedback")
REASONS = ("manual", "before-reset", "before-delete")
WHAT = ("course", "assignment", "notebook")
#: The actor of work Kore does by itself (finishing operations, pruning old backups).
KORE_ACTOR = "kore"

RESET_STEPS = ("backup", "gradebook", "course files", "exchange", "hub group", "registry")
DELETE_STEPS = (
    "backup",
    "mark deleting",
    "grader account",
    "hub groups",
    "files",
    "registry",
)
STEPS = {"reset": RESET_STEPS, "delete": DELETE_STEPS, "backup": ("backup",)}
KINDS = tuple(STEPS)
INTERRUPTED_MESSAGE = "Kore stopped while this backup ran; nothing was kept. Make a new backup."


def backup_entry(backup: Backup, course_exists: bool) -> dict:
    return {
        "backup_id": backup.id,
        "course_id": backup.course_id,
        "title": backup.course_title,
        "created_at": iso(backup.created_at),
        "created_by": backup.created_by,
        "reason": backup.reason,
        "size_bytes": backup.size_bytes,
        "contents": dict(backup.contents or {}),
        "course_exists": course_exists,
    }


def operation_entry(operation: CourseOperation) -> dict:
    return {
        "operation_id": operation.id,
        "course_id": operation.course_id,
        "kind": operation.kind,
        "state": operation.state,
        "step": operation.step,
        "steps": list(STEPS.get(operation.kind, ())),
        "backup_id": operation.backup_id,
        "started_by": operation.started_by,
        "started_at": iso(operation.started_at),
        "finished_at": iso(operation.finished_at),
        "message": operation.message,
    }


def may_use_backup(
    backup: Backup | dict, username: str, is_admin: bool, staff_course_ids=()
) -> bool:
    """Admins; the backup's owners (staff when it was made, and who made it); staff of
    its course now."""
    if is_admin:
        return True
    if isinstance(backup, dict):
        course_id, owners = backup.get("course_id"), backup.get("owners", ())
    else:
        course_id, owners = backup.course_id, backup.owners or ()
    return username in owners or course_id in set(staff_course_ids)


@dataclass(frozen=True)
class ImportSource:
    """Where an import reads from: a live course or a backup archive."""

    course_id: str = ""
    backup_id: str = ""
    paths: CoursePaths | None = None
    archive: Path | None = None
    settings: dict | None = None


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
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.registry = registry
        self.layout = layout
        self.hub = hub
        self.store = ManageStore(registry)
        #: Operations this process is running (a second request for one gets Conflict).
        self._active: set[str] = set()
        self._tasks: set[asyncio.Task] = set()

    # --- plumbing -----------------------------------------------------------------------

    async def _db(self, func, *args):
        return await self.registry.run(func, *args)

    @staticmethod
    async def _thread(func, *args):
        try:
            return await asyncio.to_thread(func, *args)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise Unavailable(
                    "The hub's disk is full. Ask the hub's administrators to free space "
                    "(old backups, for example), then try again."
                ) from exc
            raise

    def archive_path(self, backup_id: str) -> Path:
        return Path(self.backups_dir) / f"{backup_id}{ARCHIVE_SUFFIX}"

    @staticmethod
    def _course_id(course_id) -> str:
        try:
            return check_course_id(course_id)
        except (InvalidCourseId, TypeError):
            raise InvalidRequest(
                f"{str(course_id)[:80]!r} is not a course id (c- and 16 hex digits)."
            ) from None

    @staticmethod
    def _name(check, value) -> str:
        try:
            return check(value)
        except InvalidName as exc:
            raise InvalidRequest(str(exc)) from None

    async def _course(self, course_id: str) -> CourseFacts:
        facts = await self._db(self.store.course, course_id)
        if facts is None:
            raise NotFound(f"There is no course {course_id} on this hub.")
        return facts

    async def record(
        self, actor: str, action: str, course_id: str, target: dict, outcome: str, message=""
    ) -> None:
        """Write an audit event; a registry failure is logged, never raised."""
        try:
            await self._db(
                self.store.record, actor, action, course_id or "", target, outcome, message
            )
        except Exception:
            self.log.exception("audit: could not record %s %s %s", action, course_id, outcome)

    async def audit(
        self, *, course_id: str | None = None, limit: int = 100, before: int | None = None
    ) -> list[dict]:
        if course_id is not None:
            course_id = self._course_id(course_id)
        limit = max(1, min(int(limit), 1000))
        return await self._db(
            lambda: self.store.audit(course_id=course_id, limit=limit, before=before)
        )

    # --- backups ------------------------------------------------------------------------

    def _too_large(self, course_id: str, size: int | None) -> TooLarge:
        holds = f"holds {size} bytes, " if size is not None else "holds "
        return TooLarge(
            f"Course {course_id} {holds}more than the {self.max_backup_bytes} bytes a backup "
            "may have (c.CourseManager.max_backup_bytes), so it cannot be backed up, reset "
            "or deleted. Nothing was changed. Remove what the course does not need, or ask "
            "the hub's administrators to raise the limit."
        )

    def _check_size(self, paths: CoursePaths) -> None:
        """Refuse early (before a reset or delete starts) a course too big to back up."""
        if not self.max_backup_bytes:
            return
        total = 0
        for root in (paths.home, paths.exchange):
            try:
                total += files.tree_size(root)[1]
            except FileNotFoundError:
                continue
        if total > self.max_backup_bytes:
            raise self._too_large(paths.course_id, total)

    def _source_assignments(self, paths: CoursePaths) -> list[str]:
        """The assignments of a live course: real directories of source/ with valid names."""
        return sorted(self._live_listing(paths))

    @staticmethod
    def _real_entries(directory: Path) -> dict[str, int]:
        """name -> st_mode of the entries of a real directory reached without links; {}
        if there is none (or a link is in the way)."""
        try:
            fd = files.open_dir(directory)
        except (FileNotFoundError, NotADirectoryError, files.UnsafePath):
            return {}
        with files.opened(fd):
            entries = {}
            for name in os.listdir(fd):
                try:
                    entries[name] = os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode
                except FileNotFoundError:
                    continue
            return entries

    def _live_listing(self, paths: CoursePaths) -> dict[str, list[str]]:
        """assignment -> notebooks in a live course's source/ (links never followed)."""
        if not self._is_real_dir(paths.home) or not self._is_real_dir(paths.source):
            return {}
        listing = {}
        for name, mode in self._real_entries(paths.source).items():
            if stat.S_ISDIR(mode) and is_assignment_id(name):
                notebooks = [
                    nb
                    for nb, nb_mode in self._real_entries(paths.source / name).items()
                    if stat.S_ISREG(nb_mode) and is_notebook_name(nb)
                ]
                listing[name] = sorted(notebooks)
        return listing

    @staticmethod
    def _is_real_dir(path: Path) -> bool:
        try:
            return stat.S_ISDIR(os.lstat(path).st_mode)
        except FileNotFoundError:
            return False

    def _write_backup(self, facts: CourseFacts, backup_id: str, actor: str, reason: str) -> dict:
        """Write the archive of a backup; its contents (blocking).

        The grader's home goes under ``course/`` with a consistent copy of the gradebook
        in place of the live file, the course's exchange directory under ``exchange/``.
        """
        paths = self.layout.course(facts.course_id)
        path = self.archive_path(backup_id)
        # A previous attempt that stopped after writing the archive but before recording
        # it: write it again (the record decides what exists).
        files.remove_tree(path)
        home = self._is_real_dir(paths.home)
        gradebook_bytes = gradebook.snapshot(paths) if home else None
        summary = gradebook.summary_of(gradebook_bytes)
        assignments = sorted(
            set(self._source_assignments(paths)) | {a["name"] for a in summary["assignments"]}
        )
        contents = {
            "assignments": assignments,
            "students": summary["students"],
            "submissions": summary["submissions"],
        }
        trees = {}
        if home:
            trees[COURSE_PREFIX] = paths.home
        if self._is_real_dir(paths.exchange):
            trees[EXCHANGE_PREFIX] = paths.exchange
        extra = {GRADEBOOK_MEMBER: gradebook_bytes} if gradebook_bytes is not None else {}
        manifest = {
            "format": MANIFEST_FORMAT,
            "version": MANIFEST_VERSION,
            "backup_id": backup_id,
            "course_id": facts.course_id,
            "title": facts.title,
            "created_at": iso(utcnow()),
            "created_by": actor,
            "reason": reason,
            "settings": facts.settings,
            "gradebook_assignments": summary["assignments"],
            "contents": contents,
            "layout": {
                COURSE_PREFIX: "the grader's home (nbgrader's course directory)",
                EXCHANGE_PREFIX: "the course's nbgrader exchange directory",
            },
        }
        try:
            report = archive.write_archive(
                path, manifest, trees, extra, max_bytes=self.max_backup_bytes or None
            )
        except archive.ArchiveTooLarge:
            raise self._too_large(facts.course_id, None) from None
        return {
            **contents,
            "files": report.files,
            "bytes": report.bytes,
            "skipped": sorted(report.skipped),
            "archive_bytes": report.archive_bytes,
        }

    async def _make_backup(self, facts: CourseFacts, backup_id: str, actor: str, reason: str):
        """Create the backup ``backup_id`` unless it exists; its record."""
        existing = await self._db(self.store.backup, backup_id)
        if existing is not None:
            return existing
        try:
            contents = await self._thread(self._write_backup, facts, backup_id, actor, reason)
            size = contents.pop("archive_bytes")
            owners = list(facts.staff)
            if actor and ":" not in actor and actor != KORE_ACTOR:
                owners.append(actor)
            record = await self._db(
                lambda: self.store.add_backup(
                    backup_id=backup_id,
                    course_id=facts.course_id,
                    title=facts.title,
                    created_by=actor,
                    reason=reason,
                    size_bytes=size,
                    contents=contents,
                    owners=owners,
                )
            )
        except ManageError as exc:
            await self.record(
                actor,
                "backup.create",
                facts.course_id,
                {"backup_id": backup_id},
                "failed",
                str(exc),
            )
            audited(exc)
            raise
        except Exception as exc:
            self.log.exception("course:%s backup %s failed", facts.course_id, backup_id)
            await self.record(
                actor,
                "backup.create",
                facts.course_id,
                {"backup_id": backup_id},
                "failed",
                f"{type(exc).__name__} (details in Kore's log)",
            )
            raise
        self.log.info(
            "course:%s user:%s backup %s made (%s, %d bytes)",
            facts.course_id,
            actor,
            backup_id,
            reason,
            size,
        )
        await self.record(
            actor,
            "backup.create",
            facts.course_id,
            {"backup_id": backup_id, "reason": reason},
            "ok",
            f"{size} bytes",
        )
        await self._prune(facts.course_id, keep=backup_id)
        return record

    async def _prune(self, course_id: str, keep: str) -> None:
        """Retention: delete the course's oldest backups beyond ``retention``."""
        if not self.retention:
            return
        backups = await self._db(self.store.backups, course_id)
        pinned = await self._db(self.store.pinned_backups)
        for old in backups[self.retention :]:
            if old.id == keep or old.id in pinned:
                continue
            await self._remove_backup(old, KORE_ACTOR, "retention")

    async def _remove_backup(self, backup: Backup, actor: str, why: str) -> None:
        await self._thread(files.remove_tree, self.archive_path(backup.id))
        if await self._db(self.store.mark_backup_deleted, backup.id):
            self.log.info("course:%s backup %s deleted (%s)", backup.course_id, backup.id, why)
            await self.record(
                actor, "backup.delete", backup.course_id, {"backup_id": backup.id}, "ok", why
            )

    async def backup(self, course_id: str, actor: str, reason: str = "manual") -> dict:
        """Back up a course now; its backup entry."""
        course_id = self._course_id(course_id)
        if reason not in REASONS:
            raise InvalidRequest(f"A backup's reason is one of {', '.join(REASONS)}.")
        facts = await self._course(course_id)
        if facts.state == COURSE_DELETING:
            raise Conflict(
                f"Course {course_id} is being deleted; its last backup was made when the "
                "deletion started."
            )
        record = await self._make_backup(facts, new_backup_id(), actor, reason)
        return backup_entry(record, True)

    async def _entries(self, backups: list[Backup]) -> list[dict]:
        existing = await self._db(self.store.existing_courses, {b.course_id for b in backups})
        return [backup_entry(b, b.course_id in existing) for b in backups]

    async def list_backups(
        self,
        username: str,
        is_admin: bool,
        course_id: str | None = None,
        staff_course_ids=(),
    ) -> list[dict]:
        """The backups the caller may use, newest first (of one course if given).

        ``staff_course_ids``: the courses the caller teaches now (their backups are the
        caller's to use too); the handler passes them.
        """
        if course_id is not None:
            course_id = self._course_id(course_id)
        backups = await self._db(self.store.backups, course_id)
        staff = set(staff_course_ids)
        usable = [b for b in backups if may_use_backup(b, username, is_admin, staff)]
        return await self._entries(usable)

    async def _usable_backup(
        self, backup_id: str, username: str, is_admin: bool, staff_course_ids=()
    ) -> Backup:
        backup_id = self._name(check_backup_id, backup_id)
        backup = await self._db(self.store.backup, backup_id)
        if (
            backup is None
            or backup.deleted_at is not None
            or not may_use_backup(backup, username, is_admin, staff_course_ids)
        ):
            # The same answer for "none" and "not yours": ids of others' backups leak nothing.
            raise NotFound(
                f"There is no backup {backup_id} that you may use. Take the id from your "
                "list of backups."
            )
        return backup

    async def get_backup(
        self, backup_id: str, username: str, is_admin: bool, staff_course_ids=()
    ) -> dict:
        backup = await self._usable_backup(backup_id, username, is_admin, staff_course_ids)
        return (await self._entries([backup]))[0]

    def backup_path(self, backup_id: str) -> Path:
        """The archive of a backup, for download (check access with get_backup first)."""
        return self.archive_path(self._name(check_backup_id, backup_id))

    async def delete_backup(
        self, backup_id: str, actor: str, is_admin: bool, staff_course_ids=()
    ) -> None:
        backup = await self._usable_backup(backup_id, actor, is_admin, staff_course_ids)
        if backup.id in await self._db(self.store.pinned_backups):
            await self.record(
                actor,
                "backup.delete",
                backup.course_id,
                {"backup_id": backup.id},
                "refused",
                "an unfinished reset or delete needs it",
            )
            raise audited(
                Conflict(
                    f"Backup {backup.id} belongs to a reset or delete of course "
                    f"{backup.course_id} that has not finished. Finish that operation first."
                )
            )
        await self._remove_backup(backup, actor, "asked")

    # --- reset and delete ---------------------------------------------------------------

    async def reset(self, course_id: str, actor: str) -> dict:
        """Reset a course for a new semester (backup first); the operation's entry.

        Runs to its end (or to a failing step: state "failed", ``message`` says why;
        running it again goes on from there). Raises NotFound, Conflict, TooLarge.
        """
        return await self._operate(self._course_id(course_id), "reset", actor)

    async def delete(self, course_id: str, actor: str) -> dict:
        """Delete a course (backup first); the operation's entry (see :meth:`reset`)."""
        return await self._operate(self._course_id(course_id), "delete", actor)

    async def start(self, kind: str, course_id: str, actor: str) -> dict:
        """Start a backup, reset or delete in the background; its entry (state "running").

        Refusals come before anything starts: NotFound, TooLarge, and Conflict (with
        ``operation_id``, the running one's) while another operation runs on the course.
        """
        if kind not in KINDS:
            raise InvalidRequest(f"An operation is one of {', '.join(KINDS)}, not {kind!r}.")
        return await self._operate(self._course_id(course_id), kind, actor, wait=False)

    async def operation(self, course_id: str, operation_id: str) -> dict:
        """One operation of a course; NotFound for an unknown id or another course's."""
        course_id = self._course_id(course_id)
        op = await self._db(self.store.operation, str(operation_id)[:64])
        if op is None or op.course_id != course_id:
            raise NotFound(
                f"Course {course_id} has no operation {operation_id}. Take the id from the "
                "course's operations."
            )
        return operation_entry(op)

    async def interrupt_predecessor(self) -> list[str]:
        """At Kore's start, before it serves: backups the previous Kore left running died
        with it. Say so (state "interrupted") so that a new one can start; resets and
        deletions stay running and :meth:`resume_unfinished` finishes them."""
        ops = await self._db(self.store.interrupt_unresumable, INTERRUPTED_MESSAGE)
        for op in ops:
            # What it wrote lies under a temporary name (the archive is renamed only when
            # complete): remove it, the disk is not to fill up with dead halves.
            await self._thread(self._remove_partials, op.backup_id)
            self.log.warning(
                "course:%s %s %s of the previous Kore marked interrupted",
                op.course_id,
                op.kind,
                op.id,
            )
            await self.record(
                KORE_ACTOR,
                f"course.{op.kind}",
                op.course_id,
                {"operation_id": op.id, "backup_id": op.backup_id},
                "failed",
                INTERRUPTED_MESSAGE,
            )
        return [op.id for op in ops]

    async def prune_history(self, now: datetime | None = None) -> dict:
        """Retention of what grows with use: old sync runs and their results, old backups
        of deleted courses (see the settings ``sync_history_*`` and
        ``deleted_course_backups_days``). Kore runs it at its start and then daily."""
        now = now or utcnow()
        older = now - timedelta(days=self.sync_history_days) if self.sync_history_days else None
        runs = await self._db(self.store.prune_sync_runs, older, self.sync_history_runs)
        backups = 0
        if self.deleted_course_backups_days:
            cutoff = now - timedelta(days=self.deleted_course_backups_days)
            pinned = await self._db(self.store.pinned_backups)
            for old in await self._db(self.store.old_backups_of_deleted_courses, cutoff):
                if old.id not in pinned:
                    await self._remove_backup(old, KORE_ACTOR, "retention (course deleted)")
                    backups += 1
        if runs or backups:
            self.log.info(
                "retention: %d sync run(s) and %d backup(s) of deleted courses removed",
                runs,
                backups,
            )
        return {"sync_runs": runs, "backups": backups}

    def _remove_partials(self, backup_id: str) -> None:
        prefix = files.temp_name(f"{backup_id}{ARCHIVE_SUFFIX}").rsplit("-", 1)[0] + "-"
        try:
            names = os.listdir(self.backups_dir)
        except FileNotFoundError:
            return
        for name in names:
            if name.startswith(prefix):
                files.remove_tree(Path(self.backups_dir) / name)

    async def operations(self, course_id: str, limit: int = 50) -> list[dict]:
        course_id = self._course_id(course_id)
        ops = await self._db(self.store.operations, course_id, max(1, min(int(limit), 500)))
        return [operation_entry(op) for op in ops]

    def _running(self, course_id: str, kind: str, op_id: str, who: str = "") -> Conflict:
        by = f" started by {who}" if who else ""
        exc = Conflict(
            f"A {kind} of course {course_id}{by} is running (operation {op_id}). Wait for "
            "it to end, then start another."
        )
        exc.operation_id = op_id
        return exc

    async def _operate(self, course_id: str, kind: str, actor: str, wait: bool = True) -> dict:
        unfinished = await self._db(
            lambda: self.store.unfinished(
                course_id=course_id, states=(RUNNING, FAILED), kinds=KINDS
            )
        )
        for op in unfinished:
            if op.state == RUNNING:
                await self.record(
                    actor,
                    f"course.{kind}",
                    course_id,
                    {"operation_id": op.id},
                    "refused",
                    f"a {op.kind} is running",
                )
                raise audited(self._running(course_id, op.kind, op.id, op.started_by))
        again = [op for op in unfinished if op.kind == kind and kind != "backup"]
        if again:
            # Run it again: it goes on after its last completed step.
            op = again[-1]
            try:
                op = await self._db(self.store.reopen_operation, op.id)
            except OperationRunning as exc:
                raise self._running(course_id, "operation", exc.operation_id) from exc
            await self.record(
                actor,
                f"course.{kind}",
                course_id,
                {"operation_id": op.id, "backup_id": op.backup_id},
                "started",
                f"continued after step {op.step}",
            )
            return await self._launch(op, actor, wait)

        facts = await self._course(course_id)
        if facts.state == COURSE_DELETING:
            raise Conflict(
                f"Course {course_id} is being deleted. Run the deletion again to finish it."
            )
        # Refused before anything changes if the backup would be too big.
        await self._thread(self._check_size, self.layout.course(course_id))
        try:
            op = await self._db(self.store.start_operation, course_id, kind, actor, new_backup_id())
        except OperationRunning as exc:
            raise self._running(course_id, "operation", exc.operation_id) from exc
        self.log.info("course:%s user:%s %s started (%s)", course_id, actor, kind, op.id)
        await self.record(
            actor,
            f"course.{kind}",
            course_id,
            {"operation_id": op.id, "backup_id": op.backup_id},
            "started",
        )
        return await self._launch(op, actor, wait)

    async def _launch(self, op: CourseOperation, actor: str, wait: bool = True) -> dict:
        """Run the operation in its own task: a request that goes away does not stop it.

        ``wait``: the finished entry; otherwise the running one at once.
        """
        task = asyncio.create_task(self._run(op, actor), name=f"course-{op.kind}-{op.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if not wait:
            return operation_entry(op)
        return await asyncio.shield(task)

    def _steps(self, kind: str) -> list[Callable[[CourseOperation], Awaitable[None]]]:
        if kind == "backup":
            return [self._step_backup]
        if kind == "reset":
            return [
                self._step_backup,
                self._reset_gradebook,
                self._reset_course_files,
                self._reset_exchange,
                self._reset_hub_group,
                self._reset_registry,
            ]
        return [
            self._step_backup,
            self._delete_mark,
            self._delete_grader,
            self._delete_groups,
            self._delete_files,
            self._delete_registry,
        ]

    async def _run(self, op: CourseOperation, actor: str) -> dict:
        if op.id in self._active:
            raise Conflict(f"The {op.kind} of course {op.course_id} is running.")
        self._active.add(op.id)
        prefix = f"course:{op.course_id} user:{actor} {op.kind} {op.id}"
        step = op.step
        names = STEPS[op.kind]
        try:
            for number, work in enumerate(self._steps(op.kind), start=1):
                if number <= step:
                    continue
                await work(op)
                await self._db(self.store.step_done, op.id, number)
                step = number
                self.log.info("%s: step %d (%s) done", prefix, number, names[number - 1])
            op = await self._db(self.store.end_operation, op.id, FINISHED, "")
            self.log.info("%s finished", prefix)
            await self.record(
                actor,
                f"course.{op.kind}",
                op.course_id,
                {"operation_id": op.id, "backup_id": op.backup_id},
                "ok",
            )
        except Exception as exc:
            failed = step + 1
            if isinstance(exc, ManageError):
                why = exc.message
                self.log.warning("%s: step %d failed: %s", prefix, failed, why)
            else:
                why = f"an unexpected error ({type(exc).__name__}; details in Kore's log)"
                self.log.exception("%s: step %d failed", prefix, failed)
            if op.kind == "backup":
                message = f"The backup failed: {why} Nothing was kept; make a new backup."
            else:
                message = (
                    f"Step {failed} of {len(names)} ({names[failed - 1]}) failed: {why} "
                    f"Run the {op.kind} again to go on from there; the backup "
                    f"{op.backup_id} was {'made' if step >= 1 else 'not made yet'}."
                )
            op = await self._db(self.store.end_operation, op.id, FAILED, message)
            await self.record(
                actor,
                f"course.{op.kind}",
                op.course_id,
                {"operation_id": op.id, "backup_id": op.backup_id, "step": failed},
                "failed",
                message,
            )
        finally:
            self._active.discard(op.id)
        return operation_entry(op)

    async def resume_unfinished(self) -> list[dict]:
        """At Kore's start: finish the resets and deletes a crash interrupted."""
        done = []
        for op in await self._db(self.store.unfinished):
            if op.id in self._active:
                continue
            self.log.warning(
                "course:%s %s %s was interrupted after step %d: finishing it",
                op.course_id,
                op.kind,
                op.id,
                op.step,
            )
            await self.record(
                KORE_ACTOR,
                f"course.{op.kind}",
                op.course_id,
                {"operation_id": op.id, "backup_id": op.backup_id},
                "started",
                f"resumed after step {op.step} (started by {op.started_by})",
            )
            done.append(await self._launch(op, op.started_by or KORE_ACTOR))
        return done

    async def aclose(self) -> None:
        """At Kore's shutdown: stop running operations (they are resumed at the next start)."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # -- steps (each idempotent) --

    async def _step_backup(self, op: CourseOperation) -> None:
        if await self._db(self.store.backup, op.backup_id) is not None:
            return
        facts = await self._course(op.course_id)
        reason = {"backup": "manual", "reset": "before-reset"}.get(op.kind, "before-delete")
        await self._make_backup(facts, op.backup_id, op.started_by, reason)

    async def _reset_gradebook(self, op: CourseOperation) -> None:
        paths = self.layout.course(op.course_id)
        if self._is_real_dir(paths.home):
            removed = await self._thread(gradebook.remove_students, paths)
            self.log.info(
                "course:%s reset: %d students left the gradebook", op.course_id, len(removed)
            )

    def _remove_student_files(self, paths: CoursePaths) -> None:
        if not self._is_real_dir(paths.home):
            return
        for name in STUDENT_DIRS:
            files.remove_tree(paths.home / name)
        # The uids of this semester's students (collect's owner check): recorded anew.
        if self._is_real_dir(paths.home / ".ananke"):
            files.remove_tree(paths.home / nbgrader_setup.STUDENT_UIDS_FILE)

    async def _reset_course_files(self, op: CourseOperation) -> None:
        await self._thread(self._remove_student_files, self.layout.course(op.course_id))

    def _clear_exchange(self, paths: CoursePaths) -> None:
        if not self._is_real_dir(paths.exchange):
            return
        for name in STUDENT_EXCHANGE_DIRS:
            if self._is_real_dir(paths.exchange / name):
                files.clear_dir(paths.exchange / name)

    async def _reset_exchange(self, op: CourseOperation) -> None:
        await self._thread(self._clear_exchange, self.layout.course(op.course_id))

    def _hub(self) -> HubAdmin:
        if self.hub is None:
            raise Unavailable(
                "Kore has no hub API token, so it cannot change the hub's users and "
                "groups. Let the hub start Kore (it gives Kore its token)."
            )
        return self.hub

    async def _reset_hub_group(self, op: CourseOperation) -> None:
        left = await self._hub().empty_group(learner_group(op.course_id))
        self.log.info("course:%s reset: %d learners left the group", op.course_id, len(left))

    async def _reset_registry(self, op: CourseOperation) -> None:
        await self._db(self.store.forget_learners, op.course_id)

    async def _delete_mark(self, op: CourseOperation) -> None:
        await self._db(self.store.set_course_state, op.course_id, COURSE_DELETING)

    async def _delete_grader(self, op: CourseOperation) -> None:
        await self._hub().delete_user(grader_username(op.course_id))

    async def _delete_groups(self, op: CourseOperation) -> None:
        hub = self._hub()
        for group in (learner_group(op.course_id), staff_group(op.course_id)):
            await hub.delete_group(group)
        # The members are still in the registry (step 6 removes them); a course that is
        # being deleted gives nobody anything (provision.current_memberships).
        members = [m.username for m in await self._db(self.registry.members, op.course_id)]
        applied = await hub.apply_course_access(members)
        failed = [a for a in applied.values() if a.problem]
        if failed:
            raise Unavailable(
                f"The hub did not take the course's roles from {len(failed)} member(s): "
                f"{failed[0].problem}"
            )

    def _systemd_link(self, paths: CoursePaths) -> Path | None:
        """``/var/lib/<user>``: systemd's link to a dynamic user's StateDirectory
        (systemd.exec(5), "StateDirectory="), next to ``/var/lib/private``."""
        homes_root = Path(self.layout.homes_root)
        if homes_root.name != "private":
            return None
        return homes_root.parent / paths.home.name

    def _remove_course_files(self, paths: CoursePaths) -> None:
        link = self._systemd_link(paths)
        if link is not None:
            try:
                if stat.S_ISLNK(os.lstat(link).st_mode):
                    os.unlink(link)  # the link only, never what it points to
            except FileNotFoundError:
                pass
        files.remove_tree(paths.home)
        files.remove_tree(paths.exchange)

    async def _delete_files(self, op: CourseOperation) -> None:
        await self._thread(self._remove_course_files, self.layout.course(op.course_id))

    async def _delete_registry(self, op: CourseOperation) -> None:
        await self._db(self.store.delete_course, op.course_id)

    # --- import -------------------------------------------------------------------------

    async def _import_source(self, source) -> ImportSource:
        if isinstance(source, str):
            source = {"backup_id": source} if source.startswith("b-") else {"course_id": source}
        if not isinstance(source, dict) or len(source) != 1:
            raise InvalidRequest(
                'Say where to import from: {"course_id": "c-..."} or {"backup_id": "b-..."}.'
            )
        if "backup_id" in source:
            backup_id = self._name(check_backup_id, source["backup_id"])
            backup = await self._db(self.store.backup, backup_id)
            path = self.archive_path(backup_id)
            if backup is None or backup.deleted_at is not None:
                raise NotFound(f"There is no backup {backup_id}.")
            try:
                manifest = await self._thread(archive.read_manifest, path)
            except FileNotFoundError:
                raise NotFound(
                    f"The archive of backup {backup_id} is missing. Ask the hub's administrators."
                ) from None
            except (archive.BadArchive, files.UnsafePath) as exc:
                raise InvalidRequest(f"Backup {backup_id} cannot be read: {exc}") from None
            settings = manifest.get("settings") if isinstance(manifest, dict) else None
            return ImportSource(
                course_id=backup.course_id,
                backup_id=backup_id,
                archive=path,
                settings=settings if isinstance(settings, dict) else None,
            )
        if "course_id" in source:
            course_id = self._course_id(source["course_id"])
            facts = await self._course(course_id)
            if facts.state == COURSE_DELETING:
                raise NotFound(f"Course {course_id} is being deleted.")
            return ImportSource(
                course_id=course_id,
                paths=self.layout.course(course_id),
                settings=facts.settings,
            )
        raise InvalidRequest(
            'Say where to import from: {"course_id": "c-..."} or {"backup_id": "b-..."}.'
        )

    def _listing(self, src: ImportSource) -> dict[str, list[str]]:
        """assignment -> notebooks on offer in a source (blocking)."""
        if src.paths is not None:
            return self._live_listing(src.paths)
        prefix = f"{COURSE_PREFIX}/source"
        try:
            dirs = archive.list_members(src.archive, prefix, kind="dir")
            notebooks = archive.list_members(src.archive, prefix, kind="file")
        except archive.NotInArchive:
            return {}
        listing = {name: [] for name in dirs if "/" not in name and is_assignment_id(name)}
        for rel in notebooks:
            parts = rel.split("/")
            if len(parts) == 2 and parts[0] in listing and is_notebook_name(parts[1]):
                listing[parts[0]].append(parts[1])
        return {name: sorted(nbs) for name, nbs in listing.items()}

    async def sources(self, source) -> dict:
        """What a course or backup offers for import: ``{"source": {...}, "assignments":
        [{"name", "notebooks": [...]}], "settings": bool}``. ``source`` as for
        :meth:`import_into` (or a bare course or backup id)."""
        src = await self._import_source(source)
        listing = await self._thread(self._listing, src)
        where = {"backup_id": src.backup_id} if src.backup_id else {"course_id": src.course_id}
        return {
            "source": where,
            "assignments": [
                {"name": name, "notebooks": notebooks}
                for name, notebooks in sorted(listing.items())
            ],
            "settings": src.settings is not None,
        }

    def _gradebook_assignments(self, src: ImportSource) -> list[dict]:
        """The source's assignments with due dates (a backup is unpacked by now)."""
        if src.paths is None or not self._is_real_dir(src.paths.home):
            return []
        return gradebook.summary(src.paths)["assignments"]

    async def import_into(
        self,
        target_course_id: str,
        source,
        what: str,
        *,
        assignment: str | None = None,
        notebook: str | None = None,
        as_assignment: str | None = None,
        overwrite: bool = False,
        actor: str,
    ) -> dict:
        """Copy a whole course, one assignment or one notebook into a course.

        ``source``: ``{"course_id": ...}`` or ``{"backup_id": ...}`` (the handler checked
        the caller may use it). New files get the target grader's ownership; nothing in
        the source is followed (links are skipped and listed). Without ``overwrite`` an
        existing assignment or notebook is a Conflict and nothing changes; with it the
        old version is moved to ``.ananke/replaced/`` in the target's home.
        Returns ``{"imported": [...], "replaced": [...], "skipped": [...]}``
        (paths relative to the course directories).
        """
        target_id = self._course_id(target_course_id)
        if what not in WHAT:
            raise InvalidRequest(f"What to import is one of {', '.join(WHAT)}, not {what!r}.")
        if what in ("assignment", "notebook"):
            if assignment is None:
                raise InvalidRequest(f"Importing a {what} needs the assignment's name.")
            assignment = self._name(check_assignment_id, assignment)
        if what == "notebook":
            if notebook is None:
                raise InvalidRequest("Importing a notebook needs the notebook's name.")
            notebook = self._name(check_notebook_name, notebook)
        if as_assignment is not None:
            if what == "course":
                raise InvalidRequest("A whole course is imported under its own names.")
            as_assignment = self._name(check_assignment_id, as_assignment)
        if not isinstance(overwrite, bool):
            raise InvalidRequest("overwrite is true or false.")
        target_facts = await self._course(target_id)
        if target_facts.state == COURSE_DELETING:
            raise Conflict(f"Course {target_id} is being deleted.")
        src = await self._import_source(source)
        target = {
            "source": {"backup_id": src.backup_id}
            if src.backup_id
            else {"course_id": src.course_id},
            "what": what,
            "assignment": assignment,
            "notebook": notebook,
            "as_assignment": as_assignment,
            "overwrite": overwrite,
        }
        try:
            result = await self._thread(
                self._import, target_id, src, what, assignment, notebook, as_assignment, overwrite
            )
            if what == "course" and src.settings is not None:
                try:
                    settings = CourseSettings.from_dict(src.settings)
                except SettingsError as exc:
                    result["skipped"].append(f"settings ({exc})")
                else:
                    await self._db(self.store.replace_settings, target_id, settings.to_dict())
                    await self._thread(
                        nbgrader_setup.write_settings, self.layout.course(target_id), settings
                    )
                    result["imported"].append("settings")
        except ManageError as exc:
            outcome = "refused" if exc.status < 500 else "failed"
            await self.record(actor, "course.import", target_id, target, outcome, exc.message)
            audited(exc)
            raise
        except fsutil.UnsafePath as exc:
            await self.record(actor, "course.import", target_id, target, "refused", str(exc))
            raise audited(
                InvalidRequest(f"{exc} Nothing was imported into a path that leads elsewhere.")
            ) from None
        except Exception as exc:
            if _is_unsafe(exc):
                await self.record(actor, "course.import", target_id, target, "refused", str(exc))
                raise audited(
                    InvalidRequest(f"The source cannot be imported safely: {exc}")
                ) from None
            self.log.exception("course:%s user:%s import failed", target_id, actor)
            await self.record(
                actor,
                "course.import",
                target_id,
                target,
                "failed",
                f"{type(exc).__name__} (details in Kore's log)",
            )
            raise
        self.log.info(
            "course:%s user:%s imported %s from %s: %s",
            target_id,
            actor,
            what,
            target["source"],
            ", ".join(result["imported"]),
        )
        await self.record(
            actor,
            "course.import",
            target_id,
            target,
            "ok",
            json.dumps({k: len(v) for k, v in result.items()}),
        )
        return result

    # -- the file work of an import (blocking) --

    def _import(
        self,
        target_id: str,
        src: ImportSource,
        what: str,
        assignment: str | None,
        notebook: str | None,
        as_assignment: str | None,
        overwrite: bool,
    ) -> dict:
        paths = self.layout.course(target_id)
        if not self._is_real_dir(paths.home):
            raise Conflict(
                f"Course {target_id} has no course directory yet. Launch it from the LMS "
                "once, then import."
            )
        with self._unpacked(src) as src:
            return self._import_from(
                paths, src, what, assignment, notebook, as_assignment, overwrite
            )

    @contextmanager
    def _unpacked(self, src: ImportSource):
        """A backup's ``source/`` and gradebook, unpacked once into a temporary course
        directory (the archive checked as a whole on the way): an import then reads the
        gzip stream twice, not once per assignment and listing."""
        if src.paths is not None:
            yield src
            return
        with tempfile.TemporaryDirectory(prefix="ananke-import-") as tmp:
            home = Path(tmp) / "course"
            home.mkdir()
            for unpack, member, dest in (
                (archive.extract_tree, f"{COURSE_PREFIX}/source", home / "source"),
                (archive.extract_file, GRADEBOOK_MEMBER, home / gradebook.GRADEBOOK_FILE),
            ):
                try:
                    unpack(src.archive, member, dest)
                except archive.NotInArchive:
                    pass
            exchange = Path(tmp) / "exchange"
            yield replace(src, paths=CoursePaths(src.course_id, home, exchange))

    def _import_from(
        self,
        paths: CoursePaths,
        src: ImportSource,
        what: str,
        assignment: str | None,
        notebook: str | None,
        as_assignment: str | None,
        overwrite: bool,
    ) -> dict:
        listing = self._listing(src)
        if what == "course":
            chosen = {name: name for name in listing}
            if not chosen:
                raise NotFound("The source has no assignments to import.")
        else:
            if assignment not in listing:
                raise NotFound(
                    f"The source has no assignment {assignment!r}. Take the name from its contents."
                )
            if what == "notebook" and notebook not in listing[assignment]:
                raise NotFound(
                    f"Assignment {assignment!r} of the source has no notebook {notebook!r}."
                )
            chosen = {assignment: as_assignment or assignment}

        # The target's source/ and the place for replaced versions, as real directories
        # reached without links (fsutil refuses a link on the way).
        fsutil.ensure_dir_in_home(paths.home, "source", 0o755)
        result = {"imported": [], "replaced": [], "skipped": []}
        if what == "notebook":
            dest_name = chosen[assignment]
            fsutil.ensure_dir_in_home(paths.home, f"source/{dest_name}", 0o755)
            dest = paths.source / dest_name / notebook
            if _lexists(dest) and not overwrite:
                raise Conflict(
                    f"Assignment {dest_name!r} already has a notebook {notebook!r}. Import "
                    "with overwrite to replace it (the old one is kept aside)."
                )
            self._put(
                paths,
                src,
                f"source/{assignment}/{notebook}",
                dest,
                overwrite,
                result,
                is_file=True,
            )
            # The assignment is made known to the gradebook if new; an existing one
            # keeps its due date (one notebook does not bring the source's).
            self._register(paths, src, {assignment: dest_name}, result, with_dates=False)
            return result

        existing = [dest for dest in chosen.values() if _lexists(paths.source / dest)]
        if existing and not overwrite:
            raise Conflict(
                f"The course already has assignment(s) {', '.join(sorted(existing))}. Import "
                "with overwrite to replace them (the old versions are kept aside)."
            )
        for name, dest_name in sorted(chosen.items()):
            self._put(
                paths,
                src,
                f"source/{name}",
                paths.source / dest_name,
                overwrite,
                result,
                is_file=False,
            )
        self._register(paths, src, chosen, result)
        return result

    def _put(
        self,
        paths: CoursePaths,
        src: ImportSource,
        rel: str,
        dest: Path,
        overwrite: bool,
        result: dict,
        *,
        is_file: bool,
    ) -> None:
        """Copy ``rel`` of the source to ``dest`` in the target: into a staging name next
        to it, then (the old one moved aside) renamed into place."""
        owner = fsutil.home_owner(paths.home)
        staging = dest.parent / f".{dest.name[:100]}.import-{secrets.token_hex(6)}"
        try:
            # Opened component by component from the source's home (a backup's is
            # unpacked by now): a link on the way is refused (files.UnsafePath), links
            # inside are skipped.
            origin = src.paths.home / rel
            if is_file:
                files.copy_file(origin, staging, owner=owner)
                report = None
            else:
                report = files.copy_tree(origin, staging, owner=owner)
            if report is not None:
                result["skipped"].extend(f"{rel}/{s}" for s in report.skipped)
            if _lexists(dest):
                if not overwrite:  # appeared meanwhile
                    raise Conflict(
                        f"{dest.relative_to(paths.home)} appeared meanwhile; nothing replaced."
                    )
                fsutil.ensure_dir_in_home(paths.home, REPLACED_DIR, 0o755)
                aside = files.move_aside(dest, paths.home / REPLACED_DIR, owner=owner)
                result["replaced"].append(str(aside.relative_to(paths.home)))
            with files.parent_dir(dest) as (parent_fd, name, _):
                try:
                    files.rename_noreplace(parent_fd, staging.name, parent_fd, name)
                except FileExistsError:
                    raise Conflict(
                        f"{dest.relative_to(paths.home)} appeared meanwhile; nothing replaced."
                    ) from None
            result["imported"].append(str(dest.relative_to(paths.home)))
        finally:
            if _lexists(staging):
                files.remove_tree(staging)

    def _register(
        self,
        paths: CoursePaths,
        src: ImportSource,
        names: dict[str, str],
        result: dict,
        *,
        with_dates: bool = True,
    ) -> None:
        """Record the imported assignments (due dates from the source) in the gradebook."""
        if not gradebook.exists(paths):
            result["skipped"].append("gradebook (the course has none yet)")
            return
        dates = (
            {a["name"]: a.get("duedate") for a in self._gradebook_assignments(src)}
            if with_dates
            else {}
        )
        gradebook.register_assignments(
            paths,
            [{"name": dest, "duedate": dates.get(name)} for name, dest in sorted(names.items())],
        )


def _lexists(path: Path) -> bool:
    try:
        os.lstat(path)
    except FileNotFoundError:
        return False
    return True


def _is_unsafe(exc: Exception) -> bool:
    """The file helpers' refusals (a link, a special file, a bad archive member)."""
    return isinstance(exc, files.UnsafePath | archive.BadArchive)
