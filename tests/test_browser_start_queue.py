"""Two students click Launch at once in real Chromium, with room for one lab starting at
a time: the second one's waiting page shows their place in the queue, and both end in
their JupyterLab without an error or a second click."""

import os
import shutil

import pytest
from hubtest import admin_stack

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium")
playwright = pytest.importorskip("playwright.async_api", reason="playwright is in the test extra")

if not CHROMIUM and not os.environ.get("CI"):
    pytest.skip(
        "Debian's chromium is not installed (scripts/test.sh installs it)", allow_module_level=True
    )

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
]


def launch_button(page, sub: str):
    return page.locator(
        f"form:has(input[name=user][value='{sub}']):has(input[name=link][value='homework']) button"
    )


async def test_second_student_waits_in_the_queue_and_gets_their_lab(tmp_path):
    assert CHROMIUM, "chromium missing on CI: scripts/test.sh should have installed it"
    # Labs wait for a gate file before they start: Alan's start holds the only slot until
    # the test has seen Émilie queued behind it. Without the gate a fast machine starts
    # Alan's lab before Émilie clicks, and she is never queued (CI failed so).
    gate = tmp_path / "gate"
    config = {
        "Spawner": {
            "concurrent_starts": 1,
            "cmd": [
                "/bin/sh",
                "-c",
                f'while [ ! -e "{gate}" ]; do sleep 0.2; done; exec jupyterhub-singleuser "$@"',
                "gated-lab",
            ],
        },
        # The waiting page at once, not after 10 s: on a quiet machine both labs may start
        # within JupyterHub's slow_spawn_timeout, and the page would never show.
        "JupyterHub": {"tornado_settings": {"slow_spawn_timeout": 0}},
    }
    async with (
        admin_stack(tmp_path / "hub", extra_config=config) as stack,
        playwright.async_playwright() as p,
    ):
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        # Two browsers of their own (separate cookie jars): Alan (3) and Émilie (4).
        alan, emilie = [await (await browser.new_context()).new_page() for _ in range(2)]
        for page in (alan, emilie):
            await page.goto(f"{stack.platform_url}/")
        await launch_button(alan, "3").click()
        await alan.wait_for_url("**/hub/spawn-pending/u3**", timeout=60_000)
        await launch_button(emilie, "4").click()
        await emilie.wait_for_url("**/hub/spawn-pending/u4**", timeout=60_000)
        # JupyterHub's waiting page shows the spawner's latest progress message.
        message = emilie.locator("#progress-message", has_text="You are number 1 in the queue")
        await message.wait_for(timeout=60_000)
        gate.touch()
        for page, user in ((alan, "u3"), (emilie, "u4")):
            await page.wait_for_url(f"**/user/{user}/lab**", timeout=120_000)
            await page.wait_for_selector("#jp-main-dock-panel", timeout=60_000)
        await browser.close()
