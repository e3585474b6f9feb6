"""Hub-level: grades and roster through a real hub, Kore and the built-in LMS.

Instructor and students launch (the course is made), the instructor syncs the roster
and sends grades through Kore's API; the built-in LMS's gradebook shows what arrived.
"""

import asyncio

import httpx
import pytest
from hubtest import admin_stack, hub_api
from lti_browser import LTIBrowser
from test_grade_sync import add_assignment, set_score, submit

from ananke_hub.courses.identity import course_id_for
from ananke_hub.courses.layout import CourseLayout
from ananke_hub.testlms.demo import DEMO_CLIENT_ID, DEMO_DEPLOYMENT_ID

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
async def stack(tmp_path_factory):
    async with admin_stack(tmp_path_factory.mktemp("hub"), platform_args=["--test-api"]) as s:
        for sub in ("2", "3", "4"):
            async with LTIBrowser() as browser:
                assert (await browser.launch(s.platform_url, sub, "homework")).status_code == 200
        yield s


def course(stack, link="homework") -> str:
    return course_id_for(stack.platform_url, DEMO_CLIENT_ID, DEMO_DEPLOYMENT_ID, link)


def layout(stack) -> CourseLayout:
    return CourseLayout(
        homes_root=str(stack.layout.local_homes), exchange_root=str(stack.layout.root / "exchange")
    )


async def token(stack, user) -> str:
    resp = await hub_api(stack, f"/users/{user}/tokens", method="POST")
    assert resp.status_code == 201, resp.text
    return resp.json()["token"]


async def kore(stack, user_token, method, path, body=None, link="homework") -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as http:
        return await http.request(
            method,
            f"{stack.hub_url}/services/kore/api/courses/{course(stack, link)}/{path}",
            headers={"Authorization": f"token {user_token}"},
            json=body,
        )


async def finished(stack, user_token, kind, run_id, link="homework") -> dict:
    for _ in range(120):
        run = (await kore(stack, user_token, "GET", f"{kind}/sync/{run_id}", link=link)).json()
        if run["state"] != "running":
            return run
        await asyncio.sleep(0.5)
    raise AssertionError(f"{kind} sync {run_id} still running: {run}")


async def test_roster_sync_brings_learners_who_never_launched(stack):
    ada = await token(stack, "u2")
    started = await kore(stack, ada, "POST", "roster/sync", {})
    assert started.status_code == 202, started.text
    run = await finished(stack, ada, "roster", started.json()["run_id"])
    assert run["state"] == "finished", run
    # Learner 100 never opened Jupyter: now a hub user in the course's learner group.
    u100 = (await hub_api(stack, "/users/u100")).json()
    assert f"nbgrader-{course(stack)}" in u100["groups"]


async def test_grades_arrive_in_the_lms_once(stack):
    cid = course(stack)
    add_assignment(layout(stack), cid, "hw1", 6, 4)
    submit(layout(stack), cid, "u3", "hw1", 5, 2)
    submit(layout(stack), cid, "u4", "hw1", 1, 0)
    ada = await token(stack, "u2")
    started = await kore(stack, ada, "POST", "grades/sync", {"missing": "zero"})
    assert started.status_code == 202, started.text
    run = await finished(stack, ada, "grades", started.json()["run_id"])
    assert run["state"] == "finished", run
    async with httpx.AsyncClient() as http:
        book = (await http.get(f"{stack.platform_url}/gradebook.json")).json()
        tally = (await http.get(f"{stack.platform_url}/_test/scores.json")).json()
    (ds101,) = [c for c in book["contexts"] if c["id"] == "ds101"]
    assert "hw1" in {i["label"] for i in ds101["lineitems"]}
    given = {(s["userId"], s["lineitem"]): s["scoreGiven"] for s in ds101["scores"]}
    alan = sorted(v for (user, _), v in given.items() if user == "3")
    assert alan == [7, 7]  # hw1 and the course total on the activity's own line item
    assert all(post["accepted"] == 1 for post in tally["posts"]), tally

    again = await kore(stack, ada, "POST", "grades/sync", {"missing": "zero"})
    rerun = await finished(stack, ada, "grades", again.json()["run_id"])
    assert set(rerun["counts"]) == {"unchanged"}, rerun  # nothing sent twice


async def test_students_cannot_send_grades(stack):
    alan = await token(stack, "u3")
    for path in ("grades/sync", "roster/sync"):
        resp = await kore(stack, alan, "POST", path, {})
        assert resp.status_code == 403, resp.text


async def test_the_activity_column_follows_a_resubmission_after_relaunches(stack):
    """launch, sync, launch, resubmit, sync: the LMS's activity column has the new total.

    The built-in LMS plays Moodle: once Kore's hw1 column is bound to the link, launches
    from it leave `lineitem` out of the AGS claim (issue 11, item 1).
    """
    for sub in ("2", "3"):
        async with LTIBrowser() as browser:
            assert (await browser.launch(stack.platform_url, sub, "exam")).status_code == 200
    cid = course(stack, "exam")
    add_assignment(layout(stack), cid, "hw1", 10)
    submit(layout(stack), cid, "u3", "hw1", 4)
    ada = await token(stack, "u2")

    async def sync() -> dict:
        started = await kore(stack, ada, "POST", "grades/sync", {"missing": "zero"}, link="exam")
        assert started.status_code == 202, started.text
        return await finished(stack, ada, "grades", started.json()["run_id"], link="exam")

    assert (await sync())["state"] == "finished"
    async with LTIBrowser() as browser:  # Alan comes back; the claim has no lineitem now
        assert (await browser.launch(stack.platform_url, "3", "exam")).status_code == 200
    set_score(layout(stack), cid, "u3", "hw1", 0, 9)  # regraded after a resubmission
    run = await sync()
    assert run["state"] == "finished", run
    assert run["warnings"] == [], run
    async with httpx.AsyncClient() as http:
        book = (await http.get(f"{stack.platform_url}/gradebook.json")).json()
    (ds101,) = [c for c in book["contexts"] if c["id"] == "ds101"]
    own = f"{stack.platform_url}/ags/ds101/lineitems/exam/lineitem?type_id=1"
    column = {s["userId"]: s["scoreGiven"] for s in ds101["scores"] if s["lineitem"] == own}
    assert column["3"] == 9, ds101["scores"]
