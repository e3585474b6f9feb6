"""The grade sync job (kore/sync/grades.py) against the built-in LMS (tests/builtin_lms.py:
``python -m ananke_hub.testlms --test-api`` in its Moodle profile).

A course is recorded in a SQLite registry as launches record it (with the LMS's AGS
and NRPS endpoints, from its activity "homework"), its files and gradebook made by
nbgrader_setup, and the gradebook filled through nbgrader's API. Each test runs the job
in-process and looks at what arrived in the LMS (its test API) and what the registry
says. The LMS keeps a score only if its timestamp is later, in whole seconds, than the
one it holds (Moodle's 409): a test that sends a learner's score again waits for the
next second first (:func:`a_second_later`), as no person clicks twice within one.
"""

import json
import time
from contextlib import contextmanager
from datetime import timedelta

import pytest
from builtin_lms import BuiltinLMS, started
from sqlalchemy import delete, select, update

from ananke_hub import lti_spec
from ananke_hub.courses import nbgrader_setup
from ananke_hub.courses.identity import LaunchInfo
from ananke_hub.courses.layout import CourseLayout
from ananke_hub.courses.models import Member
from ananke_hub.courses.registry import CourseRegistry
from ananke_hub.courses.settings import CourseSettings
from ananke_hub.keys import KeyStore
from ananke_hub.registration import LMSRegistration
from ananke_hub.testlms import constants as C
from ananke_hub.usernames import hub_username
from kore.lti import LTIAdvantage, LTIClient
from kore.models import SyncDelivery, SyncLock
from kore.openapi import BodyError, request_bodies
from kore.sync.grades import TAG, GradeSyncJob, GradeSyncOptions, run_grade_sync
from kore.sync.manager import KORE_OWNER, interrupt_predecessor
from kore.sync.store import IntentRecord, SyncAlreadyRunning, SyncStore

ISSUER = "https://lms.example.edu"
CLIENT = "tool-client"
#: The LMS's activity the launches come from; "exam" is its other one.
LINK = "homework"
SCORE = C.AGS_SCOPE_SCORE
LINEITEM = C.AGS_SCOPE_LINEITEM
RESULT_READONLY = C.AGS_SCOPE_RESULT_READONLY
ROLES = {
    "instructor": [lti_spec.ROLE_INSTRUCTOR],
    "ta": [lti_spec.ROLE_INSTRUCTOR, lti_spec.ROLE_TEACHING_ASSISTANT],
    "learner": [lti_spec.ROLE_LEARNER],
}
ALL_SCOPES = (LINEITEM, RESULT_READONLY, SCORE)

# nbgrader's own API warns while the tests make submissions; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore::sqlalchemy.exc.SAWarning")


# --- a course as launches leave it ------------------------------------------------------------


def launch_claims(lms: BuiltinLMS, sub: str, role: str, *, scopes=ALL_SCOPES, link=LINK, **extra):
    claims = {
        "iss": ISSUER,
        "aud": CLIENT,
        "sub": sub,
        lti_spec.DEPLOYMENT_ID: "d1",
        lti_spec.RESOURCE_LINK: {"id": link, "title": "Homework"},
        lti_spec.CONTEXT: {"id": lms.context, "title": "Data Science"},
        lti_spec.ROLES: ROLES[role],
        lti_spec.AGS_ENDPOINT: {
            "scope": list(scopes),
            "lineitems": lms.lineitems_url,
            "lineitem": lms.lineitem_url,
        },
        lti_spec.NRPS: {
            "context_memberships_url": lms.memberships_url,
            "service_versions": ["2.0"],
        },
        "given_name": f"Given{sub}",
        "family_name": f"Family{sub}",
        "email": f"{sub}@example.edu",
    }
    claims.update(extra)
    return claims


def launch(registry, lms, sub, role, **kwargs) -> str:
    info = LaunchInfo.from_id_token(launch_claims(lms, sub, role, **kwargs), hub_username(sub))
    registry.record_launch(info)
    return info.course_id


@contextmanager
def gradebook(layout: CourseLayout, course_id: str):
    from nbgrader.api import Gradebook

    gb = Gradebook(layout.course(course_id).gradebook_url, course_id)
    try:
        yield gb
    finally:
        gb.close()


def wait_for_gradebook(layout: CourseLayout, course_id: str, timeout: float = 180) -> None:
    """Wait until the hub has set the course up: a learner's first launch of a new course
    returns before the set-up (it runs in the background; the lab start waits for it), and
    nbgrader's Gradebook would otherwise make a gradebook of its own (with the `alembic`
    command, which needs the venv's bin directory on PATH)."""
    path = layout.course(course_id).gradebook
    for _ in range(int(timeout / 0.2)):
        if path.exists():
            return
        time.sleep(0.2)
    pytest.fail(f"the hub did not set up {course_id} in {timeout} s")


def add_assignment(layout, course_id, name, *cells):
    """An assignment with grade cells of these maxima."""
    with gradebook(layout, course_id) as gb:
        gb.add_assignment(name)
        gb.add_notebook("p1", name)
        for n, maximum in enumerate(cells):
            gb.add_grade_cell(f"q{n}", "p1", name, max_score=maximum, cell_type="markdown")


def submit(layout, course_id, username, assignment, *scores, lms_id=None, manual=False):
    """A graded submission; ``manual``: its cells still need manual grading."""
    with gradebook(layout, course_id) as gb:
        student = gb.update_or_create_student(username)
        if lms_id is not None:
            student.lms_user_id = lms_id
        gb.db.commit()
        gb.add_submission(assignment, username)
        for n, score in enumerate(scores):
            grade = gb.find_grade(f"q{n}", "p1", assignment, username)
            grade.manual_score = score
            grade.needs_manual_grade = manual
        gb.db.commit()


def set_score(layout, course_id, username, assignment, cell, score):
    with gradebook(layout, course_id) as gb:
        gb.find_grade(f"q{cell}", "p1", assignment, username).manual_score = score
        gb.db.commit()


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def key_store(tmp_path_factory):
    store = KeyStore(tmp_path_factory.mktemp("tool") / "keys")
    store.ensure()
    return store


@pytest.fixture(scope="module")
def shared_lms(tmp_path_factory, key_store):
    with started(tmp_path_factory.mktemp("lms") / "state", key_store, CLIENT) as lms:
        yield lms


@pytest.fixture
def lms(shared_lms, key_store):
    """The LMS with learners 101 to 104 in course ds101, nothing else changed."""
    shared_lms.keyset.jwks = key_store.jwks
    shared_lms.reset(learners=("101", "102", "103", "104"))
    return shared_lms


def a_second_later() -> None:
    """Wait for the next whole second: the LMS refuses (409) a score that is not newer
    in whole seconds than the one it holds, as Moodle does."""
    now = int(time.time())
    while int(time.time()) <= now:
        time.sleep(0.05)


@pytest.fixture
def registry(tmp_path):
    reg = CourseRegistry(url=f"sqlite:///{tmp_path / 'courses.sqlite'}")
    yield reg
    reg.close()


@pytest.fixture
def layout(tmp_path):
    return CourseLayout(
        homes_root=str(tmp_path / "homes"), exchange_root=str(tmp_path / "exchange")
    )


def settings(**overrides):
    values = dict(retry_delay=0.01, max_retry_delay=0.05, request_timeout=5.0)
    values.update(overrides)
    return LTIAdvantage(**values)


@pytest.fixture
def client_settings():
    return settings()


@pytest.fixture
async def client(lms, key_store, client_settings):
    registration = LMSRegistration(issuer=ISSUER, client_id=CLIENT, access_token_url=lms.token_url)
    c = LTIClient(registration=registration, key_store=key_store, settings=client_settings)
    yield c
    await c.aclose()


@pytest.fixture
def course(registry, lms, layout):
    """Instructor u1, learners u101 and u102 launched; course files on disk."""
    course_id = launch(registry, lms, "1", "instructor")
    launch(registry, lms, "101", "learner")
    launch(registry, lms, "102", "learner")
    nbgrader_setup.ensure_course_files(layout.course(course_id), course_id, CourseSettings())
    return course_id


@pytest.fixture
def homework(course, layout):
    """hw1 (max 10) and hw2 (max 5); u101 did both, u102 only hw1; u103 submitted hw1
    without ever launching (in the gradebook with an LMS id)."""
    add_assignment(layout, course, "hw1", 6, 4)
    add_assignment(layout, course, "hw2", 5)
    submit(layout, course, "u101", "hw1", 5, 2)
    submit(layout, course, "u101", "hw2", 5)
    submit(layout, course, "u102", "hw1", 3, 0)
    submit(layout, course, "u103", "hw1", 1, 1, lms_id="103")
    return course


async def sync(course_id, registry, layout, client, **options):
    return await run_grade_sync(
        course_id, options, registry=registry, layout=layout, lti_client=client, who="uinst"
    )


def results(registry, run) -> dict:
    _, rows = SyncStore(registry).results(run["run_id"])
    return {(r["username"], r["item"]): r for r in rows}


def item_for(lms: BuiltinLMS, resource_id: str) -> dict:
    """The line item (as the LMS lists it) with this resourceId; its URL is ``["id"]``."""
    (item,) = [i for i in lms.lineitems() if i["resourceId"] == resource_id]
    return item


def last(lms, item, user):
    """The last score ``user`` got on ``item`` (a line item dict or URL)."""
    return lms.scores_of(item if isinstance(item, str) else item["id"], user)[-1]


def each_score_once(lms: BuiltinLMS) -> bool:
    """Every score the LMS holds arrived once, and none was refused as not newer."""
    posts = lms.posts()
    return all(p["accepted"] in (0, 1) for p in posts) and not any(
        p["refused"].get("409") for p in posts
    )


# --- per assignment and total -----------------------------------------------------------------


async def test_scores_per_assignment_and_the_total(homework, registry, layout, client, lms):
    run = await sync(homework, registry, layout, client)
    assert run["state"] == "finished", run
    # three students (two launched, one only in the gradebook) x (hw1, hw2, total)
    assert run["total"] == run["done"] == 9
    assert run["counts"] == {"sent": 9}

    hw1, hw2 = item_for(lms, "nbgrader:hw1"), item_for(lms, "nbgrader:hw2")
    assert (hw1["label"], hw1["scoreMaximum"], hw1["tag"], hw1["resourceLinkId"]) == (
        "hw1",
        10,
        TAG,
        LINK,
    )
    assert hw2["scoreMaximum"] == 5
    score = last(lms, hw1, "101")
    assert (score["scoreGiven"], score["scoreMaximum"]) == (7, 10)
    assert (score["activityProgress"], score["gradingProgress"]) == ("Completed", "FullyGraded")
    # u102 did not submit hw2: 0 by default
    missing = last(lms, hw2, "102")
    assert (missing["scoreGiven"], missing["gradingProgress"]) == (0, "FullyGraded")
    assert missing["activityProgress"] == "Initialized"
    # the total goes to the activity's own line item (its URL has a query)
    totals = {user: last(lms, lms.lineitem_url, user) for user in ("101", "102", "103")}
    assert {u: (s["scoreGiven"], s["scoreMaximum"]) for u, s in totals.items()} == {
        "101": (12, 15),
        "102": (3, 15),
        "103": (2, 15),
    }
    assert totals["101"]["activityProgress"] == "Completed"
    assert totals["102"]["activityProgress"] == "InProgress"
    # every score arrived once
    assert each_score_once(lms) and sum(lms.accepted_counts()) == 9
    # results per student and item in the registry
    rows = results(registry, run)
    assert rows[("u101", "assignment:hw1")]["status"] == "sent"
    assert rows[("u101", "assignment:hw1")]["lineitem"] == hw1["id"]
    assert rows[("u103", "total")]["score_given"] == 2
    assert SyncStore(registry).get_run(homework, run["run_id"])["state"] == "finished"


async def test_a_second_sync_sends_nothing_unchanged(homework, registry, layout, client, lms):
    await sync(homework, registry, layout, client)
    posts, items = lms.score_posts(), len(lms.lineitems())
    run = await sync(homework, registry, layout, client)
    assert run["counts"] == {"unchanged": 9}
    assert lms.score_posts() == posts
    assert len(lms.lineitems()) == items  # line items found again, none created
    # a changed score: only it and that student's total go out
    set_score(layout, homework, "u102", "hw1", 0, 6)
    a_second_later()
    run = await sync(homework, registry, layout, client)
    assert run["counts"] == {"sent": 2, "unchanged": 7}
    assert last(lms, item_for(lms, "nbgrader:hw1"), "102")["scoreGiven"] == 6
    assert last(lms, lms.lineitem_url, "102")["scoreGiven"] == 6
    # resend: everything again
    a_second_later()
    run = await sync(homework, registry, layout, client, resend=True)
    assert run["counts"] == {"sent": 9}
    assert sum(lms.accepted_counts()) == 9 + 2 + 9 and not any(p["refused"] for p in lms.posts())


async def test_missing_as_not_submitted(homework, registry, layout, client, lms):
    launch(registry, lms, "104", "learner")  # launched, never submitted anything
    run = await sync(homework, registry, layout, client, missing="not_submitted")
    assert run["state"] == "finished"
    hw2 = item_for(lms, "nbgrader:hw2")
    for user in ("102", "104"):
        score = last(lms, hw2, user)
        assert "scoreGiven" not in score and "scoreMaximum" not in score
        assert (score["activityProgress"], score["gradingProgress"]) == ("Initialized", "NotReady")
    total = last(lms, lms.lineitem_url, "104")
    assert "scoreGiven" not in total and total["gradingProgress"] == "NotReady"
    assert last(lms, lms.lineitem_url, "102")["scoreGiven"] == 3  # submitted hw1 only


async def test_a_learner_who_never_submitted_gets_zero(homework, registry, layout, client, lms):
    launch(registry, lms, "104", "learner")
    await sync(homework, registry, layout, client)
    assert last(lms, item_for(lms, "nbgrader:hw1"), "104")["scoreGiven"] == 0
    assert last(lms, lms.lineitem_url, "104")["scoreGiven"] == 0


async def test_pending_manual_grading(course, registry, layout, client, lms):
    add_assignment(layout, course, "hw1", 10)
    submit(layout, course, "u101", "hw1", 4, manual=True)
    run = await sync(course, registry, layout, client)
    score = last(lms, item_for(lms, "nbgrader:hw1"), "101")
    assert (score["activityProgress"], score["gradingProgress"]) == ("Submitted", "PendingManual")
    assert score["scoreGiven"] == 4
    assert last(lms, lms.lineitem_url, "101")["gradingProgress"] == "PendingManual"
    assert run["state"] == "finished"


async def test_a_submission_the_sandbox_stopped_is_reported_not_sent(
    homework, registry, layout, client, lms
):
    from ananke_hub.lab.sandbox import records

    home = layout.course(homework).home
    stopped = "Autograding was stopped: the student's code exceeded the time limit of 600 s."
    records.update(home, "hw1", "u102", stopped)
    run = await sync(homework, registry, layout, client)
    rows = results(registry, run)
    for item in ("assignment:hw1", "total"):
        assert rows[("u102", item)]["status"] == "failed"
    assert stopped in rows[("u102", "assignment:hw1")]["message"]
    assert "hw1 was stopped at a limit" in rows[("u102", "total")]["message"]
    hw1 = item_for(lms, "nbgrader:hw1")
    assert lms.scores_of(hw1["id"], "102") == []  # no score at all, not a 0
    assert rows[("u102", "assignment:hw2")]["status"] == "sent"  # the rest goes out
    assert rows[("u101", "assignment:hw1")]["status"] == "sent"
    # Autograded again without hitting a limit: the record goes, the score is sent.
    records.update(home, "hw1", "u102", None)
    run = await sync(homework, registry, layout, client)
    assert results(registry, run)[("u102", "assignment:hw1")]["status"] == "sent"
    assert last(lms, hw1, "102")["scoreGiven"] == 3


async def test_existing_line_items_are_reused_and_updated(course, registry, layout, client, lms):
    add_assignment(layout, course, "hw1", 10)
    submit(layout, course, "u101", "hw1", 8)
    mine = lms.add_lineitem("old label", 20, resource_id="nbgrader:hw1", tag=TAG, link=LINK)
    other_link = lms.add_lineitem("hw1", 10, resource_id="nbgrader:hw1", tag=TAG, link="exam")
    run = await sync(course, registry, layout, client)
    assert run["state"] == "finished"
    assert len(lms.created_items()) == 2  # nothing created
    (stored,) = [i for i in lms.lineitems() if i["id"] == mine]
    assert (stored["label"], stored["scoreMaximum"]) == ("hw1", 10)  # updated to nbgrader's
    assert last(lms, mine, "101")["scoreGiven"] == 8
    # another activity's line item is left alone
    assert not [p for p in lms.posts() if p["lineitem"] == other_link]


async def test_grade_sync_only_sends_the_total(homework, registry, layout, client, lms):
    launch(registry, lms, "1", "instructor", scopes=[SCORE])  # Moodle: "grade sync only"
    run = await sync(homework, registry, layout, client)
    assert run["state"] == "finished"
    assert run["counts"] == {"sent": 3}
    assert not lms.created_items()
    assert not lms.requests(suffix="/lineitems")
    assert {u: last(lms, lms.lineitem_url, u)["scoreGiven"] for u in ("101", "102", "103")} == {
        "101": 12,
        "102": 3,
        "103": 2,
    }
    assert any("grade sync only" in w for w in run["warnings"])
    assert set(lms.token_requests()[0]["form"]["scope"].split()) == {SCORE}


async def test_no_score_scope_fails_every_item_clearly(homework, registry, layout, client, lms):
    launch(registry, lms, "1", "instructor", scopes=[RESULT_READONLY])
    run = await sync(homework, registry, layout, client)
    assert run["state"] == "failed"
    assert run["counts"] == {"failed": 3}
    assert all("no AGS score scope" in r["message"] for r in results(registry, run).values())
    assert lms.score_posts() == 0 and not lms.token_requests()


# --- failures ---------------------------------------------------------------------------------


async def test_token_refused(homework, registry, layout, client, lms, tmp_path):
    other = KeyStore(tmp_path / "other")
    other.ensure()
    lms.keyset.jwks = other.jwks  # the LMS knows another key than the one Kore signs with
    run = await sync(homework, registry, layout, client)
    assert run["state"] == "failed"
    assert run["counts"] == {"failed": 9}
    rows = results(registry, run).values()
    assert all("refused Kore's access token request" in r["message"] for r in rows)
    assert lms.score_posts() == 0
    assert len(lms.token_requests()) == 1


async def test_server_errors_and_429_are_retried(homework, registry, layout, client, lms):
    lms.fault(**SCORES, status=500, count=3)
    lms.fault(**SCORES, status=429, count=2, retry_after=0)
    lms.fault(**CREATE, status=503, count=1)
    run = await sync(homework, registry, layout, client)
    assert run["counts"] == {"sent": 9}, run
    # retried requests arrived once each
    assert each_score_once(lms) and sum(lms.accepted_counts()) == 9
    assert len(lms.created_items()) == 2


@pytest.mark.parametrize(("status", "words"), [(403, "does not let"), (422, "refuses the score")])
async def test_a_refused_score_fails_only_that_item(
    homework, registry, layout, client, lms, status, words
):
    lms.fault(**SCORES, status=status, user_id="102", body='{"error": "no way"}')
    run = await sync(homework, registry, layout, client)
    assert run["state"] == "failed"
    assert run["counts"] == {"sent": 6, "failed": 3}
    rows = results(registry, run)
    failed = rows[("u102", "assignment:hw1")]
    assert failed["status"] == "failed"
    assert "no way" in failed["message"] and words in failed["message"]
    # a retry sends only what failed
    lms.clear_faults()
    posts = lms.score_posts()
    run = await sync(homework, registry, layout, client)
    assert run["counts"] == {"sent": 3, "unchanged": 6}
    assert lms.score_posts() == posts + 3
    assert each_score_once(lms) and sum(lms.accepted_counts()) == 9


async def test_a_person_the_lms_does_not_grade_is_not_gradable_not_failed(
    homework, registry, layout, client, lms
):
    # Moodle answers 400 to scores of people without a gradebook role (a non-editing
    # teacher arrives as Learner): reported as such, and the run is not red for it.
    lms.set_roster(
        [{"user_id": u} for u in ("101", "103", "104")] + [{"user_id": "102", "gradable": False}]
    )
    run = await sync(homework, registry, layout, client)
    assert run["state"] == "finished", run
    assert run["counts"] == {"sent": 6, "not_gradable": 3}
    assert run["failed"] == 0
    row = results(registry, run)[("u102", "assignment:hw1")]
    assert row["status"] == "not_gradable"
    assert "Not gradable in the LMS" in row["message"]
    assert any("non-editing teachers" in w for w in run["warnings"])


async def test_unknown_student(homework, registry, layout, client, lms):
    launch(registry, lms, "105", "learner")  # the LMS does not know 105 (anymore)
    run = await sync(homework, registry, layout, client)
    rows = results(registry, run)
    # Moodle refuses their scores as it refuses a non-editing teacher's, with 400
    # "Incorrect score received" (the former fake said 422 "not in course"): Kore cannot
    # tell the two apart and reports them as not gradable in the LMS.
    for item in ("assignment:hw1", "assignment:hw2", "total"):
        assert rows[("u105", item)]["status"] == "not_gradable"
        assert "Incorrect score received" in rows[("u105", item)]["message"]
        assert "'105'" in rows[("u105", item)]["message"]
    assert run["counts"] == {"sent": 9, "not_gradable": 3}


async def test_404_for_a_student_of_an_existing_line_item(homework, registry, layout, client, lms):
    lms.fault(**SCORES, status=404, user_id="101", body='{"error": "no such user"}')
    run = await sync(homework, registry, layout, client)
    rows = results(registry, run)
    assert rows[("u101", "assignment:hw1")]["status"] == "failed"
    assert "no such user" in rows[("u101", "assignment:hw1")]["message"]
    assert len(lms.created_items()) == 2  # nothing recreated: the line item is there


async def test_a_deleted_line_item_is_created_again_once(homework, registry, layout, client, lms):
    await sync(homework, registry, layout, client)
    hw1 = item_for(lms, "nbgrader:hw1")
    # Deleted in the LMS, but still listed (a stale list, or deleted just after it).
    lms.delete_lineitem(hw1["id"], stale=True)
    a_second_later()  # the resend's other scores are newer than the first sync's
    run = await sync(homework, registry, layout, client, resend=True)
    assert run["counts"] == {"sent": 9}, run
    new = item_for(lms, "nbgrader:hw1")
    assert new["id"] != hw1["id"]
    on_new = {p["userId"]: p["accepted"] for p in lms.posts() if p["lineitem"] == new["id"]}
    assert on_new == {"101": 1, "102": 1, "103": 1}
    assert any("was deleted in the LMS" in w for w in run["warnings"])
    assert results(registry, run)[("u101", "assignment:hw1")]["lineitem"] == new["id"]


async def test_garbage_line_item_list(homework, registry, layout, client, lms):
    lms.fault(**LIST, status=200, body="<html>Please log in</html>", count=1)
    run = await sync(homework, registry, layout, client)
    rows = results(registry, run)
    assert rows[("u101", "assignment:hw1")]["status"] == "failed"
    assert "not JSON" in rows[("u101", "assignment:hw1")]["message"]
    assert rows[("u101", "total")]["status"] == "sent"  # the total still went out
    assert run["counts"] == {"sent": 3, "failed": 6}


async def test_score_above_the_maximum_is_sent_with_a_warning(
    course, registry, layout, client, lms
):
    add_assignment(layout, course, "hw1", 10)
    submit(layout, course, "u101", "hw1", 12)  # extra credit
    run = await sync(course, registry, layout, client)
    assert last(lms, item_for(lms, "nbgrader:hw1"), "101")["scoreGiven"] == 12
    row = results(registry, run)[("u101", "assignment:hw1")]
    assert row["status"] == "sent" and "above the maximum" in row["message"]


async def test_gradebook_without_submissions(course, registry, layout, client, lms):
    add_assignment(layout, course, "hw1", 10)
    run = await sync(course, registry, layout, client)
    assert run["state"] == "finished" and run["counts"] == {"sent": 4}
    assert last(lms, lms.lineitem_url, "101")["scoreGiven"] == 0
    a_second_later()
    run = await sync(course, registry, layout, client, missing="not_submitted")
    assert run["counts"] == {"sent": 4}
    assert last(lms, lms.lineitem_url, "102")["gradingProgress"] == "NotReady"


async def test_gradebook_without_assignments(course, registry, layout, client, lms):
    run = await sync(course, registry, layout, client)
    assert run["state"] == "finished"
    assert run["counts"] == {"skipped": 2}
    rows = results(registry, run)
    assert "no assignment with points" in rows[("u101", "total")]["message"]
    assert lms.score_posts() == 0


async def test_course_without_files_yet(registry, layout, client, lms):
    course_id = launch(registry, lms, "1", "instructor")
    launch(registry, lms, "101", "learner")
    run = await sync(course_id, registry, layout, client)
    assert run["state"] == "finished" and run["counts"] == {"skipped": 1}
    assert any("no nbgrader gradebook" in w for w in run["warnings"])


async def test_who_is_not_sent(homework, registry, layout, client, lms):
    submit(layout, homework, "uorphan", "hw2", 5)  # no LMS id, never launched
    submit(layout, homework, "u1", "hw2", 5)  # the instructor tried it out
    launch(registry, lms, "104", "learner")
    with registry.session() as s, s.begin():
        s.execute(update(Member).where(Member.username == "u104").values(active=False))
    run = await sync(homework, registry, layout, client)
    rows = results(registry, run)
    assert "no LMS user id" in rows[("uorphan", "total")]["message"]
    assert "instructor of this course" in rows[("u1", "total")]["message"]
    assert "no longer in the LMS course" in rows[("u104", "total")]["message"]
    assert {rows[(u, "total")]["status"] for u in ("uorphan", "u1", "u104")} == {"skipped"}
    assert lms.scores_of(lms.lineitem_url, "1") == lms.scores_of(lms.lineitem_url, "104") == []
    assert run["state"] == "finished"


async def test_lms_down_stops_after_a_few(homework, registry, layout, lms, key_store):
    registration = LMSRegistration(issuer=ISSUER, client_id=CLIENT, access_token_url=lms.token_url)
    c = LTIClient(
        registration=registration,
        key_store=key_store,
        settings=settings(max_attempts=2, abort_after=2, concurrency=1),
    )
    lms.fault(**SCORES, status=503)
    try:
        run = await sync(homework, registry, layout, c)
    finally:
        await c.aclose()
    assert run["state"] == "failed"
    assert run["counts"] == {"failed": 9}
    assert lms.score_posts() == 4  # two scores, two attempts each; then it stopped
    rows = results(registry, run).values()
    assert sum("did not answer 2 scores in a row" in r["message"] for r in rows) == 7


async def test_a_token_the_lms_keeps_refusing_stops_the_sync(
    homework, registry, layout, lms, key_store
):
    registration = LMSRegistration(issuer=ISSUER, client_id=CLIENT, access_token_url=lms.token_url)
    c = LTIClient(registration=registration, key_store=key_store, settings=settings(concurrency=1))
    lms.fault(**SCORES, status=401)
    try:
        run = await sync(homework, registry, layout, c)
    finally:
        await c.aclose()
    assert run["state"] == "failed" and run["counts"] == {"failed": 9}
    assert lms.score_posts() == 2  # the first score, again with a new token; then it stopped
    assert len(lms.token_requests()) == 2
    assert any("even after a new one was issued" in w for w in run["warnings"])


# --- the run record -----------------------------------------------------------------------


async def test_progress_is_reported(homework, registry, layout, client):
    seen = []
    job = GradeSyncJob(
        homework,
        GradeSyncOptions(),
        registry=registry,
        layout=layout,
        lti_client=client,
        listener=lambda j: seen.append((j.progress.done, j.progress.total)),
    )
    run_id = await job.begin()
    await job.run()
    assert seen[-1] == (9, 9)
    dones = [d for d, _ in seen]
    assert dones == sorted(dones) and 1 in dones
    stored = SyncStore(registry).get_run(homework, run_id)
    assert (stored["done"], stored["total"], stored["options"]) == (
        9,
        9,
        {"missing": "zero", "resend": False},
    )


def test_one_sync_at_a_time_per_course(registry, lms, course):
    store = SyncStore(registry)
    first = store.start_run(course, "grades", "uinst", {})
    with pytest.raises(SyncAlreadyRunning) as info:
        store.start_run(course, "grades", "uother", {})
    assert info.value.run_id == first
    assert store.start_run(course, "roster", "uinst", {})  # another kind may run
    # a run whose process died (no heartbeat for long) no longer blocks
    with registry.session() as s, s.begin():
        s.execute(update(SyncLock).values(heartbeat_at=SyncLock.heartbeat_at - timedelta(hours=1)))
    second = store.start_run(course, "grades", "uother", {})
    assert second != first
    assert store.get_run(course, first)["state"] == "interrupted"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"missing": "nothing"}, '"missing" must be'),
        ({"missing": 0}, '"missing" must be'),
        ({"resend": "yes"}, '"resend" must be true or false'),
        ({"force": True}, 'Unknown field(s) "force"'),
        ([], "Send a JSON object"),
    ],
)
def test_bad_options(body, message):
    # The options are checked once, against the OpenAPI document (kore.openapi).
    operation = request_bodies().operation("api/courses/c-0123456789abcdef/grades/sync", "POST")
    with pytest.raises(BodyError) as info:
        operation.parse(json.dumps(body).encode())
    assert message in str(info.value)


# --- the CLI: `ananke grades sync` / `ananke roster sync` -------------------------------------


@pytest.fixture
def admin_env(tmp_path, monkeypatch, lms):
    """What an admin on the hub host has: config fragments, state (registry, Kore's keys)."""
    from ananke_hub.paths import StateLayout

    state = StateLayout(tmp_path / "state")
    keys = KeyStore(state.kore_keys)
    keys.ensure()
    config = tmp_path / "config.d"
    config.mkdir()
    homes, exchange = tmp_path / "homes", tmp_path / "exchange"
    for var, value in {
        "ANANKE_STATE_DIR": state.root,
        "ANANKE_CONFIG_DIR": config,
        "ANANKE_HOMES_ROOT": homes,
        "ANANKE_EXCHANGE_ROOT": exchange,
    }.items():
        monkeypatch.setenv(var, str(value))
    monkeypatch.delenv("JUPYTERHUB_API_TOKEN", raising=False)
    lms.keyset.jwks = keys.jwks  # the LMS knows the keys in the admin's state
    lms.set_roster([{"user_id": "101"}, {"user_id": "102"}])
    (config / "30_lms.py").write_text(
        "c = get_config()  # noqa\n"
        f"c.LMSRegistration.issuer = {ISSUER!r}\n"
        f"c.LMSRegistration.client_id = {CLIENT!r}\n"
        f"c.LMSRegistration.access_token_url = {lms.token_url!r}\n"
        "c.LTIAdvantage.retry_delay = 0.01\n"
    )
    registry = CourseRegistry(url=f"sqlite:///{state.root / 'courses.sqlite'}")
    layout = CourseLayout(homes_root=str(homes), exchange_root=str(exchange))
    course_id = launch(registry, lms, "1", "instructor")
    launch(registry, lms, "101", "learner")
    launch(registry, lms, "102", "learner")
    nbgrader_setup.ensure_course_files(layout.course(course_id), course_id, CourseSettings())
    add_assignment(layout, course_id, "hw1", 10)
    submit(layout, course_id, "u101", "hw1", 8)
    registry.close()
    return {"lms": lms, "course": course_id, "config": config, "keys": keys}


def test_cli_grade_sync(admin_env, capsys):
    from ananke_hub.cli import main

    lms, course_id = admin_env["lms"], admin_env["course"]
    assert main(["grades", "sync", course_id]) == 0
    out, err = capsys.readouterr()
    assert f"Grade sync of {course_id}" in out and "finished" in out
    lines = out.splitlines()
    header = next(line for line in lines if line.startswith("item"))
    assert header.split() == ["item", "sent", "unchanged", "skipped", "failed"]
    assert next(line for line in lines if line.startswith("hw1")).split() == [
        "hw1",
        "2",
        "0",
        "0",
        "0",
    ]
    assert "[" + "#" * 30 + "] 4/4" in err  # the progress bar, done
    assert lms.scores_of(lms.lineitem_url, "101")[-1]["scoreGiven"] == 8
    # again: u102's zeros become "not submitted", a second later
    a_second_later()
    assert main(["grades", "sync", course_id, "--missing", "not_submitted"]) == 0
    out, _ = capsys.readouterr()
    assert "Course total" in out


def test_cli_exit_status_and_failures(admin_env, capsys):
    from ananke_hub.cli import main

    lms, course_id = admin_env["lms"], admin_env["course"]
    lms.fault(**SCORES, status=403, user_id="102", body='{"error": "closed"}')
    assert main(["grades", "sync", course_id, "--resend"]) == 1
    out, _ = capsys.readouterr()
    assert "Failed or unknown (2):" in out and "u102" in out and "closed" in out
    assert main(["grades", "sync", "c-0123456789abcdef"]) == 2
    assert "no course c-0123456789abcdef" in capsys.readouterr().err
    assert main(["grades", "sync", "../etc"]) == 2


def test_cli_roster_sync_without_a_hub_token(admin_env, capsys):
    from ananke_hub.cli import main

    lms, course_id = admin_env["lms"], admin_env["course"]
    lms.set_roster(
        [
            {"user_id": "1", "roles": ["Instructor"]},
            {"user_id": "101", "roles": ["Learner"]},
            {"user_id": "103", "roles": ["Learner"]},
        ]
    )
    assert main(["roster", "sync", course_id]) == 0
    out, _ = capsys.readouterr()
    assert "Roster sync of" in out and "added 1" in out and "deactivated 1" in out
    assert "no hub API token" in out


def test_cli_without_keys(admin_env, capsys):
    import shutil

    from ananke_hub.cli import main

    shutil.rmtree(admin_env["keys"].directory)
    assert main(["roster", "sync", admin_env["course"]]) == 2
    assert "no signing key" in capsys.readouterr().err


# --- Moodle's omitted lineitem, slow answers, killed syncs (issue 11) -----------------------------


def without_lineitem(lms: BuiltinLMS) -> dict:
    """The AGS claim as Moodle sends it once tool-made line items are bound to the link."""
    return {lti_spec.AGS_ENDPOINT: {"scope": list(ALL_SCOPES), "lineitems": lms.lineitems_url}}


async def test_the_total_stays_current_when_launches_leave_out_lineitem(
    homework, registry, layout, client, lms
):
    # The LMS lists the activity's own line item with the link, as Moodle does.
    run = await sync(homework, registry, layout, client)
    assert run["counts"] == {"sent": 9}
    # the next launches from the link carry no lineitem (the columns are bound to it)
    launch(registry, lms, "101", "learner", **without_lineitem(lms))
    assert registry.get(homework).lineitem_url == lms.lineitem_url
    set_score(layout, homework, "u101", "hw2", 0, 2)
    a_second_later()
    run = await sync(homework, registry, layout, client)
    assert run["counts"] == {"sent": 2, "unchanged": 7}, run
    assert run["warnings"] == []
    assert last(lms, lms.lineitem_url, "101")["scoreGiven"] == 9


async def test_the_activitys_own_line_item_is_found_in_the_container(registry, layout, client, lms):
    # A course whose launches never named its own line item: Kore finds it by the link.
    lms.add_lineitem("Someone else's", 50, resource_id="quiz", tag="other")
    course_id = launch(registry, lms, "1", "instructor", **without_lineitem(lms))
    launch(registry, lms, "101", "learner", **without_lineitem(lms))
    nbgrader_setup.ensure_course_files(layout.course(course_id), course_id, CourseSettings())
    add_assignment(layout, course_id, "hw1", 10)
    submit(layout, course_id, "u101", "hw1", 8)
    run = await sync(course_id, registry, layout, client)
    assert run["counts"] == {"sent": 2}, run
    assert last(lms, lms.lineitem_url, "101")["scoreGiven"] == 8
    assert results(registry, run)[("u101", "total")]["lineitem"] == lms.lineitem_url


async def test_a_missing_own_line_item_is_a_warning_not_a_silent_skip(
    registry, layout, client, lms
):
    # The activity is not graded in the LMS (no coupled item bound to the link): in
    # Moodle, grade type None; here its line item is deleted.
    lms.delete_lineitem(lms.lineitem_url)
    course_id = launch(registry, lms, "1", "instructor", **without_lineitem(lms))
    launch(registry, lms, "101", "learner", **without_lineitem(lms))
    nbgrader_setup.ensure_course_files(layout.course(course_id), course_id, CourseSettings())
    add_assignment(layout, course_id, "hw1", 10)
    submit(layout, course_id, "u101", "hw1", 8)
    run = await sync(course_id, registry, layout, client)
    assert run["counts"] == {"sent": 1, "skipped": 1}
    assert any("course total was not sent" in w for w in run["warnings"]), run
    assert "grade type to Point" in results(registry, run)[("u101", "total")]["message"]


@pytest.fixture
async def impatient(lms, key_store):
    """A client that gives up on an answer after 1 s (the slow answers come after 2 s)."""
    registration = LMSRegistration(issuer=ISSUER, client_id=CLIENT, access_token_url=lms.token_url)
    c = LTIClient(
        registration=registration, key_store=key_store, settings=settings(request_timeout=1.0)
    )
    yield c
    await c.aclose()


async def test_a_line_item_created_late_is_not_created_twice(
    homework, registry, layout, impatient, lms
):
    lms.fault(**CREATE, after="late", count=2, delay=2.0)
    run = await sync(homework, registry, layout, impatient)
    assert run["counts"] == {"sent": 9}, run
    made = [i for i in lms.lineitems() if i["tag"] == TAG]
    assert sorted(i["resourceId"] for i in made) == ["nbgrader:hw1", "nbgrader:hw2"]
    assert each_score_once(lms) and sum(lms.accepted_counts()) == 9


@pytest.mark.parametrize("what", ["late", "drop"])
async def test_a_score_answered_late_or_never_is_checked_not_sent_twice(
    homework, registry, layout, impatient, lms, what
):
    lms.fault(**SCORES, after=what, count=3, delay=2.0, user_id="101")
    run = await sync(homework, registry, layout, impatient)
    assert run["state"] == "finished", run
    assert run["counts"] == {"sent": 9}
    rows = results(registry, run)
    assert "Kore checked: it has this score" in rows[("u101", "assignment:hw1")]["message"]
    # every score once at the LMS: no blind retry, no 409
    assert each_score_once(lms) and sum(lms.accepted_counts()) == 9
    run = await sync(homework, registry, layout, impatient)
    assert run["counts"] == {"unchanged": 9}


async def test_a_kept_alive_connection_dropped_after_a_score_is_checked_not_resent(
    homework, registry, layout, lms, key_store
):
    # Hostile: the LMS reads a score POST on a connection that carried earlier requests,
    # stores it, and closes the connection without an answer. Kore cannot know whether it
    # arrived: it asks the results service and does not send it blindly again.
    registration = LMSRegistration(issuer=ISSUER, client_id=CLIENT, access_token_url=lms.token_url)
    client = LTIClient(
        registration=registration, key_store=key_store, settings=settings(concurrency=1)
    )
    lms.fault(**SCORES, after="drop", count=1, user_id="102")
    try:
        run = await sync(homework, registry, layout, client)
    finally:
        await client.aclose()
    assert run["state"] == "finished", run
    assert run["counts"] == {"sent": 9}, run
    requests, connections = lms.requests(), lms.request_connections()
    # the request before the first one on a second connection is the dropped score
    dropped = connections.index(2) - 1
    assert dropped > 0 and requests[dropped][0] == "POST"
    assert requests[dropped][1].endswith("/scores")
    # the dropped POST came on the connection of the token and everything before it
    assert connections[: dropped + 1] == [1] * (dropped + 1)
    # then one new connection: its first request reads the result, no second POST
    assert requests[dropped + 1][0] == "GET" and requests[dropped + 1][1].endswith("/results")
    assert lms.connections() == 2
    rows = results(registry, run)
    (checked,) = [r for r in rows.values() if "Kore checked: it has this score" in r["message"]]
    assert checked["username"] == "u102"
    assert each_score_once(lms) and sum(lms.accepted_counts()) == 9


async def test_a_score_lost_without_an_answer_is_sent_again_after_checking(
    homework, registry, layout, client, lms
):
    # 500 before processing: the outcome is unknown to Kore; the results say it is missing.
    lms.fault(**SCORES, status=500, count=1, user_id="101")
    run = await sync(homework, registry, layout, client)
    assert run["counts"] == {"sent": 9}, run
    assert each_score_once(lms) and sum(lms.accepted_counts()) == 9
    messages = [r["message"] for r in results(registry, run).values()]
    assert any("Sent again after the LMS did not answer" in m for m in messages)


async def test_without_the_result_scope_an_unanswered_score_is_unknown(
    homework, registry, layout, impatient, lms
):
    lms.settings(scopes=["lineitem", "score"])
    launch(registry, lms, "1", "instructor", scopes=(LINEITEM, SCORE))
    lms.fault(**SCORES, after="drop", count=1, user_id="102")
    run = await sync(homework, registry, layout, impatient)
    assert run["state"] == "failed"
    assert run["counts"] == {"sent": 8, "unknown": 1}, run
    (row,) = [r for r in results(registry, run).values() if r["status"] == "unknown"]
    assert "newer timestamp" in row["message"]
    # the next sync sends it again (a newer timestamp: the LMS keeps the same grade)
    a_second_later()
    run = await sync(homework, registry, layout, impatient)
    assert run["counts"] == {"sent": 1, "unchanged": 8}, run


async def test_a_409_within_the_same_second_is_sent_once_more_a_second_later(
    homework, registry, layout, client, lms
):
    # Moodle compares whole seconds: a regrade synced within the second of the last
    # score is "not newer". Kore checks the result, then sends it once more, later.
    # (Injected: a real one needs a regrade synced within the second of the last sync.)
    lms.fault(**SCORES, status=409, count=1, user_id="101", body='{"message": "not newer"}')
    run = await sync(homework, registry, layout, client)
    assert run["state"] == "finished", run
    assert run["counts"] == {"sent": 9}


async def test_scores_sent_by_a_killed_sync_are_checked_not_sent_again(
    homework, registry, layout, client, lms
):
    store = SyncStore(registry)
    await sync(homework, registry, layout, client)
    posts = lms.score_posts()
    # As a sync killed after the LMS took the scores and before it recorded them: the
    # intents are there, the deliveries are not.
    with registry.session() as session, session.begin():
        rows = session.scalars(select(SyncDelivery).where(SyncDelivery.course_id == homework))
        intents = [
            IntentRecord(d.username, d.item_key, d.lineitem_url, d.fingerprint) for d in rows
        ]
        session.execute(delete(SyncDelivery))
    store.write_intents(homework, "killed", intents)
    run = await sync(homework, registry, layout, client)
    assert run["state"] == "finished"
    assert run["counts"] == {"sent": 9}, run
    assert lms.score_posts() == posts  # nothing sent twice
    assert all("Confirmed at the LMS" in r["message"] for r in results(registry, run).values())
    assert store.intents(homework) == {}
    assert (await sync(homework, registry, layout, client))["counts"] == {"unchanged": 9}


#: Fault rules aimed at the line item container (list, create) and at score posts.
LIST = {"path_suffix": "/lineitems", "methods": ["GET"]}
CREATE = {"path_suffix": "/lineitems", "methods": ["POST"]}
SCORES = {"path_suffix": "/scores", "methods": ["POST"]}


def release_registry(url: str) -> None:
    """A registry as 0.1.0.dev0 made it: the baseline schema, no alembic_version."""
    from alembic.command import upgrade as alembic_upgrade
    from sqlalchemy import create_engine, text

    from ananke_hub.courses.schema import BASELINE, alembic_config

    engine = create_engine(url)
    with engine.begin() as db:
        config = alembic_config(url)
        config.attributes["connection"] = db
        alembic_upgrade(config, BASELINE)
        db.execute(text("DROP TABLE alembic_version"))
    engine.dispose()


def test_an_older_registry_gets_the_run_owner_column(tmp_path, lms):
    from sqlalchemy import create_engine, text

    from ananke_hub.courses.schema import SchemaOutOfDate, upgrade

    url = f"sqlite:///{tmp_path / 'old.sqlite'}"
    release_registry(url)
    engine = create_engine(url)
    with engine.begin() as db:
        db.execute(text("ALTER TABLE sync_runs DROP COLUMN owner"))
    engine.dispose()
    with pytest.raises(SchemaOutOfDate, match="ananke upgrade-db"):
        CourseRegistry(url=url).check_schema()
    for _ in range(2):  # idempotent
        upgrade(url, log=lambda _message: None)
        registry = CourseRegistry(url=url)
        course_id = launch(registry, lms, "1", "instructor")
        store = SyncStore(registry)
        run_id = store.start_run(course_id, "grades", "u1", {}, owner=KORE_OWNER)
        assert interrupt_predecessor(registry) == [run_id]
        registry.close()


def test_a_starting_kore_ends_its_predecessors_runs_at_once(registry, lms, course):
    store = SyncStore(registry)
    dead = store.start_run(course, "grades", "uinst", {}, owner=KORE_OWNER)
    cli = store.start_run(course, "roster", "cli:root", {}, owner="cli:host:1")
    assert interrupt_predecessor(registry) == [dead]
    run = store.get_run(course, dead)
    assert run["state"] == "interrupted" and "Kore stopped" in run["message"]
    # no 409 and no wait for a stale heartbeat: a new grade sync starts now
    store.start_run(course, "grades", "uinst", {}, owner=KORE_OWNER)
    # the CLI's run is not Kore's: it still holds its lock
    assert store.get_run(course, cli)["state"] == "running"
    with pytest.raises(SyncAlreadyRunning):
        store.start_run(course, "roster", "uinst", {})


# --- against the built-in test platform (a subprocess), as a quick interop check ---------------


@pytest.fixture(scope="module")
async def platform_lms(tmp_path_factory):
    """`python -m ananke_hub.testlms --test-api` that verifies assertions with our keys."""
    from test_platform import CLIENT_ID, DEPLOYMENT_ID, TOOL, running_platform
    from tornado import web
    from tornado.httpserver import HTTPServer
    from tornado.netutil import bind_sockets

    from ananke_hub.testlms.settings import PlatformSettings

    keys = KeyStore(tmp_path_factory.mktemp("tool") / "keys")
    keys.ensure()

    class Keyset(web.RequestHandler):
        def get(self):
            self.write(keys.jwks())

    sockets = bind_sockets(0, "127.0.0.1")
    server = HTTPServer(web.Application([(r"/jwks", Keyset)]))
    server.add_sockets(sockets)
    jwks_url = f"http://127.0.0.1:{sockets[0].getsockname()[1]}/jwks"
    state = tmp_path_factory.mktemp("platform") / "state"
    with running_platform(state, flags=["--test-api"], tool_jwks_url=jwks_url) as p:
        settings_ = PlatformSettings(
            issuer=p.url,
            client_id=CLIENT_ID,
            deployment_id=DEPLOYMENT_ID,
            tool_target_link_uri=TOOL["tool_target_link_uri"],
        )
        yield settings_, keys
    server.stop()


async def test_against_the_built_in_platform(platform_lms, registry, layout, tmp_path):
    import httpx

    from ananke_hub.testlms import demo_data
    from ananke_hub.testlms.tokens import launch_claims
    from kore.sync.roster import RosterSyncJob

    platform, keys = platform_lms
    async with httpx.AsyncClient(timeout=30) as http:
        assert (await http.post(platform.url("/_test/reset"))).status_code == 204

        def record(user):
            claims = launch_claims(platform, user, demo_data.HOMEWORK, "nonce")
            info = LaunchInfo.from_id_token(claims, hub_username(user.sub))
            registry.record_launch(info)
            return info.course_id

        course_id = record(demo_data.ADA)
        record(demo_data.ALAN)
        paths = layout.course(course_id)
        nbgrader_setup.ensure_course_files(paths, course_id, CourseSettings())
        add_assignment(layout, course_id, "hw1", 6, 4)
        submit(layout, course_id, "u3", "hw1", 5, 2)
        registration = LMSRegistration(
            issuer=platform.issuer,
            client_id=platform.client_id,
            access_token_url=platform.access_token_url,
        )
        client = LTIClient(registration=registration, key_store=keys, settings=settings())
        try:
            roster = RosterSyncJob(course_id, registry=registry, layout=layout, lti_client=client)
            await roster.begin()
            run = await roster.run()
            assert run["counts"].get("failed", 0) == 0, run
            assert run["counts"]["added"] >= 20  # the learners who never launched
            run = await sync(course_id, registry, layout, client)
            assert run["state"] == "finished", run
            again = await sync(course_id, registry, layout, client)
            assert set(again["counts"]) == {"unchanged"}
        finally:
            await client.aclose()
        book = (await http.get(platform.url("/gradebook.json"))).json()
        tally = (await http.get(platform.url("/_test/scores.json"))).json()
    (ds101,) = [c for c in book["contexts"] if c["id"] == "ds101"]
    labels = {i["label"] for i in ds101["lineitems"]}
    assert "hw1" in labels
    alan = {s["lineitem"]: s for s in ds101["scores"] if s["userId"] == "3"}
    assert sorted(s["scoreGiven"] for s in alan.values()) == [7, 7]  # hw1 and the total
    assert all(post["accepted"] == 1 for post in tally["posts"]), tally


async def test_an_unexpected_error_fails_one_result_not_the_run(
    homework, registry, layout, client, lms, monkeypatch
):
    original = GradeSyncJob.send

    async def broken(self, work, url):
        if work.recipient.username == "u102" and work.target.key == "total":
            raise RuntimeError("bug")
        return await original(self, work, url)

    monkeypatch.setattr(GradeSyncJob, "send", broken)
    run = await sync(homework, registry, layout, client)
    assert run["counts"] == {"sent": 8, "failed": 1}
    assert "Kore's log" in results(registry, run)[("u102", "total")]["message"]


def test_a_student_reads_back_as_the_hub_enrolled_them(course, layout):
    """One record of a gradebook's student: what a launch or the roster enrols is what
    a grade sync reads back (nbgrader_setup.StudentRecord both ways)."""
    from ananke_hub.courses import nbgrader_setup
    from kore.sync.gradebook import read_gradebook

    ada = nbgrader_setup.StudentRecord("u190", "190", "Ada", "Lovelace", "ada@example.org")
    nbgrader_setup.enrol_students(layout.course(course), [ada])
    assert read_gradebook(layout.course(course)).students["u190"] == ada


def test_snapshot_scores_are_nbgraders_own(course, layout):
    """The grouped queries give what nbgrader computes per submission object: grades
    (manual over automatic, plus extra credit), minus the late penalty, never below 0."""
    from nbgrader.api import Gradebook

    from kore.sync.gradebook import read_gradebook

    add_assignment(layout, course, "hw9", 5, 5)
    submit(layout, course, "u101", "hw9", 4, 3)
    submit(layout, course, "u102", "hw9", 1, 0, manual=True)
    submit(layout, course, "u103", "hw9", 0, 1)
    with gradebook(layout, course) as gb:
        gb.find_grade("q0", "p1", "hw9", "u101").extra_credit = 0.5
        gb.find_submission_notebook("p1", "hw9", "u101").late_submission_penalty = 2.0
        gb.find_submission_notebook("p1", "hw9", "u103").late_submission_penalty = 3.0
        gb.db.commit()
    snapshot = read_gradebook(layout.course(course))
    with Gradebook(layout.course(course).gradebook_url, course) as gb:
        for sub in gb.assignment_submissions("hw9"):
            expected = max(0.0, sub.score - (sub.late_submission_penalty or 0))
            got = snapshot.submissions[(sub.student.id, "hw9")]
            assert got.score == pytest.approx(expected)
            assert got.needs_manual_grade == bool(sub.needs_manual_grade)
    assert snapshot.submissions[("u101", "hw9")].score == pytest.approx(5.5)  # 4+3+0.5-2
    assert snapshot.submissions[("u103", "hw9")].score == 0.0  # 1-3, never below 0
    assert snapshot.submissions[("u102", "hw9")].needs_manual_grade
