"""Kore's course settings API: ``api/courses/<course id>/settings``.

Kore runs as the hub runs it (``python -m kore``, see test_kore.py) against the fake hub
of test_kore.py, with the course registry in a SQLite file this test fills as the hub
does at launches (test_kore_courses.py). Course A exists on disk, made by
``nbgrader_setup.ensure_course_files`` in a temporary layout that Kore learns the way
the hub tells it (ANANKE_HOMES_ROOT / ANANKE_EXCHANGE_ROOT); course B is only in the
registry (its first launch would still be setting it up).
"""

import base64
import hashlib
import http.client
import json
import re
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
from fake_hub import FakeHub
from test_kore import PREFIX, Kore
from test_kore_courses import launch
from tornado.web import create_signed_value
from traitlets.config import Config

from ananke_hub import hubconfig
from ananke_hub.courses import nbgrader_setup
from ananke_hub.courses.layout import CourseLayout
from ananke_hub.courses.models import Course
from ananke_hub.courses.registry import CourseRegistry
from ananke_hub.courses.settings import CourseSettings
from ananke_hub.paths import StateLayout

CLEAR_HIDDEN_TESTS = "ananke_hub.lab.nbgrader_preprocessors.ClearHiddenTests"
UNKNOWN_COURSE = "c-0123456789abcdef"
MAX_BODY = 16 * 1024


class HubStartedKore(Kore):
    """Kore with the course layout in its environment, as hubconfig.kore_service passes it."""

    def __init__(self, root: Path, api_url: str, layout: CourseLayout):
        super().__init__(root, api_url)
        self.layout = layout

    @property
    def env(self) -> dict:
        env = super().env
        env["ANANKE_HOMES_ROOT"] = self.layout.homes_root
        env["ANANKE_EXCHANGE_ROOT"] = self.layout.exchange_root
        return env


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hub():
    with FakeHub() as fake:
        yield fake


@pytest.fixture(scope="module")
def db(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("registry") / "courses.sqlite"


@pytest.fixture(scope="module")
def registry(db):
    reg = CourseRegistry(url=f"sqlite:///{db}")
    reg.engine  # noqa: B018 - the schema exists before Kore opens the file
    yield reg
    reg.close()


@pytest.fixture(scope="module")
def layout(tmp_path_factory) -> CourseLayout:
    root = tmp_path_factory.mktemp("layout")
    return CourseLayout(homes_root=str(root / "homes"), exchange_root=str(root / "exchange"))


@pytest.fixture(scope="module")
def school(hub, registry, layout):
    """Course A (instructor ann, TA tom, learner lea), on disk; course B (bob), registry only."""
    a = launch(registry, "uann", "A", "instructor", "Homework")
    launch(registry, "utom", "A", "ta", "Homework")
    launch(registry, "ulea", "A", "learner", "Homework")
    b = launch(registry, "ubob", "B", "instructor", "Statistics")
    nbgrader_setup.ensure_course_files(layout.course(a), a, CourseSettings())
    for name, token in [("uann", "t-ann"), ("ubob", "t-bob"), ("utom", "t-tom"), ("ulea", "t-lea")]:
        hub.add_user(token, name)
    hub.add_user("t-admin", "uadmin", admin=True)
    return {"A": a, "B": b}


@pytest.fixture(scope="module")
def kore(tmp_path_factory, hub, db, registry, layout, school):
    k = HubStartedKore(tmp_path_factory.mktemp("kore"), hub.api_url, layout)
    (k.config_dir / "55_test_courses.py").write_text(
        f"c = get_config()  # noqa\nc.CourseRegistry.url = {f'sqlite:///{db}'!r}\n"
    )
    k.start()
    yield k
    k.stop()


@pytest.fixture(autouse=True)
def fresh_settings(request, registry, layout):
    """Every test starts from default settings, in the registry and on disk."""
    if "school" not in request.fixturenames:
        yield
        return
    school = request.getfixturevalue("school")
    with registry.session() as session, session.begin():
        for course_id in school.values():
            session.get(Course, course_id).settings = {}
    nbgrader_setup.write_settings(layout.course(school["A"]), CourseSettings())
    yield


# --- helpers --------------------------------------------------------------------------------


def auth(token: str) -> dict:
    return {"Authorization": f"token {token}"}


def settings_url(kore: Kore, course_id: str) -> str:
    return kore.url(f"api/courses/{course_id}/settings")


def get(kore, course_id, token) -> httpx.Response:
    return httpx.get(settings_url(kore, course_id), headers=auth(token), timeout=30)


def patch(kore, course_id, token, body) -> httpx.Response:
    content = body if isinstance(body, bytes | str) else json.dumps(body)
    return httpx.patch(settings_url(kore, course_id), headers=auth(token), content=content)


def raw_request(kore: Kore, method: str, path: str, token: str, body=None):
    """A request with the path exactly as written (httpx would normalise '..' and escapes)."""
    conn = http.client.HTTPConnection("127.0.0.1", kore.port, timeout=30)
    conn.request(method, path, body=body, headers=auth(token))
    response = conn.getresponse()
    response.body = response.read()
    conn.close()
    return response


def course_file(layout: CourseLayout, course_id: str) -> Path:
    return layout.course(course_id).nbgrader_config


def feedback_preprocessors(layout: CourseLayout, course_id: str) -> list[str]:
    config = json.loads(course_file(layout, course_id).read_text())
    return config["GenerateFeedback"]["preprocessors"]


def stored(registry: CourseRegistry, course_id: str) -> dict:
    return registry.get(course_id).settings


DEFAULTS = CourseSettings().to_dict()


# --- reading ---------------------------------------------------------------------------------


def test_instructor_reads_the_defaults(kore, school):
    r = get(kore, school["A"], "t-ann")
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    assert r.json() == {"course_id": school["A"], "settings": DEFAULTS, "defaults": DEFAULTS}
    assert DEFAULTS["remove_hidden_tests_in_feedback"] is True
    assert DEFAULTS["reexecute_for_feedback"] is False


def test_teaching_assistant_reads_them_too(kore, school):
    r = get(kore, school["A"], "t-tom")
    assert r.status_code == 200 and r.json()["settings"] == DEFAULTS


# --- changing --------------------------------------------------------------------------------


def test_instructor_turns_hidden_test_removal_off(kore, school, registry, layout):
    course = school["A"]
    assert CLEAR_HIDDEN_TESTS in feedback_preprocessors(layout, course)
    r = patch(kore, course, "t-ann", {"remove_hidden_tests_in_feedback": False})
    assert r.status_code == 200, r.text
    expected = {**DEFAULTS, "remove_hidden_tests_in_feedback": False}
    assert r.json() == {"course_id": course, "settings": expected, "defaults": DEFAULTS}
    # nbgrader's course config no longer clears hidden tests from the feedback ...
    assert CLEAR_HIDDEN_TESTS not in feedback_preprocessors(layout, course)
    # ... the registry holds the change (only what was set; the rest stays default) ...
    assert stored(registry, course) == {"remove_hidden_tests_in_feedback": False}
    # ... a later read shows it, and the audit log says who changed what.
    assert get(kore, course, "t-ann").json()["settings"] == expected
    assert (
        f'course:{course} user:uann settings {{"remove_hidden_tests_in_feedback": false}}'
        in kore.log
    )


def test_changes_merge_with_earlier_ones(kore, school, registry, layout):
    course = school["A"]
    assert patch(kore, course, "t-ann", {"execute_timeout": 120}).status_code == 200
    r = patch(kore, course, "t-tom", {"reexecute_for_feedback": True})
    assert r.status_code == 200, r.text
    assert r.json()["settings"] == {
        **DEFAULTS,
        "execute_timeout": 120,
        "reexecute_for_feedback": True,
    }
    config = json.loads(course_file(layout, course).read_text())
    assert config["Execute"] == {"timeout": 120}
    assert config["GenerateFeedback"]["preprocessors"][-2:] == [
        CLEAR_HIDDEN_TESTS,
        "ananke_hub.lab.sandbox.execute.SandboxedExecute",
    ]
    assert stored(registry, course) == {"execute_timeout": 120, "reexecute_for_feedback": True}


def test_the_file_keeps_the_homes_owner_and_is_replaced_not_followed(kore, school, layout):
    course = school["A"]
    target = course_file(layout, course)
    owner = target.parent.stat()
    elsewhere = target.parent.parent / "outside.json"
    elsewhere.write_text("{}")
    target.unlink()
    target.symlink_to(elsewhere)
    r = patch(kore, course, "t-ann", {"remove_hidden_tests_in_feedback": False})
    assert r.status_code == 200, r.text
    assert not target.is_symlink()
    assert elsewhere.read_text() == "{}"
    assert (target.stat().st_uid, target.stat().st_gid) == (owner.st_uid, owner.st_gid)
    assert CLEAR_HIDDEN_TESTS not in feedback_preprocessors(layout, course)


def test_course_not_on_disk_yet_keeps_the_change_in_the_registry(kore, school, registry, layout):
    course = school["B"]
    r = patch(kore, course, "t-bob", {"execute_timeout": 60})
    assert r.status_code == 200, r.text
    assert r.json()["settings"]["execute_timeout"] == 60
    assert stored(registry, course) == {"execute_timeout": 60}
    assert not layout.course(course).home.exists()  # provisioning writes it later


def test_hub_admin_reads_and_changes_any_course(kore, school, registry):
    assert get(kore, school["B"], "t-admin").status_code == 200
    r = patch(kore, school["B"], "t-admin", {"reexecute_for_feedback": True})
    assert r.status_code == 200, r.text
    assert stored(registry, school["B"]) == {"reexecute_for_feedback": True}
    assert "user:uadmin settings" in kore.log
    unknown = get(kore, UNKNOWN_COURSE, "t-admin")
    assert unknown.status_code == 404 and unknown.json()["status"] == 404


# --- bad values ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"remove_hidden_tests_in_feedback": "no"}, "must be true or false"),
        ({"remove_hidden_tests_in_feedback": 0}, "must be true or false"),
        ({"remove_hidden_tests_in_feedback": None}, "must be true or false"),
        ({"execute_timeout": "30"}, "must be a whole number"),
        ({"execute_timeout": 30.5}, "must be a whole number"),
        ({"execute_timeout": True}, "must be a whole number"),
        ({"execute_timeout": 0}, "between 1 and 3600"),
        ({"execute_timeout": 10**30}, "between 1 and 3600"),
        ({"hide_everything": True}, 'Unknown field(s) "hide_everything"'),
        (
            {"remove_hidden_tests_in_feedback": False, "__class__": "x"},
            'Unknown field(s) "__class__"',
        ),
        ([{"remove_hidden_tests_in_feedback": False}], "Send a JSON object, e.g."),
        ("false", "Send a JSON object, e.g."),
        ("null", "Send a JSON object, e.g."),
        ('{"remove_hidden_tests_in_feedback": fals', "not valid JSON"),
        (b'{"remove_hidden_tests_in_feedback": "\xff"}', "not valid JSON"),
        (b"", "not valid JSON"),
        ("[" * 8000 + "]" * 8000, "not valid JSON"),  # nested deeper than Python recurses
        ('{"execute_timeout": ' + "9" * 5000 + "}", "not valid JSON"),  # too long to convert
        ("remove_hidden_tests_in_feedback=false", "not valid JSON"),  # a form, not JSON
    ],
)
def test_invalid_changes_are_refused_and_change_nothing(
    kore, school, registry, layout, body, message
):
    course = school["A"]
    before = course_file(layout, course).read_bytes()
    r = patch(kore, course, "t-ann", body)
    assert r.status_code == 400, r.text
    assert r.json()["status"] == 400
    assert message in r.json()["message"]
    assert course_file(layout, course).read_bytes() == before
    assert stored(registry, course) == {}


@pytest.mark.parametrize("size", [MAX_BODY + 1, 1024 * 1024])
def test_oversized_body_is_413(kore, school, registry, layout, size):
    course = school["A"]
    before = course_file(layout, course).read_bytes()
    body = json.dumps({"remove_hidden_tests_in_feedback": False, "x": "a" * size})
    r = patch(kore, course, "t-ann", body)
    assert r.status_code == 413, r.text
    assert r.json()["status"] == 413
    assert course_file(layout, course).read_bytes() == before
    assert stored(registry, course) == {}


def test_oversized_chunked_body_is_413(kore, school, registry):
    def chunks():
        for _ in range(64):
            yield b"a" * 1024

    r = httpx.patch(settings_url(kore, school["A"]), headers=auth("t-ann"), content=chunks())
    assert r.status_code == 413, r.text
    assert stored(registry, school["A"]) == {}


def test_body_at_the_limit_is_read(kore, school):
    body = json.dumps({"remove_hidden_tests_in_feedback": False})
    body = body + " " * (MAX_BODY - len(body))
    r = patch(kore, school["A"], "t-ann", body)
    assert r.status_code == 200, r.text


# --- who may not -----------------------------------------------------------------------------


def test_student_may_neither_read_nor_change(kore, school, registry, layout):
    course = school["A"]
    before = course_file(layout, course).read_bytes()
    for r in (
        get(kore, course, "t-lea"),
        patch(kore, course, "t-lea", {"remove_hidden_tests_in_feedback": False}),
    ):
        assert r.status_code == 403, r.text
        assert "You take part in it as a student" in r.json()["message"]
    assert course_file(layout, course).read_bytes() == before
    assert stored(registry, course) == {}


def test_instructor_of_another_course_learns_nothing(kore, school, registry, layout):
    course = school["A"]
    before = course_file(layout, course).read_bytes()
    change = {"remove_hidden_tests_in_feedback": False}
    other = patch(kore, course, "t-bob", change)
    assert other.status_code == 403
    assert "Homework" not in other.text
    # An id that names no course gets the very same answer: nothing to probe.
    unknown = patch(kore, UNKNOWN_COURSE, "t-bob", change)
    assert (unknown.status_code, unknown.json()) == (403, other.json())
    assert get(kore, course, "t-bob").json() == get(kore, UNKNOWN_COURSE, "t-bob").json()
    # A body that is no valid change does not reveal the course either.
    assert patch(kore, course, "t-bob", {"nonsense": 1}).json() == other.json()
    assert course_file(layout, course).read_bytes() == before
    assert stored(registry, course) == {}


def test_anonymous_requests_are_403_json(kore, school, registry):
    url = settings_url(kore, school["A"])
    for r in (
        httpx.get(url, follow_redirects=False),
        httpx.patch(url, content=b'{"remove_hidden_tests_in_feedback": false}'),
    ):
        assert r.status_code == 403
        assert "Not logged in" in r.json()["message"]
    assert stored(registry, school["A"]) == {}


def test_unknown_token_is_403(kore, school):
    r = patch(kore, school["A"], "t-forged", {"remove_hidden_tests_in_feedback": False})
    assert r.status_code == 403


@pytest.mark.parametrize(
    "raw_id",
    [
        "..",
        "%2e%2e",
        "c-..%2F..%2Fetc",
        "c-0123456789ABCDEF",
        "c-0123456789abcdef0",
        "grader-c-0123456789abcdef",
        "c-0123456789abcde%00",
        "%C3%A9",
    ],
)
@pytest.mark.parametrize("method", ["GET", "PATCH"])
def test_malformed_course_ids_are_400(kore, school, raw_id, method):
    body = b'{"execute_timeout": 5}' if method == "PATCH" else None
    r = raw_request(kore, method, f"{PREFIX}api/courses/{raw_id}/settings", "t-ann", body)
    assert r.status == 400, r.body
    assert b"does not name a course" in r.body


@pytest.mark.parametrize(
    "raw_path",
    [
        "api/courses/../etc/settings",
        "api/courses/c-../../x/settings",
        "api/courses//settings",
        "api/courses/c-0123456789abcdef/settings/../../x",
        "api/courses/c-0123456789abcdef/settings/extra",
    ],
)
@pytest.mark.parametrize("method", ["GET", "PATCH"])
def test_traversal_paths_are_client_errors(kore, school, registry, raw_path, method):
    body = b'{"execute_timeout": 5}' if method == "PATCH" else None
    r = raw_request(kore, method, PREFIX + raw_path, "t-admin", body)
    assert 400 <= r.status < 500, (r.status, r.body)
    assert json.loads(r.body)["status"] == r.status
    assert stored(registry, school["A"]) == {}


# --- cookies and XSRF ------------------------------------------------------------------------


def log_in_with_cookie(kore: Kore, hub: FakeHub, browser: httpx.Client, token: str) -> None:
    """Log in to Kore through the (fake) hub's OAuth, as a browser does."""
    r = browser.get(PREFIX)
    query = parse_qs(urlparse(r.headers["location"]).query)
    code = "code-" + token
    hub.codes[code] = (token, query["code_challenge"][0])
    r = browser.get(PREFIX + "oauth_callback", params={"code": code, "state": query["state"][0]})
    assert r.status_code == 302, r.text


def xsrf_token(kore: Kore, oauth_token: str, session_id: str) -> str:
    """The XSRF token JupyterHub's service auth expects from a page of Kore.

    It signs '<hub session id>:<sha256 of the OAuth token>' with Kore's cookie secret
    (jupyterhub/_xsrf_utils.py); a page of Kore would give it to its scripts.
    """
    secret = (StateLayout(kore.state_dir).secrets / "kore_cookie_secret").read_text().strip()
    xsrf_id = f"{session_id}:{hashlib.sha256(oauth_token.encode()).hexdigest()}"
    signed = create_signed_value(secret, "_xsrf", xsrf_id)
    return base64.urlsafe_b64encode(signed).rstrip(b"=").decode()


def test_cookie_patch_needs_the_xsrf_token(kore, hub, school, registry, layout):
    course = school["A"]
    hub.add_user("t-ann-oauth", "uann")
    before = course_file(layout, course).read_bytes()
    change = json.dumps({"remove_hidden_tests_in_feedback": False})
    with httpx.Client(base_url=kore.base, follow_redirects=False) as browser:
        browser.cookies.set("jupyterhub-session-id", "session-1")
        log_in_with_cookie(kore, hub, browser, "t-ann-oauth")
        url = f"{PREFIX}api/courses/{course}/settings"
        # Reading with the cookie works ...
        assert browser.get(url).status_code == 200
        # ... changing without the XSRF token does not (another site could send it) ...
        r = browser.patch(url, content=change)
        assert r.status_code == 403, r.text
        assert "XSRF" in r.json()["message"]
        r = browser.patch(url, content=change, headers={"X-XSRFToken": "forged"})
        assert r.status_code == 403, r.text
        assert course_file(layout, course).read_bytes() == before
        assert stored(registry, course) == {}
        # ... and with the token of Kore's page it does.
        token = xsrf_token(kore, "t-ann-oauth", "session-1")
        browser.cookies.set("_xsrf", token)
        r = browser.patch(url, content=change, headers={"X-XSRFToken": token})
        assert r.status_code == 200, r.text
    assert stored(registry, course) == {"remove_hidden_tests_in_feedback": False}


def test_token_patch_needs_no_xsrf_token(kore, school):
    # A hub token is not sent by browsers on their own: no XSRF risk, no token needed.
    r = patch(kore, school["A"], "t-ann", {"execute_timeout": 10})
    assert r.status_code == 200


# --- the hub tells Kore where course files are ----------------------------------------------


@pytest.mark.parametrize("systemd", [False, True])
def test_hub_passes_its_course_layout_to_kore(tmp_path, monkeypatch, systemd):
    monkeypatch.setenv("JUPYTERHUB_CRYPT_KEY", "")  # configure() sets it; restored after
    monkeypatch.setattr(hubconfig, "systemd_is_pid1", lambda: systemd)
    cfg_dir = tmp_path / "config.d"
    cfg_dir.mkdir()
    state = StateLayout(tmp_path / "state")
    c = Config()
    # As root without systemd the hub refuses root labs unless switched on (loopback).
    c.AnankeLocalSpawner.allow_root = True
    c.JupyterHub.bind_url = "http://127.0.0.1:8000/"
    hubconfig.configure(c, cfg_dir=cfg_dir, layout=state)
    (kore_service,) = [s for s in c.JupyterHub.services if s["name"] == "kore"]
    env = kore_service["environment"]
    if systemd:
        assert env["ANANKE_HOMES_ROOT"] == "/var/lib/private"
        assert env["ANANKE_EXCHANGE_ROOT"] == "/opt/nbgrader_exchange"
    else:
        assert env["ANANKE_HOMES_ROOT"] == str(state.local_homes)
        assert env["ANANKE_EXCHANGE_ROOT"] == str(state.root / "exchange")
    # A fragment's setting wins over the hub's own, and Kore gets the result.
    (cfg_dir / "40_nbgrader.py").write_text(
        "c = get_config()  # noqa\nc.CourseLayout.exchange_root = '/srv/exchange'\n"
    )
    c = Config()
    # As root without systemd the hub refuses root labs unless switched on (loopback).
    c.AnankeLocalSpawner.allow_root = True
    c.JupyterHub.bind_url = "http://127.0.0.1:8000/"
    hubconfig.configure(c, cfg_dir=cfg_dir, layout=state)
    (kore_service,) = [s for s in c.JupyterHub.services if s["name"] == "kore"]
    assert kore_service["environment"]["ANANKE_EXCHANGE_ROOT"] == "/srv/exchange"


def test_kore_refuses_a_relative_course_layout(tmp_path, hub):
    k = HubStartedKore(tmp_path, hub.api_url, CourseLayout(homes_root="homes"))
    k.start(wait=False)
    try:
        assert k.proc.wait(timeout=60) != 0
    finally:
        k.stop()
    assert "CourseLayout.homes_root must be an absolute path, not 'homes'" in k.log
    assert "Traceback" not in k.log


# --- last: nothing above made Kore fail -------------------------------------------------------


def test_no_request_above_was_a_server_error(kore):
    assert not re.search(r"\] 5\d\d ", kore.log), kore.log
    assert "Traceback" not in kore.log
