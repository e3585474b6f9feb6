"""A returning member's unchanged launch writes nothing and does no nbgrader work; any
change (name, e-mail, role, course data, roster state, newest course) still updates."""

import asyncio
import sys
import types
from types import SimpleNamespace

import pytest
from sqlalchemy import event, update
from test_courses import registry  # noqa: F401 (the fixture: SQLite and PostgreSQL)

from ananke_hub.auth.authenticator import AnankeLTI13Authenticator
from ananke_hub.courses import provision
from ananke_hub.courses.identity import LaunchInfo
from ananke_hub.courses.layout import CourseLayout
from ananke_hub.courses.models import COURSE_DELETING, Course, Member
from ananke_hub.courses.provision import CourseProvisioner, ProvisioningError
from ananke_hub.courses.registry import CourseRegistry

M = "http://purl.imsglobal.org/vocab/lis/v2/membership#"
CLAIM = "https://purl.imsglobal.org/spec/lti/claim/"


def launch(sub="3", role="Learner", link="L1", **extra) -> LaunchInfo:
    return LaunchInfo.from_id_token(id_token(sub, role, link, **extra), "u" + sub)


def id_token(sub="3", role="Learner", link="L1", **extra) -> dict:
    claims = {
        "iss": "https://lms.example.edu",
        "aud": "tool",
        "sub": sub,
        CLAIM + "deployment_id": "d1",
        CLAIM + "message_type": "LtiResourceLinkRequest",
        CLAIM + "version": "1.3.0",
        CLAIM + "resource_link": {"id": link, "title": f"Homework {link}"},
        CLAIM + "context": {"id": "ctx", "label": "DS101", "title": "Data Science 101"},
        CLAIM + "roles": [M + role],
        "given_name": "Alan",
        "family_name": "Turing",
        "email": "alan@example.edu",
    }
    claims.update(extra)
    return claims


class Recorder:
    """What the launches asked of nbgrader and of the registry's database."""

    def __init__(self):
        self.nbgrader = []
        self.writes = []
        self.enrolled = set()
        self.grader_groups = []


@pytest.fixture
def setup(tmp_path, monkeypatch):
    rec = Recorder()
    # nbgrader's course setup, recorded: this test is about when it is called at all.
    fake = types.ModuleType("fake_nbgrader_setup")

    class CourseSettings:
        @staticmethod
        def from_dict(data):
            return data

    fake.CourseSettings = CourseSettings
    fake.StudentRecord = SimpleNamespace
    fake.ensure_course_files = lambda paths, cid, settings: rec.nbgrader.append(("course", cid))

    def enrol_students(paths, students):
        if any(s.email == "refused@example.edu" for s in students):
            raise ValueError("the gradebook refused a record")
        rec.nbgrader.append(("enrol", students))
        rec.enrolled.update(s.username for s in students)

    fake.enrol_students = enrol_students
    monkeypatch.setitem(sys.modules, "fake_nbgrader_setup", fake)
    monkeypatch.setattr(provision, "NBGRADER_SETUP", "fake_nbgrader_setup")

    reg = CourseRegistry(url=f"sqlite:///{tmp_path / 'courses.sqlite'}")

    @event.listens_for(reg.engine, "before_cursor_execute")
    def _count(conn, cursor, statement, params, context, executemany):
        if statement.lstrip().split(None, 1)[0].upper() in {"INSERT", "UPDATE", "DELETE"}:
            rec.writes.append(statement)

    layout = CourseLayout(homes_root=str(tmp_path / "homes"), exchange_root=str(tmp_path / "ex"))
    provisioner = CourseProvisioner(registry=reg, layout=layout)

    class Handler:
        settings = {"oauth_no_confirm_list": set()}
        graders = []
        users = {}

        def user_from_username(self, name):
            self.graders.append(name)
            return SimpleNamespace(sync_groups=lambda groups: rec.grader_groups.append(groups))

        def find_user(self, name):
            return self.users.get(name)

    yield provisioner, Handler(), rec
    reg.close()


async def test_unchanged_relaunch_writes_nothing(setup):
    provisioner, handler, rec = setup
    first_course = launch()
    first = await provisioner.provision(handler, first_course)
    assert rec.writes and [kind for kind, _ in rec.nbgrader] == ["course", "enrol"]
    rec.writes.clear(), rec.nbgrader.clear()

    again = await provisioner.provision(handler, launch())
    assert rec.writes == [] and rec.nbgrader == []
    assert again == first  # the same groups and roles
    assert len(handler.graders) == 2  # the grader account is still looked up
    # ... and kept in its formgrade group, so that a course made before the group
    # existed gets it at any launch (nbgrader's Collect needs it).
    assert rec.grader_groups == [[f"formgrade-{first_course.course_id}"]] * 2


@pytest.mark.parametrize(
    "changed, column, value",
    [
        ({"email": "turing@example.edu"}, "email", "turing@example.edu"),
        ({"given_name": "Alan M."}, "given_name", "Alan M."),
        ({"family_name": "Turing-Smith"}, "family_name", "Turing-Smith"),
    ],
)
async def test_changed_person_updates_the_row_and_the_gradebook(setup, changed, column, value):
    provisioner, handler, rec = setup
    await provisioner.provision(handler, launch())
    rec.writes.clear(), rec.nbgrader.clear()

    info = launch(**changed)
    await provisioner.provision(handler, info)
    assert rec.writes
    [(kind, students)] = rec.nbgrader
    assert kind == "enrol" and getattr(students[0], column) == value
    [member] = provisioner.registry.members(info.course_id)
    assert getattr(member, column) == value and member.in_gradebook
    rec.writes.clear(), rec.nbgrader.clear()
    await provisioner.provision(handler, launch(**changed))  # and now it is unchanged
    assert rec.writes == [] and rec.nbgrader == []


async def test_changed_role_updates_groups(setup):
    provisioner, handler, rec = setup
    learner = await provisioner.provision(handler, launch())
    rec.writes.clear()
    teacher = await provisioner.provision(handler, launch(role="Instructor"))
    assert rec.writes
    assert learner.groups != teacher.groups and teacher.staff_courses
    [member] = provisioner.registry.members(launch().course_id)
    assert member.role == "instructor"
    # An instructor is never in the gradebook: their unchanged relaunch writes nothing too.
    rec.writes.clear(), rec.nbgrader.clear()
    await provisioner.provision(handler, launch(role="Instructor"))
    assert rec.writes == [] and rec.nbgrader == []


async def test_changed_course_data_updates(setup):
    provisioner, handler, rec = setup
    await provisioner.provision(handler, launch())
    rec.writes.clear()
    await provisioner.provision(
        handler, launch(**{CLAIM + "context": {"id": "ctx", "label": "DS101", "title": "Renamed"}})
    )
    assert rec.writes
    assert provisioner.registry.get(launch().course_id).context_title == "Renamed"


async def test_returning_to_an_older_course_makes_it_current(setup):
    provisioner, handler, rec = setup
    await provisioner.provision(handler, launch(link="A"))
    await provisioner.provision(handler, launch(link="B"))
    rec.writes.clear()
    await provisioner.provision(handler, launch(link="A"))  # nothing changed but the order
    assert rec.writes
    newest = provisioner.registry.memberships("u3")[0][0]
    assert newest.id == launch(link="A").course_id


async def test_roster_and_deletion_in_another_process_are_seen(setup):
    provisioner, handler, rec = setup
    info = launch()
    await provisioner.provision(handler, info)
    # Kore's roster sync found the person gone from the LMS's roster ...
    with provisioner.registry.session() as s, s.begin():
        s.execute(update(Member).values(active=False))
    rec.writes.clear()
    await provisioner.provision(handler, info)  # ... the launch brings them back
    assert rec.writes and provisioner.registry.members(info.course_id)[0].active
    # Kore is deleting the course: the launch is refused, not waved through.
    with provisioner.registry.session() as s, s.begin():
        s.execute(update(Course).values(state=COURSE_DELETING))
    with pytest.raises(ProvisioningError):
        await provisioner.provision(handler, info)


async def test_unfinished_gradebook_enrolment_is_retried(setup):
    provisioner, handler, rec = setup
    info = launch()
    await provisioner.provision(handler, info)
    with provisioner.registry.session() as s, s.begin():
        s.execute(update(Member).values(in_gradebook=False))
    rec.nbgrader.clear()
    await provisioner.provision(handler, info)
    assert [kind for kind, _ in rec.nbgrader] == ["enrol"]


def hub_user(model: dict, admin=False):
    """A hub user holding exactly the groups and roles of ``model``."""
    return SimpleNamespace(
        name=model["name"],
        admin=admin,
        groups=[SimpleNamespace(name=g) for g in model["groups"]],
        roles=[
            SimpleNamespace(
                name=r["name"], scopes=list(r.get("scopes", [])), description=r.get("description")
            )
            for r in model["roles"]
        ],
    )


@pytest.mark.parametrize("role", ["Learner", "Instructor"])
async def test_hub_groups_and_roles_are_rewritten_only_when_they_differ(setup, role):
    provisioner, handler, rec = setup
    auth = AnankeLTI13Authenticator(provisioner=provisioner)

    async def login():
        return await auth.run_post_auth_hook(
            handler, {"name": "u3", "auth_state": id_token(role=role)}
        )

    first = await login()  # a new hub user: JupyterHub applies them
    assert first["groups"] and {"name": "user"} in first["roles"]
    handler.users["u3"] = user = hub_user(first)
    again = await login()
    assert again["groups"] is None and again["roles"] is None  # JupyterHub leaves them

    user.groups = user.groups[1:] + [SimpleNamespace(name="nbgrader-elsewhere")]
    assert (await login())["groups"] == first["groups"]
    handler.users["u3"] = user = hub_user(first, admin=True)  # an admin: keeps the role
    assert {"name": "admin"} in (await login())["roles"]
    if role == "Instructor":  # the staff role's scopes differ from what the hub holds
        handler.users["u3"] = user = hub_user(first)
        next(r for r in user.roles if r.scopes).scopes = ["access:servers"]
        assert (await login())["roles"] == first["roles"]


async def test_a_class_launching_at_once_is_enrolled_in_batches(setup):
    provisioner, handler, rec = setup
    await provisioner.provision(handler, launch(sub="1", role="Instructor"))
    seen_enrolled = {}

    async def first_launch(sub):
        await provisioner.provision(handler, launch(sub=sub))
        # The login returns only once the student is in the gradebook.
        seen_enrolled[sub] = f"u{sub}" in rec.enrolled

    subs = [str(n) for n in range(100, 130)]
    await asyncio.gather(*(first_launch(sub) for sub in subs))
    assert all(seen_enrolled[sub] for sub in subs) and len(seen_enrolled) == 30
    batches = provisioner.enrolments.batches
    assert sum(batches) == 30 and len(batches) < 30  # fewer gradebook writes than launches
    members = provisioner.registry.members(launch().course_id)
    assert all(m.in_gradebook for m in members if m.role == "learner")


async def test_one_refused_record_fails_only_its_own_launch(setup):
    provisioner, handler, rec = setup
    await provisioner.provision(handler, launch(sub="1", role="Instructor"))
    results = await asyncio.gather(
        *(
            provisioner.provision(handler, launch(sub=sub, email=f"{sub}@example.edu"))
            for sub in ("200", "201")
        ),
        provisioner.provision(handler, launch(sub="202", email="refused@example.edu")),
        return_exceptions=True,
    )
    assert [isinstance(r, ProvisioningError) for r in results] == [False, False, True]
    assert rec.enrolled == {"u200", "u201"}
    in_gradebook = {m.username: m.in_gradebook for m in provisioner.registry.members(launch().course_id)}
    assert in_gradebook == {"u1": False, "u200": True, "u201": True, "u202": False}


def test_a_course_the_roster_added_does_not_hide_the_newest_launch(registry):  # noqa: F811
    """PostgreSQL sorts NULL first in descending order: a membership the roster added
    (never launched) must not count as the user's newest launch."""
    from kore.sync.store import RosterEntry, SyncStore

    cid = registry.record_launch(launch()).course_id
    registry.mark_provisioned(cid, provision.PROVISION_VERSION)
    registry.mark_in_gradebook(cid, ["u3"])
    other = registry.record_launch(launch(sub="9", role="Instructor", link="L2")).course_id
    SyncStore(registry).apply_roster(
        other, [RosterEntry(username="u3", lms_user_id="3", role="learner")], deactivate_missing=False
    )
    assert registry.unchanged_launch(launch(), provision.PROVISION_VERSION) is not None
