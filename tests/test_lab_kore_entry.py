"""The "Kore" menu of JupyterLab: shipped prebuilt in the Python package, found by labs
through the spawner's JUPYTER_PATH, shown to instructors only.

The server route it asks (``ananke/kore``) is tested in test_labext.py. Here: the built
extension is what the source says and is packaged; ``jupyter labextension list`` in a
lab's environment lists it enabled and OK; and a real browser (headless Chromium) against
a real hub, Kore and the built-in LMS: an instructor gets the menu and opens Kore from
it, a student gets no menu; Kore is in the hub control panel's Services menu.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from types import SimpleNamespace

import pytest
from jupyterhub.objects import Hub

from ananke_hub.spawner import LAB_CONFIG_DIR, LAB_KINDS_DIR, AnankeLocalSpawner

REPO = Path(__file__).resolve().parent.parent
SOURCE = REPO / "labextension"
NAME = "@ananke/lab-kore"
BUILT = LAB_CONFIG_DIR / "labextensions" / NAME
SCREENSHOTS = REPO / "test-artifacts" / "screenshots"


def lab_environment(tmp_path, name="u5", groups=("formgrade-c-00000000000000aa",)) -> dict:
    user = SimpleNamespace(
        name=name,
        id=5,
        url=f"/user/{name}/",
        escaped_name=name,
        groups=[SimpleNamespace(name=g) for g in groups],
    )
    spawner = AnankeLocalSpawner(user=user, hub=Hub(), home_root=str(tmp_path / "homes"))
    return spawner.lab_environment()


# --- what is shipped ---------------------------------------------------------------------------


def test_labs_get_the_shipped_data_dir_on_jupyter_path(tmp_path):
    env = lab_environment(tmp_path)
    assert env["JUPYTER_PATH"].split(os.pathsep) == [
        str(LAB_CONFIG_DIR),
        str(LAB_KINDS_DIR / "staff"),
    ]
    assert env["JUPYTER_CONFIG_PATH"].split(os.pathsep) == [
        str(LAB_CONFIG_DIR),
        str(LAB_KINDS_DIR / "staff"),
    ]


@pytest.mark.parametrize(
    "name, groups, kind, hidden",
    [
        ("grader-c-00000000000000aa", ["formgrade-c-00000000000000aa"], "grader", set()),
        (
            "u5",
            ["nbgrader-c-00000000000000bb", "formgrade-c-00000000000000aa"],
            "staff",
            {"@jupyter/nbgrader:formgrader"},
        ),
        (
            "u3",
            ["nbgrader-c-00000000000000aa"],
            "learner",
            {
                "@jupyter/nbgrader:formgrader",
                "@jupyter/nbgrader:create-assignment",
                "@jupyter/nbgrader:course-list",
            },
        ),
        (
            "u9",
            [],
            "learner",
            {
                "@jupyter/nbgrader:formgrader",
                "@jupyter/nbgrader:create-assignment",
                "@jupyter/nbgrader:course-list",
            },
        ),
    ],
)
def test_each_kind_of_lab_hides_what_it_cannot_use(
    tmp_path, monkeypatch, name, groups, kind, hidden
):
    """JupyterLab's own page config, merged from the lab's config path: learners get no
    instructor menus; an instructor's own lab no Formgrader entry (no formgrader runs
    there); the grader account's lab everything."""
    from jupyterlab_server.config import get_static_page_config

    env = lab_environment(tmp_path, name, groups)
    assert env["JUPYTER_CONFIG_PATH"].split(os.pathsep)[-1] == str(LAB_KINDS_DIR / kind)
    for var in ("JUPYTER_CONFIG_PATH", "JUPYTER_PATH"):
        monkeypatch.setenv(var, env[var])
    config = get_static_page_config(level="all")
    disabled = {ext for ext, off in config.get("disabledExtensions", {}).items() if off}
    assert {ext for ext in disabled if ext.startswith("@jupyter/nbgrader")} == hidden


def test_built_extension_is_the_source_package():
    source = json.loads((SOURCE / "package.json").read_text())
    built = json.loads((BUILT / "package.json").read_text())
    assert built["name"] == source["name"] == NAME
    assert built["version"] == source["version"]
    assert built["dependencies"] == source["dependencies"]
    # outputDir points where the spawners look, relative to the source.
    assert (SOURCE / source["jupyterlab"]["outputDir"]).resolve() == BUILT
    entry = built["jupyterlab"]["_build"]["load"]
    assert (BUILT / entry).is_file()
    # No node at install or run time: the bundle is complete, and built from today's
    # source (the minifier keeps string literals): a source change needs a rebuild.
    bundle = "".join(p.read_text() for p in (BUILT / "static").glob("*.js"))
    code = (SOURCE / "src" / "index.js").read_text()
    code = re.sub(r"/\*.*?\*/|^\s*//.*?$", "", code, flags=re.DOTALL | re.MULTILINE)  # comments
    literals = re.findall(r"'([^'\\\n]{3,})'", code)
    assert "ananke-kore:open-home" in literals
    missing = [text for text in literals if text not in bundle]
    assert not missing, f"rebuild the extension (labextension/README.md): {missing}"


def test_built_extension_is_in_the_package_data():
    """Every built file matches a package-data glob of pyproject.toml (setuptools expands
    them with recursive glob relative to the package), so the wheel carries them."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["ananke_hub"]
    package = REPO / "ananke_hub"
    packaged = set()
    for pattern in patterns:
        packaged.update(Path(p) for p in package.glob(pattern) if p.is_file())
    built = {p for p in BUILT.rglob("*") if p.is_file()}
    assert built
    assert built <= packaged


def test_labextension_list_in_a_labs_environment(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTER")}
    env.update(lab_environment(tmp_path))
    env.update(
        JUPYTER_CONFIG_DIR=str(tmp_path / "cfg"),
        JUPYTER_DATA_DIR=str(tmp_path / "data"),
        NO_COLOR="1",
    )
    result = subprocess.run(
        [sys.executable, "-m", "jupyterlab.labextensions", "list"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    out = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout + result.stderr)
    assert str(LAB_CONFIG_DIR / "labextensions") in out
    line = next((row for row in out.splitlines() if NAME in row), "")
    assert re.search(rf"{re.escape(NAME)} v\S+ enabled\s+OK", line), out


def test_kore_is_in_the_hub_services_menu(tmp_path, monkeypatch):
    """What JupyterHub needs to list a service in the Services menu of its pages
    (BaseHandler.get_accessible_services): a url, display true, and the user's access."""
    from traitlets.config import Config

    from ananke_hub import hubconfig
    from ananke_hub.paths import StateLayout

    monkeypatch.setenv("JUPYTERHUB_CRYPT_KEY", "")  # configure() sets it; restored after
    cfg_dir = tmp_path / "config.d"
    cfg_dir.mkdir()
    c = Config()
    # As root without systemd the hub refuses root labs unless switched on (loopback).
    c.AnankeLocalSpawner.allow_root = True
    c.JupyterHub.bind_url = "http://127.0.0.1:8000/"
    hubconfig.configure(c, cfg_dir=cfg_dir, layout=StateLayout(tmp_path / "state"))
    (kore,) = [s for s in c.JupyterHub.services if s["name"] == "kore"]
    assert kore["url"].startswith("http://127.0.0.1:")
    assert kore.get("display", True) is True
    (user_role,) = [r for r in c.JupyterHub.load_roles if r["name"] == "user"]
    assert "access:services!service=kore" in user_role["scopes"]


def test_the_hub_waits_for_a_slow_kore_instead_of_exiting(tmp_path, monkeypatch):
    """JupyterHub exits ("Cannot connect to kore service") when a managed service does
    not answer within the service's timeout, 30 s unless set: Kore's start took 29 s on
    a busy 2-core machine. JupyterHub's own Service object must read our longer wait."""
    from jupyterhub.services.service import Service
    from traitlets.config import Config

    from ananke_hub import hubconfig
    from ananke_hub.paths import StateLayout

    monkeypatch.setenv("JUPYTERHUB_CRYPT_KEY", "")
    cfg_dir = tmp_path / "config.d"
    cfg_dir.mkdir()
    c = Config()
    c.AnankeLocalSpawner.allow_root = True
    c.JupyterHub.bind_url = "http://127.0.0.1:8000/"
    hubconfig.configure(c, cfg_dir=cfg_dir, layout=StateLayout(tmp_path / "state"))
    (kore,) = [s for s in c.JupyterHub.services if s["name"] == "kore"]
    service = Service(**{k: v for k, v in kore.items() if Service.class_traits().get(k)})
    assert service.timeout >= 120


# --- in a real browser ------------------------------------------------------------------------

CHROMIUM = shutil.which("chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",  # CI runs as root
    "--disable-gpu",
    "--disable-background-networking",  # the machine's network is closed
    "--disable-component-update",
    "--disable-sync",
]
GRACE, ALAN = "5", "3"  # the built-in LMS's instructor (not a hub admin) and a learner
COURSE_ID_RE = r"c-[0-9a-f]{16}"


async def launch(page, stack, sub: str):
    """Click Launch of the "homework" activity as ``sub`` in the built-in LMS."""
    await page.goto(f"{stack.platform_url}/")
    form = f"form:has(input[name=user][value='{sub}']):has(input[name=link][value='homework'])"
    await page.locator(f"{form} button").click()
    # Generous: the first launch creates the course, then the lab starts (a busy CI).
    await page.wait_for_url(f"**/user/u{sub}/lab**", timeout=180_000)
    await page.wait_for_selector("#jp-main-dock-panel", timeout=120_000)


def menu_bar_item(page, label: str):
    return page.locator("#jp-menu-panel .lm-MenuBar-itemLabel", has_text=re.compile(f"^{label}$"))


@pytest.mark.slow
async def test_instructor_opens_kore_from_the_lab_and_students_get_no_menu(tmp_path):
    playwright = pytest.importorskip(
        "playwright.async_api", reason="playwright is in the test extra"
    )
    if not CHROMIUM:
        if os.environ.get("CI"):
            pytest.fail("chromium missing on CI: scripts/test.sh should have installed it")
        pytest.skip("Debian's chromium is not installed (scripts/test.sh installs it)")
    from hubtest import admin_stack

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    async with admin_stack(tmp_path / "hub") as stack, playwright.async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        kore = f"{stack.hub_url}/services/kore/"

        # An instructor: the lab gets the Kore menu.
        context = await browser.new_context(viewport={"width": 1280, "height": 800})
        page = await context.new_page()
        async with page.expect_console_message(
            lambda m: m.text.startswith("Ananke:"), timeout=180_000
        ) as outcome:
            await launch(page, stack, GRACE)
        assert (await outcome.value).text.startswith("Ananke: Kore menu added (1 courses)")
        await menu_bar_item(page, "Kore").click()
        menu = page.locator("#jp-mainmenu-ananke-kore")
        await menu.wait_for(state="visible")
        items = menu.locator(".lm-Menu-item[data-type=command] .lm-Menu-itemLabel")
        labels = await items.all_inner_texts()
        assert labels == ["Course management", "Data Science 101 - Homework"]  # its one course
        await page.screenshot(path=SCREENSHOTS / "lab-kore-menu.png")

        # "Course management": Kore's home in a new tab, through the hub's login.
        async with context.expect_page() as new_tab:
            await menu.locator(".lm-Menu-item", has_text="Course management").click()
        kore_page = await new_tab.value
        await kore_page.wait_for_url(kore, timeout=60_000)
        response = await kore_page.reload()
        assert response.status == 200
        await kore_page.get_by_text("Data Science 101").first.wait_for()
        await kore_page.screenshot(path=SCREENSHOTS / "lab-kore-home.png")
        await kore_page.close()

        # A course: its page in Kore, in a new tab.
        await menu_bar_item(page, "Kore").click()
        async with context.expect_page() as new_tab:
            await menu.locator(".lm-Menu-item", has_text="Data Science 101").click()
        course_page = await new_tab.value
        await course_page.wait_for_url(re.compile(rf"{re.escape(kore)}courses/{COURSE_ID_RE}$"))
        await course_page.close()

        # The same commands in the command palette.
        await page.keyboard.press("Escape")
        await page.locator("#jp-main-dock-panel").click()
        await page.keyboard.press("Control+Shift+C")
        palette = page.locator(".jp-ModalCommandPalette")
        await palette.locator(".lm-CommandPalette-input").fill("Kore")
        found = palette.locator(".lm-CommandPalette-item", has_text="Open Kore (course management)")
        await found.wait_for()
        course = palette.locator(
            ".lm-CommandPalette-item", has_text="Open Data Science 101 - Homework in Kore"
        )
        await course.wait_for()
        await page.keyboard.press("Escape")

        # The hub control panel lists Kore under Services.
        hub_page = await context.new_page()
        await hub_page.goto(f"{stack.hub_url}/hub/home")
        link = hub_page.locator("a.dropdown-item", has_text=re.compile("^kore$"))
        assert await link.get_attribute("href") == "/services/kore/"
        await context.close()

        # A student: same lab, no Kore menu.
        context = await browser.new_context(viewport={"width": 1280, "height": 800})
        page = await context.new_page()
        async with page.expect_console_message(
            lambda m: m.text.startswith("Ananke:"), timeout=180_000
        ) as outcome:
            await launch(page, stack, ALAN)
        assert (await outcome.value).text == (
            "Ananke: no Kore menu, you teach no course on this hub"
        )
        await menu_bar_item(page, "File").wait_for()
        assert await menu_bar_item(page, "Kore").count() == 0
        assert await page.locator("#jp-mainmenu-ananke-kore").count() == 0
        await page.screenshot(path=SCREENSHOTS / "lab-student-no-kore.png")

        # ... and no Kore under Services in the hub control panel (share/templates/page.html).
        hub_page = await context.new_page()
        await hub_page.goto(f"{stack.hub_url}/hub/home")
        await hub_page.get_by_text("Logout").first.wait_for()
        assert await hub_page.locator("a.dropdown-item", has_text=re.compile("^kore$")).count() == 0
        await browser.close()
