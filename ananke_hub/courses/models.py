"""The course registry's tables (SQLAlchemy 2 ORM).

One source of truth for the hub and Kore: courses (one per LMS activity) and their
members, and the launches' used nonces. Names, titles and e-mail addresses are data for
display; ids are the keys. Kore's own tables (syncs, backups, operations, the audit log)
are in :mod:`kore.models`, on the same declarative :class:`Base` (one database).
"""

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

#: Course.state values.
COURSE_ACTIVE = "active"
COURSE_DELETING = "deleting"


def utcnow() -> datetime:
    return datetime.now(UTC)


def aware(value: datetime | None) -> datetime | None:
    """A time read from the registry, with its zone: every time is stored in UTC, and
    SQLite gives it back naive (PostgreSQL aware)."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def iso(value: datetime | None) -> str | None:
    """A stored time as the APIs show it: ISO 8601 to the second, with the offset."""
    value = aware(value)
    return value.isoformat(timespec="seconds") if value else None


class Base(DeclarativeBase):
    pass


class Course(Base):
    __tablename__ = "courses"
    __table_args__ = (
        UniqueConstraint("issuer", "client_id", "deployment_id", "resource_link_id"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    issuer: Mapped[str] = mapped_column(String(255))
    client_id: Mapped[str] = mapped_column(String(255))
    deployment_id: Mapped[str] = mapped_column(String(255))
    resource_link_id: Mapped[str] = mapped_column(String(255))
    context_id: Mapped[str] = mapped_column(String(255), default="")
    context_label: Mapped[str] = mapped_column(String(255), default="")
    context_title: Mapped[str] = mapped_column(String(255), default="")
    link_title: Mapped[str] = mapped_column(String(255), default="")
    title: Mapped[str] = mapped_column(String(512), default="")
    # LTI Advantage endpoints from the latest launch (AGS 2.0, NRPS 2.0).
    lineitems_url: Mapped[str] = mapped_column(String(1024), default="")
    lineitem_url: Mapped[str] = mapped_column(String(1024), default="")
    ags_scopes: Mapped[list] = mapped_column(JSON, default=list)
    memberships_url: Mapped[str] = mapped_column(String(1024), default="")
    #: Instructor-editable nbgrader settings (see settings.py); missing keys = defaults.
    settings: Mapped[dict] = mapped_column(JSON, default=dict)
    #: The provisioning version completed for this course; below the current one, the
    #: next launch finishes the job (see provision.py).
    provisioned: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    #: "active", or "deleting" while Kore deletes it: launches are refused meanwhile.
    #: Added after the first release: registry.py adds the column to older databases.
    state: Mapped[str] = mapped_column(
        String(16), default=COURSE_ACTIVE, server_default=COURSE_ACTIVE
    )

    members: Mapped[list["Member"]] = relationship(
        back_populates="course", cascade="all, delete-orphan"
    )


class Member(Base):
    __tablename__ = "members"

    course_id: Mapped[str] = mapped_column(
        ForeignKey("courses.id", ondelete="CASCADE"), primary_key=True
    )
    username: Mapped[str] = mapped_column(String(64), primary_key=True)
    #: "instructor", "teaching_assistant" or "learner" (roles.Role values).
    role: Mapped[str] = mapped_column(String(32))
    lms_user_id: Mapped[str] = mapped_column(String(255), default="")
    given_name: Mapped[str] = mapped_column(String(255), default="")
    family_name: Mapped[str] = mapped_column(String(255), default="")
    email: Mapped[str] = mapped_column(String(320), default="")
    #: False once the LMS roster no longer lists the person (NRPS sync).
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    #: The course's gradebook holds this member's current data (learners only).
    in_gradebook: Mapped[bool] = mapped_column(Boolean, default=False)
    first_launch: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_launch: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    course: Mapped[Course] = relationship(back_populates="members")


class UsedNonce(Base):
    """A launch's nonce, once used: written by hubs before issue 16. The hub now keeps
    used nonces in memory (auth/replay.py says why a restart loses nothing); the table
    stays until a migration drops it."""

    __tablename__ = "used_nonces"

    #: SHA-256 (hex) of the nonce: the platform chooses nonces, of any length.
    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


# --- The audit log: written by Kore (course management, syncs) and the hub (LMS
# registrations); read through kore/audit.py ------------------------------------------


class AuditEvent(Base):
    """Who did what to which course, when, and how it ended."""

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_course", "course_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    #: The hub user, or "cli:<os user>", or "kore" for work Kore resumed by itself.
    actor: Mapped[str] = mapped_column(String(80), default="")
    course_id: Mapped[str] = mapped_column(String(32), default="")
    #: e.g. "backup.create", "course.reset", "course.import", "settings.update".
    action: Mapped[str] = mapped_column(String(40))
    #: Ids involved (backup, operation, source course, assignment...).
    target: Mapped[dict] = mapped_column(JSON, default=dict)
    #: "ok", "refused", "failed" or "started".
    outcome: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text, default="")


# --- LTI Deep Linking 2.0: see deeplink.py -----------------------------------------------


class DeepLinkRequest(Base):
    """An instructor's content selection (LtiDeepLinkingRequest) between the hub, which
    validated it, and Kore's picker page, which answers it once."""

    __tablename__ = "deep_link_requests"

    #: Random, unguessable: the picker's URL carries it.
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    #: The hub user who launched it: only they may answer it.
    username: Mapped[str] = mapped_column(String(64))
    issuer: Mapped[str] = mapped_column(String(255))
    client_id: Mapped[str] = mapped_column(String(255))
    deployment_id: Mapped[str] = mapped_column(String(255))
    context_id: Mapped[str] = mapped_column(String(255), default="")
    context_title: Mapped[str] = mapped_column(String(255), default="")
    return_url: Mapped[str] = mapped_column(String(1024))
    #: The request's `data`, echoed in the response (Deep Linking 2.0 section 4.4.1).
    data: Mapped[str | None] = mapped_column(Text, nullable=True)
    accept_types: Mapped[list] = mapped_column(JSON, default=list)
    accept_multiple: Mapped[bool] = mapped_column(Boolean, default=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class DeepLink(Base):
    """An activity Kore placed in an LMS course: its custom parameter ``ananke_link``
    names this row, which ties launches from it to a course and an assignment."""

    __tablename__ = "deep_links"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    course_id: Mapped[str] = mapped_column(
        ForeignKey("courses.id", ondelete="CASCADE"), index=True
    )
    assignment: Mapped[str] = mapped_column(String(255))
    #: The registration and LMS course it was placed in: a launch must come from them.
    issuer: Mapped[str] = mapped_column(String(255))
    client_id: Mapped[str] = mapped_column(String(255))
    deployment_id: Mapped[str] = mapped_column(String(255))
    context_id: Mapped[str] = mapped_column(String(255), default="")
    created_by: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


# --- LMS registrations made by LTI Dynamic Registration: see ananke_hub/registrations.py ----


class LTIRegistration(Base):
    """A platform registered by pasting a registration URL (LTI Dynamic Registration 1.0).

    The registration in ``30_lms.py`` is not stored here: it stays config. A removed
    registration keeps its row (state "removed") so that its launches get a clear refusal
    and its courses, which stay, still name where they came from.
    """

    __tablename__ = "lti_registrations"
    __table_args__ = (UniqueConstraint("issuer", "client_id", name="uq_lti_registrations_client"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    issuer: Mapped[str] = mapped_column(String(255))
    client_id: Mapped[str] = mapped_column(String(255))
    #: The deployment the platform created with the registration ("" if it named none).
    deployment_id: Mapped[str] = mapped_column(String(255), default="")
    authorize_url: Mapped[str] = mapped_column(String(1024))
    jwks_url: Mapped[str] = mapped_column(String(1024))
    token_url: Mapped[str] = mapped_column(String(1024), default="")
    #: The platform's name and product family, from its OpenID configuration: for display.
    title: Mapped[str] = mapped_column(String(255), default="")
    product_family: Mapped[str] = mapped_column(String(255), default="")
    #: Prefix of this platform's usernames ("" = the hub's username_prefix, only for the
    #: hub's first registration, which keeps today's names).
    username_prefix: Mapped[str] = mapped_column(String(8), default="")
    scopes: Mapped[list] = mapped_column(JSON, default=list)
    #: "enabled", "disabled" or "removed".
    state: Mapped[str] = mapped_column(String(16), default="enabled")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    created_by: Mapped[str] = mapped_column(String(80), default="")
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class RegistrationTicket(Base):
    """A registration URL an admin asked for: single-use, expiring. Only its hash is kept."""

    __tablename__ = "lti_registration_tickets"

    #: SHA-256 (hex) of the secret in the URL.
    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_by: Mapped[str] = mapped_column(String(80), default="")
    #: The username prefix the admin chose for the platform ("" = choose one).
    username_prefix: Mapped[str] = mapped_column(String(8), default="")
    #: Set when a registration used it (or while one is being made); never reset after success.
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    registration_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
