"""Kore creates the learners of a roster on a real JupyterHub with one bulk request
(``POST /hub/api/users``), not one request per person."""

import asyncio
import re
import time

import pytest
from hubtest import admin_stack, hub_api

from kore.sync.hub_groups import HubGroups

pytestmark = pytest.mark.slow

SCOPES = ["admin:users", "admin:groups", "read:groups", "list:users", "read:users"]


@pytest.fixture(scope="module")
async def stack(tmp_path_factory):
    # The test service gets Kore's scopes for roster syncs (the kore-service role).
    extra = {
        "JupyterHub": {
            "load_roles": [{"name": "test-admin", "scopes": SCOPES, "services": ["test-admin"]}]
        }
    }
    async with admin_stack(tmp_path_factory.mktemp("hub"), extra_config=extra) as s:
        yield s


def user_posts(stack) -> list[str]:
    """The hub's log lines of user creations (JupyterHub logs each API request)."""
    log = (stack.log_dir / "jupyterhub.log").read_text(errors="replace")
    return re.findall(r"\b20\d POST /hub/api/users(?:/[^ ]*)? ", log)


async def user_posts_after(stack, seen: int) -> list[str]:
    """The user creations logged after the first ``seen``, once there is one: tornado
    logs a request after it has sent the answer, so a line may lag behind the answer."""
    deadline = time.monotonic() + 30
    while len(posts := user_posts(stack)) <= seen and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    return posts[seen:]


async def test_a_roster_of_learners_is_created_in_one_request(stack):
    hub = HubGroups(api_url=f"{stack.hub_url}/hub/api", token=stack.admin_token)
    # One of them exists already: the hub skips it and creates the others.
    seen = len(user_posts(stack))
    assert (await hub_api(stack, "/users/u9003", method="POST")).status_code == 201
    assert await user_posts_after(stack, seen) == ["201 POST /hub/api/users/u9003 "]
    before = seen + 1
    learners = {f"u90{n:02d}" for n in range(1, 21)}
    problems = await hub.sync_group("nbgrader-c-00000000000b0b0b", learners, set())
    assert problems == dict.fromkeys(learners, "")
    group = (await hub_api(stack, "/groups/nbgrader-c-00000000000b0b0b")).json()
    assert set(group["users"]) == learners
    for name in ("u9001", "u9020"):
        assert (await hub_api(stack, f"/users/{name}")).status_code == 200
    assert await user_posts_after(stack, before) == ["201 POST /hub/api/users "]
    # Everyone exists now: the hub answers 409 to the bulk request, which is no problem.
    more = learners | {"u9003"}
    assert await hub.sync_group("nbgrader-c-00000000000b0b0c", more, set()) == dict.fromkeys(
        more, ""
    )


async def test_a_name_the_hub_refuses_is_told_for_that_person_only(stack):
    hub = HubGroups(api_url=f"{stack.hub_url}/hub/api", token=stack.admin_token)
    # JupyterHub refuses the whole bulk request for one invalid name (400).
    names = {"u9101", "u9102", "bad name/../"}
    problems = await hub.sync_group("nbgrader-c-00000000000b0b0d", names, set())
    assert problems["u9101"] == problems["u9102"] == ""
    assert "400" in problems["bad name/../"]
    assert (await hub_api(stack, "/users/u9102")).status_code == 200
