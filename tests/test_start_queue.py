"""A class clicking at once: labs start through a queue, students wait instead of failing.

No timing is asserted: benchmarks/class_start.py measures how long they wait.
"""

import asyncio
import json

import httpx
import pytest
from hubtest import admin_stack, hub_api, hub_log

from ananke_hub.fragments import load_fragments
from ananke_hub.paths import SHIPPED_CONFIG_DIR
from ananke_hub.spawner import LabEnvironment, StartQueue


def test_shipped_timeouts_cover_a_lab_that_starts_slowly():
    # JupyterHub gives up on a started lab that has not answered within http_timeout
    # (30 s by default), whatever start_timeout says: both must be set, and the wait for
    # the answer must fit into the whole start.
    spawner = load_fragments(SHIPPED_CONFIG_DIR).config.Spawner
    assert "http_timeout" in spawner and "start_timeout" in spawner
    assert spawner.http_timeout > 30
    assert spawner.http_timeout <= spawner.start_timeout


async def test_queue_lets_starts_through_in_order_and_frees_cancelled_places():
    queue, order = StartQueue(), []

    async def start(key):
        await queue.acquire(key, 1)
        order.append(key)

    await start("a")
    waiting = [asyncio.create_task(start(k)) for k in ("b", "c", "d")]
    await asyncio.sleep(0)
    assert [queue.position(k) for k in ("b", "c", "d")] == [1, 2, 3]
    waiting[1].cancel()  # c gives up: d moves up, and no slot is lost
    await asyncio.sleep(0)
    assert queue.position("d") == 2
    queue.release(1, took_s=4.0)
    await asyncio.sleep(0)
    assert order == ["a", "b"] and queue.position("d") == 1
    assert queue.estimate_s(1, 1) == 4.0
    queue.release(1)
    await asyncio.gather(waiting[0], waiting[2])
    assert order == ["a", "b", "d"] and queue.active == 1


async def test_the_waiting_page_opened_before_the_start_is_queued_shows_the_place():
    # With slow_spawn_timeout 0 the waiting page asks for progress while the hub still
    # prepares the spawn: the student is not in the queue yet, and must not be told
    # their lab is starting (CI's browser test saw that message and never the place).
    queue, lab_answers = StartQueue(), asyncio.Event()

    class Lab(LabEnvironment):
        start_queue = queue
        user = type("User", (), {"name": "student"})

        async def _wait_for_lab(self, location):
            await lab_answers.wait()

    async def start():
        return ("127.0.0.1", 1)

    first, second = Lab(concurrent_starts=1), Lab(concurrent_starts=1)
    first_start = asyncio.create_task(first.queued_start(start))
    await asyncio.sleep(0)
    events = aiter(second.progress())
    early = asyncio.create_task(anext(events))
    await asyncio.sleep(0.7)  # the page polls while the spawn is not queued yet
    assert not early.done(), early.result()
    second_start = asyncio.create_task(second.queued_start(start))
    assert "You are number 1 in the queue" in (await early)["message"]
    lab_answers.set()
    assert (await anext(events))["message"].startswith("Your lab is starting")
    await asyncio.gather(first_start, second_start)
    assert queue.active == 0


async def progress_messages(stack, name: str) -> list[dict]:
    """The events of ``name``'s spawn progress, as the waiting page receives them."""
    events = []
    async with httpx.AsyncClient(timeout=120) as client:
        url = f"{stack.hub_url}/hub/api/users/{name}/server/progress"
        # Accept as the waiting page's EventSource sends it.
        headers = {"Authorization": f"token {stack.admin_token}", "Accept": "text/event-stream"}
        async with client.stream("GET", url, headers=headers) as resp:
            assert resp.status_code == 200, (resp.status_code, await resp.aread())
            async for line in resp.aiter_lines():
                if line.startswith("data:"):
                    events.append(json.loads(line[5:]))
    return events


@pytest.mark.slow
async def test_a_start_beyond_the_limit_waits_in_the_queue_and_then_starts(tmp_path):
    config = {
        "Spawner": {"concurrent_starts": 1},
        # The API answers 202 at once instead of waiting up to 10 s for each start.
        "JupyterHub": {"tornado_settings": {"slow_spawn_timeout": 0}},
    }
    stack = admin_stack(tmp_path / "demo", extra_config=config)
    async with stack:
        names = ["qa", "qb", "qc"]
        for name in names:
            assert (await hub_api(stack, f"/users/{name}", "POST")).status_code == 201
        for name in names:
            resp = await hub_api(stack, f"/users/{name}/server", "POST")
            assert resp.status_code in (201, 202), resp.text
        qb, qc = await asyncio.gather(
            progress_messages(stack, "qb"), progress_messages(stack, "qc")
        )
        for events in (qb, qc):
            assert events[-1].get("ready") is True, events
            assert not any(e.get("failed") for e in events), events
        # The waiting page showed each their place: qc waited behind qb.
        assert any("You are number 1 in the queue" in e["message"] for e in qb), qb
        assert any("You are number 2 in the queue" in e["message"] for e in qc), qc
        for name in names:
            user = (await hub_api(stack, f"/users/{name}")).json()
            assert user["servers"][""]["ready"] is True, user
        log = hub_log(stack)
        assert "user:qc waited" in log and "Traceback" not in log
