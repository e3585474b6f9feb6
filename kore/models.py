"""Kore's tables in the course registry (SQLAlchemy 2 ORM): the LMS syncs' runs, results,
deliveries, intents and locks, and course management's backups, operations and audit log.

On the registry's declarative :class:`~ananke_hub.courses.models.Base`, so one database
holds them next to the hub's courses and members; the hub never reads them. Importing
this module registers the tables: Kore's stores import it, so the registry's
``create_all`` makes them when Kore opens the registry.
"""

from datetime import datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from ananke_hub.courses.models import Base, utcnow

# --- LMS syncs (grades through AGS, rosters through NRPS): see kore/sync/store.py -----------------


class SyncRun(Base):
    """One grade or roster sync of a course: who started it, its options, how it went."""

    __tablename__ = "sync_runs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    course_id: Mapped[str] = mapped_column(
        ForeignKey("courses.id", ondelete="CASCADE"), index=True
    )
    #: "grades" or "roster".
    kind: Mapped[str] = mapped_column(String(16))
    #: The hub user who started it, or "cli:<os user>".
    started_by: Mapped[str] = mapped_column(String(64), default="")
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    #: Written while it runs; a "running" run without one for long was interrupted.
    heartbeat_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    #: "running", "finished" (every result sent, unchanged or skipped), "failed" (some
    #: results failed, or the run could not start its work: see message).
    state: Mapped[str] = mapped_column(String(16), default="running")
    total: Mapped[int] = mapped_column(Integer, default=0)
    done: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    #: Results per status, e.g. {"sent": 40, "unchanged": 2}.
    counts: Mapped[dict] = mapped_column(JSON, default=dict)
    options: Mapped[dict] = mapped_column(JSON, default=dict)
    #: What went wrong for the whole run, or what to know (warnings), for people.
    message: Mapped[str] = mapped_column(Text, default="")
    warnings: Mapped[list] = mapped_column(JSON, default=list)
    #: Which process runs it: "kore" (a starting Kore ends its predecessor's running
    #: runs at once) or "cli:<host>:<pid>".
    owner: Mapped[str] = mapped_column(String(128), default="")


class SyncResult(Base):
    """What happened to one item of one person in one run (a score, a roster entry)."""

    __tablename__ = "sync_results"
    __table_args__ = (Index("ix_sync_results_run", "run_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("sync_runs.id", ondelete="CASCADE"))
    course_id: Mapped[str] = mapped_column(String(32))
    username: Mapped[str] = mapped_column(String(64))
    lms_user_id: Mapped[str] = mapped_column(String(255), default="")
    #: "assignment:<name>", "total" or (roster) "membership".
    item_key: Mapped[str] = mapped_column(String(300))
    item_label: Mapped[str] = mapped_column(String(300), default="")
    lineitem_url: Mapped[str] = mapped_column(String(1024), default="")
    score_given: Mapped[float | None] = mapped_column(Float, nullable=True)
    score_maximum: Mapped[float | None] = mapped_column(Float, nullable=True)
    #: grades: sent, unchanged, skipped, not_gradable (the LMS refuses to grade the
    #: person), unknown (no answer: the LMS may or may not have it), failed; roster:
    #: added, updated, unchanged, deactivated, skipped, failed.
    status: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text, default="")
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class SyncDelivery(Base):
    """The last score the LMS accepted per person and item: a re-sync skips it unchanged."""

    __tablename__ = "sync_deliveries"

    course_id: Mapped[str] = mapped_column(
        ForeignKey("courses.id", ondelete="CASCADE"), primary_key=True
    )
    username: Mapped[str] = mapped_column(String(64), primary_key=True)
    item_key: Mapped[str] = mapped_column(String(300), primary_key=True)
    lineitem_url: Mapped[str] = mapped_column(String(1024), default="")
    #: What was sent (URL, user, score, maximum, progress), hashed: equal = nothing new.
    fingerprint: Mapped[str] = mapped_column(String(64))
    score_given: Mapped[float | None] = mapped_column(Float, nullable=True)
    score_maximum: Mapped[float | None] = mapped_column(Float, nullable=True)
    sent_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    run_id: Mapped[str] = mapped_column(String(32), default="")


class SyncIntent(Base):
    """A score about to be sent, written before the request leaves (write-ahead).

    Removed with the delivery record (or the final refusal) in one transaction. One
    left behind means the process died between sending and recording: the next sync
    asks the LMS (its results) before sending that score again.
    """

    __tablename__ = "sync_intents"

    course_id: Mapped[str] = mapped_column(
        ForeignKey("courses.id", ondelete="CASCADE"), primary_key=True
    )
    username: Mapped[str] = mapped_column(String(64), primary_key=True)
    item_key: Mapped[str] = mapped_column(String(300), primary_key=True)
    lineitem_url: Mapped[str] = mapped_column(String(1024), default="")
    fingerprint: Mapped[str] = mapped_column(String(64))
    run_id: Mapped[str] = mapped_column(String(32), default="")
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class SyncLock(Base):
    """At most one running sync per course and kind, across Kore and the CLI."""

    __tablename__ = "sync_locks"

    course_id: Mapped[str] = mapped_column(
        ForeignKey("courses.id", ondelete="CASCADE"), primary_key=True
    )
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    run_id: Mapped[str] = mapped_column(String(32))
    heartbeat_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


# --- course management (Kore): backups, reset/delete journal, audit log ---------------------
# No foreign keys to courses: backups and audit events outlive a deleted course.


class Backup(Base):
    """A course backup: an archive in the backups directory, named after its id."""

    __tablename__ = "backups"

    #: "b-" + 32 hex; the archive is <backups dir>/<id>.tar.gz.
    id: Mapped[str] = mapped_column(String(34), primary_key=True)
    course_id: Mapped[str] = mapped_column(String(32), index=True)
    course_title: Mapped[str] = mapped_column(String(512), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    #: The hub user who asked for it, or "cli:<os user>".
    created_by: Mapped[str] = mapped_column(String(80), default="")
    #: "manual", "before-reset" or "before-delete".
    reason: Mapped[str] = mapped_column(String(16), default="manual")
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    #: What it holds: assignments, students, submissions, files, bytes.
    contents: Mapped[dict] = mapped_column(JSON, default=dict)
    #: Hub users who may use it: the course's instructors and TAs when it was made,
    #: and who made it; they keep it after the course is deleted.
    owners: Mapped[list] = mapped_column(JSON, default=list)
    #: Set when it was deleted (by a person or by retention); the archive is gone then.
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class CourseOperation(Base):
    """The journal of a reset or delete: the last step done, so a re-run finishes it."""

    __tablename__ = "course_operations"
    __table_args__ = (
        # At most one running operation per course, enforced by the database.
        Index(
            "ux_course_operations_running",
            "course_id",
            unique=True,
            sqlite_where=text("state = 'running'"),
            postgresql_where=text("state = 'running'"),
        ),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    course_id: Mapped[str] = mapped_column(String(32), index=True)
    #: "backup", "reset", "delete" or "import".
    kind: Mapped[str] = mapped_column(String(16))
    #: "running", "finished", "failed" (a step raised: running it again goes on) or
    #: "interrupted" (a backup or import whose Kore stopped; not resumed).
    state: Mapped[str] = mapped_column(String(16), default="running")
    #: The last step completed (0: none).
    step: Mapped[int] = mapped_column(Integer, default=0)
    #: The backup made first (its id is chosen when the operation starts).
    backup_id: Mapped[str] = mapped_column(String(34), default="")
    started_by: Mapped[str] = mapped_column(String(80), default="")
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    message: Mapped[str] = mapped_column(Text, default="")
    #: What a finished import did: {"imported": [...], "replaced": [...], "skipped": [...]}.
    #: Added after the first release: registry.py adds the column to older databases.
    result: Mapped[dict | None] = mapped_column(JSON, nullable=True)
