"""Every Kore route against people who may not use it and input that must not work.

The walk covers :func:`kore.handlers.routes` itself: a route (and method) without a case
below fails :func:`test_every_route_and_method_has_a_case`, so a new route cannot
escape. For each case:

- anonymous: 403 JSON for ``api/`` routes, a redirect to the hub's login for pages;
  only the routes in ``PUBLIC`` answer without a login (the LMS's keyset, the OpenAPI
  document, the end of the OAuth login, the static files and the bare prefix);
- a student of the course and an instructor of another course: 403 (for a backup: the
  same 404 as an unknown backup), and the other instructor's answer is the one for a
  course id that names no course: nothing to probe;
- ids with traversal (``../``, ``%2e%2e%2f``, ``..%252f``, absolute paths,
  ``c-0123456789abcdef/../x``...): 4xx;
- cookie logins without or with a wrong XSRF token: 403, nothing changed;
- bodies over 16 KiB: 413; malformed JSON: 400.

Symlinks planted in a grader's home (to /etc, to another course, to a directory
outside) and in the backups directory are never followed by a backup, a download, the
contents lists or an import. A hash of the trees outside the course (another course,
a directory outside everything) before and after proves nothing was touched, and
Kore's log shows no 5xx at the end.

Kore runs as the hub runs it, against the fake hub of test_kore.py (its API answers
404 to the group and user calls of reset and delete, which count as done).
"""

import hashlib
import http.client
import io
import json
import os
import re
import secrets
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from fake_hub import FakeHub
from kore_operations import follow
from test_kore import PREFIX
from test_kore_courses import launch
from test_kore_settings import HubStartedKore, log_in_with_cookie, xsrf_token
from tornado import web

from ananke_hub.courses import nbgrader_setup
from ananke_hub.courses.layout import CourseLayout
from ananke_hub.courses.registry import CourseRegistry
from ananke_hub.courses.settings import CourseSettings
from kore.handlers import routes

pytestmark = pytest.mark.filterwarnings("ignore::sqlalchemy.exc.SAWarning")

UNKNOWN_COURSE = "c-0123456789abcdef"
UNKNOWN_BACKUP = "b-" + "0" * 32
MAX_BODY = 16 * 1024
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
CHANGING = ("POST", "PUT", "PATCH", "DELETE")
#: The bare prefix route (a redirect to the prefix with its slash).
BARE_PREFIX = "<bare prefix>"

TRAVERSALS = [
    "..",
    "../",
    "%2e%2e%2f",
    "%2e%2e",
    "..%252f",
    "..%2F..%2Fetc%2Fpasswd",
    "/etc/passwd",
    "%2Fetc%2Fpasswd",
    "c-0123456789abcdef/../x",
    "c-0123456789abcdef%2F..%2Fx",
    "b-../../etc",
    "%00",
    "c-0123456789abcdef%0a",
    "b-" + "0" * 32 + "%0a",
    "~root",
]


def notebook(text: str) -> str:
    """A small nbformat-4 notebook with one markdown cell."""
    return json.dumps(
        {
            "cells": [{"cell_type": "markdown", "metadata": {}, "source": text}],
            "metadata": {},
            "nbformat": 4,
            "nbformat_minor": 5,
        }
    )


def tree_hash(root: Path) -> str:
    """Names, contents, modes and link targets of a tree, never following a link."""
    digest = hashlib.sha256()
    if not os.path.lexists(root):
        return "missing"
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            path = Path(dirpath) / name
            info = path.lstat()
            digest.update(f"{path.relative_to(root)}\0{info.st_mode:o}\0".encode())
            if path.is_symlink():
                digest.update(os.readlink(path).encode())
            elif path.is_file():
                digest.update(path.read_bytes())
    return digest.hexdigest()


# --- the school: courses, people, files --------------------------------------------------


@dataclass
class School:
    layout: CourseLayout
    courses: dict[str, str]
    outside: Path
    backups_dir: Path
    tokens: dict[str, str] = field(default_factory=dict)
    backup: str = ""

    def home(self, key: str) -> Path:
        return self.layout.course(self.courses[key]).home

    def untouchable(self) -> dict[str, str]:
        """Trees no request on course A may change: outside, course B, course B's exchange."""
        return {
            "outside": tree_hash(self.outside),
            "B": tree_hash(self.home("B")),
            "B-exchange": tree_hash(self.layout.course(self.courses["B"]).exchange),
        }

    def snapshot(self) -> dict[str, str]:
        """Everything a refused request must leave as it was (the audit log may grow)."""
        return {
            **self.untouchable(),
            "A": tree_hash(self.home("A")),
            "A2": tree_hash(self.home("A2")),
            "A-exchange": tree_hash(self.layout.course(self.courses["A"]).exchange),
            "backups": tree_hash(self.backups_dir),
        }


def add_assignment(home: Path, name: str, notebooks: dict[str, str]) -> None:
    folder = home / "source" / name
    folder.mkdir(parents=True, exist_ok=True)
    for nb_name, text in notebooks.items():
        (folder / nb_name).write_text(notebook(text))


def build_school(tmp: Path, registry: CourseRegistry, hub: FakeHub) -> School:
    """Courses A and A2 (taught by ann), B (bob); learner lea and TA tom in A; links planted."""
    layout = CourseLayout(homes_root=str(tmp / "homes"), exchange_root=str(tmp / "exchange"))
    courses = {
        "A": launch(registry, "uann", "A", "instructor", "Homework"),
        "A2": launch(registry, "uann", "A2", "instructor", "Algebra"),
        "B": launch(registry, "ubob", "B", "instructor", "Biology"),
    }
    launch(registry, "utom", "A", "ta", "Homework")
    launch(registry, "ulea", "A", "learner", "Homework")
    for course_id in courses.values():
        nbgrader_setup.ensure_course_files(layout.course(course_id), course_id, CourseSettings())
    outside = tmp / "outside"
    outside.mkdir()
    (outside / "secret.ipynb").write_text(notebook("OUTSIDE-SECRET"))
    (outside / "data.txt").write_text("outside data\n")
    school = School(layout, courses, outside, tmp / "kore" / "state" / "backups")
    add_assignment(school.home("A"), "hw1", {"p1.ipynb": "hw1 problem 1"})
    add_assignment(school.home("B"), "secret", {"p1.ipynb": "B-SECRET"})
    add_assignment(school.home("A2"), "hw9", {"p1.ipynb": "A2 hw9"})
    source_a = school.home("A") / "source"
    # Links an attacker (or a careless instructor) could plant in a grader's home.
    (source_a / "etc-link").symlink_to("/etc")
    (source_a / "other-course").symlink_to(school.home("B") / "source" / "secret")
    (source_a / "outside-dir").symlink_to(outside)
    (source_a / "hw1" / "leak.ipynb").symlink_to(
        school.home("B") / "source" / "secret" / "p1.ipynb"
    )
    (source_a / "hw1" / "outside.ipynb").symlink_to(outside / "secret.ipynb")
    (source_a / "hw1" / "passwd.ipynb").symlink_to("/etc/passwd")
    # In the import TARGET: an "assignment" that is a link to a directory outside.
    (school.home("A2") / "source" / "hw-link").symlink_to(outside)
    tokens = {"ann": "t-ann", "tom": "t-tom", "lea": "t-lea", "bob": "t-bob", "admin": "t-admin"}
    for who, token in tokens.items():
        hub.add_user(token, "u" + who, admin=who == "admin")
    school.tokens = tokens
    return school


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hub():
    with FakeHub() as fake:
        yield fake


@pytest.fixture(scope="module")
def tmp(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("security")


@pytest.fixture(scope="module")
def registry(tmp):
    reg = CourseRegistry(url=f"sqlite:///{tmp / 'courses.sqlite'}")
    reg.engine  # noqa: B018 - the schema exists before Kore opens the file
    yield reg
    reg.close()


@pytest.fixture(scope="module")
def school(tmp, registry, hub) -> School:
    return build_school(tmp, registry, hub)


@pytest.fixture(scope="module")
def kore(tmp, hub, school):
    k = HubStartedKore(tmp / "kore", hub.api_url, school.layout)
    url = f"sqlite:///{tmp / 'courses.sqlite'}"
    (k.config_dir / "55_test_registry.py").write_text(
        f"c = get_config()  # noqa\nc.CourseRegistry.url = {url!r}\n"
    )
    k.start()
    # One backup of course A, made by its instructor: the {backup} of the cases.
    school.backup = made_backup(k, school.courses["A"])["backup_id"]
    yield k
    k.stop()


# --- requests ---------------------------------------------------------------------------------


def auth(token: str | None) -> dict:
    return {"Authorization": f"token {token}"} if token else {}


def made_backup(kore, course: str, token="t-ann") -> dict:
    """A backup made through the API (202, then followed until it finished)."""
    started = httpx.post(kore.url(f"api/courses/{course}/backups"), headers=auth(token))
    op = follow(lambda path: httpx.get(kore.base + path, headers=auth(token)), started)
    assert op["state"] == "finished", op
    return op


@dataclass
class Answer:
    status: int
    headers: dict
    body: bytes

    def json(self):
        return json.loads(self.body)


def request(kore, method: str, path: str, *, token=None, body=None, headers=None) -> Answer:
    """A request with the path exactly as written (httpx would normalise '..' and escapes)."""
    conn = http.client.HTTPConnection("127.0.0.1", kore.port, timeout=60)
    try:
        conn.request(method, path, body=body, headers={**auth(token), **(headers or {})})
        response = conn.getresponse()
        return Answer(
            response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        )
    finally:
        conn.close()


# --- the cases ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """How to call one route with one method, and who may.

    ``access``: public (anyone), user (anyone logged in; answers about themselves),
    staff (instructors and TAs of the course), backup (whoever may use the backup),
    admin (hub admins), ticket (whoever posts the request's single-use ticket: no hub
    login, cookie or token counts). ``path`` is formatted with {course}, {backup}, {run}, {file}.
    """

    path: str
    access: str = "staff"
    body: bytes | None = None
    page: bool = False

    def url(self, school: School, **overrides) -> str:
        values = {
            "course": school.courses["A"],
            "backup": school.backup,
            "run": "0" * 32,
            "file": "kore.css",
            "request": "r" * 32,
            **overrides,
        }
        if self.path == BARE_PREFIX:
            return PREFIX.rstrip("/")
        return PREFIX + self.path.format(**values)

    def body_for(self, school: School) -> bytes | None:
        if self.body is None:
            return None
        return self.body.replace(b"{course}", school.courses["A"].encode()).replace(
            b"{A2}", school.courses["A2"].encode()
        )

    @property
    def fields(self) -> list[str]:
        return re.findall(r"\{(\w+)\}", "" if self.path == BARE_PREFIX else self.path)


CONFIRM = b'{"confirm": "{course}"}'
IMPORT = b'{"from": {"course_id": "{A2}"}, "what": "assignment", "assignment": "hw9"}'

CASES: dict[tuple[str, str], Case] = {
    (BARE_PREFIX, "GET"): Case(BARE_PREFIX, "public", page=True),
    ("jwks", "GET"): Case("jwks", "public"),
    ("oauth_callback", "GET"): Case("oauth_callback", "public", page=True),
    ("api/openapi\\.json", "GET"): Case("api/openapi.json", "public"),
    ("static/(.*)", "GET"): Case("static/{file}", "public", page=True),
    ("static/(.*)", "HEAD"): Case("static/{file}", "public", page=True),
    ("", "GET"): Case("", "user", page=True),
    ("api/me", "GET"): Case("api/me", "user"),
    ("api/courses", "GET"): Case("api/courses", "user"),
    ("api/backups", "GET"): Case("api/backups", "user"),
    ("courses/([^/]+)", "GET"): Case("courses/{course}", page=True),
    ("courses/([^/]+)/formgrader", "GET"): Case("courses/{course}/formgrader", page=True),
    ("api/courses/([^/]+)/settings", "GET"): Case("api/courses/{course}/settings"),
    ("api/courses/([^/]+)/settings", "PATCH"): Case(
        "api/courses/{course}/settings", body=b'{"execute_timeout": 31}'
    ),
    ("api/courses/([^/]+)/grades/sync", "GET"): Case("api/courses/{course}/grades/sync"),
    ("api/courses/([^/]+)/grades/sync", "POST"): Case(
        "api/courses/{course}/grades/sync", body=b'{"missing": "zero"}'
    ),
    ("api/courses/([^/]+)/grades/sync/([^/]+)", "GET"): Case(
        "api/courses/{course}/grades/sync/{run}"
    ),
    ("api/courses/([^/]+)/roster/sync", "GET"): Case("api/courses/{course}/roster/sync"),
    ("api/courses/([^/]+)/roster/sync", "POST"): Case(
        "api/courses/{course}/roster/sync", body=b"{}"
    ),
    ("api/courses/([^/]+)/roster/sync/([^/]+)", "GET"): Case(
        "api/courses/{course}/roster/sync/{run}"
    ),
    ("api/courses/([^/]+)/backups", "GET"): Case("api/courses/{course}/backups"),
    ("api/courses/([^/]+)/backups", "POST"): Case("api/courses/{course}/backups", body=b"{}"),
    ("api/courses/([^/]+)/reset", "POST"): Case("api/courses/{course}/reset", body=CONFIRM),
    ("api/courses/([^/]+)/delete", "POST"): Case("api/courses/{course}/delete", body=CONFIRM),
    ("api/courses/([^/]+)/operations", "GET"): Case("api/courses/{course}/operations"),
    ("api/courses/([^/]+)/operations/([^/]+)", "GET"): Case(
        "api/courses/{course}/operations/{run}"
    ),
    ("api/courses/([^/]+)/import", "POST"): Case("api/courses/{course}/import", body=IMPORT),
    ("api/courses/([^/]+)/contents", "GET"): Case("api/courses/{course}/contents"),
    ("api/courses/([^/]+)/audit", "GET"): Case("api/courses/{course}/audit"),
    ("api/backups/([^/]+)", "GET"): Case("api/backups/{backup}", "backup"),
    ("api/backups/([^/]+)", "DELETE"): Case("api/backups/{backup}", "backup", body=b""),
    ("api/backups/([^/]+)/download", "GET"): Case("api/backups/{backup}/download", "backup"),
    ("api/backups/([^/]+)/contents", "GET"): Case("api/backups/{backup}/contents", "backup"),
    ("api/audit", "GET"): Case("api/audit", "admin"),
    # Deep Linking's picker: only with the content selection's ticket, posted by the
    # hub's page (tests/test_deep_linking.py, tests/test_framed_lti.py).
    (r"deeplink/([A-Za-z0-9_-]{16,64})", "GET"): Case("deeplink/{request}", "ticket", page=True),
    (r"deeplink/([A-Za-z0-9_-]{16,64})", "POST"): Case(
        "deeplink/{request}", "ticket", body=b"item=new", page=True
    ),
    ("admin/lms", "GET"): Case("admin/lms", "admin", page=True),
    ("admin/lms", "POST"): Case("admin/lms", "admin", page=True, body=b"action=new-url"),
}
PUBLIC = {key for key, case in CASES.items() if case.access == "public"}


def route_methods() -> set[tuple[str, str]]:
    """(route pattern relative to the prefix, method) for every route Kore serves."""
    found = set()
    prefix = re.escape(PREFIX)
    for pattern, handler, *_ in routes(PREFIX):
        relative = pattern.removeprefix(prefix) if pattern.startswith(prefix) else BARE_PREFIX
        for method in METHODS:
            if getattr(handler, method.lower()) is not getattr(web.RequestHandler, method.lower()):
                found.add((relative, method))
    return found


def walk(*, access=None, methods=METHODS):
    """The cases as pytest parameters (ids: METHOD path)."""
    return [
        pytest.param(key, case, id=f"{key[1]} {case.path}")
        for key, case in CASES.items()
        if (access is None or case.access in access) and key[1] in methods
    ]


def test_every_route_and_method_has_a_case():
    served = route_methods()
    assert served - set(CASES) == set(), "routes without a case in CASES: add them"
    assert set(CASES) - served == set(), "cases of routes Kore no longer serves"


def test_exactly_these_routes_are_public():
    assert {(path, method) for path, method in PUBLIC} == {
        (BARE_PREFIX, "GET"),
        ("jwks", "GET"),
        ("oauth_callback", "GET"),
        ("api/openapi\\.json", "GET"),
        ("static/(.*)", "GET"),
        ("static/(.*)", "HEAD"),
    }


# --- who may not -----------------------------------------------------------------------------


def is_login_redirect(answer: Answer) -> bool:
    return answer.status == 302 and "/hub/api/oauth2/authorize" in answer.headers.get(
        "location", ""
    )


@pytest.mark.parametrize(("key", "case"), walk())
def test_anonymous(kore, school, key, case):
    before = school.snapshot()
    answer = request(kore, key[1], case.url(school), body=case.body_for(school))
    if case.access == "public":
        assert answer.status != 403 and not is_login_redirect(answer), answer
        assert answer.status < 500
    elif case.access == "ticket":
        assert answer.status == 403 and b"opens from your LMS" in answer.body, answer
    elif case.page and key[1] == "GET":
        assert is_login_redirect(answer), answer
    elif case.page:  # a form post to a page: its HTML error page
        assert answer.status == 403 and b"Not logged in" in answer.body, answer
    else:
        assert answer.status == 403, answer
        error = answer.json()
        assert error["status"] == 403 and "Not logged in" in error["message"]
    assert school.snapshot() == before


def refused(answer: Answer, case: Case, key) -> None:
    assert answer.status < 500, answer
    if case.access == "backup":
        assert answer.status == 404, answer  # the same as an unknown backup: below
    else:
        assert answer.status == 403, answer
    if not case.page and key[1] != "HEAD":
        assert answer.json()["status"] == answer.status


def anonymised(body: bytes, school: School) -> bytes:
    """The answer with the ids of the request taken out (a message may repeat them)."""
    for value in (school.backup, UNKNOWN_BACKUP, school.courses["A"], UNKNOWN_COURSE):
        body = body.replace(value.encode(), b"<id>")
    return body


@pytest.mark.parametrize(("key", "case"), walk(access={"staff", "backup", "admin"}))
@pytest.mark.parametrize("who", ["lea", "bob"])
def test_students_and_instructors_of_other_courses(kore, school, key, case, who):
    before = school.snapshot()
    method = key[1]
    token = school.tokens[who]
    answer = request(kore, method, case.url(school), token=token, body=case.body_for(school))
    refused(answer, case, key)
    # Nothing to learn: the answer for a course or backup that does not exist is the same.
    if case.access == "backup" or (who == "bob" and "course" in case.fields):
        unknown = request(
            kore,
            method,
            case.url(school, course=UNKNOWN_COURSE, backup=UNKNOWN_BACKUP),
            token=token,
            body=case.body_for(school),
        )
        assert unknown.status == answer.status
        if not case.page:
            assert anonymised(unknown.body, school) == anonymised(answer.body, school)
    if who == "lea" and case.access == "staff" and not case.page:
        assert "as a student" in answer.json()["message"]
    assert school.snapshot() == before


@pytest.mark.parametrize(("key", "case"), walk(access={"user"}))
def test_routes_about_the_caller_show_a_student_only_their_own(kore, school, key, case):
    answer = request(kore, key[1], case.url(school), token=school.tokens["lea"])
    assert answer.status == 200, answer
    if key[0] == "api/backups":
        assert answer.json() == {"backups": []}
    if key[0] == "api/courses":
        assert [c["role"] for c in answer.json()] == ["learner"]
        assert "formgrader_url" not in answer.json()[0]


def test_a_teaching_assistant_may_use_the_course_routes(kore, school):
    answer = request(
        kore, "GET", CASES[("api/courses/([^/]+)/backups", "GET")].url(school), token="t-tom"
    )
    assert answer.status == 200, answer
    assert school.backup in {b["backup_id"] for b in answer.json()["backups"]}


def test_only_hub_admins_read_the_whole_audit_log(kore, school):
    for who in ("ann", "tom", "lea", "bob"):
        answer = request(kore, "GET", PREFIX + "api/audit", token=school.tokens[who])
        assert answer.status == 403, answer
    answer = request(kore, "GET", PREFIX + "api/audit", token="t-admin")
    assert answer.status == 200 and answer.json()["events"], answer


def test_refusals_after_login_are_in_the_audit_log(kore, school):
    course = school.courses["A"]
    answer = request(
        kore,
        "POST",
        PREFIX + f"api/courses/{course}/delete",
        token="t-lea",
        body=b'{"confirm": "x"}',
    )
    assert answer.status == 403
    events = request(kore, "GET", PREFIX + f"api/courses/{course}/audit", token="t-ann").json()
    refusal = next(e for e in events["events"] if e["actor"] == "ulea")
    assert (refusal["action"], refusal["outcome"]) == ("course.delete", "refused")


# --- traversal in ids -------------------------------------------------------------------------


def walk_fields():
    params = []
    for key, case in CASES.items():
        for name in case.fields:
            params.append(pytest.param(key, case, name, id=f"{key[1]} {case.path} {name}"))
    return params


@pytest.mark.parametrize(("key", "case", "name"), walk_fields())
def test_traversal_in_ids_is_a_client_error(kore, school, key, case, name):
    before = school.snapshot()
    for token in ("t-ann", "t-admin"):
        for evil in TRAVERSALS:
            url = case.url(school, **{name: evil})
            answer = request(kore, key[1], url, token=token, body=case.body_for(school))
            assert 400 <= answer.status < 500, (url, answer)
            if url.startswith(PREFIX + "api/") and key[1] != "HEAD":
                assert answer.json()["status"] == answer.status, (url, answer)
            assert b"root:" not in answer.body  # no /etc/passwd, whatever the status
    assert school.snapshot() == before


# --- XSRF, sizes, malformed JSON ---------------------------------------------------------------


@pytest.fixture(scope="module")
def browser(kore, hub):
    hub.add_user("t-ann-oauth", "uann")
    with httpx.Client(base_url=kore.base, follow_redirects=False, timeout=60) as client:
        client.cookies.set("jupyterhub-session-id", "session-sec")
        log_in_with_cookie(kore, hub, client, "t-ann-oauth")
        yield client


@pytest.mark.parametrize(("key", "case"), walk(methods=CHANGING))
def test_cookie_changes_need_the_xsrf_token(kore, school, browser, key, case):
    before = school.snapshot()
    url = case.url(school)
    assert browser.get(PREFIX + "api/me").json()["name"] == "uann"  # the cookie works
    for headers in ({}, {"X-XSRFToken": "forged"}, {"X-XSRFToken": secrets.token_urlsafe(40)}):
        r = browser.request(key[1], url, content=case.body_for(school), headers=headers)
        assert r.status_code == 403, r.text
        if case.access == "ticket":  # the ticket is the form's CSRF token; no cookie counts
            assert "opens from your LMS" in r.text
            continue
        assert "XSRF" in (r.text if case.page else r.json()["message"])
    assert school.snapshot() == before


def test_the_xsrf_token_of_kores_page_works(kore, school, browser):
    token = xsrf_token(kore, "t-ann-oauth", "session-sec")
    # Kore set its own _xsrf cookie on earlier answers (signed in another second: another
    # value, valid too); a page's script sends the one of its cookie: keep only ours.
    browser.cookies.delete("_xsrf")
    browser.cookies.set("_xsrf", token)
    url = PREFIX + f"api/courses/{school.courses['A']}/backups"
    r = browser.post(url, content=b"{}", headers={"X-XSRFToken": token})
    assert follow(browser.get, r)["state"] == "finished"


@pytest.mark.parametrize(("key", "case"), walk(access={"staff", "backup"}, methods=CHANGING))
@pytest.mark.parametrize("size", [MAX_BODY + 1, 1024 * 1024])
def test_oversized_bodies_are_413(kore, school, key, case, size):
    before = school.snapshot()
    body = b'{"x": "' + b"a" * size + b'"}'
    answer = request(kore, key[1], case.url(school), token="t-ann", body=body)
    assert answer.status == 413, answer
    assert answer.json()["status"] == 413
    assert school.snapshot() == before


@pytest.mark.parametrize(("key", "case"), walk(access={"staff", "backup"}, methods=CHANGING))
@pytest.mark.parametrize(
    "body",
    [b"{not json", b'{"confirm": "\xff"}', b"[" * 5000 + b"]" * 5000, b'"a string"', b"[1, 2]"],
)
def test_malformed_json_is_400(kore, school, key, case, body):
    before = school.snapshot()
    answer = request(kore, key[1], case.url(school), token="t-ann", body=body)
    assert answer.status == 400, answer
    assert answer.json()["status"] == 400
    assert school.snapshot() == before


# --- symlinks in homes and backups --------------------------------------------------------------


def archive_bytes(kore, backup_id: str, token="t-ann") -> bytes:
    r = httpx.get(kore.url(f"api/backups/{backup_id}/download"), headers=auth(token), timeout=60)
    assert r.status_code == 200, r.text
    return r.content


def test_a_backup_never_follows_planted_links(kore, school, tmp):
    before = school.untouchable()
    course = school.courses["A"]
    data = archive_bytes(kore, made_backup(kore, course)["backup_id"])
    path = tmp / "download.tar.gz"
    path.write_bytes(data)
    with tarfile.open(path) as tar:
        members = tar.getmembers()
        names = [m.name for m in members]
        assert names[0] == "manifest.json"
        assert all(m.isfile() or m.isdir() for m in members), names  # no links stored
        assert not any(n.startswith("/") or ".." in n.split("/") for n in names)
        contents = b"".join(tar.extractfile(m).read() for m in members if m.isfile())
    assert any(n.endswith("source/hw1/p1.ipynb") for n in names)
    for planted in ("etc-link", "other-course", "outside-dir", "leak.ipynb", "outside.ipynb"):
        assert not any(n.split("/")[-1] == planted for n in names), planted
    for secret in (b"B-SECRET", b"OUTSIDE-SECRET", b"root:x:0:0"):
        assert secret not in contents
    assert school.untouchable() == before


def test_contents_list_only_real_assignments_and_notebooks(kore, school):
    r = httpx.get(kore.url(f"api/courses/{school.courses['A']}/contents"), headers=auth("t-ann"))
    assert r.status_code == 200, r.text
    assignments = {a["name"]: a["notebooks"] for a in r.json()["assignments"]}
    assert set(assignments) == {"hw1"}
    assert assignments["hw1"] == ["p1.ipynb"]


@pytest.mark.parametrize(
    ("what", "assignment", "notebook"),
    [
        ("assignment", "etc-link", None),
        ("assignment", "other-course", None),
        ("assignment", "outside-dir", None),
        ("notebook", "hw1", "leak.ipynb"),
        ("notebook", "hw1", "outside.ipynb"),
        ("notebook", "hw1", "passwd.ipynb"),
        ("notebook", "etc-link", "passwd.ipynb"),
    ],
)
def test_importing_a_planted_link_is_refused(kore, school, what, assignment, notebook):
    before = {**school.untouchable(), "A2": tree_hash(school.home("A2"))}
    body = {"from": {"course_id": school.courses["A"]}, "what": what, "assignment": assignment}
    if notebook:
        body["notebook"] = notebook
    r = httpx.post(
        kore.url(f"api/courses/{school.courses['A2']}/import"), headers=auth("t-ann"), json=body
    )
    assert 400 <= r.status_code < 500, r.text
    assert {**school.untouchable(), "A2": tree_hash(school.home("A2"))} == before


def test_an_imported_assignment_leaves_its_links_behind(kore, school):
    before = school.untouchable()
    body = {"from": {"course_id": school.courses["A"]}, "what": "assignment", "assignment": "hw1"}
    r = httpx.post(
        kore.url(f"api/courses/{school.courses['A2']}/import"), headers=auth("t-ann"), json=body
    )
    op = follow(lambda path: httpx.get(kore.base + path, headers=auth("t-ann")), r)
    assert op["state"] == "finished", op
    copied = school.home("A2") / "source" / "hw1"
    assert sorted(p.name for p in copied.iterdir()) == ["p1.ipynb"]
    assert school.untouchable() == before


def test_an_import_never_writes_through_a_link_in_the_target(kore, school):
    before = school.untouchable()
    body = {
        "from": {"course_id": school.courses["A"]},
        "what": "assignment",
        "assignment": "hw1",
        "as_assignment": "hw-link",
    }
    url = kore.url(f"api/courses/{school.courses['A2']}/import")
    for overwrite in (False, True):
        r = httpx.post(url, headers=auth("t-ann"), json={**body, "overwrite": overwrite})
        assert r.status_code < 500, r.text
        if r.status_code == 202:  # it ran: the link itself was moved aside, never followed
            op = follow(lambda path: httpx.get(kore.base + path, headers=auth("t-ann")), r)
            assert op["state"] in ("finished", "failed"), op
        assert school.untouchable() == before
    assert sorted(p.name for p in school.outside.iterdir()) == ["data.txt", "secret.ipynb"]


def test_a_backup_archive_replaced_by_a_link_is_not_followed(kore, school, tmp):
    before = school.untouchable()
    course = school.courses["A"]
    backup_id = made_backup(kore, course)["backup_id"]
    (archive,) = [p for p in school.backups_dir.rglob(f"*{backup_id}*") if p.is_file()]
    # A tar.gz outside whose manifest claims to be the backup, with an /etc link inside.
    fake = tmp / "fake.tar.gz"
    with tarfile.open(fake, "w:gz") as tar:
        tar.add(school.outside / "data.txt", arcname="manifest.json")
        link = tarfile.TarInfo("course/source/hw1/p1.ipynb")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    archive.unlink()
    archive.symlink_to(fake)
    answer = request(kore, "GET", PREFIX + f"api/backups/{backup_id}/download", token="t-ann")
    assert 400 <= answer.status < 500, answer
    assert b"outside data" not in answer.body
    body = {"from": {"backup_id": backup_id}, "what": "course"}
    r = httpx.post(
        kore.url(f"api/courses/{school.courses['A2']}/import"), headers=auth("t-ann"), json=body
    )
    assert 400 <= r.status_code < 500, r.text
    assert school.untouchable() == before


def test_a_backup_with_dotdot_members_is_refused_whole(kore, school, tmp):
    before = {**school.untouchable(), "A2": tree_hash(school.home("A2"))}
    course = school.courses["A"]
    backup_id = made_backup(kore, course)["backup_id"]
    (archive,) = [p for p in school.backups_dir.rglob(f"*{backup_id}*") if p.is_file()]
    with tarfile.open(archive) as tar:
        manifest = tar.extractfile("manifest.json").read()
    with tarfile.open(archive, "w:gz") as tar:  # rewritten in place: a regular file still
        info = tarfile.TarInfo("manifest.json")
        info.size = len(manifest)
        tar.addfile(info, io.BytesIO(manifest))
        for name in ("course/source/hw1/p1.ipynb", "course/source/hw1/../../../../outside/x.ipynb"):
            data = notebook("EVIL").encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    body = {
        "from": {"backup_id": backup_id},
        "what": "assignment",
        "assignment": "hw1",
        "as_assignment": "hw-evil",
    }
    r = httpx.post(
        kore.url(f"api/courses/{school.courses['A2']}/import"), headers=auth("t-ann"), json=body
    )
    assert 400 <= r.status_code < 500, r.text
    assert not (school.home("A2") / "source" / "hw-evil").exists()
    assert {**school.untouchable(), "A2": tree_hash(school.home("A2"))} == before


# --- last: nothing above was a server error -----------------------------------------------------


def test_no_request_above_was_a_server_error(kore, school):
    assert not re.search(r"\] 5\d\d ", kore.log), kore.log
    assert "Traceback" not in kore.log
    assert (school.outside / "data.txt").read_text() == "outside data\n"
