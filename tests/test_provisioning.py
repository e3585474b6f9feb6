"""Hub-level: every LMS activity becomes an nbgrader course at launch, no hub restart.

A real JupyterHub with its proxy, Kore and the built-in LMS (DemoStack), real nbgrader
gradebooks, the course registry in SQLite.
"""

import asyncio
import hashlib
import json
from pathlib import Path

import pytest
from hubtest import admin_stack, callback, forge, hub_api, initiate, person
from lti_browser import LTIBrowser
from nbgrader.api import Gradebook
from sqlalchemy import update

from ananke_hub.courses.identity import TITLE_MAX, clean_text, course_id_for
from ananke_hub.courses.layout import CourseLayout
from ananke_hub.courses.models import Member
from ananke_hub.courses.registry import CourseRegistry
from ananke_hub.lab.exchange import INBOUND_MODE
from ananke_hub.testlms import demo_data
from ananke_hub.testlms.demo import DEMO_CLIENT_ID, DEMO_DEPLOYMENT_ID

pytestmark = pytest.mark.slow

CLAIM = "https://purl.imsglobal.org/spec/lti/claim/"
M = "http://purl.imsglobal.org/vocab/lis/v2/membership#"


@pytest.fixture(scope="module")
async def stack(tmp_path_factory):
    async with admin_stack(tmp_path_factory.mktemp("hub")) as stack:
        yield stack


def course_of(stack, link_id: str) -> str:
    return course_id_for(stack.platform_url, DEMO_CLIENT_ID, DEMO_DEPLOYMENT_ID, link_id)


def layout(stack) -> CourseLayout:
    return CourseLayout(
        homes_root=str(stack.layout.local_homes), exchange_root=str(stack.layout.root / "exchange")
    )


def registry(stack) -> CourseRegistry:
    return CourseRegistry(url=f"sqlite:///{stack.layout.root / 'courses.sqlite'}")


def hub_identity(stack) -> tuple[int, str]:
    """The hub process and its start time (field 22 of /proc/<pid>/stat)."""
    pid = stack.processes["jupyterhub"].pid
    stat = Path(f"/proc/{pid}/stat").read_text()
    return pid, stat.rsplit(")", 1)[1].split()[19]


async def user(stack, name):
    resp = await hub_api(stack, f"/users/{name}")
    assert resp.status_code == 200, f"{name}: {resp.status_code}"
    return resp.json()


def gradebook_students(stack, course_id) -> dict:
    with Gradebook(layout(stack).course(course_id).gradebook_url) as gb:
        return {s.id: (s.lms_user_id, s.first_name, s.last_name, s.email) for s in gb.students}


async def enrolled(stack, course_id, username, timeout=60) -> tuple:
    """The student's gradebook row once the launch's enrolment is done: it runs after
    the login answered (a lab's start waits for it), so it is not there at once."""
    deadline = asyncio.get_running_loop().time() + timeout
    reg = registry(stack)
    try:
        while True:
            rows = {m.username: m for m in reg.members(course_id)}
            member = rows.get(username)
            if member is not None and member.in_gradebook:
                return gradebook_students(stack, course_id)[username]
            assert asyncio.get_running_loop().time() < deadline, f"{username} never enrolled"
            await asyncio.sleep(0.2)
    finally:
        reg.close()


async def launch(stack, sub, link="homework", browser=None):
    if browser is None:
        async with LTIBrowser() as browser:
            return await launch(stack, sub, link, browser)
    resp = await browser.launch(stack.platform_url, sub, link)
    assert resp.status_code == 200, resp.text[:300]


async def forged_launch(stack, sub, *, link_id, role, title="Project", **claims):
    overrides = {
        CLAIM + "resource_link": {"id": link_id, "title": title},
        CLAIM + "roles": [M + role],
        **claims,
    }
    async with LTIBrowser() as browser:
        state, nonce, _ = await initiate(browser, stack, sub)
        return await callback(browser, stack, forge(stack, nonce, person(sub), overrides=overrides), state)


async def test_instructor_launch_creates_the_course_without_restart(stack):
    before = hub_identity(stack)
    await launch(stack, "2")
    assert hub_identity(stack) == before  # same process, never restarted

    cid = course_of(stack, "homework")
    course = registry(stack).get(cid)
    assert course.title == "Data Science 101 - Homework"
    ada = await user(stack, "u2")
    assert f"formgrade-{cid}" in ada["groups"]
    assert f"staff-{cid}" in ada["roles"] and "user" in ada["roles"]
    grader = await user(stack, f"grader-{cid}")
    assert grader["name"] == f"grader-{cid}"
    # nbgrader's JupyterHubAuthPlugin finds the grader's course by this group: without
    # it the formgrader never sees a release and offers no Collect.
    assert grader["groups"] == [f"formgrade-{cid}"]

    paths = layout(stack).course(cid)
    config = json.loads(paths.nbgrader_config.read_text())
    assert config["CourseDirectory"]["course_id"] == cid
    assert paths.gradebook.exists()
    assert paths.inbound.stat().st_mode & 0o7777 == INBOUND_MODE  # students cannot list it


async def test_teaching_assistant_shares_the_course(stack):
    await launch(stack, "5")
    cid = course_of(stack, "homework")
    grace = await user(stack, "u5")
    assert f"formgrade-{cid}" in grace["groups"] and f"staff-{cid}" in grace["roles"]
    members = {m.username: m.role for m in registry(stack).members(cid)}
    assert members["u5"] == "teaching_assistant" and members["u2"] == "instructor"


async def test_student_launch_enrols_in_the_gradebook(stack):
    await launch(stack, "3")
    cid = course_of(stack, "homework")
    alan = await user(stack, "u3")
    assert alan["groups"] == [f"nbgrader-{cid}"]
    assert f"staff-{cid}" not in alan["roles"]
    assert await enrolled(stack, cid, "u3") == ("3", "Alan", "Turing", "alan.turing@example.edu")
    students = gradebook_students(stack, cid)
    assert "u2" not in students and "u5" not in students  # staff are no students


async def test_names_and_email_kept_up_to_date(stack):
    cid = course_of(stack, "homework")
    resp = await forged_launch(
        stack, "3", link_id="homework", role="Learner", title="Homework", email="alan@new.example"
    )
    assert resp.status_code == 302
    assert (await enrolled(stack, cid, "u3"))[3] == "alan@new.example"


async def test_second_course_keeps_the_first(stack):
    await launch(stack, "2", "exam")
    ada = await user(stack, "u2")
    for link in ("homework", "exam"):
        cid = course_of(stack, link)
        assert f"formgrade-{cid}" in ada["groups"] and f"staff-{cid}" in ada["roles"]


async def test_student_before_any_instructor(stack):
    resp = await forged_launch(stack, "931", link_id="lab-7", role="Learner", title="Lab 7")
    assert resp.status_code == 302
    cid = course_of(stack, "lab-7")
    assert registry(stack).get(cid).title == "Data Science 101 - Lab 7"
    assert (await enrolled(stack, cid, "u931"))[0] == "931"
    resp = await forged_launch(stack, "2", link_id="lab-7", role="Instructor", title="Lab 7")
    assert resp.status_code == 302
    assert f"formgrade-{cid}" in (await user(stack, "u2"))["groups"]
    assert f"nbgrader-{cid}" in (await user(stack, "u931"))["groups"]


@pytest.mark.parametrize(
    "title",
    ["'); import os; os.system('id') #", 'Quotes "x" {braces} ${HOME}', "Line\nbreak", "x" * 2000, ""],
)
async def test_hostile_titles_are_data(stack, title):
    link_id = "hostile-" + hashlib.sha256(title.encode()).hexdigest()[:12]
    resp = await forged_launch(stack, "932", link_id=link_id, role="Instructor", title=title)
    assert resp.status_code == 302
    cid = course_of(stack, link_id)
    course = registry(stack).get(cid)
    assert course.link_title == clean_text(title, TITLE_MAX)  # stored as given, cleaned
    assert "\n" not in course.title and len(course.link_title) <= TITLE_MAX
    config = json.loads(layout(stack).course(cid).nbgrader_config.read_text())
    assert config["CourseDirectory"]["course_id"] == cid  # the id, never the title


async def test_launch_without_resource_link_is_refused(stack):
    async with LTIBrowser() as browser:
        state, nonce, _ = await initiate(browser, stack, "933")
        token = forge(stack, nonce, person("933"), overrides={CLAIM + "resource_link": None})
        resp = await callback(browser, stack, token, state)
    assert resp.status_code == 400
    assert "no activity" in resp.text or "resource_link" in resp.text
    assert (await hub_api(stack, "/users/u933")).status_code == 404


async def test_instructor_reaches_the_formgrader_from_kore(stack):
    async with LTIBrowser() as browser:
        await launch(stack, "2", browser=browser)
        home = await browser.get(f"{stack.hub_url}/services/kore/")  # logs in to Kore (OAuth)
        assert home.status_code == 200 and "Data Science 101 - Homework" in home.text
        courses = (await browser.get(f"{stack.hub_url}/services/kore/api/courses")).json()
        homework = next(c for c in courses if c["course_id"] == course_of(stack, "homework"))
        assert homework["role"] == "instructor" and homework["formgrader_url"]
        resp = await browser.get(stack.hub_url + homework["formgrader_url"])
        for _ in range(60):  # the grader's server starts: Kore's page reloads until ready
            if "/formgrader" in str(resp.url) and "/user/grader-" in str(resp.url):
                break
            await asyncio.sleep(1)
            resp = await browser.get(str(resp.url))
        assert resp.status_code == 200, (resp.status_code, str(resp.url), resp.text[:500])
        assert f"/user/grader-{homework['course_id']}/formgrader" in str(resp.url)
        assert "formgrader" in resp.text.lower()


async def test_student_cannot_open_the_formgrader(stack):
    cid = course_of(stack, "homework")
    async with LTIBrowser() as browser:
        await launch(stack, "3", browser=browser)
        await browser.get(f"{stack.hub_url}/services/kore/")
        courses = (await browser.get(f"{stack.hub_url}/services/kore/api/courses")).json()
        assert [c["course_id"] for c in courses] == [cid]
        assert all(not c.get("formgrader_url") for c in courses)
        kore = await browser.get(f"{stack.hub_url}/services/kore/courses/{cid}/formgrader")
        assert kore.status_code == 403
        direct = await browser.get(f"{stack.hub_url}/user/grader-{cid}/formgrader")
        assert direct.status_code in (403, 404) or "/user/grader-" not in str(direct.url)


def test_demo_users_are_what_the_tests_expect():
    assert demo_data.ALAN.sub == "3" and demo_data.ADA.sub == "2" and demo_data.GRACE.sub == "5"


async def test_hub_admins_keep_admin_rights_when_they_launch(tmp_path):
    config = {"Authenticator": {"admin_users": ["u2"]}}
    async with admin_stack(tmp_path, extra_config=config) as admin_hub:
        async with LTIBrowser() as browser:
            await launch(admin_hub, "2", browser=browser)
            ada = await user(admin_hub, "u2")
            assert ada["admin"] is True and "admin" in ada["roles"]
            assert any(r.startswith("staff-") for r in ada["roles"])
            page = await browser.get(f"{admin_hub.hub_url}/hub/admin")
            assert page.status_code == 200


async def test_a_lab_starts_only_once_its_student_is_in_the_gradebook(tmp_path):
    """The login does not wait for the gradebook; the lab's start does. Here the hub
    restarts between the two, with the enrolment lost (as a crash during it leaves it):
    the lab's start enrols the student before the lab runs."""
    async with admin_stack(tmp_path / "hub") as stack:
        resp = await forged_launch(stack, "960", link_id="lab-9", role="Learner", title="Lab 9")
        assert resp.status_code == 302
        cid = course_of(stack, "lab-9")
        await enrolled(stack, cid, "u960")
        # What a crash before the gradebook write leaves: no row, the flag unset.
        with Gradebook(layout(stack).course(cid).gradebook_url, cid) as gb:
            gb.remove_student("u960")
        reg = registry(stack)
        try:
            with reg.session() as s, s.begin():
                s.execute(update(Member).where(Member.username == "u960").values(in_gradebook=False))
        finally:
            reg.close()
        await stack.restart_hub()

        resp = await hub_api(stack, "/users/u960/server", "POST")
        assert resp.status_code in (201, 202), resp.text
        deadline = asyncio.get_running_loop().time() + 180
        while not ((await user(stack, "u960"))["servers"].get("", {}).get("ready")):
            assert asyncio.get_running_loop().time() < deadline, "the lab never started"
            await asyncio.sleep(0.5)
        assert gradebook_students(stack, cid)["u960"][0] == "960"
        log = (stack.log_dir / "jupyterhub.log").read_text(errors="replace")
        enrolled_at = log.index(f"user:u960 enrolled in {cid} before their lab started")
        assert enrolled_at < log.index("User u960 took", enrolled_at)
