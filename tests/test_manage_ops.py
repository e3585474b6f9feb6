"""Course management on real nbgrader course data: backup, reset, delete, import, audit.

One real course is made once per module with the project's own provisioning code and
nbgrader run as separate accounts (tests/nbgrader_users.py): an assignment generated,
released, fetched and submitted by two students, collected, autograded, feedback made
and released. Each test works on a copy of it (owners and modes kept) with its own
SQLite registry, and the one fake of the hub's API (tests/fake_hub.py), which records every call.
"""

import asyncio
import dataclasses
import errno
import functools
import io
import json
import os
import shutil
import sqlite3
import stat
import tarfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fake_hub import FakeHub
from nbgrader_users import ASSIGNMENT, COURSE_ID, IS_ROOT, Classroom, finish
from sqlalchemy import create_engine, select
from sqlalchemy import text as sql

from ananke_hub import fsutil as files
from ananke_hub.courses import nbgrader_setup
from ananke_hub.courses.identity import LaunchInfo
from ananke_hub.courses.layout import CourseLayout, grader_username
from ananke_hub.courses.models import AuditEvent, Course, Member
from ananke_hub.courses.provision import CourseProvisioner, ProvisioningError
from ananke_hub.courses.registry import CourseBeingDeleted, CourseRegistry
from ananke_hub.courses.schema import SchemaOutOfDate, upgrade
from ananke_hub.courses.settings import CourseSettings
from kore.manage import gradebook
from kore.manage.errors import Conflict, InvalidRequest, NotFound, TooLarge, Unavailable
from kore.manage.hubapi import HubAdmin
from kore.manage.names import InvalidName, check_assignment_id, check_backup_id, new_backup_id
from kore.manage.service import CourseManager
from kore.models import Backup, CourseOperation, SyncDelivery, SyncResult, SyncRun

OTHER = "c-00000000000000b2"  # the import target, an empty course
GRADER_UID = 62203
OTHER_UID = 62210
STUDENTS = {"u201": 62201, "u202": 62202}
DUEDATE = "2030-01-15 12:00:00 UTC"

needs_root = pytest.mark.skipif(not IS_ROOT, reason="confined gradebook work and owners need root")
pytestmark = needs_root


# --- the course, made once ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def template():
    room = Classroom.temporary(grader_uid=GRADER_UID)
    try:
        room.create_course(CourseSettings(execute_timeout=60))
        students = [room.add_student(name, uid) for name, uid in STUDENTS.items()]
        room.enrol(*students)
        room.write_source()
        # A second assignment in source only (nothing released), for imports.
        from ananke_hub import fsutil

        fsutil.write_file_in_home(room.paths.home, "source/ps2/week2.ipynb", b'{"cells": []}')
        fsutil.write_file_in_home(room.paths.home, "source/ps2/data/table.csv", b"a,b\n1,2\n")
        finish(
            room.nbgrader(
                room.grader,
                ["db", "assignment", "add", ASSIGNMENT, f"--duedate={DUEDATE}"],
                ["generate_assignment", ASSIGNMENT],
                ["release_assignment", ASSIGNMENT],
            )
        )
        fetch = ["fetch_assignment", ASSIGNMENT, "--course", COURSE_ID]
        finish(*(room.nbgrader(s, fetch) for s in students))
        room.answer(students[0], 42)
        room.answer(students[1], 41)
        submit = ["submit", ASSIGNMENT, "--course", COURSE_ID]
        finish(*(room.nbgrader(s, submit) for s in students))
        finish(
            room.nbgrader(
                room.grader,
                ["collect", ASSIGNMENT],
                ["autograde", ASSIGNMENT],
                ["generate_feedback", ASSIGNMENT],
                ["release_feedback", ASSIGNMENT],
            )
        )
        yield room
    finally:
        room.cleanup()


def clone(src: Path, dest: Path) -> None:
    """Copy a tree as it is: links as links, owners and modes (setgid, sticky) kept."""
    shutil.copytree(src, dest, symlinks=True)
    for dirpath, dirnames, filenames in os.walk(src):
        rel = Path(dirpath).relative_to(src)
        for name in ["", *dirnames, *filenames]:
            s, d = Path(dirpath) / name, dest / rel / name
            st = os.lstat(s)
            os.lchown(d, st.st_uid, st.st_gid)
            if not stat.S_ISLNK(st.st_mode):
                os.chmod(d, stat.S_IMODE(st.st_mode))  # chown may clear setgid


def give(path: Path, uid: int) -> None:
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            os.lchown(os.path.join(dirpath, name), uid, uid)
    os.chown(path, uid, uid)


# --- the hub: the one fake of its API (tests/fake_hub.py) ----------------------------------------


def course_hub(course_id: str) -> FakeHub:
    """The hub's users, groups and servers, as course management finds them."""
    hub = FakeHub(service_token="kore-token")
    hub.users |= {grader_username(course_id), grader_username(OTHER), "u100", "u105"}
    hub.users |= set(STUDENTS)
    hub.groups.update(
        {
            f"nbgrader-{course_id}": set(STUDENTS),
            f"formgrade-{course_id}": {"u100", "u105"},
            f"formgrade-{OTHER}": {"u100"},
        }
    )
    hub.add_server(grader_username(course_id), running=True)
    return hub


# --- one copy of the course per test -------------------------------------------------------------


@dataclasses.dataclass
class World:
    base: Path
    layout: CourseLayout
    registry: CourseRegistry
    hub: FakeHub
    backups: Path

    @property
    def paths(self):
        return self.layout.course(COURSE_ID)

    @property
    def other(self):
        return self.layout.course(OTHER)

    def manager(self, **kwargs) -> CourseManager:
        admin = HubAdmin(api_url=self.hub.api_url, token="kore-token", poll_interval=0)
        return CourseManager(
            registry=self.registry,
            layout=self.layout,
            hub=admin,
            backups_dir=str(self.backups),
            **kwargs,
        )

    def session(self):
        return self.registry.session()


@pytest.fixture
def world(template, tmp_path):
    lib = tmp_path / "lib"
    lib.mkdir()
    clone(template.base / "homes", lib / "private")
    clone(template.base / "exchange", tmp_path / "exchange")
    layout = CourseLayout(homes_root=str(lib / "private"), exchange_root=str(tmp_path / "exchange"))
    # systemd's link to a dynamic user's StateDirectory (systemd.exec(5)).
    os.symlink(f"private/{grader_username(COURSE_ID)}", lib / grader_username(COURSE_ID))
    # The import target: a new, empty course of another grader account.
    other = layout.course(OTHER)
    nbgrader_setup.ensure_course_files(other, OTHER, CourseSettings())
    give(other.home, OTHER_UID)
    nbgrader_setup.sync_exchange_owner(other)

    registry = CourseRegistry(url=f"sqlite:///{tmp_path / 'courses.sqlite'}")
    with registry.session() as session, session.begin():
        session.add(
            Course(
                id=COURSE_ID,
                issuer="https://lms.example.edu",
                client_id="tool",
                deployment_id="d1",
                resource_link_id="L1",
                title="Data Science 101 - Homework",
                settings={"execute_timeout": 60},
            )
        )
        session.add(
            Course(
                id=OTHER,
                issuer="https://lms.example.edu",
                client_id="tool",
                deployment_id="d1",
                resource_link_id="L2",
                title="Data Science 102 - Homework",
                settings={},
            )
        )
        for name, role in [("u100", "instructor"), ("u105", "teaching_assistant")]:
            session.add(Member(course_id=COURSE_ID, username=name, role=role))
        for name in STUDENTS:
            session.add(Member(course_id=COURSE_ID, username=name, role="learner"))
        session.add(Member(course_id=OTHER, username="u100", role="instructor"))
        session.add(SyncRun(id="r" * 32, course_id=COURSE_ID, kind="grades", state="finished"))
        session.add(SyncRun(id="s" * 32, course_id=OTHER, kind="grades", state="finished"))
    with registry.session() as session, session.begin():
        session.add(
            SyncResult(
                run_id="r" * 32,
                course_id=COURSE_ID,
                username="u201",
                item_key="total",
                status="sent",
            )
        )
        session.add(
            SyncDelivery(course_id=COURSE_ID, username="u201", item_key="total", fingerprint="f")
        )
    with course_hub(COURSE_ID) as hub:
        yield World(tmp_path, layout, registry, hub, tmp_path / "state" / "backups")
    registry.close()


# --- looking at the outcome ----------------------------------------------------------------------


def gradebook_rows(paths) -> dict:
    """Students, assignments with due dates, notebooks and submissions (read-only copy)."""
    db = sqlite3.connect(":memory:")
    db.deserialize(gradebook.snapshot(paths))
    try:
        return {
            "students": sorted(r[0] for r in db.execute("SELECT id FROM student")),
            "assignments": {
                name: due for name, due in db.execute("SELECT name, duedate FROM assignment")
            },
            "notebooks": sorted(r[0] for r in db.execute("SELECT name FROM notebook")),
            "submissions": db.execute("SELECT count(*) FROM submitted_assignment").fetchone()[0],
            "grades": db.execute("SELECT count(*) FROM grade").fetchone()[0],
        }
    finally:
        db.close()


def listing(path: Path) -> list[str]:
    return sorted(os.listdir(path)) if path.exists() else []


def members(world, course_id=COURSE_ID) -> dict:
    with world.session() as session:
        return dict(
            session.execute(
                select(Member.username, Member.role).where(Member.course_id == course_id)
            ).all()
        )


def count(world, model, course_id=COURSE_ID) -> int:
    with world.session() as session:
        return len(session.scalars(select(model).where(model.course_id == course_id)).all())


def audit_actions(world, course_id=COURSE_ID) -> list[tuple[str, str]]:
    with world.session() as session:
        events = session.scalars(
            select(AuditEvent).where(AuditEvent.course_id == course_id).order_by(AuditEvent.id)
        )
        return [(e.action, e.outcome) for e in events]


def assert_reset_done(world) -> None:
    paths = world.paths
    rows = gradebook_rows(paths)
    assert rows["students"] == [] and rows["submissions"] == 0 and rows["grades"] == 0
    assert ASSIGNMENT in rows["assignments"] and rows["notebooks"] == [ASSIGNMENT]
    home = listing(paths.home)
    assert {"source", "release", "gradebook.db", "nbgrader_config.json"} <= set(home)
    assert not {"submitted", "autograded", "feedback"} & set(home)
    assert listing(paths.source) == [ASSIGNMENT, "ps2"]
    assert not (paths.home / ".ananke" / "student_uids.json").exists()
    assert listing(paths.outbound) == [ASSIGNMENT]
    assert listing(paths.inbound) == [] and listing(paths.feedback) == []
    assert paths.inbound.stat().st_mode & 0o7777 == 0o3733  # modes of the exchange kept
    assert world.hub.groups[f"nbgrader-{COURSE_ID}"] == set()
    assert world.hub.groups[f"formgrade-{COURSE_ID}"] == {"u100", "u105"}
    assert grader_username(COURSE_ID) in world.hub.users
    assert members(world) == {"u100": "instructor", "u105": "teaching_assistant"}
    assert count(world, SyncDelivery) == count(world, SyncResult) == count(world, SyncRun) == 0
    assert count(world, SyncRun, OTHER) == 1
    with world.session() as session:
        assert session.get(Course, COURSE_ID).state == "active"


def assert_delete_done(world) -> None:
    paths = world.paths
    assert not os.path.lexists(paths.home) and not os.path.lexists(paths.exchange)
    link = Path(world.layout.homes_root).parent / grader_username(COURSE_ID)
    assert not os.path.lexists(link)
    # Others untouched: the other course, the students' homes, the exchange root.
    assert listing(world.other.home) and listing(world.other.exchange)
    assert all((Path(world.layout.homes_root) / s).is_dir() for s in STUDENTS)
    assert Path(world.layout.exchange_root).is_dir()
    hub = world.hub
    assert grader_username(COURSE_ID) not in hub.users and grader_username(OTHER) in hub.users
    assert f"nbgrader-{COURSE_ID}" not in hub.groups and f"formgrade-{COURSE_ID}" not in hub.groups
    assert hub.groups[f"formgrade-{OTHER}"] == {"u100"}
    with world.session() as session:
        assert session.get(Course, COURSE_ID) is None
        assert session.get(Course, OTHER) is not None
    assert members(world) == {} and members(world, OTHER) == {"u100": "instructor"}
    assert count(world, SyncRun) == count(world, SyncDelivery) == count(world, SyncResult) == 0


# --- ids -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    ["../etc", "/etc", "a/b", ".hidden", "ps1.", "", "x" * 65, "%2e%2e", "ps 1", None, 5],
)
def test_bad_assignment_ids_are_refused(value):
    with pytest.raises(InvalidName):
        check_assignment_id(value)


@pytest.mark.parametrize("value", ["b-" + "0" * 31, "B-" + "0" * 32, "../b-x", "b-" + "g" * 32])
def test_bad_backup_ids_are_refused(value):
    with pytest.raises(InvalidName):
        check_backup_id(value)


# --- backups -------------------------------------------------------------------------------------


def archive_members(path: Path) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(path, "r:gz") as tar:
        return {m.name: m for m in tar.getmembers()}


async def test_backup_holds_the_course_with_a_consistent_gradebook_and_a_manifest(world):
    os.symlink("/etc/passwd", world.paths.home / "passwd")  # planted by the course's lab
    manager = world.manager()
    entry = await manager.backup(COURSE_ID, "u100")

    assert entry["course_id"] == COURSE_ID and entry["reason"] == "manual"
    assert entry["title"] == "Data Science 101 - Homework" and entry["course_exists"] is True
    assert entry["created_by"] == "u100" and entry["created_at"].endswith("+00:00")
    contents = entry["contents"]
    assert contents["assignments"] == [ASSIGNMENT, "ps2"]
    assert (contents["students"], contents["submissions"]) == (2, 2)
    assert contents["skipped"] == ["course/passwd"] and contents["files"] > 10

    path = manager.backup_path(entry["backup_id"])
    assert path.parent == world.backups and entry["size_bytes"] == path.stat().st_size
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(world.backups.stat().st_mode) == 0o700
    with tarfile.open(path, "r:gz") as tar:
        first = tar.next()
        assert first.name == "manifest.json"
        manifest = json.load(tar.extractfile(first))
        names = set(tar.getnames())
        db = tar.extractfile("course/gradebook.db").read()
        modes = {m.name: m.mode for m in tar.getmembers()}
    # The gradebook's copy keeps the real file's mode (students' names and e-mails).
    real = stat.S_IMODE((world.paths.home / "gradebook.db").stat().st_mode)
    assert real == 0o600 and modes["course/gradebook.db"] == real
    assert manifest["course_id"] == COURSE_ID and manifest["backup_id"] == entry["backup_id"]
    assert manifest["settings"] == {"execute_timeout": 60} and manifest["reason"] == "manual"
    assert manifest["contents"]["assignments"] == [ASSIGNMENT, "ps2"]
    for name in [
        f"course/source/{ASSIGNMENT}/{ASSIGNMENT}.ipynb",
        f"course/release/{ASSIGNMENT}/{ASSIGNMENT}.ipynb",
        f"course/submitted/u201/{ASSIGNMENT}/{ASSIGNMENT}.ipynb",
        f"course/autograded/u202/{ASSIGNMENT}/{ASSIGNMENT}.ipynb",
        f"course/feedback/u201/{ASSIGNMENT}/{ASSIGNMENT}.html",
        "course/nbgrader_config.json",
        f"exchange/outbound/{ASSIGNMENT}/{ASSIGNMENT}.ipynb",
    ]:
        assert name in names, name
    assert any(n.startswith("exchange/inbound/u201+") for n in names)
    assert "course/passwd" not in names
    # The gradebook is a consistent copy: a database with both students' scores.
    copy = sqlite3.connect(":memory:")
    copy.deserialize(db)
    assert copy.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert sorted(r[0] for r in copy.execute("SELECT id FROM student")) == ["u201", "u202"]
    assert ("backup.create", "ok") in audit_actions(world)


@pytest.mark.parametrize(
    "error, why",
    [
        (TooLarge("The course is larger than backups may be."), "larger than backups may be"),
        (RuntimeError("injected /secret/path"), "RuntimeError (details in Kore's log)"),
    ],
    ids=["refusal", "bug"],
)
async def test_a_failed_backup_is_audited_once_with_words_for_people(
    world, monkeypatch, error, why
):
    from kore.manage.backups_files import BackupFiles

    def fail(self, *args):
        raise error

    monkeypatch.setattr(BackupFiles, "write_backup", fail)
    with pytest.raises(type(error)) as info:
        await world.manager().backup(COURSE_ID, "u100")
    # A refusal is marked as audited (the route writes no second event); a bug is not.
    assert getattr(info.value, "audited", False) is isinstance(error, TooLarge)
    with world.session() as session:
        (event,) = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "backup.create")
        ).all()
    assert (event.actor, event.outcome, event.course_id) == ("u100", "failed", COURSE_ID)
    assert why in event.message and "/secret/path" not in event.message
    assert list(event.target) == ["backup_id"]


async def test_backups_are_for_their_owners_staff_and_admins(world):
    manager = world.manager()
    entry = await manager.backup(COURSE_ID, "u100")
    bid = entry["backup_id"]
    # Owners: the course's instructors and TAs when it was made.
    for user in ("u100", "u105"):
        assert [b["backup_id"] for b in await manager.list_backups(user, False)] == [bid]
        assert (await manager.get_backup(bid, user, False))["backup_id"] == bid
    assert await manager.list_backups("u201", False) == []
    assert await manager.list_backups("u999", False, staff_course_ids=[OTHER]) == []
    assert len(await manager.list_backups("u999", False, staff_course_ids=[COURSE_ID])) == 1
    assert len(await manager.list_backups("admin", True)) == 1
    assert await manager.list_backups("u100", False, course_id=OTHER) == []
    for user in ("u201", "u999"):
        with pytest.raises(NotFound):
            await manager.get_backup(bid, user, False)
        with pytest.raises(NotFound):
            await manager.delete_backup(bid, user, False)
    with pytest.raises(InvalidRequest):
        await manager.get_backup("../../etc/passwd", "u100", False)
    with pytest.raises(InvalidRequest):
        manager.backup_path("b-../x")

    await manager.delete_backup(bid, "u105", False)
    assert not manager.backup_path(bid).exists()
    assert await manager.list_backups("admin", True) == []
    with pytest.raises(NotFound):
        await manager.get_backup(bid, "admin", True)
    assert ("backup.delete", "ok") in audit_actions(world)


async def test_retention_keeps_the_newest_backups_of_each_course(world):
    manager = world.manager(retention=2)
    made = [(await manager.backup(COURSE_ID, "u100"))["backup_id"] for _ in range(4)]
    other = await manager.backup(OTHER, "u100")
    kept = [b["backup_id"] for b in await manager.list_backups("admin", True, course_id=COURSE_ID)]
    assert sorted(kept) == sorted(made[2:])
    for bid in made[:2]:
        assert not manager.backup_path(bid).exists()
    assert manager.backup_path(other["backup_id"]).exists()
    assert audit_actions(world).count(("backup.delete", "ok")) == 2


async def test_a_course_too_big_for_a_backup_is_refused_before_anything_changes(world):
    manager = world.manager(max_backup_bytes=1000)
    with pytest.raises(TooLarge):
        await manager.backup(COURSE_ID, "u100")
    with pytest.raises(TooLarge):
        await manager.reset(COURSE_ID, "u100")
    assert listing(world.backups) == []
    assert count(world, CourseOperation) == 0
    assert gradebook_rows(world.paths)["students"] == ["u201", "u202"]


# --- reset ---------------------------------------------------------------------------------------


async def test_reset_keeps_assignments_and_removes_the_semester(world):
    manager = world.manager()
    op = await manager.reset(COURSE_ID, "u100")
    assert op["state"] == "finished" and op["step"] == 6 and len(op["steps"]) == 6
    assert op["kind"] == "reset" and op["started_by"] == "u100" and op["finished_at"]
    assert_reset_done(world)

    backup = await manager.get_backup(op["backup_id"], "u100", False)
    assert backup["reason"] == "before-reset" and backup["contents"]["students"] == 2
    assert [o["operation_id"] for o in await manager.operations(COURSE_ID)] == [op["operation_id"]]
    actions = audit_actions(world)
    assert actions[0] == ("course.reset", "started") and actions[-1] == ("course.reset", "ok")
    assert ("backup.create", "ok") in actions
    # Learners left through the hub API, not by deleting anything else.
    assert ("DELETE", f"/groups/nbgrader-{COURSE_ID}/users") in world.hub.calls
    assert not [c for c in world.hub.calls if c[0] == "DELETE" and "/users/" in c[1][:7]]


async def test_a_second_operation_while_one_runs_is_refused(world):
    manager = world.manager()
    manager.store.start_operation(COURSE_ID, "reset", "u105", "b-" + "1" * 32)
    with pytest.raises(Conflict):
        await manager.reset(COURSE_ID, "u100")
    with pytest.raises(Conflict):
        await manager.delete(COURSE_ID, "u100")
    assert ("course.delete", "refused") in audit_actions(world)
    assert gradebook_rows(world.paths)["students"] == ["u201", "u202"]


async def finished(manager: CourseManager, entry: dict) -> dict:
    """The operation's entry once its background task ended."""
    for task in list(manager.engine._tasks):
        await task
    return await manager.operation(entry["course_id"], entry["operation_id"])


def held(manager: CourseManager, kind: str) -> asyncio.Event:
    """Hold ``kind``'s first step until the event is set (a long backup, on demand)."""
    release = asyncio.Event()
    original = manager.engine._steps

    def steps(k):
        found = original(k)
        if k == kind:
            first = found[0]

            async def waiting(op):
                await release.wait()
                await first(op)

            found[0] = waiting
        return found

    manager.engine._steps = steps
    return release


async def test_operations_run_in_the_background_one_per_course(world):
    manager = world.manager()
    release = held(manager, "backup")
    started = await manager.start("backup", COURSE_ID, "u100")
    assert (started["kind"], started["state"], started["step"]) == ("backup", "running", 0)
    # While it runs, every other operation on the course is refused, naming it.
    for kind in ("backup", "reset", "delete"):
        with pytest.raises(Conflict) as refused:
            await manager.start(kind, COURSE_ID, "u105")
        assert refused.value.operation_id == started["operation_id"]
        assert started["operation_id"] in str(refused.value)
    # Another course is not held up.
    other = await manager.start("backup", OTHER, "u100")
    assert other["state"] == "running" and other["operation_id"] != started["operation_id"]
    release.set()
    done = await finished(manager, started)
    assert (await manager.operation(OTHER, other["operation_id"]))["state"] == "finished"
    assert (done["state"], done["step"], done["steps"]) == ("finished", 1, ["backup"])
    backup = await manager.get_backup(done["backup_id"], "u100", False)
    assert backup["reason"] == "manual" and backup["contents"]["students"] == 2
    assert manager.archive_path(done["backup_id"]).is_file()
    # Once it ended, the next one starts.
    reset = await manager.start("reset", COURSE_ID, "u105")
    assert (await finished(manager, reset))["state"] == "finished"
    assert_reset_done(world)
    kinds = [op["kind"] for op in await manager.operations(COURSE_ID)]
    assert kinds == ["reset", "backup"]


async def test_a_backup_a_crash_stopped_is_interrupted_at_the_next_start(world):
    # The previous Kore died during a backup (its archive half written) and a reset.
    crashed = world.manager()
    op = crashed.store.start_operation(COURSE_ID, "backup", "u100", "b-" + "2" * 32)
    reset = crashed.store.start_operation(OTHER, "reset", "u100", "b-" + "3" * 32)
    world.backups.mkdir(parents=True)
    partial = world.backups / files.temp_name(f"{op.backup_id}.tar.gz")
    partial.write_bytes(b"half an archive")
    keep = world.backups / "unrelated.tar.gz"
    keep.write_bytes(b"not ours")

    manager = world.manager()
    assert await manager.interrupt_predecessor() == [op.id]
    entry = await manager.operation(COURSE_ID, op.id)
    assert entry["state"] == "interrupted" and "new backup" in entry["message"]
    assert not partial.exists() and keep.exists()
    assert ("course.backup", "failed") in audit_actions(world)
    # The reset is not interrupted: it is resumed, as before.
    assert (await manager.operation(OTHER, reset.id))["state"] == "running"
    (resumed,) = await manager.resume_unfinished()
    assert (resumed["operation_id"], resumed["state"]) == (reset.id, "finished")
    # A new backup of the course can start.
    again = await manager.start("backup", COURSE_ID, "u100")
    assert (await finished(manager, again))["state"] == "finished"


async def test_an_operation_of_another_course_is_not_found(world):
    manager = world.manager()
    started = await manager.start("backup", COURSE_ID, "u100")
    await finished(manager, started)
    with pytest.raises(NotFound):
        await manager.operation(OTHER, started["operation_id"])


# --- retention -----------------------------------------------------------------------------------


def add_run(world, run_id: str, days_ago: float, state="finished", kind="grades", results=2):
    started = datetime.now(UTC) - timedelta(days=days_ago)
    with world.session() as session, session.begin():
        session.add(
            SyncRun(id=run_id, course_id=COURSE_ID, kind=kind, state=state, started_at=started)
        )
    with world.session() as session, session.begin():
        for n in range(results):
            session.add(
                SyncResult(
                    run_id=run_id,
                    course_id=COURSE_ID,
                    username=f"u{n}",
                    item_key="total",
                    status="sent",
                )
            )


def run_ids(world) -> set[str]:
    with world.session() as session:
        return set(session.scalars(select(SyncRun.id)))


def result_run_ids(world) -> set[str]:
    with world.session() as session:
        return set(session.scalars(select(SyncResult.run_id)))


async def test_retention_prunes_old_sync_runs_and_keeps_recent_and_running_ones(world):
    for n in range(3):
        add_run(world, f"old{n}".ljust(32, "0"), days_ago=400 + n)
    add_run(world, "running".ljust(32, "0"), days_ago=500, state="running")
    add_run(world, "recent1".ljust(32, "0"), days_ago=1)
    add_run(world, "recent2".ljust(32, "0"), days_ago=2)
    add_run(world, "recent3".ljust(32, "0"), days_ago=3)
    add_run(world, "roster".ljust(32, "0"), days_ago=5, kind="roster")
    manager = world.manager(sync_history_days=180, sync_history_runs=3)
    pruned = await manager.prune_history()
    # By age: the three old ones; by count (3 per course and kind): "recent3" is the
    # fourth newest ended grade sync (the fixture's "r" run started now).
    kept = {"r" * 32, "s" * 32, *(n.ljust(32, "0") for n in ("recent1", "recent2"))}
    kept |= {"running".ljust(32, "0"), "roster".ljust(32, "0")}
    assert run_ids(world) == kept
    assert pruned == {"sync_runs": 4, "backups": 0}
    assert result_run_ids(world) == kept - {"s" * 32}  # the pruned runs' results went
    assert count(world, SyncDelivery) == 1  # what the LMS holds stays
    # 0 turns a limit off: nothing more goes.
    unlimited = world.manager(sync_history_days=0, sync_history_runs=0)
    assert await unlimited.prune_history() == {"sync_runs": 0, "backups": 0}
    assert run_ids(world) == kept


async def test_retention_removes_old_backups_of_deleted_courses_only(world):
    manager = world.manager(deleted_course_backups_days=30)
    gone = "c-00000000000000dd"
    made = {}
    for name, course_id, days in (
        ("old-gone", gone, 40),
        ("new-gone", gone, 10),
        ("old-live", COURSE_ID, 400),
    ):
        backup_id = new_backup_id()
        manager.store.add_backup(
            backup_id=backup_id,
            course_id=course_id,
            title=name,
            created_by="u100",
            reason="before-delete",
            size_bytes=1,
            contents={},
            owners=["u100"],
        )
        with world.session() as session, session.begin():
            session.get(Backup, backup_id).created_at = datetime.now(UTC) - timedelta(days=days)
        world.backups.mkdir(parents=True, exist_ok=True)
        manager.archive_path(backup_id).write_bytes(b"archive")
        made[name] = backup_id
    assert (await manager.prune_history())["backups"] == 1
    with world.session() as session:
        deleted = {b.id for b in session.scalars(select(Backup)) if b.deleted_at is not None}
    assert deleted == {made["old-gone"]}
    assert not manager.archive_path(made["old-gone"]).exists()
    assert manager.archive_path(made["new-gone"]).exists()
    assert manager.archive_path(made["old-live"]).exists()
    assert ("backup.delete", "ok") in audit_actions(world, gone)


# --- delete --------------------------------------------------------------------------------------


async def test_delete_removes_the_course_and_keeps_backups_and_audit(world):
    manager = world.manager()
    op = await manager.delete(COURSE_ID, "u100")
    assert op["state"] == "finished" and op["step"] == 6
    assert_delete_done(world)
    # Its staff (and students) lost the course on the hub at once: role and tokens.
    assert {"u100", "u105", *STUDENTS} <= set(world.hub.access_applied)

    # The backup made first stays usable by its owners; the course is gone.
    for user in ("u100", "u105"):
        (entry,) = await manager.list_backups(user, False)
        assert entry["backup_id"] == op["backup_id"] and entry["reason"] == "before-delete"
        assert entry["course_exists"] is False
    assert await manager.list_backups("u201", False) == []
    assert manager.backup_path(op["backup_id"]).is_file()
    actions = audit_actions(world)
    assert actions[0] == ("course.delete", "started") and actions[-1] == ("course.delete", "ok")
    # Once deleted, the course is unknown.
    with pytest.raises(NotFound):
        await manager.reset(COURSE_ID, "u100")
    # Its backup can still be imported from, into a course of the owner.
    result = await manager.import_into(
        OTHER, {"backup_id": op["backup_id"]}, "assignment", assignment="ps2", actor="u100"
    )
    assert result["imported"] == ["source/ps2"]


async def test_a_server_that_takes_time_to_stop_is_waited_for(world):
    world.hub.servers[grader_username(COURSE_ID)].stop_polls = 3
    op = await world.manager().delete(COURSE_ID, "u100")
    assert op["state"] == "finished"
    assert world.hub.calls.count(("GET", f"/users/{grader_username(COURSE_ID)}")) == 4


def launch_info(course_id: str, sub: str = "7") -> LaunchInfo:
    M = "http://purl.imsglobal.org/vocab/lis/v2/membership#"
    claim = "https://purl.imsglobal.org/spec/lti/claim/"
    token = {
        "iss": "https://lms.example.edu",
        "aud": "tool",
        "sub": sub,
        claim + "deployment_id": "d1",
        claim + "resource_link": {"id": "L1", "title": "Homework"},
        claim + "context": {"id": "ctx", "label": "DS101", "title": "Data Science 101"},
        claim + "roles": [M + "Learner"],
    }
    return dataclasses.replace(LaunchInfo.from_id_token(token, "u" + sub), course_id=course_id)


class Crash(BaseException):
    """Kore dies here (not an Exception: nothing in Kore catches it)."""


def interrupt(manager: CourseManager, number: int, when: str, error) -> None:
    """Make step ``number`` raise ``error`` before or after doing its work."""
    original = manager.engine._steps

    def steps(kind):
        found = original(kind)
        step = found[number - 1]

        async def broken(op):
            if when == "after":
                await step(op)
            raise error("injected failure")

        found[number - 1] = broken
        return found

    manager.engine._steps = steps


async def test_a_launch_during_deletion_is_refused(world):
    manager = world.manager()
    interrupt(manager, 3, "before", Crash)
    with pytest.raises(Crash):
        await manager.delete(COURSE_ID, "u100")
    info = launch_info(COURSE_ID)
    with pytest.raises(CourseBeingDeleted):
        world.registry.record_launch(info)
    provisioner = CourseProvisioner(registry=world.registry, layout=world.layout)
    with pytest.raises(ProvisioningError, match="being deleted.*Try again in a minute"):
        await provisioner.provision(None, info)
    assert "u7" not in members(world)

    (op,) = await world.manager().resume_unfinished()
    assert op["state"] == "finished"
    assert_delete_done(world)
    assert world.registry.record_launch(info).created  # a new course from the next launch


# --- crash in the middle -------------------------------------------------------------------------


@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.parametrize("number", range(1, 7))
@pytest.mark.parametrize("kind", ["reset", "delete"])
async def test_a_crash_at_any_step_is_finished_at_the_next_start(world, kind, number, when):
    manager = world.manager()
    interrupt(manager, number, when, Crash)
    with pytest.raises(Crash):
        await getattr(manager, kind)(COURSE_ID, "u100")
    (running,) = await manager.operations(COURSE_ID)
    assert running["state"] == "running" and running["step"] == number - 1

    # Kore starts again: a new manager finishes what the crash left.
    (op,) = await world.manager().resume_unfinished()
    assert op["operation_id"] == running["operation_id"]
    assert op["state"] == "finished" and op["step"] == 6
    (assert_reset_done if kind == "reset" else assert_delete_done)(world)
    with world.session() as session:
        backups = session.scalars(select(Backup)).all()
    assert [b.id for b in backups] == [op["backup_id"]]  # one backup, not one per attempt
    assert await world.manager().resume_unfinished() == []


@pytest.mark.parametrize("number", range(1, 7))
@pytest.mark.parametrize("kind", ["reset", "delete"])
async def test_a_failed_step_is_finished_by_running_the_operation_again(world, kind, number):
    manager = world.manager()
    interrupt(manager, number, "after", RuntimeError)
    failed = await getattr(manager, kind)(COURSE_ID, "u100")
    assert failed["state"] == "failed" and failed["step"] == number - 1
    assert f"Step {number} of 6" in failed["message"] and "again" in failed["message"]
    assert "injected" not in failed["message"]  # details go to the log, not to the user
    assert (f"course.{kind}", "failed") in audit_actions(world)

    op = await world.manager().__getattribute__(kind)(COURSE_ID, "u105")
    assert op["operation_id"] == failed["operation_id"] and op["state"] == "finished"
    (assert_reset_done if kind == "reset" else assert_delete_done)(world)


async def test_an_operations_audit_events_name_it_and_its_backup(world):
    """Each audit event of a reset (started, failed at a step, continued, ok) names the
    operation and its backup, the failure also the step; a crash's resume by Kore too."""
    manager = world.manager()
    interrupt(manager, 3, "after", RuntimeError)
    failed = await manager.reset(COURSE_ID, "u100")
    await world.manager().reset(COURSE_ID, "u105")
    ids = {"operation_id": failed["operation_id"], "backup_id": failed["backup_id"]}
    interrupt(manager := world.manager(), 2, "before", Crash)
    with pytest.raises(Crash):
        await manager.reset(COURSE_ID, "u100")
    (resumed,) = await world.manager().resume_unfinished()
    again = {"operation_id": resumed["operation_id"], "backup_id": resumed["backup_id"]}
    with world.session() as session:
        events = session.scalars(
            select(AuditEvent)
            .where(AuditEvent.course_id == COURSE_ID, AuditEvent.action == "course.reset")
            .order_by(AuditEvent.id)
        ).all()
    assert [(e.actor, e.outcome, e.target, e.message) for e in events] == [
        ("u100", "started", ids, ""),
        ("u100", "failed", {**ids, "step": 3}, failed["message"]),
        ("u105", "started", ids, "continued after step 2"),
        ("u105", "ok", ids, ""),
        ("u100", "started", again, ""),
        ("kore", "started", again, "resumed after step 1 (started by u100)"),
        ("u100", "ok", again, ""),
    ]


async def test_hub_down_fails_the_step_with_a_message_and_a_rerun_finishes(world):
    world.hub.down = True
    manager = world.manager()
    failed = await manager.reset(COURSE_ID, "u100")
    assert failed["state"] == "failed" and failed["step"] == 4
    assert "hub API" in failed["message"] and "does not answer" in failed["message"]
    world.hub.down = False
    op = await manager.reset(COURSE_ID, "u100")
    assert op["state"] == "finished"
    assert_reset_done(world)


# --- import --------------------------------------------------------------------------------------


def tree(path: Path) -> dict[str, tuple]:
    """Every entry below ``path`` with its kind, owner and (files) content."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = os.lstat(p)
            content = p.read_bytes() if stat.S_ISREG(st.st_mode) else None
            found[str(p.relative_to(path))] = (stat.S_IFMT(st.st_mode), st.st_uid, content)
    return found


async def test_import_a_course_from_a_course(world):
    manager = world.manager()
    offered = await manager.sources({"course_id": COURSE_ID})
    assert offered["assignments"] == [
        {"name": ASSIGNMENT, "notebooks": [f"{ASSIGNMENT}.ipynb"]},
        {"name": "ps2", "notebooks": ["week2.ipynb"]},
    ]
    result = await manager.import_into(OTHER, {"course_id": COURSE_ID}, "course", actor="u100")
    assert sorted(result["imported"]) == ["settings", f"source/{ASSIGNMENT}", "source/ps2"]
    assert result["replaced"] == [] and result["skipped"] == []

    target = world.other
    assert (target.source / "ps2" / "data" / "table.csv").read_bytes() == b"a,b\n1,2\n"
    for _, (_, uid, _) in tree(target.source).items():
        assert uid == OTHER_UID  # the target grader's, not the source's nor root's
    assert target.source.stat().st_uid == OTHER_UID
    rows = gradebook_rows(target)
    assert set(rows["assignments"]) == {ASSIGNMENT, "ps2"}
    assert rows["assignments"][ASSIGNMENT].startswith("2030-01-15 12:00:00")
    assert rows["students"] == []
    assert json.loads(target.nbgrader_config.read_text())["Execute"]["timeout"] == 60
    with world.session() as session:
        assert session.get(Course, OTHER).settings["execute_timeout"] == 60
    # The source did not change.
    assert gradebook_rows(world.paths)["students"] == ["u201", "u202"]
    assert ("course.import", "ok") in audit_actions(world, OTHER)


async def test_import_refuses_to_overwrite_unless_asked_then_keeps_the_old_version(world):
    manager = world.manager()
    await manager.import_into(
        OTHER, {"course_id": COURSE_ID}, "assignment", assignment="ps2", actor="u100"
    )
    mine = world.other.source / "ps2" / "mine.txt"
    mine.write_text("the target's own work")
    before = tree(world.other.home)

    with pytest.raises(Conflict, match="overwrite"):
        await manager.import_into(OTHER, {"course_id": COURSE_ID}, "course", actor="u100")
    with pytest.raises(Conflict):
        await manager.import_into(
            OTHER,
            {"course_id": COURSE_ID},
            "notebook",
            assignment="ps2",
            notebook="week2.ipynb",
            actor="u100",
        )
    assert tree(world.other.home) == before
    assert ("course.import", "refused") in audit_actions(world, OTHER)

    result = await manager.import_into(
        OTHER,
        {"course_id": COURSE_ID},
        "assignment",
        assignment="ps2",
        overwrite=True,
        actor="u100",
    )
    assert result["imported"] == ["source/ps2"]
    (aside,) = result["replaced"]
    assert aside.startswith(".ananke/replaced/ps2-")
    assert (world.other.home / aside / "mine.txt").read_text() == "the target's own work"
    assert not mine.exists() and (world.other.source / "ps2" / "week2.ipynb").is_file()
    assert not [n for n in os.listdir(world.other.source) if n.startswith(".")]  # no staging left


async def test_import_a_notebook_from_a_backup_under_another_assignment(world):
    manager = world.manager()
    backup = await manager.backup(COURSE_ID, "u100")
    offered = await manager.sources({"backup_id": backup["backup_id"]})
    assert {a["name"] for a in offered["assignments"]} == {ASSIGNMENT, "ps2"}
    # The target's assignment exists in its gradebook with its own due date.
    gradebook.register_assignments(
        world.other, [{"name": "week3", "duedate": "2031-02-01 00:00:00 UTC"}]
    )

    result = await manager.import_into(
        OTHER,
        {"backup_id": backup["backup_id"]},
        "notebook",
        assignment=ASSIGNMENT,
        notebook=f"{ASSIGNMENT}.ipynb",
        as_assignment="week3",
        actor="u100",
    )
    assert result["imported"] == [f"source/week3/{ASSIGNMENT}.ipynb"]
    copied = world.other.source / "week3" / f"{ASSIGNMENT}.ipynb"
    assert copied.read_bytes() == (world.paths.source / ASSIGNMENT / copied.name).read_bytes()
    assert copied.stat().st_uid == copied.parent.stat().st_uid == OTHER_UID
    # One notebook does not bring the source assignment's due date.
    assert gradebook_rows(world.other)["assignments"]["week3"].startswith("2031-02-01")

    # A whole assignment from the backup, with its due date.
    await manager.import_into(
        OTHER,
        {"backup_id": backup["backup_id"]},
        "assignment",
        assignment=ASSIGNMENT,
        actor="u100",
    )
    assert gradebook_rows(world.other)["assignments"][ASSIGNMENT].startswith("2030-01-15")


async def test_import_follows_no_link_planted_in_the_source(world):
    source = world.paths.source
    os.symlink("/etc/passwd", source / ASSIGNMENT / "passwd")
    os.symlink(world.other.home, source / ASSIGNMENT / "other-course")
    os.symlink(world.other.source, source / "evil")  # a link posing as an assignment
    os.mkfifo(source / "ps2" / "pipe")
    manager = world.manager()
    offered = await manager.sources({"course_id": COURSE_ID})
    assert "evil" not in {a["name"] for a in offered["assignments"]}

    result = await manager.import_into(OTHER, {"course_id": COURSE_ID}, "course", actor="u100")
    assert sorted(result["skipped"]) == [
        f"source/{ASSIGNMENT}/other-course",
        f"source/{ASSIGNMENT}/passwd",
        "source/ps2/pipe",
    ]
    copied = tree(world.other.source)
    assert not any(kind != stat.S_IFDIR and kind != stat.S_IFREG for kind, _, _ in copied.values())
    assert set(os.listdir(world.other.source)) == {ASSIGNMENT, "ps2"}

    # A backup of a course with links holds none of them, nor does an import from it.
    backup = await manager.backup(COURSE_ID, "u100")
    names = archive_members(manager.backup_path(backup["backup_id"]))
    assert not [n for n in names if n.endswith(("passwd", "other-course", "evil", "pipe"))]
    with pytest.raises(NotFound):
        await manager.import_into(
            OTHER,
            {"backup_id": backup["backup_id"]},
            "assignment",
            assignment="evil",
            actor="u100",
        )
    with pytest.raises(NotFound):
        await manager.import_into(
            OTHER,
            {"course_id": COURSE_ID},
            "notebook",
            assignment=ASSIGNMENT,
            notebook="passwd.ipynb",
            actor="u100",
        )


async def test_import_into_a_source_that_is_a_link_is_refused(world, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.rmtree(world.other.source)
    os.symlink(outside, world.other.source)  # the target's lab made source/ a link
    with pytest.raises(InvalidRequest, match="link"):
        await world.manager().import_into(
            OTHER, {"course_id": COURSE_ID}, "assignment", assignment="ps2", actor="u100"
        )
    assert listing(outside) == []


async def test_import_from_a_source_course_whose_source_is_a_link_offers_nothing(world):
    shutil.rmtree(world.paths.source)
    os.symlink(world.other.source, world.paths.source)
    manager = world.manager()
    assert (await manager.sources({"course_id": COURSE_ID}))["assignments"] == []
    with pytest.raises(NotFound):
        await manager.import_into(OTHER, {"course_id": COURSE_ID}, "course", actor="u100")


async def test_a_tampered_backup_is_refused_whole(world):
    manager = world.manager()
    backup = await manager.backup(COURSE_ID, "u100")
    path = manager.backup_path(backup["backup_id"])
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in [
            ("manifest.json", b"{}"),
            ("course/source/ps9/ok.ipynb", b"{}"),
            ("course/source/ps9/../../../../escaped.txt", b"boom"),
        ]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    path.write_bytes(buf.getvalue())
    before = tree(world.other.home)
    with pytest.raises(InvalidRequest):
        await manager.import_into(
            OTHER,
            {"backup_id": backup["backup_id"]},
            "assignment",
            assignment="ps9",
            actor="u100",
        )
    assert tree(world.other.home) == before
    assert not list(world.base.rglob("escaped.txt"))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"what": "assignment", "assignment": "../ps1"},
        {"what": "notebook", "assignment": "ps1", "notebook": "../../gradebook.db"},
        {"what": "notebook", "assignment": "ps1", "notebook": "ps1.ipynb", "as_assignment": "/tmp"},
        {"what": "everything"},
        {"what": "assignment"},
        {"what": "course", "source": {"course_id": "../c-1"}},
        {"what": "course", "source": {"backup_id": "b-1", "course_id": COURSE_ID}},
        {"what": "course", "source": "c-00000000c0ffee00/../x"},
    ],
)
async def test_bad_import_requests_are_refused(world, kwargs):
    kwargs = dict(kwargs)
    source = kwargs.pop("source", {"course_id": COURSE_ID})
    what = kwargs.pop("what")
    with pytest.raises(InvalidRequest):
        await world.manager().import_into(OTHER, source, what, actor="u100", **kwargs)


# --- registry ------------------------------------------------------------------------------------


def test_an_older_registry_gets_the_course_state_column(tmp_path):
    from test_grade_sync import release_registry

    url = f"sqlite:///{tmp_path / 'old.sqlite'}"
    release_registry(url)
    engine = create_engine(url)
    with engine.begin() as db:
        db.execute(sql("ALTER TABLE courses DROP COLUMN state"))
        db.execute(
            sql(
                "INSERT INTO courses (id, issuer, client_id, deployment_id, resource_link_id, "
                "context_id, context_label, context_title, link_title, title, lineitems_url, "
                "lineitem_url, ags_scopes, memberships_url, settings, provisioned, created_at, "
                "updated_at) VALUES (:id, 'i', 'c', 'd', 'r', '', '', '', '', 'Old', '', '', "
                "'[]', '', '{}', 1, '2024-01-01', '2024-01-01')"
            ),
            {"id": COURSE_ID},
        )
    engine.dispose()
    with pytest.raises(SchemaOutOfDate, match="ananke upgrade-db"):
        CourseRegistry(url=url).get(COURSE_ID)
    for _ in range(2):  # idempotent
        upgrade(url, log=lambda _message: None)
        registry = CourseRegistry(url=url)
        assert registry.get(COURSE_ID).state == "active"
        registry.close()


async def test_audit_lists_events_newest_first_with_paging(world):
    manager = world.manager()
    for n in range(3):
        await manager.record(f"u10{n}", "settings.update", COURSE_ID, {"n": n}, "ok")
    await manager.record("cli:root", "grades.sync", OTHER, {}, "ok")
    events = await manager.audit(course_id=COURSE_ID, limit=2)
    assert [e["actor"] for e in events] == ["u102", "u101"]
    older = await manager.audit(course_id=COURSE_ID, before=events[-1]["event_id"])
    assert [e["actor"] for e in older] == ["u100"]
    assert len(await manager.audit()) == 4
    with pytest.raises(InvalidRequest):
        await manager.audit(course_id="../x")


# --- imports as background operations; the blocking halves -------------------------------------


async def ended(manager: CourseManager, entry: dict) -> dict:
    for _ in range(600):
        entry = await manager.operation(entry["course_id"], entry["operation_id"])
        if entry["state"] != "running":
            return entry
        await asyncio.sleep(0.05)
    raise AssertionError(f"still running: {entry}")


async def test_an_import_runs_as_an_operation_with_its_result(world):
    manager = world.manager()
    started = await manager.start_import(
        OTHER, {"course_id": COURSE_ID}, "assignment", assignment="ps2", actor="u100"
    )
    assert (started["kind"], started["state"], started["steps"]) == (
        "import",
        "running",
        ["import"],
    )
    done = await ended(manager, started)
    assert done["state"] == "finished", done
    assert done["result"] == {"imported": ["source/ps2"], "replaced": [], "skipped": []}
    assert (world.other.source / "ps2" / "week2.ipynb").exists()
    # The entry keeps its result for a later Kore (it is in the registry).
    (listed,) = await world.manager().operations(OTHER)
    assert listed["result"] == done["result"]
    assert ("course.import", "started") in audit_actions(world, OTHER)
    assert ("course.import", "ok") in audit_actions(world, OTHER)

    # What the import would refuse is refused before it starts (a 409 for the route).
    with pytest.raises(Conflict, match="overwrite"):
        await manager.start_import(
            OTHER, {"course_id": COURSE_ID}, "assignment", assignment="ps2", actor="u100"
        )
    assert len(await manager.operations(OTHER)) == 1
    # A refusal the file work meets (the files changed meanwhile) ends the operation
    # "failed", with the words of it.
    work, _, _ = await manager.importer._checked(
        OTHER,
        {"course_id": COURSE_ID},
        "assignment",
        assignment="ps2",
        actor="u100",
        overwrite=True,
    )
    target = {"what": "assignment"}
    started = await manager.engine.start_import(OTHER, "u100", work, target)
    done = await ended(manager, started)
    assert done["state"] == "finished", done
    (aside,) = done["result"]["replaced"]
    assert aside.startswith(".ananke/replaced/")


async def test_an_import_waits_for_the_courses_running_operation(world):
    """One operation per course: an import while a reset runs is refused (409 with the
    running one's id), and a bad request is refused before anything starts."""
    manager = world.manager()
    running = manager.store.start_operation(OTHER, "reset", "u100", new_backup_id())
    with pytest.raises(Conflict) as info:
        await manager.start_import(
            OTHER, {"course_id": COURSE_ID}, "assignment", assignment="ps2", actor="u100"
        )
    assert info.value.operation_id == running.id
    with pytest.raises(NotFound):
        await manager.start_import(OTHER, {"backup_id": new_backup_id()}, "course", actor="u100")
    assert [op["kind"] for op in await manager.operations(OTHER)] == ["reset"]


async def test_a_starting_kore_marks_its_predecessors_import_interrupted(world):
    """A Kore killed during an import leaves it "running"; the next one says so, with
    what to do, and a new import can start."""
    killed = world.manager().store.start_operation(OTHER, "import", "u100", "")
    manager = world.manager()
    assert await manager.interrupt_predecessor() == [killed.id]
    entry = await manager.operation(OTHER, killed.id)
    assert entry["state"] == "interrupted"
    assert "import" in entry["message"] and "again" in entry["message"]
    # Not resumed (its options died with the process), and the course is free again.
    assert await manager.resume_unfinished() == []
    started = await manager.start_import(
        OTHER, {"course_id": COURSE_ID}, "assignment", assignment="ps2", actor="u100"
    )
    assert (await ended(manager, started))["state"] == "finished"


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
async def test_a_full_disk_in_any_blocking_call_says_so(code):
    """The blocking halves (InThread) and the libraries' calls (ManageService._thread)
    share one mapping: a full disk or quota is Unavailable with words for the
    instructor; any other OSError goes on as it was."""
    from kore.manage.context import ManageService
    from kore.manage.threads import InThread

    class Disk:
        def write(self, fail: int):
            raise OSError(fail, os.strerror(fail))

    for call in (InThread(Disk()).write, functools.partial(ManageService._thread, Disk().write)):
        with pytest.raises(Unavailable, match="disk is full.*free space") as info:
            await call(code)
        assert info.value.__cause__.errno == code
        with pytest.raises(PermissionError):
            await call(errno.EACCES)
    assert await InThread(Path("/")).is_dir() is True


async def test_the_blocking_halves_refuse_to_run_on_the_event_loop(world):
    """Separate objects whose methods raise on the loop's thread; the async parts reach
    them only as coroutines run in a thread."""
    from kore.manage.backups_files import BackupFiles
    from kore.manage.course_files import CourseFiles
    from kore.manage.importer_files import ImportFiles
    from kore.manage.listing import live_listing
    from kore.manage.threads import BlockingCallInLoop, InThread

    files_ = BackupFiles(world.layout, str(world.backups), 0)
    with pytest.raises(BlockingCallInLoop, match="check_size"):
        files_.check_size(world.paths)
    with pytest.raises(BlockingCallInLoop):
        CourseFiles(world.layout).remove_student_files(world.paths)
    with pytest.raises(BlockingCallInLoop):
        ImportFiles(world.layout).listing(None)
    with pytest.raises(BlockingCallInLoop):
        live_listing(world.paths)
    # Through InThread the same call runs (in a thread) and answers.
    assert await InThread(files_).check_size(world.paths) is None
    assert ASSIGNMENT in await asyncio.to_thread(live_listing, world.paths)
    # The manager's parts hold no blocking object, only InThread wrappers.
    manager = world.manager()
    for part in (manager.backups, manager.engine, manager.importer):
        for name in ("_backup_files", "_course_files", "_import_files"):
            assert isinstance(getattr(part, name), InThread)
        assert not any(
            isinstance(v, BackupFiles | CourseFiles | ImportFiles) for v in vars(part).values()
        )


async def test_emptying_a_group_whose_member_was_deleted_meanwhile():
    """JupyterHub answers 400 ("No such user"), not 404, when a user named in
    ``DELETE /groups/<g>/users`` is gone (``tests/test_fake_hub.py`` checks the fake
    says the same): the others still leave the group, and the call does not fail."""
    with FakeHub(service_token="kore-token") as hub:
        hub.users |= {"grader-c1", "u1", "u2"}
        hub.groups["formgrade-c1"] = {"grader-c1", "u1", "u2"}
        admin = HubAdmin(api_url=hub.api_url, token="kore-token", poll_interval=0)
        read_members = admin.group_members

        async def members_then_u2_deleted(group):
            members = await read_members(group)
            hub.users.discard("u2")  # deleted by someone else between the two calls
            hub.groups.get("formgrade-c1", set()).discard("u2")
            return members

        admin.group_members = members_then_u2_deleted
        assert await admin.empty_group("formgrade-c1") == ["grader-c1", "u1"]
        assert hub.groups["formgrade-c1"] == set()
        # A group that went meanwhile (404) is empty too.
        hub.groups.pop("formgrade-c1")
        assert await admin.empty_group("formgrade-c1") == []
