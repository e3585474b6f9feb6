"""Kore's pages in a real browser: headless Chromium (Playwright) against one real hub,
Kore and the built-in LMS (with its test API, for faults).

The instructor (Ada, sub 2) launches from the LMS, opens Kore from her JupyterLab's
Kore menu and from the hub's Services menu, sends grades and watches them arrive in the LMS's gradebook; a sync started
elsewhere is shown instead of a second one; the LMS failing shows failures first and
"Retry failed" sends them; a student gets the "Kore is for instructors" page. Tests run
in file order and share the stack and the instructor's browser page.

Screenshots of the main pages go to test-artifacts/screenshots/; with
ANANKE_UPDATE_SCREENSHOTS=1 they also replace the copies the instructor guide shows
(docs/_static/screenshots/).
"""

import os
import re
import shutil
from pathlib import Path

import httpx
import pytest
from hubtest import admin_stack, hub_api
from lti_browser import LTIBrowser
from test_browser_launch import CHROMIUM, CHROMIUM_ARGS
from test_grade_sync import add_assignment, gradebook, submit, wait_for_gradebook

from ananke_hub.courses.identity import course_id_for
from ananke_hub.courses.layout import CourseLayout
from ananke_hub.courses.registry import CourseRegistry
from ananke_hub.testlms.demo import DEMO_CLIENT_ID, DEMO_DEPLOYMENT_ID
from kore.manage.store import FAILED, ManageStore

pytestmark = pytest.mark.slow
playwright = pytest.importorskip("playwright.async_api", reason="playwright is in the test extra")
expect = playwright.expect

REPO = Path(__file__).resolve().parent.parent
SHOTS = REPO / "test-artifacts" / "screenshots"
DOC_SHOTS = REPO / "docs" / "_static" / "screenshots"
UPDATE_DOC_SHOTS = os.environ.get("ANANKE_UPDATE_SCREENSHOTS") == "1"
#: Playwright waits this long (ms) for a page or a sync to get where a test expects it.
WAIT = 60_000
LOGIN_WAIT = 90_000
#: The first lab start of a busy CI machine.
LAB_WAIT = 180_000


def course(stack, link: str = "homework") -> str:
    return course_id_for(stack.platform_url, DEMO_CLIENT_ID, DEMO_DEPLOYMENT_ID, link)


def layout(stack) -> CourseLayout:
    return CourseLayout(
        homes_root=str(stack.layout.local_homes), exchange_root=str(stack.layout.root / "exchange")
    )


def kore_url(stack, path: str = "") -> str:
    return f"{stack.hub_url}/services/kore/{path}"


#: The screenshots the instructor guide shows (docs/user/instructors.md).
DOC_SCREENSHOTS = {
    "kore-home.png",
    "kore-course.png",
    "kore-grades-sent.png",
    "kore-grades-failed.png",
    "kore-reset-dialog.png",
    "kore-student.png",
    # tests/test_deep_linking.py: the Deep Linking picker
    "kore-deeplink.png",
}


async def screenshot(target, name: str, *, full_page: bool = True) -> None:
    """Save a screenshot of a page (whole, or what the window shows) or of one element."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / name
    if isinstance(target, playwright.Locator):
        await target.screenshot(path=path)
    else:
        await target.screenshot(path=path, full_page=full_page)
    if UPDATE_DOC_SHOTS and name in DOC_SCREENSHOTS:
        DOC_SHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, DOC_SHOTS / name)


async def platform_test_api(stack, method: str, path: str, body=None) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as http:
        return await http.request(method, f"{stack.platform_url}/_test/{path}", json=body)


async def add_fault(stack, rule: dict) -> None:
    resp = await platform_test_api(stack, "POST", "faults", rule)
    assert resp.status_code == 201, resp.text


async def clear_faults(stack) -> None:
    assert (await platform_test_api(stack, "DELETE", "faults")).status_code == 204


async def user_token(stack, user: str) -> str:
    resp = await hub_api(stack, f"/users/{user}/tokens", method="POST")
    assert resp.status_code == 201, resp.text
    return resp.json()["token"]


async def kore_api(stack, token: str, method: str, path: str, body=None) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as http:
        return await http.request(
            method,
            kore_url(stack, f"api/courses/{course(stack)}/{path}"),
            headers={"Authorization": f"token {token}"},
            json=body,
        )


async def gradebook_scores(stack) -> dict:
    """(LMS user id, line item label) -> score given, from the LMS's gradebook."""
    async with httpx.AsyncClient(timeout=30) as http:
        book = (await http.get(f"{stack.platform_url}/gradebook.json")).json()
    (ds101,) = [c for c in book["contexts"] if c["id"] == "ds101"]
    labels = {item["id"]: item["label"] for item in ds101["lineitems"]}
    return {(s["userId"], labels[s["lineitem"]]): s["scoreGiven"] for s in ds101["scores"]}


@pytest.fixture(scope="module")
async def stack(tmp_path_factory):
    # Few, fast retries: a score the LMS refuses with 500 fails within a second.
    config = {"LTIAdvantage": {"max_attempts": 2, "retry_delay": 0.1}}
    root = tmp_path_factory.mktemp("hub")
    async with admin_stack(root, platform_args=["--test-api"], extra_config=config) as s:
        # Ada teaches both activities; she opens the Exam first, the Homework last
        # (in the browser), so the Homework is her current course.
        for sub, link in (("2", "exam"), ("3", "homework"), ("4", "homework")):
            async with LTIBrowser() as browser:
                resp = await browser.launch(
                    s.platform_url, sub, link, stop_before=f"{s.hub_url}/hub/spawn"
                )
                assert resp.status_code == 302, resp.text  # logged in, no lab started
        cid = course(s)
        wait_for_gradebook(layout(s), cid)
        add_assignment(layout(s), cid, "hw1", 6, 4)
        submit(layout(s), cid, "u3", "hw1", 5, 2)
        submit(layout(s), cid, "u4", "hw1", 1, 0)
        yield s


@pytest.fixture(scope="module")
async def chromium():
    assert CHROMIUM, "chromium missing on CI: scripts/test.sh should have installed it"
    async with playwright.async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        await browser.close()


async def logged_in_page(chromium, stack, sub: str, link: str = "homework"):
    """A new browser (context) in which ``sub`` clicked Launch on the LMS: logged in to
    the hub. The lab is not started (these tests need no lab)."""
    # Reduced motion: no animated bars, so screenshots show where things are.
    context = await chromium.new_context(
        viewport={"width": 1200, "height": 900}, reduced_motion="reduce"
    )
    page = await context.new_page()
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.script_errors = errors
    await page.route(
        f"{stack.hub_url}/hub/spawn**",
        lambda route: route.fulfill(status=200, content_type="text/html", body="<p>no lab</p>"),
    )
    await page.goto(f"{stack.platform_url}/")
    await page.locator(
        f"form:has(input[name=user][value='{sub}']):has(input[name=link][value='{link}']) button"
    ).click()
    await page.wait_for_url(f"{stack.hub_url}/hub/spawn**", timeout=LOGIN_WAIT)
    return page


@pytest.fixture(scope="module")
async def ada(chromium, stack):
    page = await logged_in_page(chromium, stack, "2")
    yield page
    assert not page.script_errors, page.script_errors
    await page.context.close()


async def open_course_page(page, stack) -> None:
    """Open the course page; wait until its script showed the latest syncs."""
    await page.goto(kore_url(stack, f"courses/{course(stack)}"))
    for panel in ("grades", "roster"):
        await page.wait_for_selector(f"#{panel}-panel[data-loaded]", timeout=WAIT)


async def shown_run(page, panel: str) -> str:
    """The id of the run the panel shows ("" if none)."""
    return await page.locator(f"#{panel}-panel").get_attribute("data-run-id") or ""


async def wait_until_ended(page, panel: str, after: str = "") -> str:
    """Until the panel shows a run other than ``after`` that is over, with its results."""
    await page.wait_for_function(
        """([selector, after]) => {
            const s = document.querySelector(selector).dataset;
            return s.runId && s.runId !== after && s.state !== "running" && s.results === s.runId;
        }""",
        arg=[f"#{panel}-panel", after],
        timeout=WAIT,
    )
    return await shown_run(page, panel)


async def click_and_wait(page, panel: str, button: str = ".kore-start", *, double=False) -> str:
    """Click a panel's button; wait until the new run ended; its id."""
    before = await shown_run(page, panel)
    target = page.locator(f"#{panel}-panel {button}")
    await (target.dblclick() if double else target.click())
    return await wait_until_ended(page, panel, after=before)


# --- the instructor -----------------------------------------------------------------------


async def test_instructor_opens_kore_from_her_jupyterlab(ada, stack):
    """The way in from the lab: JupyterLab's Kore menu opens Kore's home in a new tab
    (the lab runs in a second tab of Ada's browser, already logged in to the hub)."""
    lab = await ada.context.new_page()
    await lab.goto(f"{stack.hub_url}/hub/spawn")
    await lab.wait_for_url(f"{stack.hub_url}/user/u2/lab**", timeout=LAB_WAIT)
    await lab.wait_for_selector("#jp-main-dock-panel", timeout=LAB_WAIT)
    await lab.locator("#jp-menu-panel .lm-MenuBar-itemLabel", has_text=re.compile("^Kore$")).click()
    async with ada.context.expect_page() as new_tab:
        await lab.locator(
            "#jp-mainmenu-ananke-kore .lm-Menu-item", has_text="Course management"
        ).click()
    kore = await new_tab.value
    await kore.wait_for_url(kore_url(stack), timeout=WAIT)
    rows = kore.locator("table.courses tbody tr")
    await rows.first.wait_for(timeout=WAIT)
    assert await rows.count() == 2
    assert await rows.nth(0).get_attribute("data-course-id") == course(stack)
    await kore.close()
    await lab.close()


async def test_instructor_opens_kore_from_the_hub_and_sees_courses_current_first(ada, stack):
    await ada.goto(f"{stack.hub_url}/hub/home")
    await ada.get_by_role("button", name="Services").click()
    await ada.get_by_role("link", name="kore").click()
    await ada.wait_for_url(kore_url(stack), timeout=WAIT)
    rows = ada.locator("table.courses tbody tr")
    assert await rows.count() == 2
    first = rows.nth(0)
    assert await first.get_attribute("data-course-id") == course(stack)
    assert "Current course" in await first.inner_text()
    assert "Current course" not in await rows.nth(1).inner_text()
    assert await ada.locator("link[href$='hub/static/css/style.min.css']").count() == 1
    await screenshot(ada, "kore-home.png")

    await first.get_by_role("link", name="Grades, roster and backups").click()
    await ada.wait_for_url(kore_url(stack, f"courses/{course(stack)}"))
    await ada.wait_for_selector("#grades-panel .kore-start:enabled", timeout=WAIT)
    assert await ada.locator("h1").inner_text() == "Data Science 101 - Homework"
    assert await ada.get_by_role("link", name="Open the formgrader").count() == 1
    await screenshot(ada, "kore-course.png")


async def test_send_grades_shows_progress_and_results_and_they_reach_the_lms(ada, stack):
    await open_course_page(ada, stack)
    # Slow the LMS so the progress is seen moving; a double click starts one sync only.
    await add_fault(stack, {"delay": 0.5, "path_prefix": "/ags/"})
    try:
        await click_and_wait(ada, "grades", double=True)
    finally:
        await clear_faults(stack)
    bar = ada.locator("#grades-panel .kore-progress")
    assert await bar.get_attribute("role") == "progressbar"
    assert await bar.get_attribute("aria-valuenow") == "100"
    await expect(ada.locator("#grades-panel .kore-progress-text")).to_contain_text(
        "4 of 4 done, 0 failed"
    )
    await expect(ada.locator("#grades-panel .kore-results-table tbody tr")).to_have_count(4)
    await expect(ada.locator("#grades-panel td.kore-status-sent")).to_have_count(4)
    await expect(ada.locator("#grades-panel .kore-alert")).to_be_hidden()  # no 409 (dblclick)
    await ada.evaluate("getSelection().removeAllRanges()")  # the double click selected a word
    await screenshot(ada.locator("#grades-panel"), "kore-grades-sent.png")

    token = await user_token(stack, "u2")
    runs = (await kore_api(stack, token, "GET", "grades/sync")).json()["runs"]
    assert len(runs) == 1, runs

    scores = await gradebook_scores(stack)
    assert scores[("3", "hw1")] == 7 and scores[("4", "hw1")] == 1
    lms = await ada.context.new_page()
    await lms.goto(f"{stack.platform_url}/gradebook")
    alan = lms.get_by_role("row", name="Alan Turing")
    assert "7 / 10" in await alan.inner_text()
    await screenshot(lms, "lms-gradebook.png")
    await lms.close()


async def test_a_sync_started_elsewhere_is_shown_instead_of_a_second_one(ada, stack):
    await open_course_page(ada, stack)
    token = await user_token(stack, "u2")
    await add_fault(stack, {"delay": 2.0, "path_prefix": "/ags/"})
    try:
        started = await kore_api(stack, token, "POST", "grades/sync", {"resend": True})
        assert started.status_code == 202, started.text
        # The page still shows the earlier, finished sync: its button is on.
        before = await shown_run(ada, "grades")
        await ada.locator("#grades-panel .kore-start").click()
        await expect(ada.locator("#grades-panel .kore-alert")).to_contain_text(
            "already running", timeout=WAIT
        )
        heading = ada.locator("#grades-panel .kore-run-heading")
        await expect(heading).to_contain_text("is running", timeout=WAIT)
        await expect(ada.locator("#grades-panel .kore-start")).to_be_disabled()
        assert await wait_until_ended(ada, "grades", before) == started.json()["run_id"]
    finally:
        await clear_faults(stack)
    runs = (await kore_api(stack, token, "GET", "grades/sync")).json()["runs"]
    assert runs[0]["run_id"] == started.json()["run_id"]  # no run started by the click
    await expect(heading).to_contain_text("sync finished (")
    await expect(ada.locator("#grades-panel .kore-start")).to_be_enabled()


async def test_lms_failures_are_listed_first_and_retry_sends_them(ada, stack):
    cid = course(stack)
    add_assignment(layout(stack), cid, "hw2", 5)
    submit(layout(stack), cid, "u3", "hw2", 4)
    submit(layout(stack), cid, "u4", "hw2", 3)
    await open_course_page(ada, stack)
    # Every score for an existing column gets 500; creating the hw2 column works. A 500
    # to a write leaves its outcome unknown: Kore reads the result, sends once more,
    # and reports "unknown" when that fails too.
    await add_fault(
        stack, {"status": 500, "path_prefix": "/ags/ds101/lineitems/", "methods": ["POST"]}
    )
    try:
        await click_and_wait(ada, "grades")
    finally:
        await clear_faults(stack)
    heading = ada.locator("#grades-panel .kore-run-heading")
    await expect(heading).to_contain_text("finished with failures")
    rows = ada.locator("#grades-panel .kore-results-table tbody tr")
    failed = await ada.locator("#grades-panel tr.kore-failed").count()
    assert failed >= 4  # hw2 and the changed course totals of both students
    for i in range(await rows.count()):  # failures first, then the rest
        row_failed = "kore-failed" in (await rows.nth(i).get_attribute("class") or "")
        assert row_failed == (i < failed)
    await expect(rows.first).to_contain_text("unknown (no answer from the LMS)")
    retry = ada.locator("#grades-panel .kore-retry")
    await expect(retry).to_be_visible()
    await screenshot(ada.locator("#grades-panel"), "kore-grades-failed.png")
    await ada.locator("#grades-panel .kore-failed-only").check()
    await expect(ada.locator("#grades-panel .kore-page-status")).to_contain_text(f"of {failed}")
    await expect(rows).to_have_count(failed)

    await click_and_wait(ada, "grades", ".kore-retry")
    await expect(heading).to_contain_text("sync finished (")
    await expect(ada.locator("#grades-panel tr.kore-failed")).to_have_count(0)
    await expect(retry).to_be_hidden()
    scores = await gradebook_scores(stack)
    assert scores[("3", "hw2")] == 4 and scores[("4", "hw2")] == 3


async def test_roster_sync_with_the_lms_down_says_why_then_succeeds(ada, stack):
    await open_course_page(ada, stack)
    await add_fault(stack, {"status": 500, "path_prefix": "/nrps/"})
    try:
        await click_and_wait(ada, "roster")
        message = ada.locator("#roster-panel .kore-run-message")
        await expect(message).to_contain_text("LMS")
        await expect(ada.locator("#roster-panel .kore-run-heading")).to_contain_text("stopped")
    finally:
        await clear_faults(stack)
    await screenshot(ada.locator("#roster-panel"), "kore-roster-lms-down.png")
    await click_and_wait(ada, "roster", ".kore-retry")
    await expect(ada.locator("#roster-panel .kore-run-heading")).to_contain_text("sync finished (")
    await expect(message).to_be_hidden()
    assert await ada.locator("#roster-panel td.kore-status-added").count() > 0


async def test_a_login_expired_mid_way_says_so_with_a_reload_link(ada, stack):
    await open_course_page(ada, stack)
    await ada.context.clear_cookies(name="service-kore")  # Kore's login cookie is gone
    await ada.locator("#roster-panel .kore-start").click()
    box = ada.locator("#kore-session")
    await expect(box).to_be_visible(timeout=WAIT)
    await expect(box).to_contain_text("Your login may have expired")
    await box.get_by_role("link", name="Reload this page").click()
    # The hub logs the browser in to Kore again, without a question.
    await ada.wait_for_selector("#grades-panel .kore-start:enabled", timeout=WAIT)
    await expect(ada.locator("#kore-session")).to_be_hidden()


async def test_ten_thousand_results_are_paged_failures_first(ada, stack):
    """The result table of a huge run (the API answered by the browser's test double)."""
    cid = course(stack)
    runs_url = kore_url(stack, f"api/courses/{cid}/grades/sync")
    run_url = f"{runs_url}/{'f' * 32}"
    failed, sent = 37, 9963
    run = {
        "run_id": "f" * 32,
        "course_id": cid,
        "kind": "grades",
        "state": "failed",
        "started_by": "u2",
        "started_at": "2026-01-01T10:00:00+00:00",
        "options": {},
        "total": 10000,
        "done": 10000,
        "failed": failed,
        "counts": {"sent": sent, "failed": failed},
        "message": "",
        "warnings": [],
        "url": run_url,
    }
    asked = []

    async def answer(route):
        url = httpx.URL(route.request.url)
        if url.path.endswith("/grades/sync"):
            await route.fulfill(json={"course_id": cid, "runs": [run]})
            return
        status = url.params.get("status")
        offset, limit = int(url.params.get("offset", 0)), int(url.params.get("limit", 1000))
        asked.append((status, offset, limit))
        count = {"failed": failed, "sent": sent}.get(status, 10000)
        rows = [
            {
                "username": f"u{1000 + i}",
                "lms_user_id": str(1000 + i),
                "item": "hw1",
                "label": "hw1",
                "status": status or "sent",
                "message": "LMS said 500" if status == "failed" else "",
            }
            for i in range(offset, min(count, offset + limit))
        ]
        await route.fulfill(
            json={**run, "results_total": count, "offset": offset, "limit": limit, "results": rows}
        )

    page = await ada.context.new_page()
    await page.route(f"{runs_url}**", answer)
    await page.goto(kore_url(stack, f"courses/{cid}"))
    status = page.locator("#grades-panel .kore-page-status")
    await expect(status).to_have_text("Results 1–100 of 10000", timeout=WAIT)
    rows = page.locator("#grades-panel .kore-results-table tbody tr")
    await expect(rows).to_have_count(100)  # one page in the document, not 10,000 rows
    await expect(page.locator("#grades-panel tr.kore-failed")).to_have_count(failed)
    await expect(rows.nth(0)).to_have_class("kore-failed")
    assert all(limit <= 100 for _, _, limit in asked), asked

    await page.locator("#grades-panel .kore-next").click()
    await expect(status).to_have_text("Results 101–200 of 10000")
    await expect(page.locator("#grades-panel tr.kore-failed")).to_have_count(0)
    assert ("sent", 100 - failed, 100) in asked  # the next page is the next slice of "sent"

    await page.locator("#grades-panel .kore-failed-only").check()
    await expect(status).to_have_text(f"Results 1–{failed} of {failed}")
    await expect(rows).to_have_count(failed)
    await expect(page.locator("#grades-panel .kore-next")).to_be_disabled()
    await page.close()


# --- a student -----------------------------------------------------------------------------


async def test_student_gets_the_friendly_page_and_no_controls(chromium, stack):
    page = await logged_in_page(chromium, stack, "3")
    try:
        await page.goto(kore_url(stack))
        await expect(page.locator("h1")).to_have_text("Kore is for instructors")
        await expect(page.locator("table.courses")).to_have_count(0)
        await screenshot(page, "kore-student.png")

        resp = await page.goto(kore_url(stack, f"courses/{course(stack)}"))
        assert resp.status == 403
        assert await page.locator("h1").inner_text() == "Kore is for instructors"
        assert "You take part in it as a student" in await page.locator(".message").inner_text()
        assert await page.locator("button, form").count() == 0
        # The API refuses the student too (the page is no way around it).
        resp = await page.request.post(
            kore_url(stack, f"api/courses/{course(stack)}/grades/sync"), data="{}"
        )
        assert resp.status == 403
        assert not page.script_errors, page.script_errors
    finally:
        await page.context.close()


async def test_course_page_is_usable_without_javascript(chromium, stack, ada):
    state = await ada.context.storage_state()
    context = await chromium.new_context(java_script_enabled=False, storage_state=state)
    try:
        page = await context.new_page()
        resp = await page.goto(kore_url(stack, f"courses/{course(stack)}"))
        assert resp.status == 200
        assert await page.locator("#grades-panel .kore-start").is_disabled()
        assert "needs JavaScript" in await page.locator("#grades-panel").inner_text()
        history = page.locator("#grades-panel .kore-history")
        await history.locator("summary").click()
        assert await history.locator("tbody tr").count() >= 3  # the syncs of the tests above
        link = history.get_by_role("link", name="results (JSON)").first
        api = await page.goto(stack.hub_url + await link.get_attribute("href"))
        assert api.status == 200 and (await api.json())["kind"] == "grades"
    finally:
        await context.close()


# --- course management (backups, reset, import, delete) ------------------------------------


async def management_api(stack) -> bool:
    token = await user_token(stack, "u2")
    return (await kore_api(stack, token, "GET", "backups")).status_code == 200


@pytest.fixture
async def management(stack):
    if not await management_api(stack):
        pytest.skip("this Kore has no course management API yet")


async def confirm(page, typed: str = "") -> None:
    """Answer the page's confirmation dialog: type ``typed`` if asked, then confirm."""
    dialog = page.get_by_role("dialog")
    await expect(dialog).to_be_visible()
    if typed:
        await dialog.get_by_label("type the course title").fill(typed)
    await dialog.locator(".kore-confirm-ok").click()
    await expect(dialog).to_be_hidden()


async def test_an_operation_running_when_the_page_opens_is_followed(ada, stack, management):
    """A backup runs (started elsewhere): the page shows its step, keeps Reset and Delete
    off, and "Back up now" follows the running one instead of failing; when it ends, the
    page says so and the buttons work again."""
    cid = course(stack)
    registry = CourseRegistry(url=f"sqlite:///{stack.layout.root / 'courses.sqlite'}")
    store = ManageStore(registry)
    op = store.start_operation(cid, "backup", "u9", "b-" + "9" * 32)
    try:
        await open_course_page(ada, stack)
        danger = ada.locator("#danger-panel")
        await expect(danger.locator(".kore-alert")).to_contain_text(
            "Making a backup… step 1 of 1 (backup)", timeout=WAIT
        )
        await expect(danger.locator(".kore-reset")).to_be_disabled()
        panel = ada.locator("#backups-panel")
        await panel.locator(".kore-backup-now:enabled").wait_for(timeout=WAIT)
        await panel.locator(".kore-backup-now").click()  # 409: the running one is followed
        await expect(panel.locator(".kore-alert")).to_contain_text("step 1 of 1", timeout=WAIT)
        store.end_operation(op.id, FAILED, "stopped by the test")
        await expect(danger.locator(".kore-alert")).to_contain_text("has ended", timeout=WAIT)
        await expect(danger.locator(".kore-reset")).to_be_enabled()
        await expect(panel.locator(".kore-alert.alert-warning")).to_contain_text(
            "started by u9); it has ended. Try again now.", timeout=WAIT
        )
    finally:
        if store.operation(op.id).state == "running":
            store.end_operation(op.id, FAILED, "stopped by the test")
        registry.close()


async def test_back_up_and_reset_with_confirmation(ada, stack, management):
    cid = course(stack)
    await open_course_page(ada, stack)
    panel = ada.locator("#backups-panel")
    backups = panel.locator(".kore-backups-table tbody tr")
    await panel.locator(".kore-backup-now:enabled").wait_for(timeout=WAIT)
    await panel.locator(".kore-backup-now").click()
    # The backup runs in Kore; the page follows it to its end.
    await expect(panel.locator(".kore-alert.alert-success")).to_contain_text(
        "Backup made", timeout=WAIT
    )
    state = panel.locator(".kore-alert")
    await expect(state).to_have_attribute("data-operation-state", "finished")
    await expect(backups).to_have_count(1)
    download = backups.nth(0).get_by_role("link", name="Download")
    archive = await ada.context.request.get(stack.hub_url + await download.get_attribute("href"))
    assert archive.status == 200 and (await archive.body())[:2] == b"\x1f\x8b"  # gzip
    # Without the page's script, the list and its download links are in the page itself.
    html = await (await ada.context.request.get(kore_url(stack, f"courses/{cid}"))).text()
    backup_id = await backups.nth(0).get_attribute("data-backup-id")
    assert f'href="/services/kore/api/backups/{backup_id}/download"' in html

    await ada.locator("#danger-panel .kore-reset").click()
    dialog = ada.get_by_role("dialog")
    await expect(dialog).to_contain_text("Reset Data Science 101 - Homework")
    await expect(dialog).to_contain_text("submissions")
    ok = dialog.locator(".kore-confirm-ok")
    await expect(ok).to_be_disabled()
    await dialog.get_by_label("type the course title").fill("Data Science 101")  # not it
    await expect(ok).to_be_disabled()
    await dialog.get_by_label("type the course title").fill("Data Science 101 - Homework")
    await expect(ok).to_be_enabled()
    await screenshot(ada, "kore-reset-dialog.png", full_page=False)  # the dialog, centred
    await ok.click()
    done = ada.locator("#danger-panel .kore-alert.alert-success")
    await expect(done).to_contain_text("is reset", timeout=WAIT)
    await expect(done).to_have_attribute("data-operation-state", "finished")
    await expect(backups).to_have_count(2)
    await expect(backups.nth(0)).to_contain_text("before-reset")
    # The students and their work are gone from the gradebook; the assignments stay.
    with gradebook(layout(stack), cid) as gb:
        assert gb.students == []
        assert {"hw1", "hw2"} <= {a.name for a in gb.assignments}

    # A manual backup is deleted after a (simple) confirmation; the reset's stays.
    await backups.nth(1).get_by_role("button", name="Delete").click()
    await confirm(ada)
    await expect(backups).to_have_count(1)
    await expect(backups.nth(0)).to_contain_text("before-reset")


def write_notebook(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}\n')


async def test_import_an_assignment_from_another_course_then_delete_that_course(
    ada, stack, management
):
    homework, exam = course(stack), course(stack, "exam")
    write_notebook(layout(stack).course(homework).home / "source" / "hw1" / "p1.ipynb")
    await ada.goto(kore_url(stack, f"courses/{exam}"))
    panel = ada.locator("#import-panel")
    await panel.get_by_label("From", exact=True).select_option(f"course:{homework}")
    await panel.get_by_label("one assignment").check()
    await expect(panel.get_by_label("Assignment", exact=True)).to_have_value("hw1")
    await panel.get_by_role("button", name="Import").click()
    # It runs in the background: the panel shows its step, then what it did.
    await expect(panel.locator(".kore-alert.alert-success")).to_contain_text(
        "Imported", timeout=WAIT
    )
    # The page followed the import's operation (202) to its end.
    await expect(panel.locator(".kore-alert")).to_have_attribute(
        "data-operation-state", "finished"
    )
    assert (layout(stack).course(exam).home / "source" / "hw1" / "p1.ipynb").is_file()
    # Again, without overwrite: refused at once, and the page says what to do.
    await panel.get_by_role("button", name="Import").click()
    await expect(panel.locator(".kore-alert.alert-danger")).to_contain_text(
        "overwrite", timeout=WAIT
    )

    # Delete the Exam course: the dialog names it; the page then says it is gone.
    await ada.locator("#danger-panel .kore-delete").click()
    await expect(ada.get_by_role("dialog")).to_contain_text("Delete Data Science 101 - Exam?")
    await confirm(ada, "Data Science 101 - Exam")
    await expect(ada.get_by_role("heading", name="Course deleted")).to_be_visible(timeout=WAIT)
    await ada.get_by_role("link", name="Back to your courses").click()
    await expect(ada.locator("table.courses tbody tr")).to_have_count(1)
    assert not layout(stack).course(exam).home.exists()
