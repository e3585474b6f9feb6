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
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

#: Course.state values.
COURSE_ACTIVE = "active"
COURSE_DELETING = "deleting"


def utcnow() -> datetime:
    return datetime.now(UTC)


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
    """A launch's nonce, once used (see auth/replay.py): in the database, so a captured
    launch stays refused after a hub restart, until the token could no longer pass."""

    __tablename__ = "used_nonces"

    #: SHA-256 (hex) of the nonce: the platform chooses nonces, of any length.
    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
