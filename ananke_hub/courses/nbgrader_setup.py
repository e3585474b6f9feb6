"""A course on disk: nbgrader's course directory, gradebook and exchange directories.

Plain blocking functions, idempotent and safe to call on every launch; the hub calls
them from a thread pool. Everything written into the grader account's home keeps the
home's current owner and never follows a link out of it (:mod:`ananke_hub.fsutil`);
the gradebook, which SQLite opens by path, is only touched from a thread confined to
the home with its owner's identity (:func:`ananke_hub.fsutil.run_in_home`).

On a new course the grader's home is created by the hub (root, 0700) and systemd gives
it to the grader's dynamic user when its server first starts. Until then the course's
exchange directories belong to root, and releasing fails: call
:func:`sync_exchange_owner` once the grader's server has started (and it is part of
:func:`ensure_course_files`). It also repairs ownership when systemd gave the grader a
new uid.
"""

import json
import logging
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from ananke_hub.lab.exchange_layout import (
    COURSE_MODE,
    EXCHANGE_ROOT_MODE,
    FEEDBACK_MODE,
    INBOUND_MODE,
    OUTBOUND_MODE,
    STUDENT_UIDS_FILE,
)

from .. import fsutil
from .layout import CoursePaths
from .settings import CourseSettings

log = logging.getLogger(__name__)

CONFIG_FILE = "nbgrader_config.json"
GRADEBOOK_FILE = "gradebook.db"
GRADEBOOK_MODE = 0o600  # names and e-mail addresses of the students


@dataclass(frozen=True)
class StudentRecord:
    """A student of a course's gradebook as data: what a launch or the roster enrols, and
    what a grade sync reads back. Empty strings when the LMS sends nothing."""

    username: str
    lms_user_id: str = ""
    given_name: str = ""
    family_name: str = ""
    email: str = ""


# -- locks: one per course, so that concurrent launches do not race on the gradebook ----------

_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


def _course_lock(course_id: str) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(course_id, threading.Lock())


def _check(paths: CoursePaths, course_id: str) -> None:
    if paths.course_id != course_id:
        raise ValueError(f"paths are for course {paths.course_id!r}, not {course_id!r}")


# -- the gradebook -----------------------------------------------------------------------------

_head_guard = threading.Lock()
_alembic_head: str | None = None


def _schema_version() -> str:
    """The gradebook schema version of the installed nbgrader (its newest alembic revision).

    nbgrader asks the ``alembic`` command for it when it creates a gradebook (nbgrader/api.py,
    get_alembic_version): a second Python process per course, and a failure when the
    venv's bin directory is not on PATH (a hub started by systemd). We read it from
    nbgrader's migration scripts in this process instead, once.
    """
    global _alembic_head
    with _head_guard:
        if _alembic_head is None:
            import nbgrader
            from alembic.script import ScriptDirectory

            scripts = os.path.join(os.path.dirname(nbgrader.__file__), "alembic")
            _alembic_head = ScriptDirectory(scripts).get_current_head()
        return _alembic_head


def _new_gradebook(course_id: str) -> bytes:
    """The bytes of a new, empty gradebook of ``course_id``, made by nbgrader."""
    from sqlalchemy import create_engine, text

    with tempfile.TemporaryDirectory(prefix="ananke-gradebook-") as tmp:
        path = Path(tmp) / GRADEBOOK_FILE
        url = f"sqlite:///{path}"
        # The version table nbgrader writes into a new gradebook, written first: nbgrader
        # then sees an existing database, creates its tables and records the course.
        engine = create_engine(url)
        with engine.begin() as db:
            db.execute(text("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)"))
            db.execute(
                text("INSERT INTO alembic_version (version_num) VALUES (:v)"),
                {"v": _schema_version()},
            )
        engine.dispose()
        _with_gradebook(path, course_id, lambda gb: None)
        return path.read_bytes()


_empty_guard = threading.Lock()
_empty: bytes | None = None


def _empty_gradebook() -> bytes:
    """A new gradebook with nbgrader's tables and schema version and no course, made once
    per process: a new course's gradebook is a copy of it, in which nbgrader records the
    course when the copy is first opened (``Gradebook`` with an empty course id records
    none). Making nbgrader's tables for each new course took ~0.2 s of the hub's CPU."""
    global _empty
    with _empty_guard:
        if _empty is None:
            _empty = _new_gradebook("")
        return _empty


_warm = threading.Event()
_warm_guard = threading.Lock()


def _warm_up() -> None:
    """Import everything the gradebook code needs, once, outside any confined thread.

    A confined thread cannot import: the interpreter's files are outside the home. So
    the same gradebook operations run once on a throwaway gradebook first.
    """
    if _warm.is_set():
        return
    with _warm_guard:
        if _warm.is_set():
            return
        data = _empty_gradebook()
        with tempfile.TemporaryDirectory(prefix="ananke-gradebook-") as tmp:
            path = Path(tmp) / GRADEBOOK_FILE
            path.write_bytes(data)
            record = StudentRecord("warm-up", "1", "w", "u", "w@u")
            for _ in range(2):  # create, then update
                _with_gradebook(path, "warm-up", lambda gb: _update_students(gb, [record]))
        _warm.set()


def read_gradebook(paths: CoursePaths, work):
    """``work(gradebook)`` on the course's gradebook, from a thread confined to the
    grader's home (SQLite follows links even as root; see _in_gradebook)."""
    return _in_gradebook(paths, work)


def warm_up() -> None:
    """At hub start: read nbgrader's schema version and run the gradebook code once, so
    the first course created does not pay for it (about 0.3 s)."""
    _warm_up()


def _with_gradebook(path: Path, course_id: str, work):
    """``work(gradebook)`` on the gradebook at ``path``, closed and disposed afterwards."""
    from nbgrader.api import Gradebook

    gb = Gradebook(f"sqlite:///{path}", course_id)
    try:
        return work(gb)
    finally:
        gb.close()
        gb.engine.dispose()  # no pooled connection outlives the (confined) thread


def _in_gradebook(paths: CoursePaths, work):
    """``work(gradebook)`` on the course's gradebook, confined to the grader's home."""
    _warm_up()
    return fsutil.run_in_home(
        paths.home, lambda root: _with_gradebook(root / GRADEBOOK_FILE, paths.course_id, work)
    )


def _ensure_gradebook(paths: CoursePaths) -> None:
    if not fsutil.exists_in_home(paths.home, GRADEBOOK_FILE):
        try:
            # A copy of the empty gradebook (made in a private temporary directory), put
            # into the home complete and owned by the home's owner, never over an
            # existing gradebook; opening it below records the course.
            data = _empty_gradebook()
            fsutil.write_file_in_home(
                paths.home, GRADEBOOK_FILE, data, GRADEBOOK_MODE, replace=False
            )
            log.info("course:%s created the gradebook", paths.course_id)
        except FileExistsError:
            pass  # the formgrader made one meanwhile
    # Opening it checks it is a gradebook and records the course in it if missing.
    _in_gradebook(paths, lambda gb: None)


# -- the exchange ------------------------------------------------------------------------------


def ensure_exchange_root(root: Path) -> None:
    """The exchange root: a directory of the hub's, 0755 (see ananke_hub/lab/exchange.py)."""
    # Made if missing (parents too, 0755); a link in the way that root did not make is
    # refused, the root itself is never a link.
    with fsutil.opened(fsutil.ensure_dir(os.path.abspath(root), mode=EXCHANGE_ROOT_MODE)) as fd:
        st = os.fstat(fd)
        if st.st_uid != os.geteuid():
            if os.geteuid() != 0:
                log.warning("Exchange %s belongs to uid %s, not to the hub", root, st.st_uid)
                return
            os.fchown(fd, 0, 0)
        if (st.st_mode & 0o7777) != EXCHANGE_ROOT_MODE:
            os.fchmod(fd, EXCHANGE_ROOT_MODE)
            log.info(
                "Exchange %s set to mode %o: courses are created by the hub",
                root,
                EXCHANGE_ROOT_MODE,
            )


def sync_exchange_owner(paths: CoursePaths) -> None:
    """Give the course's exchange directories to the grader account (its home's owner).

    nbgrader's release refuses directories another uid owns. If the owner changed (a
    new grader home owned by root until systemd gave it to the dynamic user, or a new
    uid from systemd), what the old owner made in ``outbound`` and ``feedback`` follows,
    and submissions in ``inbound`` get the new group, so the grader can read them.
    """
    owner = fsutil.home_owner(paths.home)
    root = paths.exchange.parent
    course = paths.course_id
    ensure_exchange_root(root)
    fsutil.ensure_owned_dir(root, course, mode=COURSE_MODE, owner=owner)
    for name, mode in (
        ("outbound", OUTBOUND_MODE),
        ("inbound", INBOUND_MODE),
        ("feedback", FEEDBACK_MODE),
    ):
        old = fsutil.ensure_owned_dir(root, f"{course}/{name}", mode=mode, owner=owner)
        if old is not None and old != owner:
            changed = fsutil.reown_tree(
                root, f"{course}/{name}", old=old, new=owner, group_only=(name == "inbound")
            )
            log.info(
                "course:%s exchange %s: %d entries from %s to %s", course, name, changed, old, owner
            )


# -- the course --------------------------------------------------------------------------------


def ensure_course_files(paths: CoursePaths, course_id: str, settings: CourseSettings) -> None:
    """Create or complete a course on disk; safe to call on every launch.

    The grader's home (nbgrader's course directory) with ``nbgrader_config.json`` from
    ``settings``, ``source/`` and the gradebook; the exchange directories with the
    private exchange's modes, owned by the grader account.
    """
    _check(paths, course_id)
    with _course_lock(course_id):
        fsutil.ensure_home(paths.home)
        write_settings(paths, settings)
        fsutil.ensure_dir_in_home(paths.home, "source", 0o755)
        _ensure_gradebook(paths)
        sync_exchange_owner(paths)


def write_settings(paths: CoursePaths, settings: CourseSettings) -> bool:
    """Write the course's ``nbgrader_config.json`` if it differs; True if written."""
    data = (
        json.dumps(settings.nbgrader_config(paths.course_id), indent=2, sort_keys=True) + "\n"
    ).encode()
    try:
        if fsutil.read_file_in_home(paths.home, CONFIG_FILE) == data:
            return False
    except fsutil.UnsafePath:
        pass  # a link or a FIFO in its place: replaced below, never followed
    fsutil.write_file_in_home(paths.home, CONFIG_FILE, data, 0o644)
    return True


def _student_uid(paths: CoursePaths, username: str) -> int | None:
    """The uid of a student's home (homes sit side by side), if it exists and is theirs."""
    try:
        owner = fsutil.home_owner(paths.home.parent / username)
    except (FileNotFoundError, NotADirectoryError, fsutil.UnsafePath, ValueError):
        return None
    return owner.uid if owner.uid != 0 else None


def _record_uids(paths: CoursePaths, uids: dict[str, int]) -> None:
    """Add students' uids to the course's record (read by our ExchangeCollect)."""
    raw = fsutil.read_file_in_home(paths.home, STUDENT_UIDS_FILE)
    try:
        data = json.loads(raw) if raw else {}
    except ValueError:
        data = {}
    students = data.get("students") if isinstance(data, dict) else None
    students = students if isinstance(students, dict) else {}
    changed = False
    for username, uid in uids.items():
        known = students.get(username)
        known = [u for u in known if isinstance(u, int)] if isinstance(known, list) else []
        if uid not in known:
            students[username] = sorted(known + [uid])
            changed = True
    if changed:
        text = json.dumps({"version": 1, "students": students}, indent=1, sort_keys=True) + "\n"
        fsutil.write_file_in_home(paths.home, STUDENT_UIDS_FILE, text.encode(), 0o644)


def record_student_uid(paths: CoursePaths, username: str) -> bool:
    """Record the uid of a student's home for the course, once their lab gave it one.

    Under systemd a student's home gets its dynamic uid when their lab first starts,
    usually after the launch that enrolled them; the spawner calls this after a start.
    """
    uid = _student_uid(paths, username)
    if uid is None or not paths.home.is_dir():
        return False
    with _course_lock(paths.course_id):
        _record_uids(paths, {username: uid})
    return True


def _student_fields(student: StudentRecord) -> dict:
    # Names and e-mail only when the LMS sent them: a launch without them (privacy
    # settings) does not erase what an earlier launch told.
    fields = {"lms_user_id": student.lms_user_id or None}
    for key, value in (
        ("first_name", student.given_name),
        ("last_name", student.family_name),
        ("email", student.email),
    ):
        if value:
            fields[key] = value
    return fields


def _update_students(gb, students: list[StudentRecord]) -> None:
    """The students in the gradebook, in ONE commit (nbgrader's
    ``update_or_create_student`` commits each: a batch of a class arriving together
    would wait for the disk once per student)."""
    from nbgrader.api import Student
    from sqlalchemy.exc import IntegrityError

    if gb.authenticator is None:  # nbgrader's course membership: none to keep here
        records = {s.username: _student_fields(s) for s in students}
        try:
            known = {
                row.id: row
                for row in gb.db.query(Student).filter(Student.id.in_(list(records)))
            }
            for username, fields in records.items():
                row = known.get(username)
                if row is None:
                    gb.db.add(Student(id=username, **fields))
                else:
                    for key, value in fields.items():
                        setattr(row, key, value)
            gb.db.commit()
            return
        except IntegrityError:
            # Created meanwhile by another process (autograde's create_student): the
            # students one by one below, each created or updated.
            gb.db.rollback()
    _update_students_one_by_one(gb, students)


def _update_students_one_by_one(gb, students: list[StudentRecord]) -> None:
    from nbgrader.api import InvalidEntry

    for student in students:
        fields = _student_fields(student)
        try:
            gb.update_or_create_student(student.username, **fields)
        except InvalidEntry:
            # Created meanwhile by another process (autograde's create_student): update it.
            gb.db.rollback()
            gb.update_or_create_student(student.username, **fields)


def enrol_students(paths: CoursePaths, students: list[StudentRecord]) -> None:
    """Enrol students in the course's gradebook, or bring their names and e-mail up to date.

    The course must exist (:func:`ensure_course_files`). The uid of each student's home,
    if it exists, is recorded for the owner check of collect (ananke_hub/lab/exchange.py).
    """
    if not students:
        return
    for student in students:
        if not student.username or "/" in student.username or "+" in student.username:
            raise ValueError(f"{student.username!r} cannot be an nbgrader student id")
    with _course_lock(paths.course_id):
        if not paths.home.is_dir() or not fsutil.exists_in_home(paths.home, GRADEBOOK_FILE):
            raise FileNotFoundError(
                f"course:{paths.course_id} has no gradebook yet: create the course "
                "(ensure_course_files) before enrolling students"
            )
        _in_gradebook(paths, lambda gb: _update_students(gb, students))
        uids = {
            s.username: uid
            for s in students
            if (uid := _student_uid(paths, s.username)) is not None
        }
        if uids:
            try:
                _record_uids(paths, uids)
            except fsutil.UnsafePath as exc:
                # Only the owner check of collect loses; the student is enrolled.
                log.warning("course:%s cannot record students' uids: %s", paths.course_id, exc)
