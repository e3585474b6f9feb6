"""The "Course settings" panel of Kore's course page in a real browser: headless
Chromium (Playwright) against one real hub, Kore and the built-in LMS.

The instructor (Ada, sub 2) sees the course's settings filled in by the server (also
without JavaScript), changes two with the keyboard and saves: the page sends only those
to the settings API, says "Saved", a reload shows them, and the course's
``nbgrader_config.json`` has them. An invalid value shows the API's message next to the
field and changes nothing. A student (Alan, sub 3) gets no panel. Tests run in file
order and share the stack and Ada's browser page.

With ANANKE_UPDATE_SCREENSHOTS=1 the panel's screenshot replaces the copy the
instructor guide shows (docs/_static/screenshots/kore-settings.png).
"""

import json
import re
import shutil
from dataclasses import fields

import pytest
from hubtest import admin_stack
from test_kore_ui import (
    DOC_SHOTS,
    SHOTS,
    UPDATE_DOC_SHOTS,
    WAIT,
    chromium,  # noqa: F401 (a fixture)
    course,
    kore_api,
    kore_url,
    layout,
    logged_in_page,
    user_token,
)

from ananke_hub.courses.settings import CourseSettings
from ananke_hub.lab.sandbox import EXECUTE_CLASS

pytestmark = pytest.mark.slow
playwright = pytest.importorskip("playwright.async_api", reason="playwright is in the test extra")
expect = playwright.expect

DOC_SCREENSHOT = "kore-settings.png"


@pytest.fixture(scope="module")
async def stack(tmp_path_factory):
    async with admin_stack(tmp_path_factory.mktemp("hub")) as s:
        yield s


@pytest.fixture(scope="module")
async def ada(chromium, stack):  # noqa: F811 (the fixture imported above)
    page = await logged_in_page(chromium, stack, "2")  # her launch creates the course
    yield page
    assert not page.script_errors, page.script_errors
    await page.context.close()


def nbgrader_config(stack) -> dict:
    return json.loads(layout(stack).course(course(stack)).nbgrader_config.read_text())


async def open_settings(page, stack):
    """The course page, once its script has enabled the settings form."""
    await page.goto(kore_url(stack, f"courses/{course(stack)}"))
    panel = page.locator("#settings-panel")
    await panel.locator(".kore-settings-save:enabled").wait_for(timeout=WAIT)
    return panel


async def api_settings(stack) -> dict:
    resp = await kore_api(stack, await user_token(stack, "u2"), "GET", "settings")
    assert resp.status_code == 200, resp.text
    return resp.json()["settings"]


def test_every_setting_has_a_label_and_help_on_the_page():
    for f in fields(CourseSettings):
        assert f.metadata.get("label"), f.name
        assert f.metadata.get("help"), f.name


async def test_panel_shows_the_settings_with_labels_and_help(ada, stack):
    panel = await open_settings(ada, stack)
    await expect(panel.get_by_role("heading", name="Course settings")).to_be_visible()
    remove = panel.get_by_role("checkbox", name="Remove hidden tests from the feedback")
    rerun = panel.get_by_role("checkbox", name="Run the notebooks again to make the feedback")
    timeout = panel.get_by_role("spinbutton", name="Time limit per cell during autograding")
    await expect(remove).to_be_checked()
    await expect(rerun).not_to_be_checked()
    await expect(timeout).to_have_value("30")
    # The help text is the control's description for screen readers.
    await expect(timeout).to_have_accessible_description(
        "Seconds one cell may run before it is interrupted and counts as failed. "
        "Default: 30 seconds (from 1 to 3600)."
    )
    description = await remove.get_attribute("aria-describedby")
    assert "BEGIN HIDDEN TESTS" in await ada.locator(f"#{description}").inner_text()


async def test_instructor_saves_a_change_with_the_keyboard(ada, stack):
    panel = await open_settings(ada, stack)
    timeout = panel.get_by_role("spinbutton", name="Time limit per cell during autograding")
    rerun = panel.get_by_role("checkbox", name="Run the notebooks again to make the feedback")
    await rerun.focus()
    await ada.keyboard.press("Space")
    await timeout.focus()
    await ada.keyboard.press("Control+A")
    await ada.keyboard.type("120")
    # A course whose notebooks need more memory in the autograding sandbox.
    memory = panel.get_by_role("spinbutton", name="Memory per process during autograding")
    await expect(memory).to_have_value("2048")
    await memory.focus()
    await ada.keyboard.press("Control+A")
    await ada.keyboard.type("4096")
    async with ada.expect_request(lambda r: r.method == "PATCH") as sent:
        await ada.keyboard.press("Enter")  # submits the form
    request = await sent.value
    assert request.url == kore_url(stack, f"api/courses/{course(stack)}/settings")
    assert request.headers.get("x-xsrftoken")
    assert json.loads(request.post_data) == {
        "execute_timeout": 120,
        "reexecute_for_feedback": True,
        "sandbox_memory_mb": 4096,
    }
    status = panel.locator(".kore-settings-status")
    await expect(status).to_have_text("Saved.", timeout=WAIT)
    assert await status.get_attribute("aria-live") == "polite"
    await expect(panel.locator(".kore-settings-save")).to_be_enabled()
    await expect(panel.locator("fieldset")).to_be_enabled()
    await ada.mouse.move(0, 0)
    shot = SHOTS / DOC_SCREENSHOT
    SHOTS.mkdir(parents=True, exist_ok=True)
    await panel.screenshot(path=shot)
    if UPDATE_DOC_SHOTS:
        DOC_SHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, DOC_SHOTS / DOC_SCREENSHOT)

    # Saving again without a change sends nothing.
    requests = []
    ada.on("request", lambda r: requests.append(r) if r.method == "PATCH" else None)
    await panel.locator(".kore-settings-save").click()
    await expect(status).to_have_text("Nothing to save: no setting changed.")
    assert requests == []

    # The API, the file nbgrader reads, and the page after a reload all have them.
    assert await api_settings(stack) == {
        **CourseSettings().to_dict(),
        "reexecute_for_feedback": True,
        "execute_timeout": 120,
        "sandbox_memory_mb": 4096,
    }
    config = nbgrader_config(stack)
    assert config["Execute"]["timeout"] == 120
    assert config["GenerateFeedback"]["preprocessors"][-1] == EXECUTE_CLASS
    assert config["SandboxProvisioner"]["memory_mb"] == 4096
    await ada.reload()
    await expect(timeout).to_have_value("120")
    await expect(memory).to_have_value("4096")
    await expect(rerun).to_be_checked()


async def test_values_show_without_javascript(chromium, stack, ada):  # noqa: F811
    state = await ada.context.storage_state()
    context = await chromium.new_context(java_script_enabled=False, storage_state=state)
    try:
        page = await context.new_page()
        resp = await page.goto(kore_url(stack, f"courses/{course(stack)}"))
        assert resp.status == 200
        panel = page.locator("#settings-panel")
        await expect(panel.get_by_label("Time limit per cell during autograding")).to_have_value(
            "120"
        )
        await expect(
            panel.get_by_label("Run the notebooks again to make the feedback")
        ).to_be_checked()
        assert await panel.locator(".kore-settings-save").is_disabled()
        assert "needs JavaScript" in await panel.inner_text()
    finally:
        await context.close()


async def test_invalid_value_shows_the_apis_message_and_changes_nothing(ada, stack):
    before = layout(stack).course(course(stack)).nbgrader_config.read_bytes()
    panel = await open_settings(ada, stack)
    timeout = panel.get_by_role("spinbutton", name="Time limit per cell during autograding")
    remove = panel.get_by_role("checkbox", name="Remove hidden tests from the feedback")
    await remove.uncheck()  # checked together with the invalid one: neither is stored
    await timeout.fill("0")
    async with ada.expect_response(lambda r: r.request.method == "PATCH") as answered:
        await panel.get_by_role("button", name="Save settings").click()
    resp = await answered.value
    assert resp.status == 400
    message = (await resp.json())["message"]
    assert "execute_timeout" in message and "between 1 and 3600" in message
    error = panel.locator("#setting-execute_timeout-error")
    await expect(error).to_have_text(message)
    await expect(timeout).to_have_attribute("aria-invalid", "true")
    await expect(timeout).to_be_focused()  # a screen reader reads the field and its error
    # Its description is the error first, then the help text.
    await expect(timeout).to_have_accessible_description(re.compile("^" + re.escape(message)))
    await expect(panel.locator(".kore-settings-status")).to_have_text("Not saved: " + message)
    await expect(panel.locator(".kore-alert")).to_be_hidden()
    await screenshot_error(panel)

    settings = await api_settings(stack)
    assert settings["execute_timeout"] == 120
    assert settings["remove_hidden_tests_in_feedback"] is True
    assert layout(stack).course(course(stack)).nbgrader_config.read_bytes() == before

    # Correcting the value clears the error; saving then works.
    await remove.check()
    await timeout.fill("45")
    await expect(error).to_be_hidden()
    await expect(timeout).not_to_have_attribute("aria-invalid", "true")
    await panel.get_by_role("button", name="Save settings").click()
    await expect(panel.locator(".kore-settings-status")).to_have_text("Saved.", timeout=WAIT)
    assert nbgrader_config(stack)["Execute"]["timeout"] == 45
    await ada.reload()
    await expect(timeout).to_have_value("45")
    await expect(remove).to_be_checked()


async def screenshot_error(panel) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    await panel.screenshot(path=SHOTS / "kore-settings-invalid.png")


async def test_student_sees_no_settings_panel(chromium, stack, ada):  # noqa: F811
    page = await logged_in_page(chromium, stack, "3")
    try:
        resp = await page.goto(kore_url(stack, f"courses/{course(stack)}"))
        assert resp.status == 403
        await expect(page.locator("h1")).to_have_text("Kore is for instructors")
        await expect(page.locator("#settings-panel")).to_have_count(0)
        await expect(page.get_by_text("Course settings")).to_have_count(0)
        resp = await page.request.get(kore_url(stack, f"api/courses/{course(stack)}/settings"))
        assert resp.status == 403
        assert not page.script_errors, page.script_errors
    finally:
        await page.context.close()
