"""A whole term in a real browser, by clicking only: no API or CLI shortcut.

Headless Chromium (Playwright) against the demo stack (hub, Kore, the built-in LMS):

1. Ada Lovelace (instructor) launches the Homework from the LMS, opens its formgrader
   from her JupyterLab (Nbgrader -> Course List), adds assignment ps1, clicks its name
   and lands in the course's JupyterLab (the grader account's) in source/ps1, writes a
   notebook there and marks its cells with the Create Assignment sidebar, then
   generates and releases it.
2. Alan Turing and Emilie du Chatelet (students) launch, fetch ps1 in the Assignment
   List, answer it, run it and submit.
3. Ada sees "released", clicks Collect, autogrades both submissions, opens Alan's
   through its link, gives a manual grade, generates and releases feedback.
4. The students fetch their feedback and open it.
5. Ada sends the grades from Kore; the LMS's gradebook page shows them.

Every page of every browser is watched: a console error or an uncaught exception fails
the test (``ALLOWED_CONSOLE_ERRORS`` lists the justified exceptions). Screenshots of
each step go to test-artifacts/screenshots/term-*.png; with ANANKE_UPDATE_SCREENSHOTS=1
those the user guides show are copied to docs/_static/screenshots/.

Tests run in file order and share the stack and the browsers.
"""

import os
import re
import shutil
from pathlib import Path

import pytest
from hubtest import admin_stack
from test_browser_launch import CHROMIUM, CHROMIUM_ARGS

from ananke_hub.courses.identity import course_id_for
from ananke_hub.testlms.demo import DEMO_CLIENT_ID, DEMO_DEPLOYMENT_ID

pytestmark = pytest.mark.slow
playwright = pytest.importorskip("playwright.async_api", reason="playwright is in the test extra")
expect = playwright.expect

REPO = Path(__file__).resolve().parent.parent
SHOTS = REPO / "test-artifacts" / "screenshots"
DOC_SHOTS = REPO / "docs" / "_static" / "screenshots"
UPDATE_DOC_SHOTS = os.environ.get("ANANKE_UPDATE_SCREENSHOTS") == "1"
#: The screenshots docs/user/getting-started.md and instructors.md show.
DOC_SCREENSHOTS = {
    "term-course-list.png",
    "term-formgrader-released.png",
    "term-create-assignment.png",
    "term-student-assignments.png",
    "term-submissions.png",
    "term-manual-grade.png",
    "term-feedback.png",
    "term-lms-gradebook.png",
}
#: Playwright's wait (ms) for a page or an nbgrader step; a lab's first start on a busy
#: CI machine takes longer.
WAIT = 60_000
LAB_WAIT = 180_000

ADA, ALAN, EMILIE = "2", "3", "4"
ASSIGNMENT = "ps1"
NOTEBOOK = "problem1"

#: Console errors that are not this product's fault or are fixed elsewhere, each with why:
#: (pattern of the message, pattern of the URL it names).
ALLOWED_CONSOLE_ERRORS = [
    # nbgrader's submission page and nbconvert's feedback files load MathJax from
    # cdnjs (a literal in nbgrader's formgrade template, not configurable); this machine
    # has no internet. On a hub without internet, formulas in submissions stay TeX.
    (re.compile(r"ERR_NAME_NOT_RESOLVED"), re.compile(r"^https://cdnjs\.cloudflare\.com/")),
    # JupyterLab's HTML viewer shows an HTML file (the feedback) in a sandbox without
    # scripts until its reader clicks "Trust HTML": by design, against untrusted files.
    (
        re.compile(r"^Blocked script execution in 'blob:.*frame is sandboxed"),
        re.compile(r"^blob:http://127\.0\.0\.1:\d+/"),
    ),
]
#: Uncaught exceptions allowed, likewise: (pattern of the message, pattern of the page URL).
ALLOWED_PAGE_ERRORS = [
    # What follows the missing MathJax above (formgrade.js calls it).
    (re.compile(r"^MathJax is not defined$"), re.compile(r"/formgrader/submissions/")),
]


def course(stack) -> str:
    return course_id_for(stack.platform_url, DEMO_CLIENT_ID, DEMO_DEPLOYMENT_ID, "homework")


async def shot(page, name: str) -> None:
    """A screenshot of what the window shows, into the artifacts (and the docs)."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=SHOTS / name)
    if UPDATE_DOC_SHOTS and name in DOC_SCREENSHOTS:
        DOC_SHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(SHOTS / name, DOC_SHOTS / name)


class Person:
    """One person's browser: a context whose every page is watched for errors."""

    def __init__(self, context, sub: str):
        self.context = context
        self.sub = sub
        self.errors: list[str] = []
        self.lab = None
        context.on("page", self.watch)

    def watch(self, page) -> None:
        page.on("pageerror", lambda exc: self.uncaught(page, exc))
        page.on("console", lambda msg: self.console(page, msg))

    def uncaught(self, page, exc) -> None:
        text = str(exc)
        if any(m.search(text) and u.search(page.url) for m, u in ALLOWED_PAGE_ERRORS):
            return
        self.errors.append(f"{page.url}: uncaught {text}")

    def console(self, page, msg) -> None:
        if msg.type != "error":
            return
        text, url = msg.text, (msg.location or {}).get("url", "")
        if any(m.search(text) and u.search(url) for m, u in ALLOWED_CONSOLE_ERRORS):
            return
        self.errors.append(f"{page.url}: console error: {text} ({url})")

    def check(self) -> None:
        errors, self.errors[:] = list(self.errors), []
        assert not errors, "\n".join(errors)


@pytest.fixture(scope="module")
async def stack(tmp_path_factory):
    async with admin_stack(tmp_path_factory.mktemp("hub")) as s:
        yield s


@pytest.fixture(scope="module")
async def chromium():
    assert CHROMIUM, "chromium missing on CI: scripts/test.sh should have installed it"
    async with playwright.async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        await browser.close()


@pytest.fixture(scope="module")
async def people(chromium):
    made = {}
    for sub in (ADA, ALAN, EMILIE):
        context = await chromium.new_context(
            viewport={"width": 1280, "height": 860}, reduced_motion="reduce"
        )
        made[sub] = Person(context, sub)
    yield made
    for person in made.values():
        await person.context.close()


@pytest.fixture(autouse=True)
def no_browser_errors(request):
    """After each test: no console error or uncaught exception in any page so far."""
    yield
    people = request.node.funcargs.get("people")
    if people:
        for person in people.values():
            person.check()


# --- helpers: the LMS and JupyterLab ----------------------------------------------------


async def launch(person: Person, stack) -> None:
    """Click Launch of the Homework in the built-in LMS; wait for the person's lab."""
    page = await person.context.new_page()
    await page.goto(f"{stack.platform_url}/")
    await page.locator(
        f"form:has(input[name=user][value='{person.sub}'])"
        ":has(input[name=link][value='homework']) button"
    ).click()
    await page.wait_for_url(f"**/user/u{person.sub}/lab**", timeout=LAB_WAIT)
    await page.wait_for_selector("#jp-main-dock-panel", timeout=LAB_WAIT)
    person.lab = page


def menu_bar_item(page, label: str):
    return page.locator("#jp-menu-panel .lm-MenuBar-itemLabel", has_text=re.compile(f"^{label}$"))


async def open_menu(page, label: str) -> list[str]:
    """Open a menu of the lab's menu bar; the labels of its visible entries."""
    await menu_bar_item(page, label).click()
    menu = page.locator(".lm-Menu").last
    await menu.wait_for(state="visible")
    return [
        t.strip()
        for t in await menu.locator(".lm-Menu-item:visible .lm-Menu-itemLabel").all_inner_texts()
    ]


async def menu_command(page, menu: str, entry: str) -> None:
    await open_menu(page, menu)
    await page.locator(
        ".lm-Menu-item:visible", has_text=re.compile(f"^{re.escape(entry)}")
    ).first.click()


async def kernel_idle(page) -> None:
    """Until the status bar says the notebook's kernel is idle (started and connected)."""
    await expect(page.locator(".jp-StatusBar-Widget", has_text="| Idle").first).to_be_visible(
        timeout=LAB_WAIT
    )


async def save_notebook(page) -> None:
    """File -> Save Notebook, until the tab has no unsaved changes (a change that lands
    while the save runs, such as the Create Assignment sidebar's last field, needs one
    more save)."""
    dirty = page.locator(".jp-mod-current.jp-mod-dirty")
    for _ in range(3):
        await menu_command(page, "File", "Save Notebook")
        try:
            await expect(dirty).to_have_count(0, timeout=WAIT // 3)
            return
        except AssertionError:
            continue
    await expect(dirty).to_have_count(0)


async def type_lines(page, lines: list[str]) -> None:
    """Type into the focused cell editor, line by line (no indentation needed)."""
    for index, line in enumerate(lines):
        if index:
            await page.keyboard.press("Enter")
        await page.keyboard.type(line)


async def formgrader_modal_ok(page, title: str) -> str:
    """Wait for the formgrader's result dialog; its text; close it with OK."""
    modal = page.locator(".modal.in, .modal.show").last
    await modal.wait_for(timeout=WAIT)
    await expect(modal.locator(".modal-title")).to_have_text(title, timeout=WAIT)
    text = await modal.inner_text()
    await modal.locator(".modal-footer button", has_text="OK").click()
    await modal.wait_for(state="detached", timeout=WAIT)
    await expect(page.locator(".modal-backdrop")).to_have_count(0, timeout=WAIT)
    return text


def assignment_row(page):
    return page.locator("#main-table > tr", has=page.locator("td.name", has_text=ASSIGNMENT))


# --- 1. the instructor makes and releases an assignment ---------------------------------


async def test_instructor_opens_the_formgrader_from_her_lab(stack, people):
    ada = people[ADA]
    await launch(ada, stack)
    lab = ada.lab
    # Her own lab runs no formgrader: no dead "Formgrader" entry; the Course List leads
    # to the course's formgrader.
    entries = await open_menu(lab, "Nbgrader")
    assert "Formgrader" not in entries, entries
    assert "Course List" in entries, entries
    await lab.locator(".lm-Menu-item:visible", has_text="Course List").click()
    link = lab.locator("#formgrader_list a", has_text="Data Science 101 - Homework")
    await link.wait_for(timeout=WAIT)
    assert course(stack) not in await lab.locator("#formgrader_list").inner_text()
    await shot(lab, "term-course-list.png")
    async with ada.context.expect_page() as new_tab:
        await link.click()
    formgrader = await new_tab.value
    await formgrader.wait_for_url(
        f"**/user/grader-{course(stack)}/formgrader/manage_assignments", timeout=LAB_WAIT
    )
    await formgrader.locator("#main-table").wait_for()
    ada.formgrader = formgrader


async def test_instructor_adds_an_assignment_and_its_name_opens_the_course_lab(stack, people):
    ada = people[ADA]
    page = ada.formgrader
    await page.get_by_role("link", name="Add new assignment...").click()
    modal = page.locator("#add-assignment-modal")
    await modal.locator("input.name").fill(ASSIGNMENT)
    await modal.locator("button.save").click()
    await modal.wait_for(state="detached", timeout=WAIT)
    row = assignment_row(page)
    await expect(row.locator("td.status")).to_have_text("draft", timeout=WAIT)
    # The name opens the assignment's folder in the course's JupyterLab (the grader
    # account's), not /tree/... at the hub's root.
    async with ada.context.expect_page() as new_tab:
        await row.locator("td.name a").click()
    grader_lab = await new_tab.value
    await grader_lab.wait_for_url(
        re.compile(rf"/user/grader-{course(stack)}/lab(/tree/source/{ASSIGNMENT})?"),
        timeout=LAB_WAIT,
    )
    await grader_lab.wait_for_selector("#jp-main-dock-panel", timeout=LAB_WAIT)
    crumbs = grader_lab.locator(".jp-FileBrowser .jp-BreadCrumbs")
    await expect(crumbs).to_contain_text(f"source/{ASSIGNMENT}", timeout=WAIT)
    ada.grader_lab = grader_lab


async def test_instructor_writes_the_notebook_with_the_create_assignment_sidebar(people):
    ada = people[ADA]
    page = ada.grader_lab
    # A new notebook in source/ps1 (the file browser's folder), from the launcher.
    await page.locator(".jp-LauncherCard[data-category='Notebook']").first.click()
    await page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=WAIT)
    await expect(
        page.locator(".jp-Notebook-ExecutionIndicator, .jp-KernelStatus").first
    ).to_be_visible(timeout=WAIT)
    # Rename it.
    await menu_command(page, "File", "Rename Notebook")
    dialog = page.locator(".jp-Dialog")
    await dialog.locator("input").fill(f"{NOTEBOOK}.ipynb")
    await dialog.get_by_role("button", name="Rename").click()
    await expect(page.locator(".jp-mod-current .lm-TabBar-tabLabel")).to_have_text(
        f"{NOTEBOOK}.ipynb", timeout=WAIT
    )
    # Three cells: the answer (with its solution), its test, and a written answer.
    await page.locator(".jp-Cell .cm-content").first.click()
    await type_lines(page, ["### BEGIN SOLUTION", "answer = 6 * 7", "### END SOLUTION"])
    await page.keyboard.press("Escape")
    await page.keyboard.press("b")
    await page.keyboard.press("Enter")
    await type_lines(page, ["assert answer == 42"])
    await page.keyboard.press("Escape")
    await page.keyboard.press("b")
    await page.keyboard.press("m")
    await page.keyboard.press("Enter")
    await type_lines(page, ["Why is the answer 42?"])
    await page.keyboard.press("Escape")
    await expect(page.locator(".jp-NotebookPanel .jp-Cell")).to_have_count(3)

    # The Create Assignment sidebar: the type, id and points of each cell.
    await menu_command(page, "Nbgrader", "Create assignment")
    sidebar = page.locator(".nbgrader-CreateAssignmentWidget")
    cells = sidebar.locator(".nbgrader-CellWidget")
    await expect(cells).to_have_count(3, timeout=WAIT)
    for index, (kind, grade_id, points) in enumerate(
        [("solution", "answer", None), ("tests", "test_answer", "2"), ("manual", "why", "3")]
    ):
        cell = cells.nth(index)
        await cell.locator(".nbgrader-CellType select").select_option(kind)
        await cell.locator(".nbgrader-CellId input").fill(grade_id)
        await cell.locator(".nbgrader-CellId input").press("Tab")
        if points:
            await cell.locator(".nbgrader-CellPoints input").fill(points)
            await cell.locator(".nbgrader-CellPoints input").press("Tab")
    await expect(sidebar.locator(".nbgrader-TotalPointsInput").first).to_have_value("5")
    await page.locator(".jp-NotebookPanel .jp-Cell").first.click()
    await page.keyboard.press("Escape")
    await save_notebook(page)
    await shot(page, "term-create-assignment.png")


async def test_instructor_generates_and_releases_it(people):
    ada = people[ADA]
    page = ada.formgrader
    await page.bring_to_front()
    await page.reload()
    row = assignment_row(page)
    await row.locator("td.assign a").click()
    text = await formgrader_modal_ok(page, "Success")
    assert "Successfully created the student version" in text
    await row.locator("td.release a").click()
    await formgrader_modal_ok(page, "Success")
    # The formgrader sees its own release: "released", and Collect is offered.
    await expect(row.locator("td.status")).to_have_text("released", timeout=WAIT)
    await expect(row.locator("td.collect a")).to_have_count(1)
    await shot(page, "term-formgrader-released.png")


# --- 2. the students fetch, answer and submit -------------------------------------------

#: What each student answers: (the code, the written answer). Emilie's code is wrong.
ANSWERS = {ALAN: ("answer = 42", "Because 6 * 7 = 42."), EMILIE: ("answer = 41", "I guessed.")}


async def open_assignment_list(page):
    await menu_command(page, "Nbgrader", "Assignment List")
    panel = page.locator("#assignments")
    await panel.wait_for(timeout=WAIT)
    return panel


@pytest.mark.parametrize("sub", [ALAN, EMILIE])
async def test_student_fetches_answers_runs_and_submits(stack, people, sub):
    student = people[sub]
    await launch(student, stack)
    page = student.lab
    # No instructor menus for a student.
    entries = await open_menu(page, "Nbgrader")
    assert entries == ["Assignment List"], entries
    await page.keyboard.press("Escape")
    assert await page.locator(".jp-SideBar [title='Nbgrader Create Assignment']").count() == 0

    panel = await open_assignment_list(page)
    released = panel.locator("#released_assignments_list .list_item", has_text=ASSIGNMENT)
    await released.wait_for(timeout=WAIT)
    if sub == ALAN:
        await shot(page, "term-student-assignments.png")
    await released.get_by_role("button", name="Fetch").click()
    fetched = panel.locator("#fetched_assignments_list .list_item", has_text=ASSIGNMENT).first
    await fetched.wait_for(timeout=WAIT)
    await fetched.get_by_text(ASSIGNMENT, exact=True).click()  # shows its notebooks
    await fetched.get_by_text(NOTEBOOK, exact=True).click()
    notebook = page.locator(".jp-NotebookPanel:visible")
    cells = notebook.locator(".jp-Cell")
    await expect(cells).to_have_count(3, timeout=WAIT)
    await expect(cells.nth(0)).to_contain_text("raise NotImplementedError()")

    code, words = ANSWERS[sub]
    await cells.nth(0).locator(".cm-content").click()
    await page.keyboard.press("Control+a")
    await page.keyboard.type(code)
    await cells.nth(2).dblclick()  # the written answer: a Markdown cell, rendered
    await cells.nth(2).locator(".cm-content").click()
    await page.keyboard.press("Control+a")
    await page.keyboard.type(words)
    await kernel_idle(page)
    await menu_command(page, "Run", "Run All Cells")
    await expect(cells.nth(1).locator(".jp-InputArea-prompt")).to_have_text(
        re.compile(r"\[\d+\]:"), timeout=WAIT
    )
    await save_notebook(page)

    await page.locator(".lm-TabBar-tab", has_text="Assignments").click()
    await fetched.get_by_role("button", name="Submit").click()
    submitted = panel.locator("#submitted_assignments_list .list_item", has_text=ASSIGNMENT)
    await submitted.first.wait_for(timeout=WAIT)


# --- 3. the instructor collects, grades and returns feedback -----------------------------

#: The manual grade (of 3 points) each student's written answer gets, and their totals
#: (the test cell gives 2 points to a right answer).
MANUAL = {ALAN: "3", EMILIE: "1"}
TOTAL = {ALAN: 5, EMILIE: 1}
NAMES = {ALAN: ("Alan", "Turing"), EMILIE: ("Émilie", "du Châtelet")}


async def test_instructor_collects_and_autogrades(people):
    page = people[ADA].formgrader
    await page.bring_to_front()
    await page.reload()
    row = assignment_row(page)
    await expect(row.locator("td.status")).to_have_text("released", timeout=WAIT)
    await row.locator("td.collect a").click()
    text = await formgrader_modal_ok(page, "Success")
    assert "Successfully collected submissions" in text
    await expect(row.locator("td.num-submissions")).to_have_text("2", timeout=WAIT)
    await row.locator("td.num-submissions a").click()
    await page.wait_for_url(f"**/formgrader/manage_submissions/{ASSIGNMENT}")
    rows = page.locator("#main-table > tr")
    await expect(rows).to_have_count(2, timeout=WAIT)
    for sub in (ALAN, EMILIE):
        student = rows.filter(has=page.locator("td.student-id", has_text=f"u{sub}"))
        await expect(student.locator("td.status")).to_have_text("needs autograding")
        await student.locator("td.autograde a").click()
        text = await formgrader_modal_ok(page, "Success")
        assert f"Successfully autograded '{ASSIGNMENT}' for student 'u{sub}'" in text
        await expect(student.locator("td.status")).to_have_text(
            "needs manual grading", timeout=WAIT
        )
    alan = rows.filter(has=page.locator("td.student-id", has_text=f"u{ALAN}"))
    await expect(alan.locator("td.score")).to_have_text("2 / 5")
    await shot(page, "term-submissions.png")


async def test_instructor_grades_the_written_answers_through_the_submission_links(people):
    page = people[ADA].formgrader
    await page.get_by_role("link", name="Manual Grading").first.click()
    await page.get_by_role("link", name=ASSIGNMENT, exact=True).click()
    await page.get_by_role("link", name=NOTEBOOK, exact=True).click()
    await page.wait_for_url(f"**/formgrader/gradebook/{ASSIGNMENT}/{NOTEBOOK}")
    listing = page.url
    for sub in (ALAN, EMILIE):
        await page.goto(listing)
        await expect(page.locator("a.name-hidden")).to_have_count(2, timeout=WAIT)
        await page.locator("#toggle_names").click()  # names instead of "Submission #n"
        given, family = NAMES[sub]
        link = page.locator("a.name-shown", has_text=family)
        await link.click()
        await page.wait_for_url(re.compile(r"/formgrader/submissions/[0-9a-f]+/?$"))
        score = page.locator("input.score#why")
        await score.wait_for(timeout=WAIT)
        async with page.expect_response(
            lambda r: "/formgrader/api/grade/" in r.url and r.request.method == "PUT"
        ) as saved:
            await score.fill(MANUAL[sub])
            await score.press("Tab")
        assert (await saved.value).ok
        if sub == ALAN:
            await shot(page, "term-manual-grade.png")


async def test_instructor_generates_and_releases_feedback(people):
    page = people[ADA].formgrader
    await page.get_by_role("link", name="Manual Grading").first.click()  # the breadcrumb
    await page.get_by_role("link", name="Manage Assignments").first.click()
    row = assignment_row(page)
    await expect(row.locator("td.status")).to_have_text("released", timeout=WAIT)
    await row.locator("td.generate-feedback a").click()
    assert "Successfully generated feedback" in await formgrader_modal_ok(page, "Success")
    await row.locator("td.release-feedback a").click()
    assert "Successfully released feedback" in await formgrader_modal_ok(page, "Success")


# --- 4. the students read their feedback ---------------------------------------------------


@pytest.mark.parametrize("sub", [ALAN, EMILIE])
async def test_student_fetches_and_opens_feedback(people, sub):
    page = people[sub].lab
    await page.bring_to_front()
    await page.locator(".lm-TabBar-tab", has_text="Assignments").click()
    panel = page.locator("#assignments")
    await panel.locator("#refresh_assignments_list").click()
    submitted = panel.locator("#submitted_assignments_list .list_item", has_text=ASSIGNMENT)
    await submitted.get_by_role("button", name="Fetch Feedback").click()
    view = submitted.get_by_text("(view feedback)")
    await view.wait_for(timeout=WAIT)
    await view.click()  # the file browser goes to the feedback's folder
    feedback_file = page.locator(".jp-DirListing-item", has_text=f"{NOTEBOOK}.html")
    await feedback_file.dblclick()
    viewer = page.frame_locator(".jp-HTMLViewer iframe")
    await expect(viewer.locator("body")).to_contain_text(
        f"Score: {TOTAL[sub]:.1f} / 5.0", timeout=WAIT
    )
    if sub == ALAN:
        await shot(page, "term-feedback.png")


# --- 5. grades to the LMS --------------------------------------------------------------------


async def test_instructor_sends_grades_from_kore_and_the_lms_shows_them(stack, people):
    ada = people[ADA]
    lab = ada.lab
    await lab.bring_to_front()
    await menu_bar_item(lab, "Kore").click()
    async with ada.context.expect_page() as new_tab:
        await lab.locator(
            "#jp-mainmenu-ananke-kore .lm-Menu-item", has_text="Course management"
        ).click()
    kore = await new_tab.value
    await expect(kore.locator(".lead")).to_contain_text("Hello, Ada Lovelace!", timeout=WAIT)
    await (
        kore.locator("table.courses tbody tr")
        .first.get_by_role("link", name="Grades, roster and backups")
        .click()
    )
    await kore.wait_for_url(f"**/services/kore/courses/{course(stack)}")
    start = kore.locator("#grades-panel").get_by_role("button", name="Send grades to the LMS")
    await expect(start).to_be_enabled(timeout=WAIT)
    await start.click()
    await expect(kore.locator("#grades-panel .kore-progress-text")).to_contain_text(
        "0 failed", timeout=WAIT
    )
    await expect(kore.locator("#grades-panel td.kore-status-sent").first).to_be_visible()

    lms = await ada.context.new_page()
    await lms.goto(f"{stack.platform_url}/gradebook")
    for sub, (given, family) in NAMES.items():
        row = lms.get_by_role("row", name=f"{given} {family}")
        await expect(row).to_contain_text(f"{TOTAL[sub]} / ", timeout=WAIT)
    await shot(lms, "term-lms-gradebook.png")


async def test_the_hub_shows_names_not_user_ids(stack, people):
    page = await people[ADA].context.new_page()
    await page.goto(f"{stack.hub_url}/hub/home")
    widget = page.locator("#login_widget")
    await expect(widget).to_contain_text("Ada Lovelace")
    assert "u2" not in await widget.inner_text()
