"""LTI in the LMS's frames, in a real browser (issue 17: Deep Linking in Moodle's dialog).

The built-in LMS plays Moodle 5.1 from another site than the hub: its pages come from
``localhost``, the hub's from ``127.0.0.1`` (another site for the browser, so the hub's
cookies in its frames are third-party cookies, which Chromium does not set). It opens
"Select content" in a modal whose body is an iframe (Moodle's
``mod/lti/amd/src/contentitem.js``) and embeds launches in an iframe of the course page
(Moodle's "Embed" launch container, ``--launch-container=embed``).

- An instructor picks two assignments in the dialog's iframe; the LMS creates the two
  activities with their grade columns; a student launches one, gets "Open in a new
  window" in the frame, clicks it, and lands in JupyterLab in the new window.
- A student's content selection is refused inside the dialog and creates nothing.
- A page of an origin that is no registered platform cannot frame the hub's LTI pages or
  Kore's picker; no origin but the hub's own can frame Kore's other pages.

Replayed, tampered and expired picker tickets: tests/test_deep_linking.py.
"""

import shutil

import httpx
import pytest
from hubtest import admin_stack, hub_api
from lti_browser import LTIBrowser
from test_deep_linking import continue_page, homework, layout, rows
from test_grade_sync import add_assignment
from test_kore_ui import (
    DOC_SHOTS,
    LAB_WAIT,
    SHOTS,
    UPDATE_DOC_SHOTS,
    WAIT,
    chromium,  # noqa: F401 (a fixture)
)

from ananke_hub.courses.models import Course, DeepLinkRequest

pytestmark = pytest.mark.slow
playwright = pytest.importorskip("playwright.async_api", reason="playwright is in the test extra")
expect = playwright.expect

#: An origin no registration names (Playwright answers its page; nothing listens there).
STRANGER = "http://stranger.example"


async def screenshot(page, name: str) -> None:
    """test-artifacts/screenshots/; with ANANKE_UPDATE_SCREENSHOTS=1 also the copies
    the docs show (docs/admin/lms.md, docs/user/instructors.md)."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=SHOTS / name)
    if UPDATE_DOC_SHOTS:
        DOC_SHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(SHOTS / name, DOC_SHOTS / name)


@pytest.fixture(scope="module")
async def stack(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub")
    async with admin_stack(
        root, platform_host="localhost", platform_args=["--launch-container=embed"]
    ) as s:
        assert s.platform_url.startswith("http://localhost:")
        assert s.hub_url.startswith("http://127.0.0.1:")
        yield s


async def lms_line_items(stack) -> dict:
    async with httpx.AsyncClient() as http:
        book = (await http.get(f"{stack.platform_url}/gradebook.json")).json()
    (ds101,) = [c for c in book["contexts"] if c["id"] == "ds101"]
    return {i.get("resourceLinkId"): i for i in ds101["lineitems"]}


async def test_select_content_in_the_dialog_then_a_student_launches_embedded(
    chromium,  # noqa: F811
    stack,
):
    cid = homework(stack)
    async with LTIBrowser() as ada:  # her first launch makes the course
        assert (await ada.launch(stack.platform_url, "2", "homework")).status_code == 200
    add_assignment(layout(stack), cid, "hw1", 6, 4)
    add_assignment(layout(stack), cid, "hw2", 5)

    context = await chromium.new_context(viewport={"width": 1200, "height": 900})
    errors = []
    try:
        page = await context.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await page.goto(f"{stack.platform_url}/")
        await page.get_by_role(
            "button", name="Select content for Data Science 101 as Ada Lovelace"
        ).click()
        dialog = page.locator("#contentitem-dialog")
        await expect(dialog).to_be_visible()
        picker = page.frame_locator("#contentitem")
        await expect(
            picker.get_by_role("heading", name="Add Jupyter assignments to Data Science 101")
        ).to_be_visible(timeout=WAIT)
        frame = page.frame(name="contentitem")
        assert frame.url.startswith(f"{stack.hub_url}/services/kore/deeplink/"), frame.url
        await screenshot(page, "kore-deeplink.png")
        await picker.get_by_label("hw1").check()
        await picker.get_by_label("hw2").check()
        await picker.get_by_role("button", name="Add to the LMS course").click()
        # The LMS's return page closes the dialog and shows the course page again.
        launch_hw1 = page.get_by_role("button", name="Launch hw1 as Alan Turing")
        await expect(launch_hw1).to_be_visible(timeout=WAIT)
        await expect(dialog).to_be_hidden()
        await expect(page.get_by_role("button", name="Launch hw2 as Alan Turing")).to_be_visible()
        await screenshot(page, "deeplink-moodle-added.png")

        items = await lms_line_items(stack)
        placed = {i["label"]: i for i in items.values() if i["label"] in ("hw1", "hw2")}
        assert {k: v["scoreMaximum"] for k, v in placed.items()} == {"hw1": 10, "hw2": 5}
        assert {v["resourceId"] for v in placed.values()} == {"nbgrader:hw1", "nbgrader:hw2"}

        # A student launches hw1: the LMS embeds it; the frame offers a new window.
        await launch_hw1.click()
        embedded = page.frame_locator("#contentframe")
        open_button = embedded.get_by_role("button", name="Open in a new window")
        await expect(open_button).to_be_visible(timeout=WAIT)
        await screenshot(page, "launch-embedded-new-window.png")
        async with context.expect_page() as new_window:
            await open_button.click()
        lab = await new_window.value
        lab.on("pageerror", lambda exc: errors.append(str(exc)))
        await lab.wait_for_url("**/user/u3/lab**", timeout=LAB_WAIT)
        await lab.wait_for_selector("#jp-main-dock-panel", timeout=LAB_WAIT)
        await expect(embedded.locator("#ananke-opened")).to_be_visible()
    finally:
        await context.close()
    # The student is in the course the assignments belong to (no course per activity).
    assert {c.id for c in rows(stack, Course)} == {cid}
    assert f"nbgrader-{cid}" in (await hub_api(stack, "/users/u3")).json()["groups"]
    assert not [e for e in errors if "ResizeObserver" not in e], errors


async def test_a_students_content_selection_is_refused_in_the_dialog(
    chromium,  # noqa: F811
    stack,
):
    before = len(rows(stack, DeepLinkRequest))
    context = await chromium.new_context()
    try:
        page = await context.new_page()
        await page.goto(f"{stack.platform_url}/")
        await page.get_by_role(
            "button", name="Select content for Data Science 101 as Émilie du Châtelet"
        ).click()
        frame = page.frame_locator("#contentitem")
        await expect(frame.locator("body")).to_contain_text(
            "Only teachers of this LMS course", timeout=WAIT
        )
        await expect(frame.locator("body")).to_contain_text("Nothing was created")
    finally:
        await context.close()
    assert len(rows(stack, DeepLinkRequest)) == before
    assert (await hub_api(stack, "/users/u4")).status_code == 404


async def framed_by(chromium, origin: str, url: str, *, method="GET", fields=None):  # noqa: F811
    """Whether a page of ``origin`` shows ``url`` in an iframe (Playwright serves the
    framing page itself; the iframe's request goes to the real server)."""
    context = await chromium.new_context()
    try:
        page = await context.new_page()
        inputs = "".join(
            f'<input type="hidden" name="{k}" value="{v}">' for k, v in (fields or {}).items()
        )
        html = (
            f'<iframe name="f" id="f" src="{url if method == "GET" else "about:blank"}"></iframe>'
            f'<form id="p" method="post" action="{url}" target="f">{inputs}</form>'
            + ('<script>document.getElementById("p").submit()</script>' if method == "POST" else "")
        )

        async def serve(route):
            await route.fulfill(status=200, content_type="text/html", body=html)

        await page.route(f"{origin}/framing-probe", serve)
        async with page.expect_response(lambda r: r.url.startswith(url.split("?")[0])) as answer:
            await page.goto(f"{origin}/framing-probe")
        response = await answer.value
        await response.finished()
        await page.wait_for_timeout(500)  # let the browser decide about the frame
        frame = page.frame(name="f")
        try:
            text = await frame.locator("body").inner_text(timeout=2000)
        except playwright.Error:
            text = ""
        return bool(text.strip()) and not frame.url.startswith("chrome-error:"), text
    finally:
        await context.close()


async def test_only_registered_platforms_frame_the_lti_pages(chromium, stack):  # noqa: F811
    login = (
        f"{stack.hub_url}/hub/lti13/oauth_login?iss={stack.platform_url}"
        "&login_hint=3&target_link_uri=x&client_id=ananke-demo&lti_message_hint=homework"
    )
    shown, text = await framed_by(chromium, stack.platform_url, login)
    assert shown and "Open in a new window" in text, text
    shown, _ = await framed_by(chromium, STRANGER, login)
    assert not shown

    # Kore's picker: its LMS may frame it, a stranger may not.
    async with LTIBrowser() as ada:
        picker_url, ticket = await continue_page(stack, ada)
    shown, _ = await framed_by(chromium, STRANGER, picker_url, method="POST", fields={"ticket": ticket})
    assert not shown
    shown, text = await framed_by(
        chromium, stack.platform_url, picker_url, method="POST", fields={"ticket": ticket}
    )
    assert shown and "Add Jupyter assignments" in text, text

    # Every other page keeps refusing frames, also from the registered LMS.
    async with httpx.AsyncClient() as http:
        kore = await http.get(f"{stack.hub_url}/services/kore/jwks")
        hub = await http.get(f"{stack.hub_url}/hub/login")
        lti = await http.get(login)
    assert kore.headers["Content-Security-Policy"] == "frame-ancestors 'self'"
    assert kore.headers["X-Frame-Options"] == "SAMEORIGIN"
    assert "frame-ancestors 'none'" in hub.headers["Content-Security-Policy"]
    assert lti.headers["Content-Security-Policy"] == f"frame-ancestors 'self' {stack.platform_url}"
    shown, _ = await framed_by(chromium, stack.platform_url, f"{stack.hub_url}/hub/login")
    assert not shown
