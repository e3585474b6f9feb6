"""Hub-level chaos: the hub is killed during a burst of 100 first launches.

A hundred learners launch the activity for the first time at once; when about a third
of the launches are through, the hub and everything it started (proxy, Kore) are
killed with SIGKILL, as a crash of the machine would. After a restart every learner
launches again, and everything a first launch does must be there, once: a hub user in
the course's learner group, a member row in the registry, a student in the nbgrader
gradebook with the LMS user id.
"""

import asyncio
import os
import signal
from pathlib import Path

import pytest
from hubtest import admin_stack, callback, forge, hub_api, initiate, person
from lti_browser import LTIBrowser

from ananke_hub.courses.identity import course_id_for
from ananke_hub.courses.layout import CourseLayout
from ananke_hub.courses.registry import CourseRegistry
from ananke_hub.testlms import constants as C
from ananke_hub.testlms.demo import DEMO_CLIENT_ID, DEMO_DEPLOYMENT_ID

pytestmark = [pytest.mark.slow, pytest.mark.chaos]

LEARNERS = 100
KILL_AFTER = 30


def descendants(pid: int) -> list[int]:
    """The processes ``pid`` started, and theirs (from /proc)."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for child in map(int, children):
            found += [child, *descendants(child)]
    return found


async def first_launch(stack, sub: str) -> int:
    async with LTIBrowser() as browser:
        state, nonce, resp = await initiate(browser, stack, sub)
        if not state:
            return resp.status_code
        id_token = forge(stack, nonce, person(sub), overrides={C.ROLES: [C.ROLE_LEARNER]})
        return (await callback(browser, stack, id_token, state)).status_code


async def launch_all(stack, subs, on_done=None) -> list:
    async def one(sub):
        try:
            status = await first_launch(stack, sub)
        except Exception as exc:  # the hub died under the request
            return type(exc).__name__
        if on_done is not None:
            on_done(sub, status)
        return status

    return await asyncio.gather(*(one(sub) for sub in subs))


async def test_hub_killed_during_a_burst_of_first_launches(tmp_path):
    subs = [str(7000 + n) for n in range(LEARNERS)]
    async with admin_stack(tmp_path / "hub") as stack:
        hub = stack.processes["jupyterhub"]
        done = []
        killed = asyncio.Event()

        def count(sub, status):
            done.append(status)
            if len(done) >= KILL_AFTER and not killed.is_set():
                # The hub, and the proxy and Kore it started (their own sessions).
                for pid in [*descendants(hub.pid), hub.pid]:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                killed.set()

        first = await launch_all(stack, subs, count)
        assert killed.is_set(), first
        await hub.wait()
        through = sum(1 for status in first if status == 302)
        assert 0 < through < LEARNERS, first  # the kill fell inside the burst

        await stack.restart_hub()
        again = await launch_all(stack, subs)
        assert again == [302] * LEARNERS, again

        course_id = course_id_for(stack.platform_url, DEMO_CLIENT_ID, DEMO_DEPLOYMENT_ID, "homework")
        group = f"nbgrader-{course_id}"
        for sub in subs:
            user = (await hub_api(stack, f"/users/u{sub}")).json()
            assert group in user["groups"], user
        registry = CourseRegistry(url=f"sqlite:///{stack.layout.root / 'courses.sqlite'}")
        try:
            # The gradebook enrolments run after the logins answered (a lab's start
            # waits for them): wait until they are done, or fail below.
            for _ in range(300):
                members = {m.username: m for m in registry.members(course_id)}
                if all(m.in_gradebook for m in members.values() if m.role == "learner"):
                    break
                await asyncio.sleep(0.2)
        finally:
            registry.close()
        for sub in subs:
            member = members[f"u{sub}"]
            assert (member.role, member.lms_user_id, member.active) == ("learner", sub, True)
            assert member.in_gradebook, member.username

        from nbgrader.api import Gradebook

        layout = CourseLayout(
            homes_root=str(stack.layout.local_homes),
            exchange_root=str(stack.layout.root / "exchange"),
        )
        db = layout.course(course_id).gradebook
        with Gradebook(f"sqlite:///{db}", course_id=course_id) as gb:
            students = {s.id: s.lms_user_id for s in gb.students}
        assert {f"u{sub}": sub for sub in subs}.items() <= students.items()
