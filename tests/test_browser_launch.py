"""The demo in a real browser: headless Chromium clicks Launch on the built-in LMS and
ends in the student's JupyterLab (the auto-submitting forms need real JavaScript)."""

import os
import shutil

import pytest
from hubtest import admin_stack

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium")
playwright = pytest.importorskip("playwright.async_api", reason="playwright is in the test extra")

if not CHROMIUM and not os.environ.get("CI"):
    pytest.skip("Debian's chromium is not installed (scripts/test.sh installs it)", allow_module_level=True)

CHROMIUM_ARGS = [
    "--no-sandbox",  # CI runs as root
    "--disable-gpu",
    "--disable-background-networking",  # the machine's network is closed
    "--disable-component-update",
    "--disable-sync",
]


async def test_click_launch_lands_in_jupyterlab(tmp_path):
    assert CHROMIUM, "chromium missing on CI: scripts/test.sh should have installed it"
    artifacts = tmp_path / "screenshots"
    artifacts.mkdir()
    async with admin_stack(tmp_path / "hub") as stack, playwright.async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = await browser.new_page(viewport={"width": 1200, "height": 800})
        await page.goto(f"{stack.platform_url}/")
        await page.screenshot(path=artifacts / "lms.png")
        button = page.locator(
            "form:has(input[name=user][value='3']):has(input[name=link][value='homework']) button"
        )
        await button.click()
        await page.wait_for_url("**/user/u3/lab**", timeout=90_000)
        await page.wait_for_selector("#jp-main-dock-panel", timeout=60_000)
        await page.screenshot(path=artifacts / "lab.png")
        assert "/user/u3/lab" in page.url
        # The student's launcher offers the kernel to work with and not the autograding
        # sandbox's (a grader account's kernel: limited, no network, no home).
        cards = page.locator(".jp-LauncherCard[data-category='Notebook'] .jp-LauncherCard-label")
        await cards.first.wait_for(timeout=60_000)
        labels = [label.strip() for label in await cards.all_inner_texts()]
        assert "Python 3 (ipykernel)" in labels, labels
        every_card = page.locator(".jp-LauncherCard .jp-LauncherCard-label")
        assert not [t for t in await every_card.all_inner_texts() if "sandbox" in t.lower()]
        await browser.close()
