"""A course's nbgrader gradebook for course management: copy, summarise, reset, import.

The gradebook is a SQLite file in the grader's home, which belongs to the course's
instructors (their lab runs as the grader account). SQLite opens files by path and
follows links even as root, so every access to a live gradebook runs in a thread
confined to that home with the home owner's file-system identity
(:func:`ananke_hub.fsutil.run_in_home`): a link planted in the home leads nowhere else.

- :func:`snapshot`: a consistent copy (SQLite's online backup API, so a formgrader
  writing at the same moment never gives a torn file), as bytes for the backup archive.
- :func:`remove_students`: reset; every student with their submissions, grades and
  comments goes through nbgrader's own API (``Gradebook.remove_student``), assignments,
  notebooks and cells stay.
- :func:`register_assignments`: import; assignments (name, due date) through
  ``Gradebook.update_or_create_assignment``.

A confined thread cannot import modules (the interpreter's files are outside the
home), so each kind of write is first rehearsed once per process on a private copy of
the course's own gradebook, unconfined: everything it needs is imported then.
"""

import sqlite3
import tempfile
import threading
from datetime import UTC, datetime
from pathlib import Path

from ananke_hub import fsutil
from ananke_hub.courses import nbgrader_setup
from ananke_hub.courses.layout import CoursePaths

GRADEBOOK_FILE = nbgrader_setup.GRADEBOOK_FILE


class NoGradebook(FileNotFoundError):
    """The course has no gradebook (never provisioned, or deleted)."""


def exists(paths: CoursePaths) -> bool:
    try:
        return fsutil.exists_in_home(paths.home, GRADEBOOK_FILE)
    except FileNotFoundError:
        return False


# --- reading (plain SQLite: nbgrader's tables, read only) --------------------------------


def _copy_to_memory(path: Path) -> bytes:
    # mode=rw: never create a missing gradebook; the copy holds one consistent state.
    src = sqlite3.connect(f"file:{path}?mode=rw", uri=True, timeout=30)
    try:
        dest = sqlite3.connect(":memory:")
        try:
            src.backup(dest)
            return dest.serialize()
        finally:
            dest.close()
    finally:
        src.close()


def snapshot(paths: CoursePaths) -> bytes | None:
    """The gradebook's bytes, consistent (SQLite backup API); None if there is none."""
    if not exists(paths):
        return None
    return fsutil.run_in_home(paths.home, lambda root: _copy_to_memory(root / GRADEBOOK_FILE))


def _iso_date(value) -> str | None:
    if value in (None, ""):
        return None
    if isinstance(value, datetime):
        return value.replace(tzinfo=value.tzinfo or UTC).isoformat()
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return parsed.replace(tzinfo=parsed.tzinfo or UTC).isoformat()


def summary_of(data: bytes | None) -> dict:
    """What a gradebook holds: assignments with due dates, how many students, submissions."""
    empty = {"assignments": [], "students": 0, "submissions": 0}
    if not data:
        return empty
    db = sqlite3.connect(":memory:")
    try:
        db.deserialize(data)
        try:
            assignments = [
                {"name": name, "duedate": _iso_date(due)}
                for name, due in db.execute("SELECT name, duedate FROM assignment ORDER BY name")
            ]
            students = db.execute("SELECT count(*) FROM student").fetchone()[0]
            submissions = db.execute("SELECT count(*) FROM submitted_assignment").fetchone()[0]
        except sqlite3.DatabaseError:
            return empty  # not an nbgrader gradebook: nothing to list
        return {"assignments": assignments, "students": students, "submissions": submissions}
    finally:
        db.close()


def summary(paths: CoursePaths) -> dict:
    return summary_of(snapshot(paths))


# --- writing (nbgrader's API, confined) --------------------------------------------------


def _open(path: Path, course_id: str):
    from nbgrader.api import Gradebook

    return Gradebook(f"sqlite:///{path}", course_id)


def _with_gradebook(path: Path, course_id: str, work):
    gb = _open(path, course_id)
    try:
        return work(gb)
    finally:
        gb.close()
        gb.engine.dispose()  # no pooled connection outlives the (confined) thread


_rehearsed: set[str] = set()
_rehearsal_lock = threading.Lock()


def _rehearse(kind: str, paths: CoursePaths, work) -> None:
    """Run ``work`` on a private copy of the gradebook, unconfined, until it once did
    something (an empty gradebook exercises little): its imports happen here."""
    if kind in _rehearsed:
        return
    with _rehearsal_lock:
        if kind in _rehearsed:
            return
        nbgrader_setup.warm_up()
        data = snapshot(paths)
        if not data:
            return
        with tempfile.TemporaryDirectory(prefix="ananke-gradebook-") as tmp:
            path = Path(tmp) / GRADEBOOK_FILE
            path.write_bytes(data)
            if _with_gradebook(path, paths.course_id, work):
                _rehearsed.add(kind)


def _in_gradebook(paths: CoursePaths, kind: str, work):
    if not exists(paths):
        raise NoGradebook(f"course:{paths.course_id} has no gradebook in {paths.home}")
    _rehearse(kind, paths, work)
    return fsutil.run_in_home(
        paths.home, lambda root: _with_gradebook(root / GRADEBOOK_FILE, paths.course_id, work)
    )


def _remove_all_students(gb) -> list[str]:
    removed = []
    for student_id in sorted(s.id for s in gb.students):
        # remove_student removes the student's submissions first (their notebooks,
        # grades and comments cascade), then the student.
        gb.remove_student(student_id)
        removed.append(student_id)
    return removed


def remove_students(paths: CoursePaths) -> list[str]:
    """Remove every student and their work from the gradebook; the ids removed.

    Idempotent: a gradebook without students is left as it is. No gradebook at all
    (a course never provisioned) is nothing to reset.
    """
    if not exists(paths):
        return []
    return _in_gradebook(paths, "remove_students", _remove_all_students)


def register_assignments(paths: CoursePaths, assignments: list[dict]) -> list[str]:
    """Create or update assignments ``{"name", "duedate"}`` (due date ISO or None).

    A due date of None leaves an existing assignment's date as it is.
    """
    if not assignments:
        return []

    def work(gb) -> list[str]:
        from nbgrader.api import InvalidEntry

        names = []
        for entry in assignments:
            fields = {"duedate": entry["duedate"]} if entry.get("duedate") else {}
            try:
                gb.update_or_create_assignment(entry["name"], **fields)
            except InvalidEntry:
                # Created meanwhile by the formgrader: update it.
                gb.db.rollback()
                gb.update_or_create_assignment(entry["name"], **fields)
            names.append(entry["name"])
        return names

    return _in_gradebook(paths, "register_assignments", work)
