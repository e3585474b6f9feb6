"""Kore's grade and roster sync routes, with Kore run as the hub runs it.

``python -m kore`` (test_kore.py) against the fake hub (tests/fake_hub.py) and the
built-in LMS (tests/builtin_lms.py), which fetches Kore's keyset during each token
request; the course registry is a SQLite file filled as launches fill it, course A on
disk with an nbgrader gradebook.
"""

import json
import time

import httpx
import pytest
from builtin_lms import started
from fake_hub import FakeHub
from test_grade_sync import CLIENT, ISSUER, add_assignment, launch, submit
from test_kore import PREFIX
from test_kore_settings import HubStartedKore, log_in_with_cookie, raw_request, xsrf_token

from ananke_hub.courses import nbgrader_setup
from ananke_hub.courses.layout import CourseLayout
from ananke_hub.courses.registry import CourseRegistry
from ananke_hub.courses.settings import CourseSettings
from ananke_hub.keys import KeyStore
from ananke_hub.paths import StateLayout

pytestmark = pytest.mark.filterwarnings("ignore::sqlalchemy.exc.SAWarning")

UNKNOWN_COURSE = "c-0123456789abcdef"


@pytest.fixture(scope="module")
def hub():
    with FakeHub() as fake:
        yield fake


@pytest.fixture(scope="module")
def kore_root(tmp_path_factory):
    return tmp_path_factory.mktemp("kore")


@pytest.fixture(scope="module")
def lms(kore_root, tmp_path_factory):
    keys = KeyStore(StateLayout(kore_root / "state").kore_keys)
    with started(tmp_path_factory.mktemp("lms") / "state", keys, CLIENT) as built_in:
        built_in.reset(learners=("101", "102"))
        yield built_in


def a_second_later() -> None:
    """Wait for the next whole second: Moodle (and the built-in LMS) refuses with 409 a
    score whose timestamp is not newer, in whole seconds, than the one it holds, so a
    resend needs a later second than the send before it."""
    now = int(time.time())
    while int(time.time()) <= now:
        time.sleep(0.05)


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    return tmp_path_factory.mktemp("registry") / "courses.sqlite"


@pytest.fixture(scope="module")
def registry(db):
    reg = CourseRegistry(url=f"sqlite:///{db}")
    reg.engine  # noqa: B018 - the schema exists before Kore opens the file
    yield reg
    reg.close()


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    root = tmp_path_factory.mktemp("layout")
    return CourseLayout(homes_root=str(root / "homes"), exchange_root=str(root / "exchange"))


@pytest.fixture(scope="module")
def school(hub, registry, layout, lms):
    """Course A: instructor u1, TA u5, learners u101 and u102, one graded assignment.
    Course B (another activity, same LMS): instructor u9."""
    # The LMS's activities: line items Kore makes are bound to the launch's link.
    a = launch(registry, lms, "1", "instructor", link="homework")
    launch(registry, lms, "5", "ta", link="homework")
    launch(registry, lms, "101", "learner", link="homework")
    launch(registry, lms, "102", "learner", link="homework")
    b = launch(registry, lms, "9", "instructor", link="exam")
    nbgrader_setup.ensure_course_files(layout.course(a), a, CourseSettings())
    add_assignment(layout, a, "hw1", 10)
    submit(layout, a, "u101", "hw1", 8)
    for token, name in [("t-inst", "u1"), ("t-ta", "u5"), ("t-lea", "u101"), ("t-other", "u9")]:
        hub.add_user(token, name)
    hub.add_user("t-admin", "uadmin", admin=True)
    return {"A": a, "B": b}


@pytest.fixture(scope="module")
def kore(kore_root, hub, db, layout, lms, school):
    k = HubStartedKore(kore_root, hub.api_url, layout)
    (k.config_dir / "55_test_sync.py").write_text(
        "c = get_config()  # noqa\n"
        f"c.CourseRegistry.url = {f'sqlite:///{db}'!r}\n"
        f"c.LMSRegistration.issuer = {ISSUER!r}\n"
        f"c.LMSRegistration.client_id = {CLIENT!r}\n"
        f"c.LMSRegistration.access_token_url = {lms.token_url!r}\n"
        "c.LTIAdvantage.retry_delay = 0.01\n"
        "c.LTIAdvantage.max_retry_delay = 0.05\n"
    )
    k.start()
    yield k
    k.stop()


def auth(token):
    return {"Authorization": f"token {token}"}


def sync_url(kore, course_id, kind="grades", run_id=None):
    url = kore.url(f"api/courses/{course_id}/{kind}/sync")
    return f"{url}/{run_id}" if run_id else url


def start(kore, course_id, token, body=None, kind="grades"):
    content = body if isinstance(body, bytes | str) or body is None else json.dumps(body)
    # 30 s, not httpx's 5: a start on a busy machine (CI's two cores) may take longer.
    return httpx.post(
        sync_url(kore, course_id, kind), headers=auth(token), content=content, timeout=30
    )


def wait(kore, course_id, run_id, token="t-inst", kind="grades", **params) -> dict:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        r = httpx.get(sync_url(kore, course_id, kind, run_id), headers=auth(token), params=params)
        assert r.status_code == 200, r.text
        if r.json()["state"] != "running":
            return r.json()
        time.sleep(0.1)
    raise AssertionError(f"the sync did not end: {r.json()}\n{kore.log}")


# --- the happy path ---------------------------------------------------------------------------


def test_staff_start_a_grade_sync_and_read_its_results(kore, school, lms):
    r = start(kore, school["A"], "t-inst", {"missing": "zero"})
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["state"] == "running" and body["options"] == {"missing": "zero", "resend": False}
    assert (
        r.headers["location"]
        == body["url"]
        == (f"{PREFIX}api/courses/{school['A']}/grades/sync/{body['run_id']}")
    )
    run = wait(kore, school["A"], body["run_id"])
    assert run["state"] == "finished", run
    assert run["counts"] == {"sent": 4}  # two learners x (hw1, total)
    assert run["results_total"] == 4 and len(run["results"]) == 4
    assert run["started_by"] == "u1"
    sent = {(x["username"], x["item"]): x for x in run["results"]}
    assert sent[("u101", "assignment:hw1")]["score_given"] == 8
    assert sent[("u102", "total")]["score_given"] == 0
    (hw1,) = lms.created_items()
    assert lms.scores_of(hw1["id"], "101")[-1]["scoreGiven"] == 8
    assert f"course:{school['A']} user:u1 started grade sync" in kore.log


def test_teaching_assistants_may_sync_and_a_resync_sends_nothing(kore, school, lms):
    posts = lms.score_posts()
    r = start(kore, school["A"], "t-ta")
    assert r.status_code == 202, r.text
    run = wait(kore, school["A"], r.json()["run_id"], token="t-ta")
    assert run["counts"] == {"unchanged": 4}
    assert lms.score_posts() == posts


def test_a_second_sync_while_one_runs_is_409(kore, school, lms):
    # the first score takes a while
    lms.fault(path_suffix="/scores", methods=["POST"], delay=2.0, count=1)
    a_second_later()  # resent scores must be newer than the last ones
    first = start(kore, school["A"], "t-inst", {"resend": True})
    assert first.status_code == 202, first.text
    run_id = first.json()["run_id"]
    second = start(kore, school["A"], "t-ta")
    assert second.status_code == 409, second.text
    assert second.json()["run_id"] == run_id
    assert second.json()["url"].endswith(run_id)
    # progress is readable meanwhile
    r = httpx.get(sync_url(kore, school["A"], run_id=run_id), headers=auth("t-inst"))
    assert r.json()["state"] == "running" and r.json()["total"] in (0, 4)
    assert wait(kore, school["A"], run_id)["state"] == "finished"
    assert all(p["refused"] == {} for p in lms.posts())  # no 409: nothing sent twice a second
    again = start(kore, school["A"], "t-inst")
    assert again.status_code == 202  # free again
    wait(kore, school["A"], again.json()["run_id"])


def test_latest_runs_and_paged_results(kore, school):
    a_second_later()
    r = start(kore, school["A"], "t-inst", {"resend": True})
    assert r.status_code == 202, r.text
    run_id = r.json()["run_id"]
    wait(kore, school["A"], run_id)
    r = httpx.get(sync_url(kore, school["A"]), headers=auth("t-inst"), params={"limit": 2})
    assert r.status_code == 200
    runs = r.json()["runs"]
    assert len(runs) == 2 and runs[0]["run_id"] == run_id
    page = wait(kore, school["A"], run_id, offset=1, limit=2)
    assert (page["results_total"], len(page["results"]), page["offset"]) == (4, 2, 1)
    sent = wait(kore, school["A"], run_id, status="sent")
    assert sent["results_total"] == 4
    assert wait(kore, school["A"], run_id, status="failed")["results"] == []


def test_roster_sync_through_the_api(kore, school, lms, hub):
    # Kore's hub token lacks the scopes for groups (as the hub answers then: 403).
    hub.refuse_with = 403
    lms.set_roster(
        [
            {"user_id": "1", "roles": ["Instructor"]},
            {"user_id": "101", "roles": ["Learner"]},
            {"user_id": "102", "roles": ["Learner"]},
            {"user_id": "103", "roles": ["Learner"], "given_name": "New", "family_name": "Kid"},
        ]
    )
    r = start(kore, school["A"], "t-inst", kind="roster")
    assert r.status_code == 202, r.text
    try:
        run = wait(kore, school["A"], r.json()["run_id"], kind="roster")
    finally:
        hub.refuse_with = None
    rows = {x["lms_user_id"]: x for x in run["results"]}
    assert rows["103"]["username"] == "u103"
    assert rows["103"]["name"] == "New Kid"  # the name the roster gave, for the result table
    # Added to the registry and the gradebook; the hub refuses Kore's calls, so the hub
    # step fails for learners and says what Kore's token needs.
    assert "Not in the hub group" in rows["103"]["message"]
    # The TA is no longer in the roster; taking her access on the hub failed too, which
    # must show (she may still reach the grader server until a sync succeeds).
    assert rows["5"]["status"] == "failed"
    assert "No longer in the LMS course roster" in rows["5"]["message"]
    assert "Hub access not updated" in rows["5"]["message"]
    assert run["state"] == "failed"
    assert start(kore, school["A"], "t-inst", {"x": 1}, kind="roster").status_code == 400


# --- who may not ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["grades", "roster"])
def test_students_and_other_courses_are_refused(kore, school, registry, kind):
    before = len(
        httpx.get(sync_url(kore, school["A"], kind), headers=auth("t-inst")).json()["runs"]
    )
    student = start(kore, school["A"], "t-lea", kind=kind)
    assert student.status_code == 403
    assert "You take part in it as a student" in student.json()["message"]
    other = start(kore, school["A"], "t-other", kind=kind)
    assert other.status_code == 403
    assert other.json() == start(kore, UNKNOWN_COURSE, "t-other", kind=kind).json()
    for token in ("t-lea", "t-other"):
        assert httpx.get(sync_url(kore, school["A"], kind), headers=auth(token)).status_code == 403
    anonymous = httpx.post(sync_url(kore, school["A"], kind))
    assert anonymous.status_code == 403 and "Not logged in" in anonymous.json()["message"]
    assert httpx.get(sync_url(kore, school["A"], kind)).status_code == 403
    after = len(httpx.get(sync_url(kore, school["A"], kind), headers=auth("t-inst")).json()["runs"])
    assert after == before  # nothing started


def test_runs_are_per_course(kore, school):
    run_id = start(kore, school["A"], "t-inst").json()["run_id"]
    wait(kore, school["A"], run_id)
    # course B's instructor cannot read A's run through B's URL
    r = httpx.get(sync_url(kore, school["B"], run_id=run_id), headers=auth("t-other"))
    assert r.status_code == 404
    # and a roster URL does not show a grade run
    r = httpx.get(sync_url(kore, school["A"], "roster", run_id), headers=auth("t-inst"))
    assert r.status_code == 404


def test_hub_admins_may_and_learn_about_unknown_courses(kore, school):
    assert start(kore, UNKNOWN_COURSE, "t-admin").status_code == 404
    r = start(kore, school["B"], "t-admin")
    assert r.status_code == 202
    run = wait(kore, school["B"], r.json()["run_id"], token="t-admin")
    assert run["state"] == "finished"  # course B has nobody to grade
    assert any("no nbgrader gradebook" in w for w in run["warnings"])


# --- malformed input: 4xx, never 5xx ----------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ("{not json", 400, "not valid JSON"),
        (b'{"missing": "\xff"}', 400, "not valid JSON"),
        ("[" * 5000 + "]" * 5000, 400, None),
        ('{"missing": "all"}', 400, '"missing" must be'),
        ('{"resend": 1}', 400, '"resend" must be true or false'),
        ('{"force": true}', 400, 'Unknown field(s) "force"'),
        ('"zero"', 400, "Send a JSON object"),
        ("null", 202, None),
        ("", 202, None),
        ("x" * (16 * 1024 + 1), 413, "larger than"),
    ],
)
def test_malformed_bodies(kore, school, body, status, words):
    r = start(kore, school["A"], "t-inst", body)
    assert r.status_code == status, r.text
    if words:
        assert words in r.json()["message"]
    if status == 202:
        wait(kore, school["A"], r.json()["run_id"])


@pytest.mark.parametrize(
    "query",
    ["?limit=abc", "?limit=0", "?limit=100000", "?offset=-1", "?status=bogus", "?offset=1e3"],
)
def test_malformed_queries(kore, school, query):
    run_id = start(kore, school["A"], "t-inst").json()["run_id"]
    wait(kore, school["A"], run_id)
    r = httpx.get(sync_url(kore, school["A"], run_id=run_id) + query, headers=auth("t-inst"))
    assert r.status_code == 400, r.text


@pytest.mark.parametrize(
    "path",
    [
        "api/courses/../grades/sync",
        "api/courses/c-XYZ/grades/sync",
        "api/courses/c-0123456789abcdef0/grades/sync",
        "api/courses/{A}/grades/sync/not-a-run",
        "api/courses/{A}/grades/sync/" + "0" * 32,
        "api/courses/{A}/grades/sync/..%2F..%2Fx",
        "api/courses/{A}/roster/sync/" + "f" * 33,
    ],
)
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_malformed_paths_are_client_errors(kore, school, path, method):
    r = raw_request(
        kore,
        method,
        PREFIX + path.format(A=school["A"]),
        "t-inst",
        b"{}" if method == "POST" else None,
    )
    assert 400 <= r.status < 500, (r.status, r.body)
    assert json.loads(r.body)["status"] == r.status


# --- cookies and XSRF -------------------------------------------------------------------------


def test_cookie_post_needs_the_xsrf_token(kore, hub, school):
    hub.add_user("t-inst-oauth", "u1")
    with httpx.Client(base_url=kore.base, follow_redirects=False) as browser:
        browser.cookies.set("jupyterhub-session-id", "session-9")
        log_in_with_cookie(kore, hub, browser, "t-inst-oauth")
        url = f"{PREFIX}api/courses/{school['A']}/grades/sync"
        assert browser.get(url).status_code == 200
        r = browser.post(url, content=b"{}")
        assert r.status_code == 403 and "XSRF" in r.json()["message"]
        r = browser.post(url, content=b"{}", headers={"X-XSRFToken": "forged"})
        assert r.status_code == 403
        token = xsrf_token(kore, "t-inst-oauth", "session-9")
        browser.cookies.set("_xsrf", token)
        r = browser.post(url, content=b"{}", headers={"X-XSRFToken": token})
        assert r.status_code == 202, r.text
    wait(kore, school["A"], r.json()["run_id"])
