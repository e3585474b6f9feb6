"""Backups: making one (with the audit event and retention), listing, using and deleting
them, and retention of what grows with use (:meth:`Backups.prune_history`).

Async, on Kore's event loop; the archive is written by the blocking
:class:`~.backups_files.BackupFiles` in a thread.
"""

from datetime import datetime, timedelta
from pathlib import Path

from ananke_hub.courses.models import COURSE_DELETING, iso, utcnow
from kore.models import Backup

from .context import ManageService
from .errors import Conflict, InvalidRequest, ManageError, NotFound, audited
from .names import check_backup_id, new_backup_id
from .store import CourseFacts

REASONS = ("manual", "before-reset", "before-delete")
#: The actor of work Kore does by itself (finishing operations, pruning old backups).
KORE_ACTOR = "kore"


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


class Backups(ManageService):
    """Course backups (settings: ``c.CourseManager.backups_dir``, ``retention``...)."""

    async def make_backup(self, facts: CourseFacts, backup_id: str, actor: str, reason: str):
        """Create the backup ``backup_id`` unless it exists; its record."""
        existing = await self._db(self.store.backup, backup_id)
        if existing is not None:
            return existing
        try:
            contents = await self._backup_files.write_backup(facts, backup_id, actor, reason)
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
        except Exception as exc:
            if isinstance(exc, ManageError):
                why = str(exc)
                audited(exc)
            else:
                self.log.exception("course:%s backup %s failed", facts.course_id, backup_id)
                why = f"{type(exc).__name__} (details in Kore's log)"
            await self.record(
                actor, "backup.create", facts.course_id, {"backup_id": backup_id}, "failed", why
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
        if not self.manager.retention:
            return
        backups = await self._db(self.store.backups, course_id)
        pinned = await self._db(self.store.pinned_backups)
        for old in backups[self.manager.retention :]:
            if old.id == keep or old.id in pinned:
                continue
            await self.remove_backup(old, KORE_ACTOR, "retention")

    async def remove_backup(self, backup: Backup, actor: str, why: str) -> None:
        await self._backup_files.remove_archive(backup.id)
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
        record = await self.make_backup(facts, new_backup_id(), actor, reason)
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
        await self.remove_backup(backup, actor, "asked")

    async def prune_history(self, now: datetime | None = None) -> dict:
        """Retention of what grows with use: old sync runs and their results, old backups
        of deleted courses (see the settings ``sync_history_*`` and
        ``deleted_course_backups_days``). Kore runs it at its start and then daily."""
        now = now or utcnow()
        older = (
            now - timedelta(days=self.manager.sync_history_days)
            if self.manager.sync_history_days
            else None
        )
        runs = await self._db(self.store.prune_sync_runs, older, self.manager.sync_history_runs)
        backups = 0
        if self.manager.deleted_course_backups_days:
            cutoff = now - timedelta(days=self.manager.deleted_course_backups_days)
            pinned = await self._db(self.store.pinned_backups)
            for old in await self._db(self.store.old_backups_of_deleted_courses, cutoff):
                if old.id not in pinned:
                    await self.remove_backup(old, KORE_ACTOR, "retention (course deleted)")
                    backups += 1
        if runs or backups:
            self.log.info(
                "retention: %d sync run(s) and %d backup(s) of deleted courses removed",
                runs,
                backups,
            )
        return {"sync_runs": runs, "backups": backups}
