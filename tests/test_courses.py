"""Course identity, the registry (SQLite and PostgreSQL) and entitlements."""

import os
import re
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone

import pgserver
import pytest

from ananke_hub.courses.deeplink import check_deep_linking_request
from ananke_hub.courses.identity import (
    LaunchError,
    LaunchInfo,
    NotACourseLaunch,
    check_course_launch,
    course_id_for,
    is_course_id,
    kept_claims,
)
from ananke_hub.courses.layout import (
    CourseLayout,
    InvalidCourseId,
    course_of_grader,
    grader_username,
)
from ananke_hub.courses.models import aware, iso
from ananke_hub.courses.provision import entitlements, staff_role
from ananke_hub.courses.registry import CourseRegistry

M = "http://purl.imsglobal.org/vocab/lis/v2/membership#"
CLAIM = "https://purl.imsglobal.org/spec/lti/claim/"


def token(sub="3", role="Learner", link="L1", link_title="Homework", context=None, **extra):
    claims = {
        "iss": "https://lms.example.edu",
        "aud": "tool",
        "sub": sub,
        CLAIM + "deployment_id": "d1",
        CLAIM + "resource_link": {"id": link, "title": link_title},
        CLAIM + "context": context if context is not None else {"id": "ctx", "label": "DS101", "title": "Data Science 101"},
        CLAIM + "roles": [M + role],
        "given_name": "Alan",
        "family_name": "Turing",
        "email": "alan@example.edu",
    }
    claims.update(extra)
    return claims


def info(**kwargs) -> LaunchInfo:
    return LaunchInfo.from_id_token(token(**kwargs), "u" + kwargs.get("sub", "3"))


# --- identity ---------------------------------------------------------------------------


def test_stored_times_read_back_in_utc():
    """One reading of the registry's times for the hub and Kore: SQLite gives them back
    naive, but every one was written in UTC; the APIs show them to the second."""
    naive = datetime(2026, 12, 6, 8, 30, 15, 999)
    assert aware(naive) == naive.replace(tzinfo=UTC)
    paris = datetime(2026, 12, 6, 9, 30, 15, tzinfo=timezone(timedelta(hours=1)))
    assert aware(paris) is paris
    assert aware(None) is None
    assert iso(naive) == "2026-12-06T08:30:15+00:00"
    assert iso(paris) == "2026-12-06T09:30:15+01:00"
    assert iso(None) is None


def test_course_id_is_stable_safe_and_per_activity():
    a = info().course_id
    assert a == info(sub="4", role="Instructor").course_id  # same activity, other person
    assert a != info(link="L2").course_id
    assert is_course_id(a) and re.fullmatch(r"c-[0-9a-f]{16}", a)
    assert len(grader_username(a)) <= 31  # a valid system user name
    other_deployment = course_id_for("https://lms.example.edu", "tool", "d2", "L1")
    other_platform = course_id_for("https://other.example", "tool", "d1", "L1")
    assert len({a, other_deployment, other_platform}) == 3


def test_context_id_change_keeps_the_course():
    assert info().course_id == info(context={"id": "new-ctx", "label": "X", "title": "Y"}).course_id


@pytest.mark.parametrize(
    "title, expected",
    [
        ("Homework", "Data Science 101 - Homework"),
        ("", "Data Science 101"),
        ("a'); import os; os.system('rm -rf /') #", "Data Science 101 - a'); import os; os.system('rm -rf /') #"),
        ('Quotes "and" {braces}', 'Data Science 101 - Quotes "and" {braces}'),
        ("Line\nbreak\r\tand\x00nul", "Data Science 101 - Line break and nul"),
    ],
)
def test_titles_are_data(title, expected):
    assert info(link_title=title).title == expected


def test_long_and_missing_titles():
    long = info(link_title="x" * 2000)
    assert len(long.link_title) <= 200 and long.link_title.endswith("…")
    bare = LaunchInfo.from_id_token(token(context={}, link_title=""), "u3")
    assert bare.title.startswith("Jupyter activity")


def test_launch_without_names_or_email():
    t = token()
    for key in ("given_name", "family_name", "email"):
        del t[key]
    i = LaunchInfo.from_id_token(t, "u3")
    assert (i.given_name, i.family_name, i.email) == ("", "", "")


@pytest.mark.parametrize("link", [None, {}, {"id": ""}, {"id": "  "}, "string"])
def test_launch_without_resource_link_is_refused(link):
    t = token()
    t[CLAIM + "resource_link"] = link
    with pytest.raises(LaunchError, match="no activity"):
        LaunchInfo.from_id_token(t, "u3")


LIS = "http://purl.imsglobal.org/vocab/lis/v2/"
RESOURCE_LINK_LAUNCH = {CLAIM + "message_type": "LtiResourceLinkRequest"}


@pytest.mark.parametrize(
    "roles",
    [
        [M + "Learner"],
        [M + "Instructor"],
        [M + "Instructor", LIS + "membership/Instructor#TeachingAssistant"],
        ["TeachingAssistant"],
        [M + "Learner", M + "Mentor"],
        [M + "Administrator"],  # an LMS administrator counts as an instructor
        [LIS + "system/person#Administrator"],
    ],
)
def test_course_launches(roles):
    check_course_launch({**RESOURCE_LINK_LAUNCH, CLAIM + "roles": roles})


def test_the_stored_auth_state_of_a_course_launch_still_opens_its_course():
    """The hub checks the launch again from auth_state (run_post_auth_hook), which holds
    only kept_claims: the message type must be among them, or every launch is refused."""
    launch = {**token(), **RESOURCE_LINK_LAUNCH, CLAIM + "roles": [M + "Learner"]}
    check_course_launch(kept_claims(launch))


@pytest.mark.parametrize(
    "claims, status, words",
    [
        ({CLAIM + "message_type": "LtiDeepLinkingRequest", CLAIM + "roles": [M + "Instructor"]}, 400, "Deep Linking"),
        ({CLAIM + "message_type": "LtiSubmissionReviewRequest"}, 403, "not the launch of an activity"),
        ({**RESOURCE_LINK_LAUNCH, CLAIM + "roles": [M + "Mentor"]}, 403, "(Mentor)"),
        ({**RESOURCE_LINK_LAUNCH, CLAIM + "roles": [M + "ContentDeveloper"]}, 403, "(ContentDeveloper)"),
        ({**RESOURCE_LINK_LAUNCH, CLAIM + "roles": []}, 403, "(none)"),
        ({**RESOURCE_LINK_LAUNCH}, 403, "(none)"),
        ({**RESOURCE_LINK_LAUNCH, CLAIM + "roles": [LIS + "institution/person#Staff"]}, 403, "(Staff)"),
    ],
)
def test_launches_that_open_no_course(claims, status, words):
    with pytest.raises(NotACourseLaunch, match=re.escape(words)) as refused:
        check_course_launch(claims)
    assert refused.value.status == status


def test_layout_derives_paths_from_ids_only(tmp_path):
    layout = CourseLayout(homes_root=str(tmp_path / "homes"), exchange_root=str(tmp_path / "x"))
    cid = info().course_id
    paths = layout.course(cid)
    assert paths.home == tmp_path / "homes" / f"grader-{cid}"
    assert paths.inbound == tmp_path / "x" / cid / "inbound"
    for bad in ["../etc", "c-../../x", "c-0123", "/abs", "c-0123456789abcdeg", ""]:
        with pytest.raises(InvalidCourseId):
            layout.course(bad)
    assert course_of_grader(f"grader-{cid}") == cid
    assert course_of_grader("grader-../x") is None and course_of_grader("u3") is None


# --- registry -------------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def registry(request, tmp_path):
    if request.param == "sqlite":
        reg = CourseRegistry(url=f"sqlite:///{tmp_path / 'courses.sqlite'}")
        yield reg
        reg.close()
        return
    reason = pgserver.available()
    if reason and os.environ.get("CI"):
        pytest.fail(f"{reason}: scripts/test.sh installs it on CI")
    if reason:
        pytest.skip(reason)
    with pgserver.postgres_server() as url:
        reg = CourseRegistry(url=url)
        yield reg
        reg.close()


def test_record_launch_creates_then_updates(registry):
    first = registry.record_launch(info(sub="2", role="Instructor"))
    assert first.created and first.role == "instructor" and first.provisioned == 0
    again = registry.record_launch(info(sub="2", role="Instructor", link_title="Renamed"))
    assert not again.created and again.title == "Data Science 101 - Renamed"
    assert registry.get(first.course_id).title == "Data Science 101 - Renamed"


def test_student_first_launch_creates_the_course(registry):
    record = registry.record_launch(info(sub="3"))
    assert record.created and record.role == "learner"
    (member,) = registry.members(record.course_id)
    assert (member.username, member.lms_user_id, member.email) == ("u3", "3", "alan@example.edu")


def test_first_launch_of_a_member_the_roster_added(registry):
    from kore.sync.store import RosterEntry, SyncStore

    cid = registry.record_launch(info(sub="2", role="Instructor")).course_id
    SyncStore(registry).apply_roster(
        cid, [RosterEntry(username="u3", lms_user_id="3", role="learner")], deactivate_missing=False
    )
    assert {m.username: m.first_launch for m in registry.members(cid)}["u3"] is None
    registry.record_launch(info(sub="3"))
    first = {m.username: m for m in registry.members(cid)}["u3"]
    assert first.first_launch is not None and first.first_launch == first.last_launch
    registry.record_launch(info(sub="3"))  # a later launch keeps the first one
    later = {m.username: m for m in registry.members(cid)}["u3"]
    assert later.first_launch == first.first_launch and later.last_launch > first.first_launch


def test_names_are_kept_up_to_date(registry):
    registry.record_launch(info(sub="3"))
    t = token(sub="3", given_name="Alan M.", email="new@example.edu")
    registry.record_launch(LaunchInfo.from_id_token(t, "u3"))
    (member,) = registry.members(info().course_id)
    assert (member.given_name, member.email) == ("Alan M.", "new@example.edu")


def test_person_names_for_greetings_come_from_the_latest_launch(registry):
    registry.record_launch(info(sub="3"))
    assert registry.person_name("u3") == "Alan Turing"
    assert registry.person_name("u99") == ""  # nobody: the caller shows the user name
    renamed = token(sub="3", link="L2", given_name="Alan M.", family_name="Turing")
    registry.record_launch(LaunchInfo.from_id_token(renamed, "u3"))
    assert registry.person_name("u3") == "Alan M. Turing"
    registry.record_launch(info(sub="4", given_name="", family_name="Du Châtelet"))
    # The hub's header reads these at start (before anyone launches again).
    assert registry.person_names() == {"u3": "Alan M. Turing", "u4": "Du Châtelet"}


def test_concurrent_launches_lose_and_duplicate_nothing(registry):
    launches = [info(sub=str(1000 + i)) for i in range(120)] + [info(sub="2", role="Instructor")]
    with ThreadPoolExecutor(12) as pool:
        records = list(pool.map(registry.record_launch, launches))
    assert sum(r.created for r in records) == 1  # exactly one launch created the course
    members = registry.members(launches[0].course_id)
    assert sorted(m.username for m in members) == sorted(f"u{i.lms_user_id}" for i in launches)


def test_memberships_across_courses(registry):
    registry.record_launch(info(sub="2", role="Instructor", link="A"))
    registry.record_launch(info(sub="2", role="Learner", link="B"))
    courses = registry.memberships("u2")
    assert [role for _, role in courses] == ["learner", "instructor"]  # newest first
    assert registry.memberships("nobody") == []


def test_settings_and_provisioned(registry):
    cid = registry.record_launch(info()).course_id
    assert registry.update_settings(cid, {"a": 1}) == {"a": 1}
    assert registry.update_settings(cid, {"b": 2}) == {"a": 1, "b": 2}
    registry.mark_provisioned(cid, 1)
    registry.mark_provisioned(cid, 0)  # never goes back
    assert registry.get(cid).provisioned == 1
    with pytest.raises(KeyError):
        registry.update_settings("c-0000000000000000", {})


# --- entitlements ----------------------------------------------------------------------------


def test_entitlements_cover_every_course_and_keep_the_user_role():
    c1, c2, c3, c4 = (f"c-{i:016x}" for i in range(1, 5))
    e = entitlements([(c1, "instructor"), (c2, "learner"), (c3, "teaching_assistant"), (c4, "")])
    assert e.groups == [f"formgrade-{c1}", f"formgrade-{c3}", f"nbgrader-{c2}"]
    assert e.roles[0] == {"name": "user"}
    assert [r["name"] for r in e.roles[1:]] == [f"staff-{c1}", f"staff-{c3}"]


def test_staff_role_uses_leaf_scopes_of_the_grader_server_only():
    role = staff_role("c-0123456789abcdef")
    assert set(role["scopes"]) == {
        "access:servers!server=grader-c-0123456789abcdef/",
        "start:servers!server=grader-c-0123456789abcdef/",
        "read:servers!server=grader-c-0123456789abcdef/",
    }


def test_member_changed_only_when_something_changed(registry):
    first = registry.record_launch(info(sub="3"))
    assert first.member_changed  # new
    assert registry.record_launch(info(sub="3")).member_changed  # not in the gradebook yet
    registry.mark_in_gradebook(first.course_id, ["u3"])
    assert not registry.record_launch(info(sub="3")).member_changed  # same again
    t = token(sub="3", email="other@example.edu")
    assert registry.record_launch(LaunchInfo.from_id_token(t, "u3")).member_changed
    assert registry.record_launch(info(sub="3", role="Instructor")).member_changed  # role


DL = "https://purl.imsglobal.org/spec/lti-dl/claim/deep_linking_settings"


def deep_linking(roles, settings=None) -> dict:
    claims = {CLAIM + "message_type": "LtiDeepLinkingRequest", CLAIM + "roles": roles}
    if settings is not None:
        claims[DL] = settings
    return claims


@pytest.mark.parametrize("roles", [[M + "Learner"], [M + "Mentor"], [], ["http://purl.imsglobal.org/vocab/lis/v2/membership/Instructor#TeachingAssistant"]])
def test_only_instructors_may_select_content(roles):
    settings = {"deep_link_return_url": "https://lms.example/return", "accept_types": ["ltiResourceLink"]}
    with pytest.raises(NotACourseLaunch, match="Only teachers") as refused:
        check_deep_linking_request(deep_linking(roles, settings))
    assert refused.value.status == 403


@pytest.mark.parametrize(
    "settings, words",
    [
        (None, "no deep linking settings"),
        ({"accept_types": ["ltiResourceLink"]}, "no return URL"),
        ({"deep_link_return_url": "javascript:alert(1)", "accept_types": ["ltiResourceLink"]}, "no return URL"),
        ({"deep_link_return_url": "https://lms.example/r", "accept_types": ["file", "html"]}, "file, html"),
    ],
)
def test_unusable_content_selections_are_explained(settings, words):
    with pytest.raises(LaunchError, match=re.escape(words)):
        check_deep_linking_request(deep_linking([M + "Instructor"], settings))


def test_a_content_selection_keeps_what_the_lms_asked_for():
    settings = {"deep_link_return_url": "https://lms.example/r", "accept_types": ["ltiResourceLink"]}
    checked = check_deep_linking_request(deep_linking([M + "Instructor"], settings))
    assert (checked.accept_multiple, checked.data) == (True, None)  # absent: several allowed
    settings |= {"accept_multiple": False, "data": "opaque-123"}
    checked = check_deep_linking_request(deep_linking([M + "Instructor"], settings))
    assert (checked.accept_multiple, checked.data) == (False, "opaque-123")
    # The stored auth_state keeps the settings: the hub checks them again from it.
    assert check_deep_linking_request(kept_claims({**token(), **deep_linking([M + "Instructor"], settings)}))
