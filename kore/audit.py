"""Kore's audit log: who did what to which course, when, and how it ended.

One Kore-level service (:class:`AuditLog`, ``settings["audit_log"]``) used by course
management (backups, reset, delete, import), the syncs' routes and the settings route.
Events go into the course registry's ``audit_events`` table (:mod:`kore.models`); they
are not tied to the course row, so a deleted course's trail stays. Writing an event
never fails the work it records: a registry error is logged instead.
"""

import logging

from sqlalchemy import select

from ananke_hub.courses.models import AuditEvent, iso, utcnow
from ananke_hub.courses.registry import CourseRegistry

#: Longest message kept per event.
AUDIT_MESSAGE_MAX = 2000


def audit_entry(event: AuditEvent) -> dict:
    return {
        "event_id": event.id,
        "at": iso(event.at),
        "actor": event.actor,
        "course_id": event.course_id,
        "action": event.action,
        "target": dict(event.target or {}),
        "outcome": event.outcome,
        "message": event.message,
    }


class AuditLog:
    """The audit log in the course registry; async, the database work in its threads."""

    def __init__(self, registry: CourseRegistry, log: logging.Logger | None = None):
        self.registry = registry
        self.log = log or logging.getLogger("kore.audit")

    # -- blocking, in the registry's threads --

    def _add(self, actor, action, course_id, target, outcome, message) -> None:
        with self.registry.session() as session, session.begin():
            session.add(
                AuditEvent(
                    at=utcnow(),
                    actor=(actor or "")[:80],
                    course_id=(course_id or "")[:32],
                    action=action[:40],
                    target=dict(target or {}),
                    outcome=outcome[:16],
                    message=(message or "")[:AUDIT_MESSAGE_MAX],
                )
            )

    def _events(self, course_id: str | None, limit: int, before: int | None) -> list[dict]:
        with self.registry.session() as session:
            query = select(AuditEvent)
            if course_id is not None:
                query = query.where(AuditEvent.course_id == course_id)
            if before is not None:
                query = query.where(AuditEvent.id < before)
            query = query.order_by(AuditEvent.id.desc()).limit(limit)
            return [audit_entry(event) for event in session.scalars(query)]

    # -- async --

    async def record(
        self, actor: str, action: str, course_id: str, target: dict, outcome: str, message=""
    ) -> None:
        """Write an event; a registry failure is logged, never raised."""
        try:
            await self.registry.run(
                self._add, actor, action, course_id or "", target, outcome, message
            )
        except Exception:
            self.log.exception("audit: could not record %s %s %s", action, course_id, outcome)

    async def events(
        self, *, course_id: str | None = None, limit: int = 100, before: int | None = None
    ) -> list[dict]:
        """Events newest first (of one course if given); ``before``: an event id, for the
        next page. ``course_id`` is checked by the caller."""
        limit = max(1, min(int(limit), 1000))
        return await self.registry.run(self._events, course_id, limit, before)
