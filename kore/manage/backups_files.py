"""Backups' blocking half: writing a course's archive, sizing a course, removing archives.

:class:`BackupFiles` is used only through :class:`~.threads.InThread` by the async
:class:`~.service.CourseManager` (which records, prunes and audits); each of its methods
raises when called from the event loop (:func:`~.threads.blocking`).
"""

import os
from pathlib import Path

from ananke_hub import fsutil
from ananke_hub.courses.layout import CourseLayout, CoursePaths
from ananke_hub.courses.models import iso, utcnow

from . import archive, gradebook
from .errors import TooLarge
from .listing import is_real_dir, source_assignments
from .store import CourseFacts
from .threads import blocking

MANIFEST_FORMAT = "ananke-course-backup"
MANIFEST_VERSION = 1
ARCHIVE_SUFFIX = ".tar.gz"
#: Arcname prefixes in a backup archive.
COURSE_PREFIX = "course"
EXCHANGE_PREFIX = "exchange"
GRADEBOOK_MEMBER = f"{COURSE_PREFIX}/{gradebook.GRADEBOOK_FILE}"


def archive_path(backups_dir: str, backup_id: str) -> Path:
    return Path(backups_dir) / f"{backup_id}{ARCHIVE_SUFFIX}"


def too_large(max_backup_bytes: int, course_id: str, size: int | None) -> TooLarge:
    holds = f"holds {size} bytes, " if size is not None else "holds "
    return TooLarge(
        f"Course {course_id} {holds}more than the {max_backup_bytes} bytes a backup "
        "may have (c.CourseManager.max_backup_bytes), so it cannot be backed up, reset "
        "or deleted. Nothing was changed. Remove what the course does not need, or ask "
        "the hub's administrators to raise the limit."
    )


class BackupFiles:
    """The file work of backups (blocking; see the module's docstring)."""

    def __init__(self, layout: CourseLayout, backups_dir: str, max_backup_bytes: int):
        self.layout = layout
        self.backups_dir = backups_dir
        self.max_backup_bytes = max_backup_bytes

    def archive_path(self, backup_id: str) -> Path:
        return archive_path(self.backups_dir, backup_id)

    @blocking
    def remove_archive(self, backup_id: str) -> None:
        fsutil.remove_tree(self.archive_path(backup_id))

    @blocking
    def check_size(self, paths: CoursePaths) -> None:
        """Refuse early (before a reset or delete starts) a course too big to back up."""
        if not self.max_backup_bytes:
            return
        total = 0
        for root in (paths.home, paths.exchange):
            try:
                total += fsutil.tree_size(root)[1]
            except FileNotFoundError:
                continue
        if total > self.max_backup_bytes:
            raise too_large(self.max_backup_bytes, paths.course_id, total)

    @blocking
    def write_backup(self, facts: CourseFacts, backup_id: str, actor: str, reason: str) -> dict:
        """Write the archive of a backup; its contents (blocking).

        The grader's home goes under ``course/`` with a consistent copy of the gradebook
        in place of the live file, the course's exchange directory under ``exchange/``.
        """
        paths = self.layout.course(facts.course_id)
        path = self.archive_path(backup_id)
        # A previous attempt that stopped after writing the archive but before recording
        # it: write it again (the record decides what exists).
        fsutil.remove_tree(path)
        home = is_real_dir(paths.home)
        gradebook_bytes = gradebook.snapshot(paths) if home else None
        summary = gradebook.summary_of(gradebook_bytes)
        assignments = sorted(
            set(source_assignments(paths)) | {a["name"] for a in summary["assignments"]}
        )
        contents = {
            "assignments": assignments,
            "students": summary["students"],
            "submissions": summary["submissions"],
        }
        trees = {}
        if home:
            trees[COURSE_PREFIX] = paths.home
        if is_real_dir(paths.exchange):
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
            raise too_large(self.max_backup_bytes, facts.course_id, None) from None
        return {
            **contents,
            "files": report.files,
            "bytes": report.bytes,
            "skipped": sorted(report.skipped),
            "archive_bytes": report.archive_bytes,
        }

    @blocking
    def remove_partials(self, backup_id: str) -> None:
        prefix = fsutil.temp_name(f"{backup_id}{ARCHIVE_SUFFIX}").rsplit("-", 1)[0] + "-"
        try:
            names = os.listdir(self.backups_dir)
        except FileNotFoundError:
            return
        for name in names:
            if name.startswith(prefix):
                fsutil.remove_tree(Path(self.backups_dir) / name)
