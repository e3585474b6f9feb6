"""Hub-level: course management through a real hub, Kore and the built-in LMS.

Ada (instructor) launches the two activities of the built-in LMS ("homework" and
"exam": two courses she teaches), Alan launches "homework" as a student. The homework
course gets nbgrader content: an assignment in ``source/`` registered in the gradebook,
Alan's graded submission (gradebook, ``submitted/``, the exchange's ``inbound/``); the
exam course an assignment of its own. Then, through Kore's API with Ada's hub token:
backup (listed, downloadable, a tar.gz with its manifest first), imports (an assignment,
a notebook, from a course and from a backup; 409 without overwrite, the old version
kept aside with it), reset (a backup first; the student and his work gone, assignments
kept, he left the hub group), delete (a backup first; the course gone from api/courses
and the grader account from the hub; the backup still listed and downloadable), and the
audit log of each. One hub for the module: they are slow to start.
"""

import asyncio
import io
import json
import re
import tarfile
import time

import httpx
import pytest
from fake_hub import FakeHub
from hubtest import admin_stack, hub_api, hub_log
from kore_operations import afollow
from lti_browser import LTIBrowser
from test_grade_sync import add_assignment, gradebook, submit
from test_kore_courses import launch
from test_kore_settings import HubStartedKore

from ananke_hub.courses import nbgrader_setup
from ananke_hub.courses.identity import course_id_for
from ananke_hub.courses.layout import CourseLayout, grader_username
from ananke_hub.courses.registry import CourseRegistry
from ananke_hub.courses.settings import CourseSettings
from ananke_hub.testlms.demo import DEMO_CLIENT_ID, DEMO_DEPLOYMENT_ID
from kore.manage.names import new_backup_id
from kore.manage.store import ManageStore

pytestmark = pytest.mark.slow

ADMIN = "uadmin"


def notebook(text: str, grade_id: str = "q1") -> str:
    """An nbgrader-style notebook: one autograded answer cell with its metadata."""
    cell = {
        "cell_type": "code",
        "execution_count": None,
        "metadata": {
            "nbgrader": {
                "grade": False,
                "grade_id": grade_id,
                "locked": False,
                "schema_version": 3,
                "solution": True,
                "task": False,
            }
        },
        "outputs": [],
        "source": text,
    }
    return json.dumps({"cells": [cell], "metadata": {}, "nbformat": 4, "nbformat_minor": 5})


def course(stack, link: str) -> str:
    return course_id_for(stack.platform_url, DEMO_CLIENT_ID, DEMO_DEPLOYMENT_ID, link)


def layout(stack) -> CourseLayout:
    return CourseLayout(
        homes_root=str(stack.layout.local_homes), exchange_root=str(stack.layout.root / "exchange")
    )


async def token(stack, user) -> str:
    resp = await hub_api(stack, f"/users/{user}/tokens", method="POST")
    assert resp.status_code == 201, resp.text
    return resp.json()["token"]


class Kore:
    """Kore's API with one user's hub token."""

    def __init__(self, stack, user_token: str):
        self.hub_url = stack.hub_url
        self.base = f"{stack.hub_url}/services/kore/api/"
        self.headers = {"Authorization": f"token {user_token}"}

    async def __call__(self, method: str, path: str, body=None) -> httpx.Response:
        async with httpx.AsyncClient(timeout=180) as http:
            return await http.request(method, self.base + path, headers=self.headers, json=body)

    async def follow(self, started: httpx.Response) -> dict:
        """A background operation's entry once it ended (the POST answered 202)."""

        async def get(path):
            async with httpx.AsyncClient(timeout=60) as http:
                return await http.get(self.hub_url + path, headers=self.headers)

        return await afollow(get, started)


@pytest.fixture(scope="module")
async def stack(tmp_path_factory):
    extra = {"Authenticator": {"admin_users": [ADMIN]}}
    async with admin_stack(tmp_path_factory.mktemp("hub"), extra_config=extra) as s:
        for sub, link in (("2", "homework"), ("2", "exam"), ("3", "homework")):
            async with LTIBrowser() as browser:
                assert (await browser.launch(s.platform_url, sub, link)).status_code == 200
        yield s


@pytest.fixture(scope="module")
async def school(stack):
    """Course ids, Ada's, Alan's and the admin's API, and the nbgrader content."""
    homework, exam = course(stack, "homework"), course(stack, "exam")
    paths = layout(stack).course(homework)
    source = paths.home / "source" / "hw1"
    source.mkdir(parents=True)
    (source / "problem1.ipynb").write_text(notebook("# homework 1, problem 1"))
    add_assignment(layout(stack), homework, "hw1", 5)
    submit(layout(stack), homework, "u3", "hw1", 4)
    submitted = paths.home / "submitted" / "u3" / "hw1"
    submitted.mkdir(parents=True)
    (submitted / "problem1.ipynb").write_text(notebook("print('Alan was here')"))
    inbound = paths.inbound
    inbound.mkdir(parents=True, exist_ok=True)
    (inbound / "u3+hw1+2030-01-01 00:00:00.000000 UTC+abc").mkdir()
    exam_source = layout(stack).course(exam).home / "source" / "exam1"
    exam_source.mkdir(parents=True)
    (exam_source / "q1.ipynb").write_text(notebook("# exam question 1"))
    add_assignment(layout(stack), exam, "exam1", 10)
    return {
        "homework": homework,
        "exam": exam,
        "ada": Kore(stack, await token(stack, "u2")),
        "alan": Kore(stack, await token(stack, "u3")),
        "admin": Kore(stack, await token(stack, ADMIN)),
        "backups": {},
    }


async def hub_groups(stack, user) -> list[str]:
    resp = await hub_api(stack, f"/users/{user}")
    assert resp.status_code == 200, resp.text
    return resp.json()["groups"]


def students(stack, course_id) -> list[str]:
    with gradebook(layout(stack), course_id) as gb:
        return sorted(s.id for s in gb.students)


def members(data: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: m for m in tar.getmembers()}


def manifest(data: bytes) -> dict:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        first = tar.next()
        assert first.name == "manifest.json"
        return json.load(tar.extractfile(first))


async def audit(school, course_id) -> list[tuple[str, str]]:
    r = await school["admin"]("GET", f"audit?course_id={course_id}&limit=500")
    assert r.status_code == 200, r.text
    return [(e["action"], e["outcome"]) for e in r.json()["events"]]


# --- backup -------------------------------------------------------------------------------------


async def test_the_instructor_backs_up_her_course(stack, school):
    ada, homework = school["ada"], school["homework"]
    r = await ada("POST", f"courses/{homework}/backups")
    assert r.status_code == 202, r.text
    started = r.json()
    assert (started["kind"], started["state"]) == ("backup", "running")
    assert started["steps"] == ["backup"]
    operation = await ada.follow(r)
    assert (operation["state"], operation["step"]) == ("finished", 1), operation
    backup_id = operation["backup_id"]
    assert backup_id == started["backup_id"]
    school["backups"]["manual"] = backup_id
    entry = (await ada("GET", f"backups/{backup_id}")).json()
    assert (entry["course_id"], entry["reason"], entry["created_by"]) == (homework, "manual", "u2")
    assert entry["contents"]["assignments"] == ["hw1"] and entry["contents"]["students"] == 1
    listed = (await ada("GET", f"courses/{homework}/backups")).json()["backups"]
    assert backup_id in {b["backup_id"] for b in listed}
    assert backup_id in {b["backup_id"] for b in (await ada("GET", "backups")).json()["backups"]}
    # Alan, a student of the course, sees none and cannot make one.
    assert (await school["alan"]("GET", "backups")).json() == {"backups": []}
    assert (await school["alan"]("POST", f"courses/{homework}/backups")).status_code == 403

    download = await ada("GET", f"backups/{backup_id}/download")
    assert download.status_code == 200
    assert download.headers["content-type"] == "application/gzip"
    assert "attachment" in download.headers["content-disposition"]
    info = manifest(download.content)
    assert (info["backup_id"], info["course_id"]) == (backup_id, homework)
    names = members(download.content)
    for name in (
        "course/source/hw1/problem1.ipynb",
        "course/submitted/u3/hw1/problem1.ipynb",
        "course/gradebook.db",
    ):
        assert name in names, sorted(names)
    assert any(n.startswith("exchange/inbound/u3+hw1") for n in names), sorted(names)
    assert all(n.split("/")[0] in {"manifest.json", "course", "exchange"} for n in names)


async def test_backup_contents_offer_its_assignments(school):
    r = await school["ada"]("GET", f"backups/{school['backups']['manual']}/contents")
    assert r.status_code == 200, r.text
    assert r.json()["assignments"] == [{"name": "hw1", "notebooks": ["problem1.ipynb"]}]


# --- import -------------------------------------------------------------------------------------


async def run_import(user, course_id: str, body: dict) -> dict:
    """An import runs in the background: 202 with its operation, followed to its end."""
    started = await user("POST", f"courses/{course_id}/import", body)
    assert started.status_code == 202, started.text
    entry = started.json()
    assert (entry["kind"], entry["state"], entry["course_id"]) == ("import", "running", course_id)
    assert entry["url"].endswith(f"/operations/{entry['operation_id']}")
    return await user.follow(started)


async def test_import_an_assignment_from_another_course(stack, school):
    ada, homework, exam = school["ada"], school["homework"], school["exam"]
    refusals = (await audit(school, homework)).count(("course.import", "refused"))
    r = await ada("GET", f"courses/{exam}/contents")
    assert r.json()["assignments"] == [{"name": "exam1", "notebooks": ["q1.ipynb"]}]
    body = {"from": {"course_id": exam}, "what": "assignment", "assignment": "exam1"}
    op = await run_import(ada, homework, body)
    assert op["state"] == "finished", op
    assert op["result"]["imported"] == ["source/exam1"]
    home = layout(stack).course(homework).home
    copied = home / "source" / "exam1" / "q1.ipynb"
    assert "exam question 1" in copied.read_text()
    assert copied.stat().st_uid == home.stat().st_uid  # the target grader's ownership
    with gradebook(layout(stack), homework) as gb:
        assert {a.name for a in gb.assignments} == {"hw1", "exam1"}

    # Again: refused, nothing changed; with overwrite: replaced, the old one kept aside.
    copied.write_text(notebook("# edited in homework"))
    again = await ada("POST", f"courses/{homework}/import", body)
    assert again.status_code == 409, again.text  # refused before it starts
    assert "overwrite" in again.json()["message"]
    assert "edited in homework" in copied.read_text()
    # One audit event for the refusal: the manager's, not a second one from the route.
    refused = (await audit(school, homework)).count(("course.import", "refused"))
    assert refused == refusals + 1
    op = await run_import(ada, homework, {**body, "overwrite": True})
    assert op["state"] == "finished", op
    (aside,) = op["result"]["replaced"]
    assert aside.startswith(".ananke/replaced/")
    assert "edited in homework" in (home / aside / "q1.ipynb").read_text()
    assert "exam question 1" in copied.read_text()


async def test_import_a_notebook_into_another_assignment(stack, school):
    ada, homework, exam = school["ada"], school["homework"], school["exam"]
    body = {
        "from": {"course_id": exam},
        "what": "notebook",
        "assignment": "exam1",
        "notebook": "q1.ipynb",
        "as_assignment": "hw1",
    }
    op = await run_import(ada, homework, body)
    assert op["state"] == "finished", op
    home = layout(stack).course(homework).home
    assert sorted(p.name for p in (home / "source" / "hw1").iterdir()) == [
        "problem1.ipynb",
        "q1.ipynb",
    ]
    assert (await ada("POST", f"courses/{homework}/import", body)).status_code == 409


async def test_import_from_a_backup_and_a_whole_course(stack, school):
    ada, homework, exam = school["ada"], school["homework"], school["exam"]
    backup_id = school["backups"]["manual"]
    body = {"from": {"backup_id": backup_id}, "what": "assignment", "assignment": "hw1"}
    op = await run_import(ada, exam, body)
    assert op["state"] == "finished", op
    exam_home = layout(stack).course(exam).home
    assert "homework 1" in (exam_home / "source" / "hw1" / "problem1.ipynb").read_text()
    assert not (exam_home / "submitted").exists() or not any((exam_home / "submitted").iterdir())
    # The whole homework course into the exam course: both assignments exist there now.
    whole = {"from": {"course_id": homework}, "what": "course"}
    r = await ada("POST", f"courses/{exam}/import", whole)
    assert r.status_code == 409, r.text
    op = await run_import(ada, exam, {**whole, "overwrite": True})
    assert op["state"] == "finished", op
    assert {"source/hw1", "source/exam1"} <= set(op["result"]["imported"])
    # A student may import nothing, from nowhere.
    assert (await school["alan"]("POST", f"courses/{homework}/import", body)).status_code == 403


async def test_import_while_the_grader_server_runs(stack, school):
    """The formgrader's server (the grader account's lab) keeps running through an import
    and sees the new notebook at once, through its own contents API."""
    ada, homework, exam = school["ada"], school["homework"], school["exam"]
    grader = grader_username(exam)
    started = await hub_api(stack, f"/users/{grader}/server", method="POST")
    assert started.status_code in (201, 202), started.text
    for _ in range(240):  # polls while the server starts
        model = (await hub_api(stack, f"/users/{grader}")).json()
        server = (model.get("servers") or {}).get("")
        if server and server.get("ready"):
            break
        await asyncio.sleep(0.5)
    else:
        pytest.fail(f"the grader's server did not become ready: {model}")
    try:
        body = {
            "from": {"course_id": homework},
            "what": "notebook",
            "assignment": "hw1",
            "notebook": "problem1.ipynb",
            "as_assignment": "exam1",
        }
        op = await run_import(ada, exam, body)
        assert op["state"] == "finished", op
        # Ada's token reaches the grader's server (her staff role), like her formgrader.
        contents = f"{stack.hub_url}/user/{grader}/api/contents/source/exam1/problem1.ipynb"
        async with httpx.AsyncClient(timeout=60) as http:
            seen = await http.get(contents, headers=ada.headers)
        assert seen.status_code == 200, seen.text
        assert "homework 1, problem 1" in json.dumps(seen.json()["content"])
        model = (await hub_api(stack, f"/users/{grader}")).json()
        assert model["servers"][""]["ready"]  # still running
    finally:
        await hub_api(stack, f"/users/{grader}/server", method="DELETE")


# --- reset --------------------------------------------------------------------------------------


async def test_reset_makes_a_backup_then_removes_the_students(stack, school):
    ada, homework = school["ada"], school["homework"]
    paths = layout(stack).course(homework)
    group = f"nbgrader-{homework}"
    assert group in await hub_groups(stack, "u3")
    assert students(stack, homework) == ["u3"]

    wrong = await ada("POST", f"courses/{homework}/reset", {"confirm": "Exam"})
    assert wrong.status_code == 400 and homework in wrong.json()["message"]
    assert students(stack, homework) == ["u3"]
    assert (
        await school["alan"]("POST", f"courses/{homework}/reset", {"confirm": homework})
    ).status_code == 403

    r = await ada("POST", f"courses/{homework}/reset", {"confirm": homework})
    assert r.status_code == 202, r.text
    assert r.json()["state"] == "running"
    operation = await ada.follow(r)
    assert (operation["kind"], operation["state"]) == ("reset", "finished"), operation
    assert operation["step"] == len(operation["steps"])
    school["backups"]["reset"] = operation["backup_id"]
    backup = (await ada("GET", f"backups/{operation['backup_id']}")).json()
    assert (backup["reason"], backup["contents"]["students"]) == ("before-reset", 1)

    assert students(stack, homework) == []
    assert not (paths.home / "submitted").exists()
    assert sorted(p.name for p in paths.inbound.iterdir()) == []
    assert (paths.home / "source" / "hw1" / "problem1.ipynb").exists()  # assignments stay
    with gradebook(layout(stack), homework) as gb:
        assert {a.name for a in gb.assignments} == {"hw1", "exam1"}
    assert group not in await hub_groups(stack, "u3")
    # Alan is no longer in the course; Ada still teaches it.
    assert homework not in {c["course_id"] for c in (await school["alan"]("GET", "courses")).json()}
    assert homework in {c["course_id"] for c in (await ada("GET", "courses")).json()}
    ops = (await ada("GET", f"courses/{homework}/operations")).json()["operations"]
    assert ops[0]["operation_id"] == operation["operation_id"]


# --- delete -------------------------------------------------------------------------------------


async def test_delete_makes_a_backup_then_the_course_is_gone(stack, school):
    ada, exam = school["ada"], school["exam"]
    paths = layout(stack).course(exam)
    r = await ada("POST", f"courses/{exam}/delete", {"confirm": exam})
    assert r.status_code == 202, r.text
    operation = await ada.follow(r)
    assert (operation["kind"], operation["state"]) == ("delete", "finished"), operation
    backup_id = operation["backup_id"]
    school["backups"]["delete"] = backup_id

    assert exam not in {c["course_id"] for c in (await ada("GET", "courses")).json()}
    assert not paths.home.exists() and not paths.exchange.exists()
    assert (await hub_api(stack, f"/users/{grader_username(exam)}")).status_code == 404
    assert not {f"nbgrader-{exam}", f"formgrade-{exam}"} & set(await hub_groups(stack, "u2"))
    # The course's routes are closed to its former instructor; its backups are hers still.
    assert (await ada("GET", f"courses/{exam}/backups")).status_code == 403
    listed = {b["backup_id"]: b for b in (await ada("GET", "backups")).json()["backups"]}
    assert listed[backup_id]["reason"] == "before-delete"
    assert listed[backup_id]["course_exists"] is False
    download = await ada("GET", f"backups/{backup_id}/download")
    assert download.status_code == 200
    assert manifest(download.content)["course_id"] == exam
    assert "course/source/exam1/q1.ipynb" in members(download.content)


# --- audit --------------------------------------------------------------------------------------


async def test_every_operation_is_in_the_audit_log(school):
    homework, exam = school["homework"], school["exam"]
    change = await school["ada"]("PATCH", f"courses/{homework}/settings", {"execute_timeout": 60})
    assert change.status_code == 200, change.text
    events = await audit(school, homework)
    assert ("settings.update", "ok") in events
    for event in [
        ("backup.create", "ok"),
        ("backup.download", "ok"),
        ("course.import", "ok"),
        ("course.import", "refused"),
        ("course.reset", "started"),
        ("course.reset", "ok"),
        ("course.reset", "refused"),
    ]:
        assert event in events, (event, events)
    assert ("course.delete", "ok") in await audit(school, exam)
    # Ada reads her course's log; Alan may not, nor the whole log.
    r = await school["ada"]("GET", f"courses/{homework}/audit?limit=5")
    assert r.status_code == 200 and len(r.json()["events"]) == 5
    assert (await school["alan"]("GET", f"courses/{homework}/audit")).status_code == 403
    assert (await school["ada"]("GET", "audit")).status_code == 403


async def test_a_backup_is_deleted_by_its_owner(school):
    ada = school["ada"]
    backup_id = school["backups"]["manual"]
    assert (await school["alan"]("DELETE", f"backups/{backup_id}")).status_code == 404
    r = await ada("DELETE", f"backups/{backup_id}")
    assert r.status_code == 204, r.text
    assert (await ada("GET", f"backups/{backup_id}")).status_code == 404
    assert (await ada("GET", f"backups/{backup_id}/download")).status_code == 404
    assert ("backup.delete", "ok") in await audit(school, school["homework"])


async def test_kore_answered_no_request_with_a_server_error(stack, school):
    kore_lines = [line for line in hub_log(stack).splitlines() if " Kore] " in line]
    assert kore_lines
    assert not [line for line in kore_lines if re.search(r"Kore\] 5\d\d ", line)], kore_lines
    assert "Traceback" not in hub_log(stack)


# --- an operation a stopped Kore left half-done -------------------------------------------------


def test_kore_finishes_an_interrupted_reset_when_it_starts(tmp_path):
    """A reset recorded as running (Kore died after starting it) is finished by the next
    Kore, in the background: Kore serves at once (its keyset answers) meanwhile."""
    registry = CourseRegistry(url=f"sqlite:///{tmp_path / 'courses.sqlite'}")
    course_id = launch(registry, "uann", "A", "instructor", "Homework")
    launch(registry, "ulea", "A", "learner", "Homework")
    paths = CourseLayout(
        homes_root=str(tmp_path / "homes"), exchange_root=str(tmp_path / "exchange")
    ).course(course_id)
    nbgrader_setup.ensure_course_files(paths, course_id, CourseSettings())
    (paths.home / "submitted" / "ulea").mkdir(parents=True)
    operation = ManageStore(registry).start_operation(course_id, "reset", "uann", new_backup_id())
    registry.close()
    with FakeHub() as hub:
        hub.add_user("t-ann", "uann")
        kore = HubStartedKore(
            tmp_path / "kore",
            hub.api_url,
            CourseLayout(
                homes_root=str(tmp_path / "homes"), exchange_root=str(tmp_path / "exchange")
            ),
        )
        url = f"sqlite:///{tmp_path / 'courses.sqlite'}"
        (kore.config_dir / "55_test_registry.py").write_text(
            f"c = get_config()  # noqa\nc.CourseRegistry.url = {url!r}\n"
        )
        kore.start()  # returns once the keyset answers
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                r = httpx.get(
                    kore.url(f"api/courses/{course_id}/operations"),
                    headers={"Authorization": "token t-ann"},
                )
                assert r.status_code == 200, r.text
                (entry,) = r.json()["operations"]
                if entry["state"] != "running":
                    break
                time.sleep(0.2)
        finally:
            kore.stop()
    assert entry["operation_id"] == operation.id
    assert entry["state"] == "finished", entry
    assert not (paths.home / "submitted").exists()
    assert f"course:{course_id} resumed reset {operation.id}: finished" in kore.log


def test_kore_marks_an_import_its_killed_predecessor_left_running_interrupted(tmp_path):
    """What a SIGKILLed Kore leaves of an import (its operation "running" in the
    registry): the next Kore marks it interrupted before it serves, says what to do, and
    the course is free for a new operation."""
    registry = CourseRegistry(url=f"sqlite:///{tmp_path / 'courses.sqlite'}")
    course_id = launch(registry, "uann", "A", "instructor", "Homework")
    homes = CourseLayout(homes_root=str(tmp_path / "homes"), exchange_root=str(tmp_path / "ex"))
    nbgrader_setup.ensure_course_files(homes.course(course_id), course_id, CourseSettings())
    killed = ManageStore(registry).start_operation(course_id, "import", "uann", "")
    registry.close()
    with FakeHub() as hub:
        hub.add_user("t-ann", "uann")
        kore = HubStartedKore(tmp_path / "kore", hub.api_url, homes)
        url = f"sqlite:///{tmp_path / 'courses.sqlite'}"
        (kore.config_dir / "55_test_registry.py").write_text(
            f"c = get_config()  # noqa\nc.CourseRegistry.url = {url!r}\n"
        )
        kore.start()  # returns once the keyset answers: the predecessor's work is marked
        try:
            r = httpx.get(
                kore.url(f"api/courses/{course_id}/operations/{killed.id}"),
                headers={"Authorization": "token t-ann"},
            )
            assert r.status_code == 200, r.text
            entry = r.json()
            backup = httpx.post(
                kore.url(f"api/courses/{course_id}/backups"),
                headers={"Authorization": "token t-ann"},
                json={},
            )
        finally:
            kore.stop()
    assert (entry["kind"], entry["state"], entry["result"]) == ("import", "interrupted", None)
    assert "Kore stopped while this import ran" in entry["message"]
    assert "run the import again" in entry["message"]
    assert backup.status_code == 202, backup.text  # not 409: nothing runs any more
