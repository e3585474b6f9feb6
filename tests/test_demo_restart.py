"""Hub-level: a demo stopped and started again is the same demo.

The course belongs to the LMS's issuer, which names the LMS's port: the demo keeps its
ports (``ports.json``) and its LMS keeps keys and gradebook (``platform/``), so the
instructor finds the course of the first run, grade sync goes on where it stopped, and
the LMS gradebook still shows what was sent. After the restart the instructor works in
Chromium: launch from the LMS, Kore from the hub's Services menu, one course, its
students' results, Send grades, the LMS gradebook page.
"""

import re
import socket

import httpx
import pytest
from hubtest import admin_stack
from lti_browser import LTIBrowser
from test_grade_sync import add_assignment, set_score, submit
from test_grades_hub import course, finished, kore, layout, token
from test_kore_ui import WAIT, chromium, click_and_wait, logged_in_page, screenshot  # noqa: F401

from ananke_hub.testlms.demo import PORTS_FILE, DemoPorts, DemoPortTaken, DemoStack

pytestmark = pytest.mark.slow


async def launch(stack, *subs):
    for sub in subs:
        async with LTIBrowser() as browser:
            assert (await browser.launch(stack.platform_url, sub, "homework")).status_code == 200


async def my_courses(stack, user_token) -> list[dict]:
    async with httpx.AsyncClient(timeout=30) as http:
        resp = await http.get(
            f"{stack.hub_url}/services/kore/api/courses",
            headers={"Authorization": f"token {user_token}"},
        )
    assert resp.status_code == 200, resp.text
    return resp.json()


async def alan_scores(stack) -> list[float]:
    async with httpx.AsyncClient() as http:
        book = (await http.get(f"{stack.platform_url}/gradebook.json")).json()
    (ds101,) = [c for c in book["contexts"] if c["id"] == "ds101"]
    return sorted(s["scoreGiven"] for s in ds101["scores"] if s["userId"] == "3")


async def sync(stack, user_token) -> dict:
    started = await kore(stack, user_token, "POST", "grades/sync", {"missing": "zero"})
    assert started.status_code == 202, started.text
    run = await finished(stack, user_token, "grades", started.json()["run_id"])
    assert run["state"] == "finished", run
    return run


async def test_a_restarted_demo_keeps_its_course_and_grades(tmp_path, chromium):  # noqa: F811
    root = tmp_path / "demo"
    async with admin_stack(root) as first:
        await launch(first, "2", "3", "4")
        course_id = course(first)
        add_assignment(layout(first), course_id, "hw1", 6, 4)
        submit(layout(first), course_id, "u3", "hw1", 5, 2)
        submit(layout(first), course_id, "u4", "hw1", 1, 0)
        await sync(first, await token(first, "u2"))
        assert await alan_scores(first) == [7, 7]  # hw1 and the activity's own line item
        ports = first.ports

    async with admin_stack(root) as second:
        assert second.ports.platform == ports.platform
        assert second.platform_url == first.platform_url  # the issuer
        # The LMS kept its gradebook over the restart.
        assert await alan_scores(second) == [7, 7]
        ada = await token(second, "u2")
        courses = await my_courses(second, ada)
        assert [(c["course_id"], c["title"]) for c in courses] == [
            (course_id, "Data Science 101 - Homework")
        ]
        assert course(second) == course_id

        # In the browser: the instructor clicks Launch in the LMS, opens Kore from the
        # hub's Services menu and finds the one course, with its students' results.
        page = await logged_in_page(chromium, second, "2")
        await page.goto(f"{second.hub_url}/hub/home")
        await page.get_by_role("button", name="Services").click()
        await page.get_by_role("link", name="kore").click()
        await page.wait_for_url(f"{second.hub_url}/services/kore/", timeout=WAIT)
        rows = page.locator("table.courses tbody tr")
        await rows.first.wait_for(timeout=WAIT)
        assert await rows.count() == 1
        assert await rows.first.get_attribute("data-course-id") == course_id
        await rows.first.get_by_role("link", name="Grades, roster and backups").click()
        await page.wait_for_selector("#grades-panel[data-loaded]", timeout=WAIT)
        results = page.locator("#grades-panel .kore-results-table")
        await results.get_by_role("row", name=re.compile("Alan Turing")).first.wait_for(
            timeout=WAIT
        )
        await screenshot(page, "demo-restarted-course.png")

        # Grade sync goes on: a changed grade is sent, by the button.
        set_score(layout(second), course_id, "u3", "hw1", 0, 6)
        await click_and_wait(page, "grades")
        assert await page.locator("#grades-panel td.kore-status-sent").count() >= 1
        assert await page.locator("#grades-panel td.kore-status-failed").count() == 0
        assert await alan_scores(second) == [8, 8]
        await page.goto(f"{second.platform_url}/gradebook")
        alan = page.get_by_role("row", name="Alan Turing")
        assert "8 / 10" in await alan.inner_text()
        assert not page.script_errors, page.script_errors
        await page.context.close()


async def test_a_taken_lms_port_stops_the_start_with_what_to_do(tmp_path):
    root = tmp_path / "demo"
    root.mkdir()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        picked = DemoPorts.pick()
        DemoPorts(picked.hub, picked.hub_api, picked.proxy_api, picked.kore, taken).save(
            root / PORTS_FILE
        )
        stack = DemoStack(root)
        with pytest.raises(DemoPortTaken) as refused:
            await stack.start()
    message = str(refused.value)
    assert f"Port {taken}" in message
    assert str(root / PORTS_FILE) in message
    assert f"http://127.0.0.1:{taken}" in message  # the issuer it protects
    assert not stack.processes


def test_other_taken_ports_move_the_lms_port_stays():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        picked = DemoPorts.pick()
        ports = DemoPorts(taken, picked.hub_api, picked.proxy_api, picked.kore, picked.platform)
        moved = ports.replace_taken()
    assert moved.hub != taken
    assert (moved.hub_api, moved.kore, moved.platform) == (
        picked.hub_api,
        picked.kore,
        picked.platform,
    )
