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

import html
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from hubtest import admin_stack, hub_api, initiation
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


class Stranger:
    """A web site on another origin than the hub and the LMS, registered nowhere: it
    serves pages that frame the hub's (a real server: Chromium keeps pages Playwright
    makes up from reaching the loopback, Private Network Access)."""

    def __init__(self):
        pages = self.pages = {}

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                body = pages.get(self.path, "").encode()
                self.send_response(200 if body else 404)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def stranger():
    site = Stranger()
    yield site
    site.close()


async def framed_by(chromium, site: Stranger, url: str, *, fields=None):  # noqa: F811
    """Whether a page of ``site`` shows ``url`` in an iframe, and the frame's text.

    The frame's request is a GET of ``url``, or a form POST of ``fields`` to it."""
    context = await chromium.new_context()
    try:
        page = await context.new_page()
        if fields:
            inputs = "".join(
                f'<input type="hidden" name="{k}" value="{html.escape(v)}">'
                for k, v in fields.items()
            )
            site.pages["/probe"] = (
                '<iframe name="f" id="f"></iframe>'
                f'<form id="p" method="post" action="{html.escape(url)}" target="f">{inputs}'
                '</form><script>document.getElementById("p").submit()</script>'
            )
        else:
            site.pages["/probe"] = f'<iframe name="f" id="f" src="{html.escape(url)}"></iframe>'
        async with page.expect_event("framenavigated", lambda f: f.name == "f"):
            await page.goto(f"{site.origin}/probe")
        frame = page.frame(name="f")
        await frame.wait_for_load_state()
        try:
            text = await frame.locator("body").inner_text(timeout=5000)
        except playwright.Error:
            text = ""
        return frame.url.startswith(url.split("?")[0]) and bool(text.strip()), text
    finally:
        await context.close()


async def test_only_registered_platforms_frame_the_lti_pages(
    chromium,  # noqa: F811
    stack,
    stranger,
):
    # The LMS frames the login (first test: an embedded launch) and the picker (the
    # dialog); a page of any other origin cannot.
    login = (
        f"{stack.hub_url}/hub/lti13/oauth_login?iss={stack.platform_url}"
        "&login_hint=3&target_link_uri=x&client_id=ananke-demo&lti_message_hint=homework"
    )
    shown, text = await framed_by(chromium, stranger, login)
    assert not shown and "Open in a new window" not in text, text
    async with LTIBrowser() as ada:
        picker_url, ticket = await continue_page(stack, ada)
    shown, text = await framed_by(chromium, stranger, picker_url, fields={"ticket": ticket})
    assert not shown and "Add Jupyter assignments" not in text, text

    # The control: the same probe shows a page that does not forbid frames (the LMS's).
    shown, text = await framed_by(chromium, stranger, f"{stack.platform_url}/")
    assert shown and "Ananke test platform" in text, text

    async with httpx.AsyncClient() as http:
        kore = await http.get(f"{stack.hub_url}/services/kore/jwks")
        hub = await http.get(f"{stack.hub_url}/hub/login")
        lti = await http.get(login)
        picker = await http.post(picker_url, data={"ticket": ticket})
    # Every other page keeps refusing frames, also from the registered LMS.
    assert kore.headers["Content-Security-Policy"] == "frame-ancestors 'self'"
    assert kore.headers["X-Frame-Options"] == "SAMEORIGIN"
    assert "frame-ancestors 'none'" in hub.headers["Content-Security-Policy"]
    assert lti.headers["Content-Security-Policy"] == f"frame-ancestors 'self' {stack.platform_url}"
    assert picker.status_code == 200, picker.text[:300]
    assert picker.headers["Content-Security-Policy"] == (
        f"frame-ancestors 'self' {stack.platform_url}"
    )
    assert "X-Frame-Options" not in picker.headers


# --- the login in a frame, request by request -------------------------------------------

FRAMED = {"Sec-Fetch-Dest": "iframe", "Sec-Fetch-Site": "cross-site"}


async def framed_selection_up_to_the_lms(stack, browser) -> httpx.Response:
    """Ada's "Select content" in a frame, up to the hub's redirect to the LMS's /auth."""
    page = await browser.get(stack.platform_url + "/")
    (form,) = [
        f
        for f in browser.forms(page)
        if f.action.endswith("/deeplink") and f.fields.get("user") == "2"
    ]
    resp = await browser.submit_form(page, form=form, stop_before=f"{stack.platform_url}/auth")
    return await browser.follow_auto_submits(resp, stop_before=f"{stack.platform_url}/auth")


#: A browser that sends no Fetch Metadata (Safari before 16.4): frame or window unknown.
NO_FETCH_METADATA = {"fetch_metadata": False}


@pytest.mark.parametrize("browser", [{"headers": FRAMED}, NO_FETCH_METADATA], ids=["framed", "unknown"])
async def test_a_framed_selection_needs_no_cookie_and_sets_none(stack, browser):
    # In a frame, or perhaps in one: the cookie-less login, which works in a window too.
    async with LTIBrowser(**browser) as ada:
        redirect = await framed_selection_up_to_the_lms(stack, ada)
        assert redirect.status_code == 302
        state = parse_qs(urlsplit(redirect.headers["location"]).query)["state"][0]
        assert state.startswith("2|")  # signed, not upstream's base64 JSON
        assert not [c for c in ada.cookies.jar if c.domain.startswith("127.0.0.1")]
        page = await ada.get(redirect.headers["location"], stop_before=stack.hub_url)
        page = await ada.follow_auto_submits(page, stop_before=f"{stack.hub_url}/services/kore/")
        (form,) = ada.forms(page)
        assert form.action.startswith(f"{stack.hub_url}/services/kore/deeplink/"), page.text[:300]
        # No hub cookie of any kind (state, nonce, login) was set on the way.
        assert not [c for c in ada.cookies.jar if c.domain.startswith("127.0.0.1")]
        assert page.headers["Content-Security-Policy"] == (
            f"frame-ancestors 'self' {stack.platform_url}"
        )
        picker = await ada.post(form.action, form.fields)
    assert picker.status_code == 200 and "Add Jupyter assignments" in picker.text


async def test_a_framed_state_is_refused_for_another_launch_and_when_changed(stack):
    async with LTIBrowser(headers=FRAMED) as ada:
        redirect = await framed_selection_up_to_the_lms(stack, ada)
        location = redirect.headers["location"]
        query = parse_qs(urlsplit(location).query)
        # The same login, but the LMS answers with an activity launch: refused.
        launch = dict((k, v[0]) for k, v in query.items())
        launch["lti_message_hint"] = "homework"
        page = await ada.get(
            f"{stack.platform_url}/auth?{urlencode(launch)}", stop_before=stack.hub_url
        )
        resp = await ada.follow_auto_submits(page)
        assert resp.status_code == 400 and "started for a content selection" in resp.text

        redirect = await framed_selection_up_to_the_lms(stack, ada)
        query = {k: v[0] for k, v in parse_qs(urlsplit(redirect.headers["location"]).query).items()}
        *head, sig = query["state"].split("|")
        query["state"] = "|".join([*head, ("0" if sig[0] != "0" else "1") + sig[1:]])
        page = await ada.get(f"{stack.platform_url}/auth?{urlencode(query)}", stop_before=stack.hub_url)
        resp = await ada.follow_auto_submits(page)
        assert resp.status_code == 400 and "state missing from cookies" in resp.text


# --- a browser that does not say whether it is in a frame (no Sec-Fetch-Dest) ---------------


def hub_cookies(browser) -> list:
    return [c.name for c in browser.cookies.jar if c.domain.startswith("127.0.0.1")]


async def test_without_fetch_metadata_the_hub_asks_the_browser(stack):
    """Frame or window unknown: no login yet, no cookie; a page that goes on at once in a
    top-level window (the same initiation, marked top-level) and otherwise offers the new
    window, with the same initiation."""
    async with LTIBrowser(fetch_metadata=False) as browser:
        page = await browser.post(
            f"{stack.hub_url}/hub/lti13/oauth_login", initiation(stack), stop_before=stack.platform_url
        )
        assert page.status_code == 200, page.text[:300]
        assert not hub_cookies(browser)
    assert page.headers["Content-Security-Policy"] == f"frame-ancestors 'self' {stack.platform_url}"
    forms = {f.id: f for f in LTIBrowser.forms(page)}
    expected = {**initiation(stack), "ananke_window": "top"}
    assert forms["ananke-continue"].fields == expected
    assert forms["ananke-open-window"].fields == expected
    assert 'target="_blank"' in page.text and "Open in a new window" in page.text
    assert "window.self === window.top" in page.text


async def test_without_fetch_metadata_a_top_level_launch_lands_in_the_lab(stack):
    """The page's check says top-level (LTIBrowser runs the auto-submit as a window's
    JavaScript would): the usual cookie-based login, into the lab."""
    async with LTIBrowser(fetch_metadata=False) as browser:
        resp = await browser.launch(stack.platform_url, "3", "homework")
        asked = [r for r in browser.history if "ananke-continue" in r.text]
        assert asked and asked[0].url.path == "/hub/lti13/oauth_login"
        assert "/u3" in str(resp.url), resp.url
        user = (await browser.get(f"{stack.hub_url}/hub/api/user")).json()
    assert user["name"] == "u3"


async def test_a_frame_that_says_so_gets_the_new_window_even_with_the_top_level_mark(stack):
    """The mark is believed only without Sec-Fetch-Dest: a framed request with it still
    gets the new-window page and no cookie."""
    async with LTIBrowser(headers=FRAMED) as browser:
        page = await browser.post(
            f"{stack.hub_url}/hub/lti13/oauth_login",
            initiation(stack, ananke_window="top"),
            stop_before=stack.platform_url,
        )
        assert page.status_code == 200 and "Open in a new window" in page.text
        assert "ananke-continue" not in page.text
        assert not hub_cookies(browser)


async def without_fetch_metadata_once(context, login_url: str) -> list:
    """The next request to ``login_url`` reaches the hub as from Safari before 16.4: without
    Sec-Fetch-Dest (Chromium adds it to whatever the page asks, so Playwright sends this
    one for the page, with the page's cookies). Later requests are the browser's own.
    Returns the list the intercepted request's URL is appended to."""
    taken = []

    async def strip(route):
        if taken:
            await route.continue_()
            return
        taken.append(route.request.url)
        headers = {
            k: v for k, v in (await route.request.all_headers()).items()
            if not k.lower().startswith("sec-fetch-")
        }
        await route.fulfill(response=await route.fetch(headers=headers, max_redirects=0))

    await context.route(f"{login_url}*", strip)
    return taken


async def test_without_fetch_metadata_the_browser_decides_frame_or_window(
    chromium,  # noqa: F811
    stack,
):
    """Clicked in Chromium, the login initiation's first answer as to a browser that
    does not say where it loads it: embedded, the frame offers the new window and sets
    no cookie, and the new window lands in the lab; top-level, the page goes on by itself
    through the LMS into the lab."""
    login_url = f"{stack.hub_url}/hub/lti13/oauth_login"
    context = await chromium.new_context(viewport={"width": 1200, "height": 900})
    try:
        taken = await without_fetch_metadata_once(context, login_url)
        page = await context.new_page()
        await page.goto(f"{stack.platform_url}/")  # logs the browser in to the LMS
        await page.locator(
            "form:has(input[name=user][value='3']):has(input[name=link][value='homework']) button"
        ).click()
        embedded = page.frame_locator("#contentframe")
        open_button = embedded.get_by_role("button", name="Open in a new window")
        await expect(open_button).to_be_visible(timeout=WAIT)
        assert taken, "the embedded initiation did not go through the stripping route"
        hub_cookies = [c for c in await context.cookies() if c["domain"] == "127.0.0.1"]
        assert not hub_cookies, hub_cookies
        async with context.expect_page() as new_window:
            await open_button.click()
        lab = await new_window.value
        await lab.wait_for_url("**/user/u3/lab**", timeout=LAB_WAIT)

        # Top-level: the same check goes on at once, without a click.
        await context.unroute(f"{login_url}*")
        taken = await without_fetch_metadata_once(context, login_url)
        window = await context.new_page()
        passed = []
        window.on("framenavigated", lambda frame: passed.append(frame.url.split("?")[0]))
        await window.goto(f"{login_url}?{urlencode(initiation(stack))}")
        await window.wait_for_url("**/user/u3/lab**", timeout=LAB_WAIT)
        assert taken
        assert f"{stack.platform_url}/auth" in passed, passed  # a new login, through the LMS
    finally:
        await context.close()
