"""A returning member's unchanged launch writes nothing and does no nbgrader work; any
change (name, e-mail, role, course data, roster state, newest course) still updates."""

import asyncio
import sys
import threading
import types
from types import SimpleNamespace

import pytest
from sqlalchemy import event, update
from test_courses import registry  # noqa: F401 (the fixture: SQLite and PostgreSQL)
from tornado.web import HTTPError

from ananke_hub.auth.authenticator import AnankeLTI13Authenticator
from ananke_hub.courses import provision
from ananke_hub.courses.identity import LaunchInfo
from ananke_hub.courses.layout import CourseLayout
from ananke_hub.courses.models import COURSE_DELETING, Course, Member
from ananke_hub.courses.provision import CourseProvisioner, ProvisioningError
from ananke_hub.courses.registry import CourseBeingDeleted, CourseRegistry

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


async def launched(provisioner, handler, info: LaunchInfo):
    """A launch's provisioning, then what the start of the user's lab waits for (the
    gradebook enrolment runs after the login answered)."""
    granted = await provisioner.provision(handler, info)
    await provisioner.ensure_enrolled(info.username)
    return granted


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
            return SimpleNamespace(
                name=name, sync_groups=lambda groups: rec.grader_groups.append(groups)
            )

        def find_user(self, name):
            return self.users.get(name)

    yield provisioner, Handler(), rec
    reg.close()


async def test_unchanged_relaunch_writes_nothing(setup):
    provisioner, handler, rec = setup
    first_course = launch()
    first = await launched(provisioner, handler, first_course)
    assert rec.writes and [kind for kind, _ in rec.nbgrader] == ["course", "enrol"]
    rec.writes.clear(), rec.nbgrader.clear()

    again = await launched(provisioner, handler, launch())
    assert rec.writes == [] and rec.nbgrader == []
    assert again == first  # the same groups and roles
    # The grader account was made sure of once in this hub process: no hub database
    # query for it at each returning launch ...
    assert rec.grader_groups == [[f"formgrade-{first_course.course_id}"]]
    # ... and again by a restarted hub at its first launch of the course, so that a
    # course made before the group existed gets it (nbgrader's Collect needs it).
    restarted = CourseProvisioner(registry=provisioner.registry, layout=provisioner.layout)
    assert await launched(restarted, handler, launch()) == first
    assert rec.writes == [] and rec.nbgrader == []
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
    await launched(provisioner, handler, launch())
    rec.writes.clear(), rec.nbgrader.clear()

    info = launch(**changed)
    await launched(provisioner, handler, info)
    assert rec.writes
    [(kind, students)] = rec.nbgrader
    assert kind == "enrol" and getattr(students[0], column) == value
    [member] = provisioner.registry.members(info.course_id)
    assert getattr(member, column) == value and member.in_gradebook
    rec.writes.clear(), rec.nbgrader.clear()
    await launched(provisioner, handler, launch(**changed))  # and now it is unchanged
    assert rec.writes == [] and rec.nbgrader == []


async def test_changed_role_updates_groups(setup):
    provisioner, handler, rec = setup
    learner = await launched(provisioner, handler, launch())
    rec.writes.clear()
    teacher = await launched(provisioner, handler, launch(role="Instructor"))
    assert rec.writes
    assert learner.groups != teacher.groups and teacher.staff_courses
    [member] = provisioner.registry.members(launch().course_id)
    assert member.role == "instructor"
    # An instructor is never in the gradebook: their unchanged relaunch writes nothing too.
    rec.writes.clear(), rec.nbgrader.clear()
    await launched(provisioner, handler, launch(role="Instructor"))
    assert rec.writes == [] and rec.nbgrader == []


async def test_changed_course_data_updates(setup):
    provisioner, handler, rec = setup
    await launched(provisioner, handler, launch())
    rec.writes.clear()
    await provisioner.provision(
        handler, launch(**{CLAIM + "context": {"id": "ctx", "label": "DS101", "title": "Renamed"}})
    )
    assert rec.writes
    assert provisioner.registry.get(launch().course_id).context_title == "Renamed"


async def test_returning_to_an_older_course_makes_it_current(setup):
    provisioner, handler, rec = setup
    await launched(provisioner, handler, launch(link="A"))
    await launched(provisioner, handler, launch(link="B"))
    rec.writes.clear()
    await launched(provisioner, handler, launch(link="A"))  # nothing changed but the order
    assert rec.writes
    newest = provisioner.registry.memberships("u3")[0][0]
    assert newest.id == launch(link="A").course_id


async def test_roster_and_deletion_in_another_process_are_seen(setup):
    provisioner, handler, rec = setup
    info = launch()
    await launched(provisioner, handler, info)
    # Kore's roster sync found the person gone from the LMS's roster ...
    with provisioner.registry.session() as s, s.begin():
        s.execute(update(Member).values(active=False))
    rec.writes.clear()
    await launched(provisioner, handler, info)  # ... the launch brings them back
    assert rec.writes and provisioner.registry.members(info.course_id)[0].active
    # Kore is deleting the course: the launch is refused, not waved through.
    with provisioner.registry.session() as s, s.begin():
        s.execute(update(Course).values(state=COURSE_DELETING))
    with pytest.raises(ProvisioningError):
        await launched(provisioner, handler, info)


async def test_unfinished_gradebook_enrolment_is_retried(setup):
    provisioner, handler, rec = setup
    info = launch()
    await launched(provisioner, handler, info)
    with provisioner.registry.session() as s, s.begin():
        s.execute(update(Member).values(in_gradebook=False))
    rec.nbgrader.clear()
    await launched(provisioner, handler, info)
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
    """What JupyterHub gets to apply (None: leave as it is), after the callback handler
    settled the launch's auth model against the hub user it looked up."""
    provisioner, handler, rec = setup
    auth = AnankeLTI13Authenticator(provisioner=provisioner)

    async def login():
        model = await auth.run_post_auth_hook(
            handler, {"name": "u3", "auth_state": id_token(role=role)}
        )
        full = {"name": "u3", "groups": list(model["groups"]), "roles": list(model["roles"])}
        auth.settle_access(handler.find_user("u3"), model)
        return model, full

    first, full = await login()  # a new hub user: JupyterHub applies the groups ...
    assert first["groups"] == full["groups"] and full["groups"]
    if role == "Learner":  # ... and a learner's only role is JupyterHub's default one
        assert first["roles"] is None and full["roles"] == [{"name": "user"}]
    else:  # the staff role is not a default: applied
        assert first["roles"] == full["roles"] and {"name": "user"} in full["roles"]
    handler.users["u3"] = user = hub_user(full)
    again, _ = await login()
    assert again["groups"] is None and again["roles"] is None  # JupyterHub leaves them

    # Groups and roles each on their own: only what differs is applied.
    user.groups = user.groups[1:] + [SimpleNamespace(name="nbgrader-elsewhere")]
    changed, _ = await login()
    assert changed["groups"] == full["groups"] and changed["roles"] is None
    handler.users["u3"] = user = hub_user(full, admin=True)  # an admin: keeps the role
    admin, _ = await login()
    assert {"name": "admin"} in admin["roles"] and admin["groups"] is None
    if role == "Instructor":  # the staff role's scopes differ from what the hub holds
        handler.users["u3"] = user = hub_user(full)
        next(r for r in user.roles if r.scopes).scopes = ["access:servers"]
        assert (await login())[0]["roles"] == full["roles"]


async def test_a_class_launching_at_once_is_enrolled_in_batches(setup):
    provisioner, handler, rec = setup
    await launched(provisioner, handler, launch(sub="1", role="Instructor"))
    subs = [str(n) for n in range(100, 130)]
    await asyncio.gather(*(provisioner.provision(handler, launch(sub=sub)) for sub in subs))
    # Each lab's start waits until its student is in the gradebook.
    for sub in subs:
        await provisioner.ensure_enrolled(f"u{sub}")
        assert f"u{sub}" in rec.enrolled
    batches = provisioner.enrolments.batches
    assert sum(batches) == 30 and len(batches) < 30  # fewer gradebook writes than launches
    members = provisioner.registry.members(launch().course_id)
    assert all(m.in_gradebook for m in members if m.role == "learner")


async def test_students_arriving_one_after_the_other_share_a_batch(setup):
    """Launches that come one after the other (not at the same moment) within the batch
    window are enrolled in one gradebook transaction; a lab's start does not wait for
    the window."""
    provisioner, handler, rec = setup
    provisioner.enrolments.window = 3600  # a lab must not wait for it
    await launched(provisioner, handler, launch(sub="1", role="Instructor"))
    subs = [str(n) for n in range(200, 206)]
    for sub in subs:  # each login answers before the next one starts
        await provisioner.provision(handler, launch(sub=sub))
        await asyncio.sleep(0)
    assert rec.enrolled == set()  # waiting for the window (or a lab)
    # The first student's lab starts: the batch runs now, with everyone who waits.
    await asyncio.wait_for(provisioner.ensure_enrolled("u200"), 60)  # a hang guard
    assert provisioner.enrolments.batches == [len(subs)]
    assert rec.enrolled == {f"u{sub}" for sub in subs}
    assert all(member_row(provisioner, f"u{sub}").in_gradebook for sub in subs)


async def test_first_launches_of_a_new_course_share_its_set_up(setup):
    """A class whose first launches of a new course arrive together: the course's files
    are set up once, not once per launch."""
    provisioner, handler, rec = setup
    subs = [str(n) for n in range(300, 310)]
    await asyncio.gather(*(provisioner.provision(handler, launch(sub=sub)) for sub in subs))
    for sub in subs:
        await provisioner.ensure_enrolled(f"u{sub}")
    assert rec.enrolled == {f"u{sub}" for sub in subs}
    assert [kind for kind, _ in rec.nbgrader if kind == "course"] == ["course"]
    assert provisioner.registry.get(launch().course_id).provisioned == provision.PROVISION_VERSION


def hold_course_set_up(monkeypatch, die=False):
    """Holds nbgrader's course set-up until the returned event is set (``die``: it
    fails then, as if the hub process ended during it)."""
    fake = sys.modules["fake_nbgrader_setup"]
    set_up, gate, entered = fake.ensure_course_files, threading.Event(), threading.Event()

    def held(paths, cid, settings):
        entered.set()
        assert gate.wait(60), "the test never opened the gate"
        if die:
            raise RuntimeError("the hub process ended during the course set-up")
        set_up(paths, cid, settings)

    monkeypatch.setattr(fake, "ensure_course_files", held)
    return gate, entered, lambda: monkeypatch.setattr(fake, "ensure_course_files", set_up)


async def test_a_learners_first_launch_does_not_wait_for_a_new_course_set_up(
    setup, monkeypatch
):
    """A student's launch that creates its course answers before the course's files
    exist; their lab's start waits for the set-up and the enrolment. Staff's launches
    still wait for it (they go on to the formgrader), and so does the grader's lab."""
    provisioner, handler, rec = setup
    auth = AnankeLTI13Authenticator(provisioner=provisioner)
    gate, entered, _ = hold_course_set_up(monkeypatch)
    model = await asyncio.wait_for(  # a deadlock guard: the old code waits for the gate
        auth.run_post_auth_hook(handler, {"name": "u3", "auth_state": id_token()}), 30
    )
    assert model["groups"] == [f"nbgrader-{launch().course_id}"]
    assert rec.enrolled == set()
    lab = asyncio.ensure_future(auth.pre_spawn_start(SimpleNamespace(name="u3"), None))
    grader = asyncio.ensure_future(
        auth.pre_spawn_start(SimpleNamespace(name=f"grader-{launch().course_id}"), None)
    )
    teacher = asyncio.ensure_future(provisioner.provision(handler, launch(sub="1", role="Instructor")))
    while not entered.is_set():
        await asyncio.sleep(0.01)
    for _ in range(20):
        await asyncio.sleep(0.01)
    assert not lab.done() and not grader.done() and not teacher.done()
    gate.set()
    await asyncio.gather(lab, grader, teacher)
    assert "u3" in rec.enrolled and member_row(provisioner, "u3").in_gradebook
    assert [kind for kind, _ in rec.nbgrader if kind == "course"] == ["course"]


async def test_a_set_up_cut_off_by_a_restart_is_done_before_the_lab(setup, monkeypatch):
    provisioner, handler, rec = setup
    gate, entered, restore = hold_course_set_up(monkeypatch, die=True)
    await provisioner.provision(handler, launch())  # the login answered ...
    while not entered.is_set():
        await asyncio.sleep(0.01)
    gate.set()  # ... and the hub ended during the course's set-up
    while provisioner._pending:
        await asyncio.sleep(0.01)
    assert provisioner.registry.get(launch().course_id).provisioned == 0
    restore()  # the restarted hub's nbgrader works
    restarted = CourseProvisioner(registry=provisioner.registry, layout=provisioner.layout)
    auth = AnankeLTI13Authenticator(provisioner=restarted)
    await auth.pre_spawn_start(SimpleNamespace(name="u3"), None)
    assert provisioner.registry.get(launch().course_id).provisioned == provision.PROVISION_VERSION
    assert "u3" in rec.enrolled and member_row(restarted, "u3").in_gradebook


async def test_one_refused_record_fails_only_its_own_lab(setup):
    provisioner, handler, rec = setup
    auth = AnankeLTI13Authenticator(provisioner=provisioner)
    await launched(provisioner, handler, launch(sub="1", role="Instructor"))
    infos = [launch(sub=sub, email=f"{sub}@example.edu") for sub in ("200", "201")]
    infos.append(launch(sub="202", email="refused@example.edu"))
    await asyncio.gather(*(provisioner.provision(handler, info) for info in infos))
    # The logins all passed; the refused record stops only its own lab, with a reason.
    for info in infos[:2]:
        await auth.pre_spawn_start(SimpleNamespace(name=info.username), None)
    with pytest.raises(HTTPError) as refused:
        await auth.pre_spawn_start(SimpleNamespace(name="u202"), None)
    assert refused.value.status_code == 503 and "gradebook" in refused.value.log_message
    assert rec.enrolled == {"u200", "u201"}
    in_gradebook = {
        m.username: m.in_gradebook for m in provisioner.registry.members(launch().course_id)
    }
    assert in_gradebook == {"u1": False, "u200": True, "u201": True, "u202": False}


class Gate:
    """Holds nbgrader's enrolment (in the registry's thread) until opened; ``die``
    makes the held write fail instead, as if the hub process ended during it."""

    def __init__(self, monkeypatch):
        self.entered = threading.Event()
        self.open = threading.Event()
        self.die = False
        fake = sys.modules["fake_nbgrader_setup"]
        enrol = fake.enrol_students

        def held(paths, students):
            self.entered.set()
            assert self.open.wait(60), "the test never opened the gate"
            if self.die:
                raise RuntimeError("the hub process ended before the gradebook write")
            enrol(paths, students)

        monkeypatch.setattr(fake, "enrol_students", held)
        self.restore = lambda: monkeypatch.setattr(fake, "enrol_students", enrol)

    async def login(self, login):
        """Await the login ``login`` while the gradebook write is held."""
        task = asyncio.ensure_future(login)
        while not self.entered.is_set() and not task.done():
            await asyncio.sleep(0.01)
        try:
            return await asyncio.wait_for(task, 30)  # deadlock guard: old code waits here
        except TimeoutError:
            self.open.set()
            raise


def member_row(provisioner, username):
    [member] = [
        m for m in provisioner.registry.members(launch().course_id) if m.username == username
    ]
    return member


async def test_the_login_does_not_wait_for_the_gradebook_but_the_lab_does(setup, monkeypatch):
    provisioner, handler, rec = setup
    auth = AnankeLTI13Authenticator(provisioner=provisioner)
    await launched(provisioner, handler, launch(sub="1", role="Instructor"))
    gate = Gate(monkeypatch)
    # The login answers while nbgrader is still writing the student's gradebook row.
    model = await gate.login(
        auth.run_post_auth_hook(handler, {"name": "u3", "auth_state": id_token()})
    )
    assert model["groups"] == [f"nbgrader-{launch().course_id}"]
    assert "u3" not in rec.enrolled  # the gate is closed: not written yet

    # A lab of u3 starting now (JupyterHub awaits pre_spawn_start before Spawner.start)
    # waits for the enrolment.
    spawn = asyncio.ensure_future(auth.pre_spawn_start(SimpleNamespace(name="u3"), None))
    for _ in range(20):
        await asyncio.sleep(0.01)
    assert not spawn.done() and "u3" not in rec.enrolled
    gate.open.set()
    await spawn
    assert "u3" in rec.enrolled and member_row(provisioner, "u3").in_gradebook


async def test_a_hub_restart_between_login_and_lab_still_enrols_first(setup, monkeypatch):
    provisioner, handler, rec = setup
    await launched(provisioner, handler, launch(sub="1", role="Instructor"))
    gate = Gate(monkeypatch)
    gate.die = True
    await gate.login(provisioner.provision(handler, launch()))  # the login answered ...
    while not gate.entered.is_set():
        await asyncio.sleep(0.01)
    gate.open.set()  # ... and the hub ended before the gradebook write
    while provisioner._pending:
        await asyncio.sleep(0.01)
    assert "u3" not in rec.enrolled and not member_row(provisioner, "u3").in_gradebook

    # The restarted hub: a new provisioner with nothing in memory, the same registry.
    gate.restore()
    restarted = CourseProvisioner(registry=provisioner.registry, layout=provisioner.layout)
    auth = AnankeLTI13Authenticator(provisioner=restarted)
    await auth.pre_spawn_start(SimpleNamespace(name="u3"), None)
    assert "u3" in rec.enrolled and member_row(restarted, "u3").in_gradebook
    # Grader accounts and people in no course start as before, nothing asked of nbgrader.
    rec.nbgrader.clear()
    await auth.pre_spawn_start(SimpleNamespace(name=f"grader-{launch().course_id}"), None)
    await auth.pre_spawn_start(SimpleNamespace(name="u404"), None)
    await auth.pre_spawn_start(SimpleNamespace(name="u3"), None)  # enrolled: nothing to do
    assert rec.nbgrader == []


def test_a_course_the_roster_added_does_not_hide_the_newest_launch(registry):  # noqa: F811
    """PostgreSQL sorts NULL first in descending order: a membership the roster added
    (never launched) must not count as the user's newest launch."""
    from kore.sync.store import RosterEntry, SyncStore

    cid = registry.record_launch(launch()).course_id
    registry.mark_provisioned(cid, provision.PROVISION_VERSION)
    registry.mark_in_gradebook(cid, ["u3"])
    other = registry.record_launch(launch(sub="9", role="Instructor", link="L2")).course_id
    SyncStore(registry).apply_roster(
        other,
        [RosterEntry(username="u3", lms_user_id="3", role="learner")],
        deactivate_missing=False,
    )
    assert registry.unchanged_launch(launch(), provision.PROVISION_VERSION) is not None


async def test_a_returning_launch_makes_one_trip_through_the_thread_pool(setup, monkeypatch):
    """The nonce is checked in memory; the registry read is the launch's only trip
    through the pool and writes nothing; a first or changed launch records in that
    same trip."""
    provisioner, handler, rec = setup
    auth = AnankeLTI13Authenticator(provisioner=provisioner)
    trips = []
    submit = provisioner.registry.submit

    def counted(func, *args):
        trips.append(getattr(func, "__name__", func))
        return submit(func, *args)

    monkeypatch.setattr(provisioner.registry, "submit", counted)

    async def login(nonce, name="u3", **claims):
        token = {**id_token(**claims), "nonce": nonce}
        assert auth.nonces.use(nonce, auth.nonces.new_state()) is True
        return await auth.run_post_auth_hook(handler, {"name": name, "auth_state": token})

    await login("n1")
    assert trips[0] == "read_or_record"
    assert trips.count("read_or_record") == 1  # read and recorded in one trip
    await provisioner.ensure_enrolled("u3")
    trips.clear(), rec.writes.clear()
    await login("n2")
    assert trips == ["read_or_record"] and rec.writes == []

    await login("n3", email="turing@example.edu")  # changed: the read says so, it writes
    assert member_row(provisioner, "u3").email == "turing@example.edu"


async def test_a_new_users_hub_account_is_made_while_the_registry_records_the_launch(
    setup, monkeypatch
):
    """A first login's registry trip (in the registry's thread) and the new hub
    account's commits (JupyterHub's database, waiting for the disk) run at the same
    time: the trip adds no time of its own to the login. A known user gets no account."""
    provisioner, handler, rec = setup
    auth = AnankeLTI13Authenticator(provisioner=provisioner)
    account_made = threading.Event()
    during_trip = []
    real = provision.read_or_record

    def read_or_record(*args):
        # Bounded, so that a login that makes the account after the trip fails here
        # rather than hanging; the assert is about the order, not the time.
        during_trip.append(account_made.wait(30))
        return real(*args)

    monkeypatch.setattr(provision, "read_or_record", read_or_record)
    make = handler.user_from_username

    def user_from_username(name):
        if name == "u3":
            account_made.set()
        return make(name)

    monkeypatch.setattr(handler, "user_from_username", user_from_username)
    model = await auth.run_post_auth_hook(handler, {"name": "u3", "auth_state": id_token()})
    assert during_trip == [True] and handler.graders.count("u3") == 1
    assert model["groups"] == [f"nbgrader-{launch().course_id}"]

    handler.users["u3"] = SimpleNamespace(name="u3")  # known now: no second account
    monkeypatch.setattr(provision, "read_or_record", real)
    await auth.run_post_auth_hook(handler, {"name": "u3", "auth_state": id_token()})
    assert handler.graders.count("u3") == 1
    await provisioner.ensure_enrolled("u3")


async def test_a_first_launch_of_an_unchanged_course_writes_only_its_member(setup):
    """The launch's read saw the course as the launch has it: one write, the member's
    row. A course changed, deleted or being deleted since that read is still seen."""
    provisioner, handler, rec = setup
    reg = provisioner.registry
    await launched(provisioner, handler, launch(sub="1", role="Instructor"))
    rec.writes.clear()
    granted = await launched(provisioner, handler, launch(sub="2"))
    assert granted.groups == [f"nbgrader-{launch().course_id}"]
    # (the gradebook enrolment's own mark follows the login)
    writes = [w for w in rec.writes if not w.lstrip().startswith("UPDATE members SET in_gradebook")]
    assert len(writes) == 1 and writes[0].lstrip().startswith("INSERT INTO members")

    # What a read saw goes stale: the transaction still finds out.
    stale = reg.launch_view(launch(sub="3")).course
    assert stale is not None
    with reg.session() as session, session.begin():
        session.execute(
            update(Course)
            .where(Course.id == stale.id)
            .values(state=COURSE_DELETING)
        )
    with pytest.raises(CourseBeingDeleted):
        reg.record_launch(launch(sub="3"), seen=stale)
    with reg.session() as session, session.begin():
        session.execute(update(Course).where(Course.id == stale.id).values(state="active"))
        session.delete(session.get(Course, stale.id))
    record = reg.record_launch(launch(sub="3"), seen=stale)  # deleted: made anew
    assert record.created and reg.get(stale.id) is not None
    renamed = launch(sub="4", **{CLAIM + "context": {"id": "ctx", "label": "DS", "title": "New"}})
    reg.record_launch(renamed, seen=reg.launch_view(renamed).course)
    assert reg.get(stale.id).context_title == "New"


def test_group_changes_wait_for_the_logins_commit(tmp_path):
    """A launch's group membership goes into the hub database with the commit that
    stores the auth_state, not with a commit of its own (JupyterHub's sync_groups)."""
    from jupyterhub import orm

    from ananke_hub.auth.handlers import stage_groups

    url = f"sqlite:///{tmp_path / 'hub.sqlite'}"
    db = orm.new_session_factory(url)()
    db.add(orm.Group(name="nbgrader-old"))
    orm_user = orm.User(name="u3")
    db.add(orm_user)
    db.commit()
    user = SimpleNamespace(name="u3", orm_user=orm_user, log=provision.CourseProvisioner().log)
    other = orm.new_session_factory(url)()

    def committed():
        other.expire_all()
        return sorted(g.name for g in orm.User.find(other, "u3").groups)

    stage_groups(db, user, ["nbgrader-old", "nbgrader-new"])
    assert sorted(g.name for g in orm_user.groups) == ["nbgrader-new", "nbgrader-old"]
    assert committed() == []  # nothing written yet
    db.commit()  # the login's commit
    assert committed() == ["nbgrader-new", "nbgrader-old"]
    stage_groups(db, user, ["nbgrader-new"])
    db.commit()
    assert committed() == ["nbgrader-new"]
    assert orm.Group.find(other, "nbgrader-old") is not None  # groups stay, members go


def hub_database(tmp_path):
    """JupyterHub's database with u3 in two groups (each with a role), and the SQL
    statements its session sends from now on (but JupyterHub's connection pings)."""
    from jupyterhub import orm

    db = orm.new_session_factory(f"sqlite:///{tmp_path / 'hub.sqlite'}")()
    role = orm.Role(name="staff-x", scopes=["read:users"])
    groups = [orm.Group(name=n, roles=[role]) for n in ("nbgrader-a", "nbgrader-b")]
    db.add(orm.User(name="u3", groups=groups))
    db.commit()
    statements = []

    @event.listens_for(db.get_bind(), "before_cursor_execute")
    def _count(conn, cursor, statement, *args):
        if statement != "SELECT 1":
            statements.append(statement)

    return db, statements


def test_a_returning_users_lookup_reads_nothing_the_session_holds(tmp_path):
    """A returning user's lookup (every launch) is one query: JupyterHub's would load
    their roles, shares and groups and the groups' roles and shares again (six)."""
    from jupyterhub import orm
    from jupyterhub.user import UserDict

    from ananke_hub.auth.handlers import find_hub_user

    db, statements = hub_database(tmp_path)
    users = UserDict(lambda: db, {})
    held = users[orm.User.find(db, "u3")].orm_user  # as JupyterHub holds its users
    statements.clear()

    user = find_hub_user(db, users, "u3")
    assert len(statements) == 1
    assert user.orm_user is held and user is users[held]
    assert sorted(g.name for g in user.groups) == ["nbgrader-a", "nbgrader-b"]
    assert len(statements) == 1  # the groups were held too
    statements.clear()
    assert find_hub_user(db, users, "u9") is None and len(statements) == 1

    # A session that does not hold the user loads them as JupyterHub does.
    fresh = orm.new_session_factory(str(db.get_bind().url))()
    user = find_hub_user(fresh, UserDict(lambda: fresh, {}), "u3")
    assert sorted(g.name for g in user.groups) == ["nbgrader-a", "nbgrader-b"]
    assert [r.name for g in user.groups for r in g.roles] == ["staff-x", "staff-x"]


def test_a_new_membership_does_not_load_the_groups_roles_and_shares(tmp_path):
    """stage_groups finds the launch's groups with one query (JupyterHub's model loads
    each group's roles and shares with two more); the roles still load when read."""
    from jupyterhub import orm

    from ananke_hub.auth.handlers import stage_groups

    db, statements = hub_database(tmp_path)
    db.add(orm.User(name="u4"))
    db.commit()
    db.expunge_all()  # nothing held: the groups are read from the database
    orm_user = orm.User.find(db, "u4")
    user = SimpleNamespace(name="u4", orm_user=orm_user, log=provision.CourseProvisioner().log)
    statements.clear()
    stage_groups(db, user, ["nbgrader-a", "nbgrader-b"])
    groups_read = [s for s in statements if "FROM groups" in s or "group_role_map" in s]
    assert len(groups_read) == 1 and "shares" not in " ".join(statements)
    db.commit()
    assert sorted(g.name for g in orm.User.find(db, "u4").groups) == ["nbgrader-a", "nbgrader-b"]
    assert [r.name for g in orm_user.groups for r in g.roles] == ["staff-x", "staff-x"]


async def test_a_new_hub_user_is_looked_up_once(tmp_path):
    """The callback makes a new user with one lookup of the name (JupyterHub's
    user_from_username would look it up a second time); a known user is found."""
    from jupyterhub import orm
    from jupyterhub.user import UserDict

    from ananke_hub.auth.handlers import AnankeCallbackHandler

    db, statements = hub_database(tmp_path)
    db.add(orm.Role(name="user", scopes=["self"]))  # JupyterHub's default role
    db.commit()
    auth = AnankeLTI13Authenticator()
    settings = {"db": db, "users": UserDict(lambda: db, {}), "authenticator": auth}
    handler = AnankeCallbackHandler.__new__(AnankeCallbackHandler)
    handler.application = SimpleNamespace(settings=settings)
    statements.clear()
    user = await handler.hub_user_ahead("u7")
    lookups = [s for s in statements if s.lstrip().startswith("SELECT users")]
    assert len(lookups) == 1 and user.name == "u7" and orm.User.find(db, "u7") is not None
    assert handler.find_user("u7") is user  # found again at once, as any user
    assert (await handler.hub_user_ahead("u3")).name == "u3"


@pytest.mark.parametrize("returning", [False, True])
def test_a_launchs_registry_trip_builds_no_statement(registry, returning):  # noqa: F811
    """The trip runs in a thread that shares the GIL with the hub's event loop, while the
    login goes on: it executes statements built once (launch_sql), on a Core connection,
    and makes no ORM instances. A statement built at each launch cost ~1.5 ms of CPU per
    first launch, most of the trip."""
    from ananke_hub.courses.provision import read_or_record

    read_or_record(registry, launch(sub="1", role="Instructor"), 1)
    registry.mark_provisioned(launch().course_id, 1)
    executed, instances = [], []

    @event.listens_for(registry.engine, "before_execute")
    def _seen(conn, clause, multiparams, params, options):
        executed.append(clause)

    for model in (Course, Member):  # ORM instances made from rows
        event.listen(model, "load", lambda target, context: instances.append(target))

    def trip(sub):
        executed.clear()
        record, pairs = read_or_record(registry, launch(sub=sub), 1)
        if returning:  # the same person again: unchanged once in the gradebook
            registry.mark_in_gradebook(launch().course_id, ["u" + sub])
            executed.clear()
            record, pairs = read_or_record(registry, launch(sub=sub), 1)
            assert record is None
        else:
            assert record is not None and record.member_changed
        assert pairs == [(launch().course_id, "learner")]
        return list(executed)

    first, second = trip("2"), trip("3")
    assert first and len(first) == len(second)
    # The same statement objects for two people: nothing built per launch.
    assert all(a is b for a, b in zip(first, second, strict=True)), (first, second)
    assert instances == []  # rows of columns, no ORM instances


async def test_a_new_users_groups_are_staged_without_a_query(tmp_path):
    """A user the callback has just made is in no group: settle_access and stage_groups
    know it without loading the empty collection, and a group an earlier launch found is
    taken from the session (no query at each launch). A group deleted since is looked up
    again, never reused."""
    from jupyterhub import orm
    from jupyterhub.user import UserDict

    from ananke_hub.auth.handlers import AnankeCallbackHandler, stage_groups

    db, statements = hub_database(tmp_path)
    db.add(orm.Role(name="user", scopes=["self"]))
    db.commit()
    auth = AnankeLTI13Authenticator()
    settings = {"db": db, "users": UserDict(lambda: db, {}), "authenticator": auth}

    async def first_login(name, groups):
        handler = AnankeCallbackHandler.__new__(AnankeCallbackHandler)
        handler.application = SimpleNamespace(settings=settings)
        user = await handler.hub_user_ahead(name)
        statements.clear()
        model = {"name": name, "groups": list(groups), "roles": [{"name": "user"}]}
        auth.settle_access(user, model)
        stage_groups(db, user, groups)
        reads = [s for s in statements if s.lstrip().startswith("SELECT")]
        db.commit()
        assert sorted(g.name for g in orm.User.find(db, name).groups) == sorted(groups)
        return model, reads

    model, reads = await first_login("u7", ["nbgrader-a"])
    assert model["roles"] is None  # the default role: JupyterHub's own
    assert [s for s in reads if "user_group_map" in s] == []  # the new user's groups
    assert len(reads) == 1 and "FROM groups" in reads[0]  # the group, once
    _, reads = await first_login("u8", ["nbgrader-a"])
    assert reads == []

    db.delete(orm.Group.find(db, "nbgrader-a"))
    db.commit()
    db.add(orm.Group(name="nbgrader-a"))  # made again: another id
    db.commit()
    _, reads = await first_login("u9", ["nbgrader-a"])
    assert len(reads) >= 1
