"""The registration pages in a real browser: headless Chromium (Playwright) against a
fresh hub (nothing in 30_lms.py), Kore and the built-in LMS.

The LMS's admin pastes a registration URL into the LMS's Manage tools page, checks the
hub's confirmation page and clicks Register; then the hub admin (Ada, sub 2, in
admin_users) launches, opens Kore's LMS page from Kore's home page, makes a new
registration URL and disables the registration. A student gets 403 there.

Screenshots go to test-artifacts/screenshots/; with ANANKE_UPDATE_SCREENSHOTS=1 they
also replace the copies docs/admin/lms.md shows (docs/_static/screenshots/).
"""

import shutil

import httpx
import pytest
from hubtest import admin_stack, hub_api
from test_dynamic_registration import registrations
from test_kore_ui import (
    DOC_SHOTS,
    SHOTS,
    UPDATE_DOC_SHOTS,
    WAIT,
    chromium,  # noqa: F401 (a fixture)
    logged_in_page,
)

from ananke_hub.testlms.demo import DEMO_CLIENT_ID

pytestmark = pytest.mark.slow
playwright = pytest.importorskip("playwright.async_api", reason="playwright is in the test extra")
expect = playwright.expect


async def screenshot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=SHOTS / name, full_page=True)
    if UPDATE_DOC_SHOTS:
        DOC_SHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(SHOTS / name, DOC_SHOTS / name)


@pytest.fixture(scope="module")
async def stack(tmp_path_factory):
    config = {"Authenticator": {"admin_users": ["u2"]}}
    # As `ananke demo --register-by-url`: no registration in 30_lms.py.
    root = tmp_path_factory.mktemp("hub")
    async with admin_stack(root, extra_config=config, register_by_url=True) as s:
        yield s


async def test_the_lms_admin_pastes_the_url_and_confirms(chromium, stack):  # noqa: F811
    url = await stack.new_registration_url()  # what the demo prints
    context = await chromium.new_context(viewport={"width": 1100, "height": 900})
    page = await context.new_page()
    await page.goto(f"{stack.platform_url}/admin/tools")
    await page.fill("#tool-url", url)
    await page.click("#add-tool")
    # The hub's confirmation page: what will be registered.
    await expect(page.locator("h1")).to_have_text("Register this Jupyter hub with your LMS?")
    await expect(page.locator("#platform-issuer")).to_have_text(stack.platform_url)
    await expect(page.locator("#platform-product")).to_contain_text("ananke-test-platform")
    await expect(page.locator("#scopes")).to_contain_text("lti-ags/scope/score")
    await expect(page.locator("#scopes")).to_contain_text("contextmembership.readonly")
    await screenshot(page, "registration-confirm.png")
    assert registrations(stack) == []  # nothing before the admin confirms
    await page.click("#confirm")
    await expect(page.locator("#registered")).to_contain_text(DEMO_CLIENT_ID, timeout=WAIT)
    await screenshot(page, "registration-done.png")
    (reg,) = registrations(stack)
    assert reg["issuer"] == stack.platform_url and reg["state"] == "enabled"
    assert await stack.new_registration_url() is None  # the demo: registered already
    await context.close()


async def test_the_hub_admin_lists_makes_a_url_and_disables(chromium, stack):  # noqa: F811
    page = await logged_in_page(chromium, stack, "2")  # launches: the registration works
    await page.goto(f"{stack.hub_url}/services/kore/")
    await page.click("#lms-admin-link")
    row = page.locator("#registrations tr[data-registration-id='1']")
    await expect(row).to_contain_text(stack.platform_url, timeout=WAIT)
    await expect(row.locator(".registration-state")).to_have_text("enabled")
    await page.click("#new-registration-url")
    url = await page.locator("#registration-url").input_value()
    assert url.startswith(f"{stack.hub_url}/hub/lti13/register?ticket=")
    await screenshot(page, "registration-admin.png")
    await row.get_by_role("button", name="Disable registration 1").click()
    await expect(page.locator("#lms-message")).to_contain_text("is disabled")
    await expect(
        page.locator("#registrations tr[data-registration-id='1'] .registration-state")
    ).to_have_text("disabled")
    assert registrations(stack)[0]["state"] == "disabled"
    assert not page.script_errors, page.script_errors
    await page.context.close()
    # The new URL works once: the LMS's confirmation page opens (the ticket is valid).
    async with httpx.AsyncClient() as http:
        resp = await http.get(url)  # no openid_configuration: the page says what to do
        assert resp.status_code == 400 and "Paste the registration URL" in resp.text


async def test_a_student_may_not_open_the_lms_page(stack):
    async with httpx.AsyncClient() as http:
        # u3 exists once they launched; a token of theirs from the hub's API.
        await hub_api(stack, "/users/u3", method="POST")
        resp = await hub_api(stack, "/users/u3/tokens", method="POST")
        token = resp.json()["token"]
        page = await http.get(
            f"{stack.hub_url}/services/kore/admin/lms",
            headers={"Authorization": f"token {token}"},
        )
    assert page.status_code == 403
    assert "Only hub admins" in page.text
