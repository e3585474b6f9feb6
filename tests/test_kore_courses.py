"""Kore's course routes: ``api/courses`` and ``courses/<id>/formgrader``.

Kore runs as the hub runs it (``python -m kore``, see test_kore.py) against a fake of the
hub's API that also answers the users/servers routes Kore uses to start grader servers.
The course registry is a SQLite file that this test fills through
``CourseRegistry.record_launch``, as the hub does at a launch, and that Kore reads
through ``c.CourseRegistry.url`` in a config fragment.
"""

import http.client
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest
from fake_hub import KORE_SCOPE, SERVICE_TOKEN, FakeHub, Server
from test_kore import PREFIX, Kore

from ananke_hub.courses.identity import LaunchInfo
from ananke_hub.courses.layout import grader_username
from ananke_hub.courses.registry import CourseRegistry
from ananke_hub.lab.kore_client import KoreCourseList

LIS = "http://purl.imsglobal.org/vocab/lis/v2/"
ROLE_CLAIMS = {
    "instructor": [LIS + "membership#Instructor"],
    "ta": [LIS + "membership#Instructor", LIS + "membership/Instructor#TeachingAssistant"],
    "learner": [LIS + "membership#Learner"],
}
CLAIM = "https://purl.imsglobal.org/spec/lti/claim/"


def server_token_scopes(owner: str, kore=True) -> list[str]:
    """A lab token's scopes as the hub reports them (expanded): JupyterHub's default
    server role, plus Kore with the server_token_scopes Ananke asks for."""
    scopes = [f"users:activity!user={owner}", f"access:servers!server={owner}/"]
    return scopes + [KORE_SCOPE] if kore else scopes


def launch(registry: CourseRegistry, username: str, link: str, role: str, title: str) -> str:
    """Record a launch as the hub does; return the course id."""
    claims = {
        "iss": "https://lms.example.edu",
        "aud": "tool",
        "sub": username.removeprefix("u"),
        CLAIM + "deployment_id": "d1",
        CLAIM + "resource_link": {"id": link, "title": title},
        CLAIM + "context": {"id": "ctx-" + link, "label": "C", "title": "Course " + link},
        CLAIM + "roles": ROLE_CLAIMS[role],
        "given_name": username,
    }
    info = LaunchInfo.from_id_token(claims, username)
    registry.record_launch(info)
    return info.course_id


# --- the hub's users/servers API: the one fake (tests/fake_hub.py) ------------------------


class CourseHub(FakeHub):
    """The fake hub with grader accounts whose servers start as a test says."""

    def add_grader(self, course_id, **kwargs) -> Server:
        return self.add_server(grader_username(course_id), **kwargs)

    def starts(self, course_id) -> int:
        return self.count("POST", f"/users/{grader_username(course_id)}/server")

    def user_calls(self) -> int:
        """Calls to the users and servers routes (not HubAuth's token lookups)."""
        return sum(1 for _, path in self.calls if path.startswith("/users/"))


# --- fixtures -------------------------------------------------------------------------------


def start_kore(root: Path, hub: CourseHub, db: Path, wait: float) -> Kore:
    kore = Kore(root, hub.api_url)
    (kore.config_dir / "55_test_courses.py").write_text(
        "c = get_config()  # noqa\n"
        f"c.CourseRegistry.url = {f'sqlite:///{db}'!r}\n"
        f"c.Kore.formgrader_wait = {wait!r}\n"
    )
    return kore.start()


@pytest.fixture(scope="module")
def hub():
    with CourseHub() as fake:
        yield fake


@pytest.fixture(scope="module")
def db(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("registry") / "courses.sqlite"


@pytest.fixture(scope="module")
def registry(db):
    reg = CourseRegistry(url=f"sqlite:///{db}")
    yield reg
    reg.close()


@pytest.fixture(scope="module")
def kore(tmp_path_factory, hub, db, registry):
    """Kore that never waits in a request: a starting server gives the progress page."""
    registry.engine  # noqa: B018 - the schema exists before Kore opens the file
    k = start_kore(tmp_path_factory.mktemp("kore"), hub, db, wait=0)
    yield k
    k.stop()


@pytest.fixture(scope="module")
def patient_kore(tmp_path_factory, hub, db, registry):
    """Kore that waits (up to a long time) for a starting server before answering."""
    registry.engine  # noqa: B018
    k = start_kore(tmp_path_factory.mktemp("patient-kore"), hub, db, wait=120)
    yield k
    k.stop()


@pytest.fixture(scope="module")
def school(hub, registry):
    """Two courses: A (instructor ann, TA tom, learner lea) and B (instructor bob).

    ann also takes course B as a student; her newest launch is course A.
    """
    b = launch(registry, "ubob", "B", "instructor", "Statistics <b>&</b> 'Quotes'")
    launch(registry, "uann", "B", "learner", "Statistics <b>&</b> 'Quotes'")
    time.sleep(0.01)  # distinct launch times: ann's newest launch is course A
    a = launch(registry, "uann", "A", "instructor", "Homework <script>alert(1)</script>")
    launch(registry, "utom", "A", "ta", "Homework <script>alert(1)</script>")
    launch(registry, "ulea", "A", "learner", "Homework <script>alert(1)</script>")
    for name, token in [("uann", "t-ann"), ("ubob", "t-bob"), ("utom", "t-tom"), ("ulea", "t-lea")]:
        hub.add_user(token, name)
    hub.add_user("t-nobody", "unobody")
    hub.add_user("t-admin", "uadmin", admin=True)
    return {"A": a, "B": b}


def auth(token: str) -> dict:
    return {"Authorization": f"token {token}"}


def raw_get(kore: Kore, path: str, token: str) -> http.client.HTTPResponse:
    """GET a path exactly as written (httpx would normalise '..' and escapes)."""
    conn = http.client.HTTPConnection("127.0.0.1", kore.port, timeout=30)
    conn.request("GET", path, headers=auth(token))
    response = conn.getresponse()
    response.body = response.read()
    conn.close()
    return response


def formgrader(kore: Kore, course_id: str, token: str) -> httpx.Response:
    return httpx.get(
        kore.url(f"courses/{course_id}/formgrader"),
        headers=auth(token),
        follow_redirects=False,
        timeout=60,
    )


# --- api/courses ------------------------------------------------------------------------------


def test_instructor_sees_her_courses_newest_first_with_formgrader_links(kore, school):
    r = httpx.get(kore.url("api/courses"), headers=auth("t-ann"))
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    assert r.json() == [
        {
            "course_id": school["A"],
            "title": "Course A - Homework <script>alert(1)</script>",
            "role": "instructor",
            "current": True,
            "formgrader_url": f"{PREFIX}courses/{school['A']}/formgrader",
        },
        {
            "course_id": school["B"],
            "title": "Course B - Statistics <b>&</b> 'Quotes'",
            "role": "learner",
            "current": False,
        },
    ]


def test_teaching_assistant_gets_the_formgrader_link(kore, school):
    (course,) = httpx.get(kore.url("api/courses"), headers=auth("t-tom")).json()
    assert course["role"] == "teaching_assistant"
    assert course["formgrader_url"] == f"{PREFIX}courses/{school['A']}/formgrader"


def test_learner_gets_no_formgrader_link(kore, school):
    (course,) = httpx.get(kore.url("api/courses"), headers=auth("t-lea")).json()
    assert course["course_id"] == school["A"] and course["role"] == "learner"
    assert "formgrader_url" not in course


def test_instructor_of_another_course_sees_only_his_own(kore, school):
    courses = httpx.get(kore.url("api/courses"), headers=auth("t-bob")).json()
    assert [c["course_id"] for c in courses] == [school["B"]]


def test_user_without_courses_gets_an_empty_list(kore, school):
    r = httpx.get(kore.url("api/courses"), headers=auth("t-nobody"))
    assert r.status_code == 200 and r.json() == []


def test_a_labs_server_token_stands_for_the_labs_owner(kore, hub, school):
    # The hub resolves a server's JUPYTERHUB_API_TOKEN to the user who owns the server.
    hub.add_user("lab-token-of-ann", "uann", scopes=server_token_scopes("uann"))
    r = httpx.get(
        kore.url("api/courses"),
        params={"user": "ubob"},
        headers={**auth("lab-token-of-ann"), "X-Forwarded-User": "ubob"},
    )
    assert r.status_code == 200
    assert [c["course_id"] for c in r.json()] == [school["A"], school["B"]]


def test_a_lab_token_without_the_kore_scope_is_refused(kore, hub, school):
    hub.add_user("plain-lab-token", "uann", scopes=server_token_scopes("uann", kore=False))
    r = httpx.get(kore.url("api/courses"), headers=auth("plain-lab-token"))
    assert r.status_code == 403
    assert r.json()["status"] == 403


def test_api_courses_without_credentials_is_403_json(kore):
    r = httpx.get(kore.url("api/courses"), follow_redirects=False)
    assert r.status_code == 403
    assert "Not logged in" in r.json()["message"]


async def test_lab_course_list_from_real_kore(kore, hub, school, monkeypatch):
    """The lab extension's client against Kore: only the courses its owner grades."""
    hub.add_user("lab-token-of-bob", "ubob", scopes=server_token_scopes("ubob"))
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "lab-token-of-bob")
    courses = await KoreCourseList(kore_url=kore.url()).formgraders()
    assert courses == [
        {
            "course_id": "Course B - Statistics <b>&</b> 'Quotes'",  # the panel's link text
            "id": school["B"],
            "url": f"{PREFIX}courses/{school['B']}/formgrader",
            "kind": "jupyterhub",
            "title": "Course B - Statistics <b>&</b> 'Quotes'",
            "role": "instructor",
        }
    ]
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "t-lea")  # a learner grades nothing
    assert await KoreCourseList(kore_url=kore.url()).formgraders() == []


# --- who may open a formgrader ---------------------------------------------------------------


def test_anonymous_visitor_is_sent_to_the_hub_login(kore, school):
    r = httpx.get(kore.url(f"courses/{school['A']}/formgrader"), follow_redirects=False)
    assert r.status_code == 302
    assert urlparse(r.headers["location"]).path == "/hub/api/oauth2/authorize"


def test_learner_is_refused_with_the_course_named(kore, hub, school):
    hub.add_grader(school["A"])
    r = formgrader(kore, school["A"], "t-lea")
    assert r.status_code == 403
    assert r.headers["content-type"].startswith("text/html")
    assert "Only instructors and teaching assistants of Course A - Homework" in r.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in r.text
    assert "<script>" not in r.text
    assert "Statistics" not in r.text
    assert hub.starts(school["A"]) == 0


def test_instructor_of_another_course_learns_nothing_about_it(kore, hub, school):
    r = formgrader(kore, school["A"], "t-bob")
    assert r.status_code == 403
    for leak in ("Homework", "Course A", "Statistics", "uann", "utom", "ulea"):
        assert leak not in r.text
    # A course that does not exist gives the very same answer: nothing to probe.
    unknown = formgrader(kore, "c-0123456789abcdef", "t-bob")
    assert unknown.status_code == 403
    assert unknown.text == r.text
    assert hub.starts(school["A"]) == 0


def test_hub_admin_may_open_any_course_and_is_told_of_unknown_ids(kore, hub, school):
    hub.add_grader(school["B"])
    r = formgrader(kore, school["B"], "t-admin")
    assert r.status_code == 302
    assert r.headers["location"] == f"/user/{grader_username(school['B'])}/formgrader"
    assert formgrader(kore, "c-0123456789abcdef", "t-admin").status_code == 404


@pytest.mark.parametrize(
    "raw_id",
    [
        "..",
        "c-..%2F..%2Fetc",
        "c-%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "%2e%2e",
        "c-0123456789ABCDEF",  # upper case: not an id
        "c-0123456789abcdef0",
        "c-0123",
        "grader-c-0123456789abcdef",
        "c-0123456789abcde%00",
        "%C3%A9",
    ],
)
def test_malformed_course_ids_are_a_client_error(kore, hub, school, raw_id):
    before = hub.user_calls()
    r = raw_get(kore, f"{PREFIX}courses/{raw_id}/formgrader", "t-ann")
    assert r.status == 400, r.body
    assert b"does not name a course" in r.body
    assert hub.user_calls() == before  # the hub was not asked anything


@pytest.mark.parametrize(
    "raw_path",
    [
        "courses/../etc/formgrader",
        "courses/c-../../x/formgrader",
        "courses/../../../etc/passwd",
        "courses//formgrader",
        "courses/c-0123456789abcdef/formgrader/../../x",
    ],
)
def test_traversal_paths_never_fail_on_the_server(kore, school, raw_path):
    r = raw_get(kore, PREFIX + raw_path, "t-ann")
    assert 400 <= r.status < 500, (r.status, r.body)


# --- starting the grader server ------------------------------------------------------------


def test_instructor_starts_the_grader_server_and_is_redirected(kore, hub, school):
    hub.add_grader(school["A"], start="instant")
    r = formgrader(kore, school["A"], "t-ann")
    assert r.status_code == 302, r.text
    assert r.headers["location"] == f"/user/{grader_username(school['A'])}/formgrader"
    assert hub.starts(school["A"]) == 1
    # Kore's own token asked the hub; nothing secret in Kore's log.
    assert SERVICE_TOKEN not in kore.log and "t-ann" not in kore.log


def test_running_server_is_not_started_again(kore, hub, school):
    grader = hub.add_grader(school["A"], start="instant")
    grader.running = True
    starts = hub.starts(school["A"])
    r = formgrader(kore, school["A"], "t-tom")  # the TA
    assert r.status_code == 302
    assert r.headers["location"] == f"/user/{grader_username(school['A'])}/formgrader"
    assert hub.starts(school["A"]) == starts


def test_slow_start_shows_a_self_reloading_page_then_redirects(kore, hub, school):
    hub.add_grader(school["B"], start="slow", polls=2)
    starts = hub.starts(school["B"])
    first = formgrader(kore, school["B"], "t-bob")
    assert first.status_code == 202
    assert first.headers["cache-control"] == "no-store"
    assert '<meta http-equiv="refresh"' in first.text
    assert "Starting the formgrader of Course B - Statistics &lt;b&gt;&amp;&lt;/b&gt;" in first.text
    second = formgrader(kore, school["B"], "t-bob")
    assert second.status_code == 202
    third = formgrader(kore, school["B"], "t-bob")
    assert third.status_code == 302
    assert third.headers["location"] == f"/user/{grader_username(school['B'])}/formgrader"
    assert hub.starts(school["B"]) == starts + 1  # reloading did not start it again


def test_failed_start_is_reported_and_the_next_visit_retries(kore, hub, school):
    hub.add_grader(school["B"], start="fail", polls=1)
    starts = hub.starts(school["B"])
    assert formgrader(kore, school["B"], "t-bob").status_code == 202
    failed = formgrader(kore, school["B"], "t-bob")
    assert failed.status_code == 503
    assert "did not start" in failed.text and "Reload this page" in failed.text
    assert hub.starts(school["B"]) == starts + 1
    assert formgrader(kore, school["B"], "t-bob").status_code == 202
    assert hub.starts(school["B"]) == starts + 2


def test_missing_grader_account_says_what_to_do(kore, hub, school, registry):
    course = launch(registry, "uann", "C", "instructor", "Not provisioned")
    r = formgrader(kore, course, "t-ann")
    assert r.status_code == 503
    assert "not set up yet" in r.text and "from your LMS" in r.text
    assert "grader-" in kore.log  # the admin reads which account is missing


def test_hub_refusing_kore_is_a_502_with_the_reason_in_the_log(kore, hub, school, registry):
    course = launch(registry, "uann", "D", "instructor", "Refused")
    hub.add_grader(course, start="refuse")
    r = formgrader(kore, course, "t-ann")
    assert r.status_code == 502
    assert "The hub admin finds why in Kore" in r.text
    assert "needs the scope servers" in kore.log


def test_waiting_for_a_start_does_not_block_kore(patient_kore, hub, school):
    grader = hub.add_grader(school["A"], start="gate")
    result = {}
    opener = threading.Thread(
        target=lambda: result.update(r=formgrader(patient_kore, school["A"], "t-ann"))
    )
    opener.start()
    deadline = time.monotonic() + 60
    while not grader.pending and time.monotonic() < deadline:
        time.sleep(0.05)
    assert grader.pending, "Kore did not ask the hub to start the server"
    # While that request waits for the server, Kore answers others.
    r = httpx.get(patient_kore.url("api/courses"), headers=auth("t-bob"), timeout=30)
    assert r.status_code == 200
    assert opener.is_alive()
    grader.released = True
    opener.join(timeout=60)
    assert result["r"].status_code == 302
    assert result["r"].headers["location"] == f"/user/{grader_username(school['A'])}/formgrader"


# --- Kore's home page ----------------------------------------------------------------------


def test_home_page_lists_courses_with_formgrader_links(kore, school):
    r = httpx.get(kore.url(), headers=auth("t-ann"))
    assert r.status_code == 200
    assert "Hello, uann!" in r.text
    assert "Course A - Homework &lt;script&gt;" in r.text
    assert f'href="{PREFIX}courses/{school["A"]}/formgrader"' in r.text
    assert f"{PREFIX}courses/{school['B']}/formgrader" not in r.text  # ann is a student in B
    page = httpx.get(kore.url(), headers=auth("t-nobody"))
    assert "You have no courses yet" in page.text
