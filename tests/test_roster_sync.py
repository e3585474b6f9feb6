"""The roster sync job (kore/sync/roster.py): NRPS members into the registry, the
gradebook and the hub's learner group, against the built-in LMS (tests/builtin_lms.py)
and the fake hub API (tests/fake_hub.py)."""

# The course fixtures come from test_grade_sync; tests take them as arguments.
# ruff: noqa: F811


import httpx
import pytest
from builtin_lms import BuiltinLMS
from fake_hub import FakeHub
from test_grade_sync import (  # noqa: F401 (fixtures)
    CLIENT,
    ISSUER,
    client,
    client_settings,
    course,
    key_store,
    launch,
    layout,
    lms,
    registry,
    shared_lms,
    sync,
)

from ananke_hub import lti_spec
from ananke_hub.auth.authenticator import AnankeLTI13Authenticator
from ananke_hub.courses.provision import learner_group, staff_group
from ananke_hub.usernames import hub_username
from kore.sync.hub_groups import HubGroups
from kore.sync.roster import UsernameRule, run_roster_sync
from kore.sync.store import SyncStore

pytestmark = pytest.mark.filterwarnings("ignore::sqlalchemy.exc.SAWarning")

HUB_TOKEN = "kore-hub-token"


# --- the hub: the one fake of its API (tests/fake_hub.py) ---------------------------------------


@pytest.fixture
def hub():
    with FakeHub(service_token=HUB_TOKEN) as fake:
        yield fake


def member(user_id, *roles, status=None, **fields):
    # Names and e-mail not given are not shared (null), as Moodle's tool privacy
    # settings leave them out; the built-in LMS would make some up otherwise.
    data = {"given_name": None, "family_name": None, "email": None, **fields}
    data.update(user_id=user_id, roles=list(roles))
    if status:
        data["status"] = status
    return data


LEARNER_URI = lti_spec.ROLE_LEARNER


def roster(lms: BuiltinLMS, without=(), changes=None) -> list[dict]:
    """Instructor 1; learners 101, 102 (launched) and 103, 104 (never launched); a TA,
    a mentor (no course role) and an inactive newcomer; minus the user ids ``without``,
    with ``changes`` (user id -> fields) applied. The LMS sends pages of 2."""
    members = [
        member("1", "Instructor"),  # names not shared: the launch's stay
        member("101", "Learner", given_name="Lea", family_name="One", email="lea@x"),
        member("102", LEARNER_URI),
        member("103", "Learner", given_name="Max", family_name="Three", email="max@x"),
        member("104", LEARNER_URI, given_name="Noa", family_name="Four"),
        member("105", lti_spec.ROLE_INSTRUCTOR, lti_spec.ROLE_TEACHING_ASSISTANT),
        member("106", "Mentor"),
        member("107", "Learner", status="Inactive"),
    ]
    members = [
        {**m, **(changes or {}).get(m["user_id"], {})}
        for m in members
        if m["user_id"] not in without
    ]
    lms.set_roster(members)
    lms.settings(page_size=2)
    return members


async def roster_sync(course_id, registry, layout, client, hub=None, rule=None):
    return await run_roster_sync(
        course_id,
        registry=registry,
        layout=layout,
        lti_client=client,
        hub=HubGroups(api_url=hub.api_url, token=HUB_TOKEN) if hub else None,
        username_rule=rule,
        who="uinst",
    )


def results(registry, run) -> dict:
    _, rows = SyncStore(registry).results(run["run_id"])
    return {r["lms_user_id"]: r for r in rows}


def gradebook_students(layout, course_id) -> dict:
    from nbgrader.api import Gradebook

    gb = Gradebook(layout.course(course_id).gradebook_url, course_id)
    try:
        return {s.id: (s.lms_user_id, s.first_name, s.last_name, s.email) for s in gb.students}
    finally:
        gb.close()


def members(registry, course_id) -> dict:
    return {m.username: m for m in registry.members(course_id)}


async def test_roster_enrols_everyone_before_they_launch(
    course, registry, layout, client, lms, hub
):
    roster(lms)
    run = await roster_sync(course, registry, layout, client, hub)
    assert run["state"] == "finished", run
    rows = results(registry, run)
    assert {k: r["status"] for k, r in rows.items()} == {
        "1": "unchanged",
        "101": "updated",  # the roster brought an e-mail/name change
        "102": "unchanged",
        "103": "added",
        "104": "added",
        "105": "added",
        "106": "skipped",
        "107": "skipped",
    }
    assert "Mentor" in rows["106"]["message"]
    # paged: page size 2, eight members
    assert len(lms.requests("GET", "/memberships")) == 4
    people = members(registry, course)
    assert (people["u103"].role, people["u103"].lms_user_id, people["u103"].active) == (
        "learner",
        "103",
        True,
    )
    assert (people["u103"].given_name, people["u103"].email) == ("Max", "max@x")
    assert people["u105"].role == "teaching_assistant"
    assert people["u101"].given_name == "Lea"  # the roster's name wins ...
    assert people["u102"].given_name == "Given102"  # ... but no name keeps the launch's
    # learners are in the gradebook with their LMS ids
    students = gradebook_students(layout, course)
    assert students["u103"] == ("103", "Max", "Three", "max@x")
    assert students["u104"][0] == "104"
    assert "u105" not in students and "u1" not in students
    assert all(people[u].in_gradebook for u in ("u101", "u103", "u104"))
    # and in the hub's learner group, with hub users made for them
    assert hub.groups[learner_group(course)] == {"u101", "u102", "u103", "u104"}
    # hub users for everyone with a course role: learners and staff
    assert hub.users == {"u1", "u101", "u102", "u103", "u104", "u105"}
    # created in bulk (JupyterHub's POST /hub/api/users), not one request each
    creations = [p for method, p in hub.calls if method == "POST" and p.startswith("/users")]
    assert creations and set(creations) == {"/users"}


async def test_a_second_roster_sync_changes_nothing(course, registry, layout, client, lms, hub):
    roster(lms)
    await roster_sync(course, registry, layout, client, hub)
    calls = len(hub.calls)
    run = await roster_sync(course, registry, layout, client, hub)
    assert run["counts"] == {"unchanged": 6, "skipped": 2}
    # Reads of both groups; the hub re-applies the staff's access (idempotent, cheap).
    assert sorted(hub.calls[calls:]) == sorted(
        [
            ("GET", f"/groups/{learner_group(course)}"),
            ("GET", f"/groups/{staff_group(course)}"),
            ("POST", "/ananke/users/u1/access"),
            ("POST", "/ananke/users/u105/access"),
        ]
    )


async def test_dropped_and_inactive_students(course, registry, layout, client, lms, hub):
    roster(lms)
    await roster_sync(course, registry, layout, client, hub)
    # 102 left the course (Moodle lists them no more); 103's enrolment is suspended
    # (the LMS lists them as Inactive; the former fake's "Deleted" is a status NRPS
    # allows but Moodle never sends).
    roster(lms, without={"102"}, changes={"103": {"status": "Inactive"}})
    run = await roster_sync(course, registry, layout, client, hub)
    rows = results(registry, run)
    assert rows["102"]["status"] == rows["103"]["status"] == "deactivated"
    assert "No longer in the LMS course roster" in rows["102"]["message"]
    people = members(registry, course)
    assert not people["u102"].active and not people["u103"].active  # kept, inactive
    assert course not in [c.id for c, _ in registry.memberships("u102")]
    assert hub.groups[learner_group(course)] == {"u101", "u104"}
    assert "u102" in gradebook_students(layout, course)  # grades stay
    # back in the course: active again
    roster(lms, changes={"103": {"status": "Inactive"}})
    run = await roster_sync(course, registry, layout, client, hub)
    assert results(registry, run)["102"]["status"] == "updated"
    assert members(registry, course)["u102"].active
    assert "u102" in hub.groups[learner_group(course)]


async def test_an_empty_roster_deactivates_nobody(course, registry, layout, client, lms, hub):
    lms.set_roster([])
    run = await roster_sync(course, registry, layout, client, hub)
    assert run["state"] == "finished"
    assert any("empty roster" in w for w in run["warnings"])
    assert all(m.active for m in registry.members(course))


async def test_students_from_the_roster_get_grades(course, registry, layout, client, lms, hub):
    from test_grade_sync import add_assignment, last, submit

    roster(lms)
    await roster_sync(course, registry, layout, client, hub)
    add_assignment(layout, course, "hw1", 10)
    submit(layout, course, "u101", "hw1", 9)
    run = await sync(course, registry, layout, client)
    assert run["state"] == "finished"
    for user, given in (("101", 9), ("103", 0), ("104", 0)):
        assert last(lms, lms.lineitem_url, user)["scoreGiven"] == given


async def test_without_a_hub_token_groups_are_skipped(course, registry, layout, client, lms):
    roster(lms)
    run = await roster_sync(course, registry, layout, client, hub=None)
    assert run["state"] == "finished"
    assert any("was not updated: no hub API token" in w for w in run["warnings"])
    assert members(registry, course)["u103"].active


async def test_hub_refusing_group_changes(course, registry, layout, client, lms, hub):
    roster(lms)
    hub.refuse_with = 403
    run = await roster_sync(course, registry, layout, client, hub)
    assert run["state"] == "failed"
    rows = results(registry, run)
    assert rows["103"]["status"] == "failed"
    assert "admin:users and admin:groups" in rows["103"]["message"]
    # Staff fail too: their group and hub access could not be applied.
    assert rows["1"]["status"] == "failed"
    assert "Hub access not updated" in rows["1"]["message"]
    assert members(registry, course)["u103"].active  # the registry has them anyway


async def test_a_refused_group_change_is_the_problem_of_each_name_in_it():
    """One request adds the new members, one takes out the dropped ones; when the hub
    refuses one of them, each name in it gets the hub's answer, the others none."""
    calls = []

    def answer(request: httpx.Request) -> httpx.Response:
        calls.append((request.method, request.url.path))
        if request.url.path == "/hub/api/groups/g":
            return httpx.Response(200, json={"users": ["old1", "old2", "stays"]})
        if request.url.path == "/hub/api/users":
            return httpx.Response(201, json=[])
        if request.method == "POST":
            return httpx.Response(403, json={"message": "no scope"})
        return httpx.Response(400, json={"message": "try later"})

    hub = HubGroups(api_url="http://hub.invalid/hub/api", token="t")
    hub.transport = httpx.MockTransport(answer)
    problems = await hub.sync_group("g", {"stays", "new1", "new2"}, {"old1", "old2", "never"})
    assert calls == [
        ("GET", "/hub/api/groups/g"),
        ("POST", "/hub/api/users"),
        ("POST", "/hub/api/groups/g/users"),
        ("DELETE", "/hub/api/groups/g/users"),
    ]
    assert problems["stays"] == problems["never"] == ""
    assert problems["new1"] == problems["new2"]
    assert "403 to POST /groups/g/users: no scope" in problems["new1"]
    assert "admin:users and admin:groups" in problems["new1"]
    assert problems["old1"] == problems["old2"]
    assert "400 to DELETE /groups/g/users: try later" in problems["old1"]


async def test_staff_join_the_staff_group_before_they_launch(
    course, registry, layout, client, lms, hub
):
    roster(lms)
    await roster_sync(course, registry, layout, client, hub)
    assert hub.groups[staff_group(course)] == {"u1", "u105"}
    assert {"u1", "u105"} <= hub.users
    assert set(hub.access_applied) >= {"u1", "u105"}


async def test_a_dropped_instructor_loses_the_course_on_the_hub_at_once(
    course, registry, layout, client, lms, hub
):
    roster(lms)
    await roster_sync(course, registry, layout, client, hub)
    assert "u1" in hub.groups[staff_group(course)]
    hub.access_applied.clear()
    hub.revocable["u1"] = 2  # two logins to the grader server
    roster(lms, without={"1"})
    run = await roster_sync(course, registry, layout, client, hub)
    row = results(registry, run)["1"]
    assert row["status"] == "deactivated"
    assert "formgrader revoked (2 login token(s) deleted)" in row["message"]
    assert "u1" not in hub.groups[staff_group(course)]
    assert "u1" in hub.access_applied
    # A TA who becomes a learner leaves the staff group too.
    roster(lms, without={"1"}, changes={"105": {"roles": ["Learner"]}})
    await roster_sync(course, registry, layout, client, hub)
    assert hub.groups[staff_group(course)] == set()
    assert "u105" in hub.groups[learner_group(course)]


async def test_a_hub_without_the_access_route_fails_the_staff(
    course, registry, layout, client, lms, hub
):
    hub.access_route = False
    roster(lms, without={"1"})
    run = await roster_sync(course, registry, layout, client, hub)
    row = results(registry, run)["1"]
    assert row["status"] == "failed"
    assert "Hub access not updated" in row["message"] and "404" in row["message"]


async def test_course_without_files_cannot_enrol(registry, layout, client, lms, hub):
    course_id = launch(registry, lms, "1", "instructor")
    roster(lms)
    run = await roster_sync(course_id, registry, layout, client, hub)
    rows = results(registry, run)
    assert rows["103"]["status"] == "failed"
    assert "Not in the gradebook yet" in rows["103"]["message"]
    assert not members(registry, course_id)["u103"].in_gradebook


async def test_no_roster_service_in_the_launch(registry, layout, client, lms):
    claims = {lti_spec.NRPS: {}}
    course_id = launch(registry, lms, "1", "instructor", **claims)
    run = await roster_sync(course_id, registry, layout, client)
    assert run["state"] == "failed"
    assert "no Names and Role Provisioning" in run["message"]


@pytest.mark.parametrize(
    ("status", "body", "words"),
    [
        (403, '{"error": "forbidden"}', "403 Forbidden"),
        (200, "<html>", "not JSON"),
        (200, '{"members": 3}', "without a list of members"),
    ],
)
async def test_lms_errors_fail_the_run_clearly(
    course, registry, layout, client, lms, status, body, words
):
    roster(lms)
    lms.fault(path_prefix="/nrps/", status=status, body=body)
    run = await roster_sync(course, registry, layout, client)
    assert run["state"] == "failed"
    assert words in run["message"]
    assert all(m.active for m in registry.members(course))  # nothing changed


async def test_server_errors_are_retried(course, registry, layout, client, lms):
    roster(lms)
    lms.fault(path_prefix="/nrps/", status=502, count=2)
    run = await roster_sync(course, registry, layout, client)
    assert run["counts"]["added"] == 3


async def test_username_rule_from_the_hub_config(course, registry, layout, client, lms):
    from traitlets.config import Config

    c = Config()
    c.AnankeLTI13Authenticator.username_prefix = "lms-"
    rule = UsernameRule.from_config(c)
    assert rule.username("103") == "lms-103"
    c.AnankeLTI13Authenticator.username_key = "custom_username"
    rule = UsernameRule.from_config(c)
    assert rule.username("103") is None
    roster(lms)
    run = await roster_sync(course, registry, layout, client, rule=rule)
    rows = results(registry, run)
    assert rows["103"]["status"] == "skipped"
    assert "username_key" in rows["103"]["message"]
    assert rows["101"]["status"] == "updated"  # known by LMS id: updated under their name


def test_the_authenticator_names_users_as_the_roster_does():
    auth = AnankeLTI13Authenticator()
    rule = UsernameRule.from_config(auth.config)
    for sub in ("123", "ABC-def", "abc-def", "x" * 40, "a b/c"):
        assert auth.username_from(sub) == hub_username(sub) == rule.username(sub)
    assert hub_username("123") == "u123"
    assert len(hub_username("x" * 40)) == 31


async def test_launch_and_roster_name_a_student_alike_from_the_upstream_section(
    course, registry, layout, client, lms
):
    """c.LTI13Authenticator.username_key (the parent section) counts for Kore too: the
    roster does not add a second user for a student the launch names after their
    LMS login."""
    from test_grade_sync import launch_claims
    from traitlets.config import Config

    from ananke_hub.courses.identity import LaunchInfo

    c = Config()
    c.LTI13Authenticator.username_key = "custom_username"
    auth = AnankeLTI13Authenticator(config=c)
    roster(lms)
    run = await roster_sync(course, registry, layout, client, rule=UsernameRule.from_config(c))
    claims = launch_claims(lms, "103", "learner", **{lti_spec.CUSTOM: {"username": "maxthree"}})
    name = auth.normalize_username(auth.get_username(claims))
    assert name == "umaxthree"
    registry.record_launch(LaunchInfo.from_id_token(claims, name))
    assert results(registry, run)["103"]["status"] == "skipped"
    again = await roster_sync(course, registry, layout, client, rule=UsernameRule.from_config(c))
    assert results(registry, again)["103"]["status"] in {"updated", "unchanged"}
    people = [m.username for m in registry.members(course) if m.lms_user_id == "103"]
    assert people == ["umaxthree"]


# --- scheduled roster syncs (c.Kore.roster_sync_interval) -------------------------------------


def test_roster_syncs_are_scheduled_hourly_by_default_and_checked():
    from traitlets import TraitError

    from kore.app import Kore

    assert Kore().roster_sync_interval == 3600
    assert Kore(roster_sync_interval=0).roster_sync_interval == 0  # off
    with pytest.raises(TraitError, match="0 \\(off\\) or at least 60 seconds"):
        Kore(roster_sync_interval=5)


async def test_scheduled_syncs_run_every_course_with_a_roster(
    course, registry, layout, client, lms, hub, monkeypatch
):
    import asyncio
    from types import SimpleNamespace

    from kore import app as kore_app
    from kore.sync.manager import SyncManager

    roster(lms)
    no_roster = launch(registry, lms, "1", "instructor", link="quiz", **{lti_spec.NRPS: {}})
    assert registry.roster_course_ids() == [course]
    assert no_roster not in registry.roster_course_ids()
    manager = SyncManager(
        registry=registry,
        layout=layout,
        lti_client=client,
        hub=HubGroups(api_url=hub.api_url, token=HUB_TOKEN),
    )
    kore = kore_app.Kore(roster_sync_interval=60)
    kore.registry = registry
    sleeps = []

    async def one_round(seconds):  # the first wait passes, the second ends the loop
        sleeps.append(seconds)
        if len(sleeps) > 1:
            raise asyncio.CancelledError

    monkeypatch.setattr(kore, "_wait", one_round)
    with pytest.raises(asyncio.CancelledError):
        await kore.scheduled_roster_syncs(SimpleNamespace(settings={"sync_manager": manager}))
    assert sleeps == [60, 60]
    (run,) = SyncStore(registry).runs(course, "roster")
    assert run["state"] == "finished" and run["started_by"] == kore_app.SCHEDULED_ACTOR
    assert members(registry, course)["u103"].active  # the roster arrived
    assert hub.groups[staff_group(course)] == {"u1", "u105"}
