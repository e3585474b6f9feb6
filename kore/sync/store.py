"""The course registry's record of LMS syncs: runs, per-person results, delivered scores.

Blocking calls like the rest of the registry; Kore and the CLI call them through
:meth:`CourseRegistry.run`. Tables are in :mod:`.models` (``sync_runs``,
``sync_results``, ``sync_deliveries``, ``sync_locks``).

- At most one sync of a kind runs per course, across processes (Kore and ``ananke
  grades sync`` on the hub host): :meth:`SyncStore.start_run` takes a row in
  ``sync_locks`` with one atomic upsert; a run that stopped writing its heartbeat for
  :data:`STALE_AFTER` (Kore was killed) no longer holds it.
- A score the LMS accepted is remembered per person and item (``sync_deliveries``):
  the next sync skips it while nothing changed. Before a score is sent, an intent is
  written (``sync_intents``); it goes with the delivery record in one transaction, so
  one left behind marks a score whose fate a killed process never recorded.
- A starting Kore ends its predecessor's running runs at once
  (:meth:`SyncStore.interrupt_owned`); runs of the CLI free their lock when their
  heartbeat is :data:`STALE_AFTER` old.
- The roster sync writes members here (:meth:`SyncStore.apply_roster`): who the LMS
  lists is added or updated, who it no longer lists becomes inactive; nothing is deleted.
"""

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite

from ananke_hub.courses.models import Course, Member, aware, iso, utcnow
from ananke_hub.courses.registry import CourseRegistry
from kore.models import SyncDelivery, SyncIntent, SyncLock, SyncResult, SyncRun

#: A running sync writes its heartbeat at least this often ...
HEARTBEAT_INTERVAL = timedelta(seconds=15)
#: ... and one silent for this long was interrupted (its process died).
STALE_AFTER = timedelta(seconds=120)

RUNNING, FINISHED, FAILED, INTERRUPTED = "running", "finished", "failed", "interrupted"


class SyncAlreadyRunning(Exception):
    """Another sync of the same kind runs for the course; ``run_id`` names it."""

    def __init__(self, course_id: str, kind: str, run_id: str):
        super().__init__(f"a {kind} sync of course {course_id} is running: {run_id}")
        self.course_id = course_id
        self.kind = kind
        self.run_id = run_id


class UnknownCourse(LookupError):
    pass


@dataclass(frozen=True)
class ResultRecord:
    username: str
    item_key: str
    status: str
    message: str = ""
    item_label: str = ""
    lineitem_url: str = ""
    score_given: float | None = None
    score_maximum: float | None = None
    lms_user_id: str = ""
    at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True)
class DeliveryRecord:
    username: str
    item_key: str
    lineitem_url: str
    fingerprint: str
    score_given: float | None
    score_maximum: float | None
    at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True)
class IntentRecord:
    """A score about to be sent (see :class:`~.models.SyncIntent`)."""

    username: str
    item_key: str
    lineitem_url: str
    fingerprint: str


@dataclass
class RunProgress:
    """Counters of a run, written with each batch of results."""

    total: int = 0
    done: int = 0
    failed: int = 0
    counts: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)


@dataclass(frozen=True)
class RosterEntry:
    """A person as the LMS roster lists them, with the hub user name Kore gives them."""

    username: str
    lms_user_id: str
    role: str
    active: bool = True
    given_name: str = ""
    family_name: str = ""
    email: str = ""


@dataclass(frozen=True)
class RosterChange:
    username: str
    lms_user_id: str
    role: str
    #: added, updated, unchanged, deactivated, skipped, failed
    status: str
    message: str = ""
    #: The gradebook must get this learner's current data.
    enrol: bool = False
    #: The member is active (after the change).
    active: bool = True


def run_dict(run: SyncRun, now: datetime | None = None) -> dict:
    """A run as the API and the CLI show it; a silent "running" one is "interrupted"."""
    state = run.state
    now = now or utcnow()
    if state == RUNNING and aware(run.heartbeat_at) < now - STALE_AFTER:
        state = INTERRUPTED
    return {
        "run_id": run.id,
        "course_id": run.course_id,
        "kind": run.kind,
        "state": state,
        "started_by": run.started_by,
        "started_at": iso(run.started_at),
        "finished_at": iso(run.finished_at),
        "options": run.options or {},
        "total": run.total,
        "done": run.done,
        "failed": run.failed,
        "counts": run.counts or {},
        "message": run.message or "",
        "warnings": run.warnings or [],
    }


def result_dict(result: SyncResult, name: str = "") -> dict:
    data = {
        "username": result.username,
        # The person's name as the LMS gave it, for people reading the results.
        "name": name,
        "lms_user_id": result.lms_user_id,
        "item": result.item_key,
        "label": result.item_label,
        "status": result.status,
        "message": result.message,
        "at": iso(result.at),
    }
    if result.lineitem_url:
        data["lineitem"] = result.lineitem_url
    if result.score_given is not None or result.score_maximum is not None:
        data["score_given"] = result.score_given
        data["score_maximum"] = result.score_maximum
    return data


class SyncStore:
    """The sync tables of one course registry."""

    def __init__(self, registry: CourseRegistry):
        self.registry = registry

    def _insert(self):
        return (
            postgresql.insert
            if self.registry.engine.dialect.name == "postgresql"
            else sqlite.insert
        )

    # --- runs ---------------------------------------------------------------------------

    def start_run(
        self,
        course_id: str,
        kind: str,
        started_by: str,
        options: dict,
        *,
        stale_after: timedelta = STALE_AFTER,
        owner: str = "",
    ) -> str:
        """Record a new run and take the course's lock for ``kind``; its id.

        Raises :class:`SyncAlreadyRunning` if a live run holds the lock, and
        :class:`UnknownCourse` if there is no such course.
        """
        insert = self._insert()
        run_id = uuid.uuid4().hex
        now = utcnow()
        with self.registry.session() as session, session.begin():
            if session.get(Course, course_id) is None:
                raise UnknownCourse(course_id)
            # One atomic statement: take a free lock, or a stale one; else nothing.
            taken = session.execute(
                insert(SyncLock)
                .values(course_id=course_id, kind=kind, run_id=run_id, heartbeat_at=now)
                .on_conflict_do_update(
                    index_elements=["course_id", "kind"],
                    set_={"run_id": run_id, "heartbeat_at": now},
                    where=SyncLock.heartbeat_at < now - stale_after,
                )
                .returning(SyncLock.run_id)
            ).first()
            if taken is None:
                holder = session.scalar(
                    select(SyncLock.run_id).where(
                        SyncLock.course_id == course_id, SyncLock.kind == kind
                    )
                )
                raise SyncAlreadyRunning(course_id, kind, holder or "")
            # Runs whose process died while holding the lock: say so.
            session.execute(
                update(SyncRun)
                .where(
                    SyncRun.course_id == course_id,
                    SyncRun.kind == kind,
                    SyncRun.state == RUNNING,
                )
                .values(
                    state=INTERRUPTED,
                    message="Interrupted: Kore or the command stopped while it ran. What "
                    "was not recorded as sent is sent by the next sync.",
                )
            )
            session.add(
                SyncRun(
                    id=run_id,
                    course_id=course_id,
                    kind=kind,
                    started_by=started_by[:64],
                    started_at=now,
                    heartbeat_at=now,
                    state=RUNNING,
                    options=options,
                    counts={},
                    warnings=[],
                    message="",
                    owner=owner[:128],
                )
            )
        return run_id

    def interrupt_owned(self, owner: str, message: str) -> list[str]:
        """End the running runs of ``owner`` (a process that died) and free their locks.

        Called by a starting Kore for its predecessor's runs: no new sync waits for a
        heartbeat to go stale. The ids of the runs ended.
        """
        with self.registry.session() as session, session.begin():
            run_ids = list(
                session.scalars(
                    select(SyncRun.id).where(SyncRun.owner == owner, SyncRun.state == RUNNING)
                )
            )
            if run_ids:
                session.execute(
                    update(SyncRun)
                    .where(SyncRun.id.in_(run_ids))
                    .values(state=INTERRUPTED, message=message, finished_at=utcnow())
                )
                session.execute(delete(SyncLock).where(SyncLock.run_id.in_(run_ids)))
        return run_ids

    # --- intents: scores about to be sent ----------------------------------------------

    def write_intents(self, course_id: str, run_id: str, intents: list[IntentRecord]) -> None:
        """Record, in one transaction, the scores about to be sent."""
        if not intents:
            return
        insert = self._insert()
        stmt = insert(SyncIntent)
        now = utcnow()
        with self.registry.session() as session, session.begin():
            session.execute(
                stmt.on_conflict_do_update(
                    index_elements=["course_id", "username", "item_key"],
                    set_={
                        name: stmt.excluded[name]
                        for name in ("lineitem_url", "fingerprint", "run_id", "at")
                    },
                ),
                [
                    {
                        "course_id": course_id,
                        "username": i.username,
                        "item_key": i.item_key,
                        "lineitem_url": i.lineitem_url[:1024],
                        "fingerprint": i.fingerprint,
                        "run_id": run_id,
                        "at": now,
                    }
                    for i in intents
                ],
            )

    def intents(self, course_id: str) -> dict[tuple[str, str], IntentRecord]:
        """Scores whose sending was begun and whose outcome was never recorded."""
        with self.registry.session() as session:
            rows = session.execute(
                select(
                    SyncIntent.username,
                    SyncIntent.item_key,
                    SyncIntent.lineitem_url,
                    SyncIntent.fingerprint,
                ).where(SyncIntent.course_id == course_id)
            )
            return {(u, k): IntentRecord(u, k, url, f) for u, k, url, f in rows}

    def save(
        self,
        run_id: str,
        course_id: str,
        kind: str,
        progress: RunProgress,
        results: list[ResultRecord] = (),
        deliveries: list[DeliveryRecord] = (),
        *,
        finish: str | None = None,
        message: str | None = None,
        settled: list[tuple[str, str]] = (),
    ) -> None:
        """Write a batch of results and deliveries with the counters, in one transaction.

        The intents of the delivered scores and of ``settled`` (username, item key)
        pairs (refused for good) go in the same transaction. ``finish`` ("finished" or
        "failed") ends the run and frees the course's lock.
        """
        insert = self._insert()
        now = utcnow()
        with self.registry.session() as session, session.begin():
            if results:
                session.add_all(
                    SyncResult(
                        run_id=run_id,
                        course_id=course_id,
                        username=r.username,
                        lms_user_id=r.lms_user_id[:255],
                        item_key=r.item_key[:300],
                        item_label=r.item_label[:300],
                        lineitem_url=r.lineitem_url[:1024],
                        score_given=r.score_given,
                        score_maximum=r.score_maximum,
                        status=r.status,
                        message=r.message,
                        at=r.at,
                    )
                    for r in results
                )
            if deliveries:
                # One statement for the batch (executemany), not one per score.
                stmt = insert(SyncDelivery)
                updated = ("lineitem_url", "fingerprint", "score_given", "score_maximum")
                session.execute(
                    stmt.on_conflict_do_update(
                        index_elements=["course_id", "username", "item_key"],
                        set_={
                            **{name: stmt.excluded[name] for name in updated},
                            "sent_at": stmt.excluded.sent_at,
                            "run_id": stmt.excluded.run_id,
                        },
                    ),
                    [
                        {
                            "course_id": course_id,
                            "username": d.username,
                            "item_key": d.item_key,
                            "lineitem_url": d.lineitem_url[:1024],
                            "fingerprint": d.fingerprint,
                            "score_given": d.score_given,
                            "score_maximum": d.score_maximum,
                            "sent_at": d.at,
                            "run_id": run_id,
                        }
                        for d in deliveries
                    ],
                )
            done = list(settled) + [(d.username, d.item_key) for d in deliveries]
            for start in range(0, len(done), 400):  # bounded IN lists
                session.execute(
                    delete(SyncIntent).where(
                        SyncIntent.course_id == course_id,
                        tuple_(SyncIntent.username, SyncIntent.item_key).in_(
                            done[start : start + 400]
                        ),
                    )
                )
            values = {
                "heartbeat_at": now,
                "total": progress.total,
                "done": progress.done,
                "failed": progress.failed,
                "counts": dict(progress.counts),
                "warnings": list(progress.warnings),
            }
            if message is not None:
                values["message"] = message
            if finish:
                values.update(state=finish, finished_at=now)
            session.execute(update(SyncRun).where(SyncRun.id == run_id).values(**values))
            lock = (SyncLock.course_id == course_id, SyncLock.kind == kind, SyncLock.run_id == run_id)
            if finish:
                session.execute(delete(SyncLock).where(*lock))
            else:
                session.execute(update(SyncLock).where(*lock).values(heartbeat_at=now))

    def deliveries(self, course_id: str) -> dict[tuple[str, str], str]:
        """(username, item key) -> fingerprint of what the LMS last accepted."""
        with self.registry.session() as session:
            rows = session.execute(
                select(SyncDelivery.username, SyncDelivery.item_key, SyncDelivery.fingerprint)
                .where(SyncDelivery.course_id == course_id)
            )
            return {(u, k): f for u, k, f in rows}

    # --- reading runs -------------------------------------------------------------------

    def get_run(self, course_id: str, run_id: str) -> dict | None:
        with self.registry.session() as session:
            run = session.get(SyncRun, run_id)
            if run is None or run.course_id != course_id:
                return None
            return run_dict(run)

    def runs(self, course_id: str, kind: str | None = None, limit: int = 20) -> list[dict]:
        with self.registry.session() as session:
            query = select(SyncRun).where(SyncRun.course_id == course_id)
            if kind:
                query = query.where(SyncRun.kind == kind)
            query = query.order_by(SyncRun.started_at.desc(), SyncRun.id).limit(limit)
            now = utcnow()
            return [run_dict(run, now) for run in session.scalars(query)]

    def results(
        self,
        run_id: str,
        *,
        offset: int = 0,
        limit: int | None = None,
        status: str | None = None,
    ) -> tuple[int, list[dict]]:
        """(number of matching results, one page of them) in the order they happened."""
        with self.registry.session() as session:
            where = [SyncResult.run_id == run_id]
            if status:
                where.append(SyncResult.status == status)
            count = session.scalar(select(func.count()).select_from(SyncResult).where(*where))
            member = (Member.course_id == SyncResult.course_id) & (
                Member.username == SyncResult.username
            )
            query = (
                select(SyncResult, Member.given_name, Member.family_name)
                .outerjoin(Member, member)
                .where(*where)
                .order_by(SyncResult.id)
                .offset(offset)
            )
            if limit is not None:
                query = query.limit(limit)
            return count or 0, [
                result_dict(result, " ".join(filter(None, (given, family))))
                for result, given, family in session.execute(query)
            ]

    # --- the roster ---------------------------------------------------------------------

    def apply_roster(
        self, course_id: str, entries: list[RosterEntry], *, deactivate_missing: bool
    ) -> list[RosterChange]:
        """Add or update the listed people; make active members the roster lacks inactive.

        People are matched by their LMS user id first (a member who launched keeps the
        name the launch gave them), then by user name. Names and e-mail the roster does
        not carry are kept. Nothing is deleted.
        """
        changes: list[RosterChange] = []
        with self.registry.session() as session, session.begin():
            members = list(
                session.scalars(
                    select(Member).where(Member.course_id == course_id).with_for_update()
                )
            )
            by_name = {m.username: m for m in members}
            by_lms_id = {m.lms_user_id: m for m in members if m.lms_user_id}
            listed: set[str] = set()
            for entry in entries:
                member = by_lms_id.get(entry.lms_user_id) or by_name.get(entry.username)
                if member is not None and member.lms_user_id not in ("", entry.lms_user_id):
                    changes.append(
                        RosterChange(
                            entry.username,
                            entry.lms_user_id,
                            entry.role,
                            "failed",
                            f"The hub user {entry.username} already belongs to LMS user "
                            f"{member.lms_user_id} in this course; the roster's "
                            f"{entry.lms_user_id} was not added. Check the usernames "
                            "(c.AnankeLTI13Authenticator.username_key).",
                            active=member.active,
                        )
                    )
                    continue
                if member is None:
                    if not entry.active:
                        changes.append(
                            RosterChange(
                                entry.username,
                                entry.lms_user_id,
                                entry.role,
                                "skipped",
                                "Inactive in the LMS and never in this course on the hub.",
                                active=False,
                            )
                        )
                        continue
                    member = Member(
                        course_id=course_id,
                        username=entry.username,
                        role=entry.role,
                        lms_user_id=entry.lms_user_id,
                        given_name=entry.given_name,
                        family_name=entry.family_name,
                        email=entry.email,
                        active=True,
                        in_gradebook=False,
                    )
                    session.add(member)
                    by_name[member.username] = member
                    by_lms_id[member.lms_user_id] = member
                    listed.add(member.username)
                    changes.append(
                        RosterChange(
                            member.username,
                            entry.lms_user_id,
                            entry.role,
                            "added",
                            enrol=entry.role == "learner",
                        )
                    )
                    continue
                listed.add(member.username)
                new = {
                    "role": entry.role,
                    "lms_user_id": entry.lms_user_id,
                    "given_name": entry.given_name or member.given_name,
                    "family_name": entry.family_name or member.family_name,
                    "email": entry.email or member.email,
                    "active": entry.active,
                }
                changed = {k: v for k, v in new.items() if getattr(member, k) != v}
                was_active = member.active
                for key, value in changed.items():
                    setattr(member, key, value)
                gradebook_fields = changed.keys() & {
                    "lms_user_id",
                    "given_name",
                    "family_name",
                    "email",
                    "role",
                }
                if gradebook_fields or (entry.active and not was_active):
                    member.in_gradebook = False
                if was_active and not entry.active:
                    status, message = "deactivated", "Inactive or deleted in the LMS."
                elif changed:
                    status, message = "updated", "Changed: " + ", ".join(sorted(changed)) + "."
                else:
                    status, message = "unchanged", ""
                changes.append(
                    RosterChange(
                        member.username,
                        entry.lms_user_id,
                        member.role,
                        status,
                        message,
                        enrol=member.active and member.role == "learner" and not member.in_gradebook,
                        active=member.active,
                    )
                )
            if deactivate_missing:
                for member in members:
                    if member.username not in listed and member.active:
                        member.active = False
                        changes.append(
                            RosterChange(
                                member.username,
                                member.lms_user_id,
                                member.role,
                                "deactivated",
                                "No longer in the LMS course roster.",
                                active=False,
                            )
                        )
        return changes
