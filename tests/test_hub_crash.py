"""After a SIGKILL of the hub (local spawner), Kore does not outlive it.

A killed hub cannot stop its services. An orphaned Kore kept its port, and the next
hub's Kore then failed on "Address already in use" every 30 s while the old one
answered with the old config. A real hub is killed here and started again on the
same ports.
"""

import asyncio
import os
import signal
import socket
from pathlib import Path

import pytest

from ananke_hub.testlms.demo import DemoStack

pytestmark = pytest.mark.slow


def children(pid: int) -> dict[int, str]:
    """The processes whose parent is ``pid``, with their command lines."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        # The field after the command name (in parentheses) is the state, then the ppid.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            found[int(entry.name)] = cmdline
    return found


def alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


async def gone(pid: int, polls: int = 120) -> bool:
    for _ in range(polls):
        if not alive(pid):
            return True
        await asyncio.sleep(0.25)
    return False


async def test_kore_stops_with_a_killed_hub_and_the_next_hub_gets_its_port(tmp_path):
    stack = DemoStack(tmp_path)
    leftovers: list[int] = []
    try:
        await stack.start()
        hub = stack.processes["jupyterhub"]
        services = children(hub.pid)
        (kore_pid,) = [pid for pid, cmd in services.items() if "-m kore" in cmd]
        leftovers = list(services)
        assert port_open(stack.ports.kore)

        os.kill(hub.pid, signal.SIGKILL)
        await hub.wait()
        assert await gone(kore_pid), "Kore outlived the hub that started it"
        assert not port_open(stack.ports.kore)
        assert f"the hub (pid {hub.pid}) is gone" in (stack.log_dir / "jupyterhub.log").read_text()

        # The next hub on the same ports: its Kore gets the port at once.
        await stack.stop()
        await stack._start(timeout=60)
        kore_log = (stack.log_dir / "jupyterhub.log").read_text()
        assert "Address already in use" not in kore_log
    finally:
        await stack.stop()
        for pid in leftovers:  # the proxy and the culler are the hub's business, not Kore's
            if alive(pid):
                os.kill(pid, signal.SIGTERM)
