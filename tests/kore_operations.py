"""Follow Kore's background operations (backup, reset, delete) in tests.

A POST answers 202 with the operation's entry and its ``url`` (Kore's path); these poll
that URL until the operation is no longer running. No timing is asserted: the bound is
only there so a hung operation fails the test instead of hanging it.
"""

import asyncio
import time

POLLS = 1200  # x 0.1 s: a backup of a test course takes well under a second
PAUSE = 0.1


def follow(get, started) -> dict:
    """The operation's entry once it ended; ``get(path)`` is a GET of a Kore path."""
    assert started.status_code == 202, started.text
    url = started.json()["url"]
    assert started.headers["location"] == url
    for _ in range(POLLS):
        entry = get(url).json()
        if entry["state"] != "running":
            return entry
        time.sleep(PAUSE)
    raise AssertionError(f"operation {url} still running: {entry}")


async def afollow(get, started) -> dict:
    """:func:`follow` for an async ``get``."""
    assert started.status_code == 202, started.text
    url = started.json()["url"]
    assert started.headers["location"] == url
    for _ in range(POLLS):
        entry = (await get(url)).json()
        if entry["state"] != "running":
            return entry
        await asyncio.sleep(PAUSE)
    raise AssertionError(f"operation {url} still running: {entry}")
