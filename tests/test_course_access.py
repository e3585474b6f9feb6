"""The hub applies the course registry to a user outside a launch (refresh_user and
Kore's request): the pieces of ananke_hub/auth/access.py without a running hub."""

from types import SimpleNamespace

import pytest
from test_courses import info

from ananke_hub.auth.access import revoke_grader_tokens
from ananke_hub.auth.authenticator import AnankeLTI13Authenticator
from ananke_hub.courses.models import COURSE_DELETING
from ananke_hub.courses.provision import (
    CourseProvisioner,
    course_of_grader_client,
    grader_client_id,
    staff_group,
)
from ananke_hub.courses.registry import CourseRegistry
from kore.sync.store import RosterEntry, SyncStore

pytestmark = pytest.mark.filterwarnings("ignore::sqlalchemy.exc.SAWarning")


@pytest.fixture
def registry(tmp_path):
    reg = CourseRegistry(url=f"sqlite:///{tmp_path / 'courses.sqlite'}")
    yield reg
    reg.close()


@pytest.fixture
def authenticator(registry):
    auth = AnankeLTI13Authenticator()
    auth.provisioner = CourseProvisioner(registry=registry)
    return auth


def named(*names):
    return [SimpleNamespace(name=n) for n in names]


def hub_user(name, roles, groups, admin=False):
    return SimpleNamespace(name=name, roles=named(*roles), groups=named(*groups), admin=admin)


def test_grader_client_ids_are_jupyterhubs():
    cid = "c-0123456789abcdef"
    assert grader_client_id(cid) == f"jupyterhub-user-grader-{cid}"
    assert course_of_grader_client(grader_client_id(cid)) == cid
    for other in (None, "", "jupyterhub", "jupyterhub-user-u3", "service-kore", f"x-grader-{cid}"):
        assert course_of_grader_client(other) is None


async def test_refresh_user_takes_the_role_of_a_course_the_user_left(authenticator, registry):
    course = registry.record_launch(info(sub="2", role="Instructor")).course_id
    ada = hub_user("u2", ["user", f"staff-{course}"], [staff_group(course)])
    assert await authenticator.refresh_user(ada) is True  # the registry agrees
    # The LMS dropped her: the roster made her inactive.
    SyncStore(registry).apply_roster(course, [], deactivate_missing=True)
    model = await authenticator.refresh_user(ada)
    assert model == {"name": "u2", "groups": [], "roles": [{"name": "user"}]}


async def test_refresh_user_keeps_admins_admin_and_leaves_graders_alone(authenticator, registry):
    course = registry.record_launch(info(sub="2", role="Instructor")).course_id
    admin = hub_user("u2", ["user", "admin"], [], admin=True)
    model = await authenticator.refresh_user(admin)
    assert {r["name"] for r in model["roles"]} == {"user", "admin", f"staff-{course}"}
    grader = hub_user(f"grader-{course}", ["user"], [])
    assert await authenticator.refresh_user(grader) is True


async def test_a_course_being_deleted_gives_nobody_anything(authenticator, registry):
    course = registry.record_launch(info(sub="2", role="Instructor")).course_id
    SyncStore(registry).apply_roster(
        course,
        [RosterEntry(username="u2", lms_user_id="2", role="instructor")],
        deactivate_missing=False,
    )
    from kore.manage.store import ManageStore

    ManageStore(registry).set_course_state(course, COURSE_DELETING)
    granted = await authenticator.provisioner.entitlements_of("u2")
    assert granted.groups == [] and granted.staff_courses == frozenset()


class FakeDB:
    def __init__(self):
        self.deleted, self.commits = [], 0

    def delete(self, obj):
        self.deleted.append(obj)

    def commit(self):
        self.commits += 1


def test_only_tokens_of_grader_servers_of_lost_courses_are_revoked():
    kept, lost = "c-0123456789abcdef", "c-fedcba9876543210"
    tokens = [
        SimpleNamespace(client_id=grader_client_id(lost)),  # her login to the lost course
        SimpleNamespace(client_id=grader_client_id(kept)),  # a course she still teaches
        SimpleNamespace(client_id="jupyterhub"),  # her own API token
        SimpleNamespace(client_id="jupyterhub-user-u2"),  # her own lab
        SimpleNamespace(client_id="service-kore"),
    ]
    user = SimpleNamespace(orm_user=SimpleNamespace(api_tokens=tokens))
    db = FakeDB()
    assert revoke_grader_tokens(db, user, frozenset({kept})) == 1
    assert db.deleted == [tokens[0]] and db.commits == 1
    db = FakeDB()
    assert revoke_grader_tokens(db, user, frozenset({kept, lost})) == 0
    assert db.commits == 0
