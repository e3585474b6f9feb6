"""Course management's records in the course registry: backups and operations (the audit
log is Kore's, :mod:`kore.audit`).

Blocking calls like the rest of the registry; the course manager runs them through
:meth:`CourseRegistry.run`. Tables are in :mod:`kore.models` (``backups``,
``course_operations``); they have no foreign keys to ``courses``, so a
deleted course's backups and audit trail stay.

- At most one operation (backup, reset or delete) runs per course: a partial unique index on
  ``course_operations(course_id) WHERE state = 'running'`` makes a second start fail in
  the database itself, across threads and processes (:class:`OperationRunning`).
- An operation records the last step it completed; a crashed one stays "running" and
  is finished by :meth:`CourseManager.resume_unfinished`, a failed one by running it again.
  A backup a crash stopped is not resumed: a starting Kore marks it "interrupted"
  (:meth:`ManageStore.interrupt_unresumable`) and a new one can start.
"""

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from ananke_hub.courses.models import Course, Member, utcnow
from ananke_hub.courses.registry import CourseRegistry
from ananke_hub.roles import Role
from kore.models import Backup, CourseOperation, SyncDelivery, SyncResult, SyncRun

RUNNING, FINISHED, FAILED = "running", "finished", "failed"
#: A backup or import whose Kore stopped while it ran (set by the next Kore at its start).
INTERRUPTED = "interrupted"
#: Kinds a starting Kore finishes (journaled, idempotent steps); others are interrupted.
RESUMABLE_KINDS = ("reset", "delete")
STAFF_ROLES = frozenset({str(Role.INSTRUCTOR), str(Role.TEACHING_ASSISTANT)})
#: Longest message kept (operations; the audit log has its own, kore.audit).
AUDIT_MESSAGE_MAX = 2000


class OperationRunning(Exception):
    """Another reset or delete of the course is running; ``operation_id`` names it."""

    def __init__(self, course_id: str, operation_id: str):
        super().__init__(f"an operation on course {course_id} is running: {operation_id}")
        self.course_id = course_id
        self.operation_id = operation_id


@dataclass(frozen=True)
class CourseFacts:
    """What course management needs to know of a course, read in one go."""

    course_id: str
    title: str
    state: str
    settings: dict
    staff: list[str]  # instructors and TAs (active or not): they own its backups
    learners: list[str]


class ManageStore:
    def __init__(self, registry: CourseRegistry):
        self.registry = registry

    def session(self):
        return self.registry.session()

    # --- courses ------------------------------------------------------------------------

    def course(self, course_id: str) -> CourseFacts | None:
        with self.session() as session:
            course = session.get(Course, course_id)
            if course is None:
                return None
            rows = session.execute(
                select(Member.username, Member.role).where(Member.course_id == course_id)
            ).all()
            return CourseFacts(
                course_id=course.id,
                title=course.title or "",
                state=course.state,
                settings=dict(course.settings or {}),
                staff=sorted(u for u, role in rows if role in STAFF_ROLES),
                learners=sorted(u for u, role in rows if role == str(Role.LEARNER)),
            )

    def existing_courses(self, course_ids: set[str]) -> set[str]:
        if not course_ids:
            return set()
        with self.session() as session:
            return set(session.scalars(select(Course.id).where(Course.id.in_(course_ids))))

    def set_course_state(self, course_id: str, state: str) -> bool:
        """False if there is no such course (any more)."""
        with self.session() as session, session.begin():
            result = session.execute(
                update(Course)
                .where(Course.id == course_id)
                .values(state=state, updated_at=utcnow())
            )
            return result.rowcount > 0

    def replace_settings(self, course_id: str, settings: dict) -> None:
        with self.session() as session, session.begin():
            session.execute(
                update(Course)
                .where(Course.id == course_id)
                .values(settings=dict(settings), updated_at=utcnow())
            )

    def forget_learners(self, course_id: str) -> int:
        """Reset's registry step: learners, sync history and delivered scores go."""
        with self.session() as session, session.begin():
            gone = session.execute(
                delete(Member).where(
                    Member.course_id == course_id, Member.role == str(Role.LEARNER)
                )
            ).rowcount
            session.execute(delete(SyncDelivery).where(SyncDelivery.course_id == course_id))
            session.execute(delete(SyncResult).where(SyncResult.course_id == course_id))
            # Finished runs only: a running sync holds its lock and ends by itself.
            session.execute(
                delete(SyncRun).where(SyncRun.course_id == course_id, SyncRun.state != RUNNING)
            )
            return gone

    def delete_course(self, course_id: str) -> bool:
        """Delete's registry step: the course row; members and syncs go with it
        (ON DELETE CASCADE). False if it was gone already."""
        with self.session() as session, session.begin():
            # The ORM cascade too, for databases opened without SQLite's foreign keys.
            for model in (Member, SyncDelivery, SyncResult, SyncRun):
                session.execute(delete(model).where(model.course_id == course_id))
            return session.execute(delete(Course).where(Course.id == course_id)).rowcount > 0

    # --- backups ------------------------------------------------------------------------

    def add_backup(
        self,
        *,
        backup_id: str,
        course_id: str,
        title: str,
        created_by: str,
        reason: str,
        size_bytes: int,
        contents: dict,
        owners: list[str],
    ) -> Backup:
        backup = Backup(
            id=backup_id,
            course_id=course_id,
            course_title=title[:512],
            created_at=utcnow(),
            created_by=created_by[:80],
            reason=reason,
            size_bytes=size_bytes,
            contents=contents,
            owners=sorted(set(owners)),
        )
        with self.session() as session, session.begin():
            session.add(backup)
        return backup

    def backup(self, backup_id: str) -> Backup | None:
        with self.session() as session:
            return session.get(Backup, backup_id)

    def backups(self, course_id: str | None = None) -> list[Backup]:
        """Backups not deleted, newest first."""
        with self.session() as session:
            query = select(Backup).where(Backup.deleted_at.is_(None))
            if course_id is not None:
                query = query.where(Backup.course_id == course_id)
            return list(session.scalars(query.order_by(Backup.created_at.desc(), Backup.id)))

    def mark_backup_deleted(self, backup_id: str) -> bool:
        """False if it was deleted already."""
        with self.session() as session, session.begin():
            result = session.execute(
                update(Backup)
                .where(Backup.id == backup_id, Backup.deleted_at.is_(None))
                .values(deleted_at=utcnow())
            )
            return result.rowcount > 0

    # --- retention ----------------------------------------------------------------------

    def prune_sync_runs(self, older_than: datetime | None, keep: int) -> int:
        """Delete ended sync runs (and their results) older than ``older_than`` or beyond
        the ``keep`` newest of their course and kind (0: no count limit); how many went.

        A running run is never deleted, nor counted among the kept ones. Deliveries (what
        the LMS holds, one row per person and item, needed to send each score once) stay.
        """
        with self.session() as session, session.begin():
            ended = select(SyncRun.id, SyncRun.course_id, SyncRun.kind, SyncRun.started_at).where(
                SyncRun.state != RUNNING
            )
            doomed = set()
            if older_than is not None:
                doomed |= set(
                    session.scalars(
                        select(SyncRun.id).where(
                            SyncRun.state != RUNNING, SyncRun.started_at < older_than
                        )
                    )
                )
            if keep:
                seen: dict[tuple[str, str], int] = {}
                for run_id, course_id, kind, _ in session.execute(
                    ended.order_by(SyncRun.started_at.desc(), SyncRun.id)
                ):
                    n = seen[course_id, kind] = seen.get((course_id, kind), 0) + 1
                    if n > keep:
                        doomed.add(run_id)
            ids = sorted(doomed)
            for start in range(0, len(ids), 500):  # SQLite's bound-parameter limit
                chunk = ids[start : start + 500]
                session.execute(delete(SyncResult).where(SyncResult.run_id.in_(chunk)))
                session.execute(delete(SyncRun).where(SyncRun.id.in_(chunk)))
        return len(ids)

    def old_backups_of_deleted_courses(self, older_than: datetime) -> list[Backup]:
        """Backups not deleted yet, made before ``older_than``, whose course is gone."""
        with self.session() as session:
            return list(
                session.scalars(
                    select(Backup).where(
                        Backup.deleted_at.is_(None),
                        Backup.created_at < older_than,
                        Backup.course_id.not_in(select(Course.id)),
                    )
                )
            )

    # --- operations ---------------------------------------------------------------------

    def start_operation(
        self, course_id: str, kind: str, started_by: str, backup_id: str
    ) -> CourseOperation:
        """A new running operation; :class:`OperationRunning` if the course has one."""
        now = utcnow()
        operation = CourseOperation(
            id=uuid.uuid4().hex,
            course_id=course_id,
            kind=kind,
            state=RUNNING,
            step=0,
            backup_id=backup_id,
            started_by=started_by[:80],
            started_at=now,
            updated_at=now,
            message="",
        )
        try:
            with self.session() as session, session.begin():
                session.add(operation)
        except IntegrityError:
            raise OperationRunning(course_id, self._running_id(course_id)) from None
        return operation

    def _running_id(self, course_id: str) -> str:
        with self.session() as session:
            return (
                session.scalar(
                    select(CourseOperation.id).where(
                        CourseOperation.course_id == course_id, CourseOperation.state == RUNNING
                    )
                )
                or ""
            )

    def interrupt_unresumable(self, messages: dict[str, str]) -> list[CourseOperation]:
        """Mark running operations that cannot be resumed (backups, imports) as
        interrupted, with the message for their kind.

        Called by a starting Kore only: whatever is "running" then was its predecessor's.
        """
        now = utcnow()
        with self.session() as session, session.begin():
            operations = list(
                session.scalars(
                    select(CourseOperation).where(
                        CourseOperation.state == RUNNING,
                        CourseOperation.kind.not_in(RESUMABLE_KINDS),
                    )
                )
            )
            for operation in operations:
                operation.state = INTERRUPTED
                operation.message = messages.get(operation.kind, "Kore stopped while it ran.")
                operation.updated_at = now
                operation.finished_at = now
        return operations

    def reopen_operation(self, operation_id: str) -> CourseOperation:
        """A failed operation running again (from its next step)."""
        try:
            with self.session() as session, session.begin():
                operation = session.get(CourseOperation, operation_id)
                if operation.state == FAILED:
                    operation.state = RUNNING
                    operation.updated_at = utcnow()
                    operation.message = ""
        except IntegrityError:
            raise OperationRunning(
                operation.course_id, self._running_id(operation.course_id)
            ) from None
        return operation

    def step_done(self, operation_id: str, step: int) -> None:
        with self.session() as session, session.begin():
            session.execute(
                update(CourseOperation)
                .where(CourseOperation.id == operation_id)
                .values(step=step, updated_at=utcnow())
            )

    def end_operation(
        self, operation_id: str, state: str, message: str = "", result: dict | None = None
    ) -> CourseOperation:
        now = utcnow()
        with self.session() as session, session.begin():
            operation = session.get(CourseOperation, operation_id)
            operation.state = state
            if result is not None:
                operation.result = result
            operation.message = message[:AUDIT_MESSAGE_MAX]
            operation.updated_at = now
            if state == FINISHED:
                operation.finished_at = now
        return operation

    def operation(self, operation_id: str) -> CourseOperation | None:
        with self.session() as session:
            return session.get(CourseOperation, operation_id)

    def operations(self, course_id: str, limit: int = 50) -> list[CourseOperation]:
        with self.session() as session:
            return list(
                session.scalars(
                    select(CourseOperation)
                    .where(CourseOperation.course_id == course_id)
                    .order_by(CourseOperation.started_at.desc(), CourseOperation.id)
                    .limit(limit)
                )
            )

    def unfinished(
        self,
        *,
        course_id: str | None = None,
        states: tuple[str, ...] = (RUNNING,),
        kinds: tuple[str, ...] = RESUMABLE_KINDS,
    ) -> list[CourseOperation]:
        """Operations of ``kinds`` in ``states``, oldest first."""
        with self.session() as session:
            query = select(CourseOperation).where(
                CourseOperation.state.in_(states), CourseOperation.kind.in_(kinds)
            )
            if course_id is not None:
                query = query.where(CourseOperation.course_id == course_id)
            return list(session.scalars(query.order_by(CourseOperation.started_at)))

    def pinned_backups(self) -> set[str]:
        """Backups of operations not finished: retention never prunes these."""
        with self.session() as session:
            return set(
                session.scalars(
                    select(CourseOperation.backup_id).where(
                        CourseOperation.state != FINISHED,
                        CourseOperation.kind.in_(RESUMABLE_KINDS),
                    )
                )
            )

    # --- audit log ----------------------------------------------------------------------
