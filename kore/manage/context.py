"""What the parts of course management share: the registry, the layout, the records, the
audit log, the settings (``c.CourseManager``), and the blocking halves as coroutines.

:class:`ManageService` is the base of the async parts (:class:`~.backups.Backups`,
:class:`~.operations.Operations`, :class:`~.importer.Importer`). They run on Kore's event
loop; the database work goes through the registry's threads (:meth:`_db`), the file work
through :class:`~.threads.InThread` (the blocking objects are never reachable otherwise).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ananke_hub.courses.layout import InvalidCourseId, check_course_id

from .backups_files import BackupFiles, archive_path
from .course_files import CourseFiles
from .errors import InvalidRequest, NotFound
from .importer_files import ImportFiles
from .names import InvalidName
from .store import CourseFacts
from .threads import InThread, in_thread

if TYPE_CHECKING:
    from .service import CourseManager


class ManageService:
    """A part of course management; ``manager`` holds the settings and the shared pieces."""

    def __init__(self, manager: CourseManager):
        self.manager = manager
        self.registry = manager.registry
        self.layout = manager.layout
        self.store = manager.store
        self.audit_log = manager.audit_log
        self.log = manager.log

    @property
    def hub(self):
        return self.manager.hub

    async def _db(self, func, *args):
        return await self.registry.run(func, *args)

    @staticmethod
    async def _thread(func, *args):
        """A library's blocking call (not one of ours: those are InThread objects)."""
        return await in_thread(func, *args)

    def archive_path(self, backup_id: str) -> Path:
        return archive_path(self.manager.backups_dir, backup_id)

    # The blocking halves, reachable from the event loop only as coroutines run in a thread.
    @property
    def _backup_files(self) -> InThread:
        m = self.manager
        return InThread(BackupFiles(self.layout, m.backups_dir, m.max_backup_bytes))

    @property
    def _course_files(self) -> InThread:
        return InThread(CourseFiles(self.layout))

    @property
    def _import_files(self) -> InThread:
        return InThread(ImportFiles(self.layout))

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
        """Write an audit event (never raises)."""
        await self.audit_log.record(actor, action, course_id, target, outcome, message)
