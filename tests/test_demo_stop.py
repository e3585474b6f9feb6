"""Hub-level: stopping the demo from a script leaves nothing of it running.

The demo is started in the background as a user's script would (``scripts/demo.sh``,
or the ``ananke demo`` it runs), a student's lab with a kernel is started, and the demo
gets SIGTERM (or SIGINT). Then no process of the stack may remain: neither one of the
tree under the demo seen before the signal (platform, hub, proxy, Kore, culler, lab,
kernel; each known by pid and start time), nor any process whose working directory,
command line or environment names the demo's directory. The hub's children run in
their own sessions, so only the demo's own stop reaches them.
"""

import asyncio
import os
import re
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hubtest import wait_for_lab
from lti_browser import LTIBrowser

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
#: Bounded waits (not timing asserts): how long the demo may take to start, to exit
#: after the signal, and for leftovers to go.
START_WAIT = 600  # demo.sh runs scripts/setup.sh first
EXIT_WAIT = 120
LEFTOVER_WAIT = 30
#: What each part of the stack has in its command line.
PARTS = {
    "LMS": "ananke_hub.testlms",
    "hub": "jupyterhub -f",
    "proxy": "ananke_hub.proxy",
    "Kore": "-m kore",
    "culler": "jupyterhub_idle_culler",
    "lab": "jupyterhub-singleuser",
    "kernel": "ipykernel",
}


def stat(pid: int) -> tuple[int, int] | None:
    """(ppid, start time) of a live process; None if gone or a zombie."""
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    fields = data[data.rindex(b")") + 2 :].split()
    return None if fields[0] == b"Z" else (int(fields[1]), int(fields[19]))


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def tree(root_pid: int) -> dict[int, int]:
    """The live descendants of ``root_pid`` (and itself): pid -> start time."""
    procs = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (s := stat(int(entry))):
            procs[int(entry)] = s
    found, todo = {}, [root_pid]
    while todo:
        pid = todo.pop()
        if pid in procs and pid not in found:
            found[pid] = procs[pid][1]
            todo += [child for child, (ppid, _) in procs.items() if ppid == pid]
    return found


def names_dir(pid: int, directory: Path) -> bool:
    """Whether the process works in, was started with, or has in its environment
    ``directory``."""
    text = str(directory)
    try:
        if os.readlink(f"/proc/{pid}/cwd").startswith(text):
            return True
        environ = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
    except OSError:
        return False
    return text in cmdline(pid) or text in environ


def leftovers(snapshot: dict[int, int], directory: Path) -> dict[int, str]:
    left = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        pid = int(entry)
        s = stat(pid)
        if s is None:
            continue
        if snapshot.get(pid) == s[1] or names_dir(pid, directory):
            left[pid] = cmdline(pid)
    return left


def start_demo(argv: list[str]) -> tuple[subprocess.Popen, int, str, str]:
    """Start the demo as a background job of a script; return the script, the demo's
    pid and its LMS and hub URLs.

    A background job of a non-interactive shell starts with SIGINT and SIGQUIT ignored
    (bash(1), "COMMAND EXECUTION ENVIRONMENT"), and processes inherit that: the case
    in which the hub's own SIGINT to its services went unheard.
    """
    script = '"$@" & echo "demo pid $!"; wait $!'
    proc = subprocess.Popen(
        ["bash", "-c", script, "bash", *argv],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # like a script's background job: no terminal signals
    )
    output = b""
    deadline = time.monotonic() + START_WAIT
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline and b"Hub: " not in output:
            if sel.select(timeout=5):
                chunk = os.read(proc.stdout.fileno(), 65536)  # unbuffered: select stays true
                if not chunk:
                    break
                output += chunk
    text = output.decode(errors="replace")
    pid = re.search(r"^demo pid (\d+)$", text, re.M)
    lms = re.search(r"^\s+(http://127\.0\.0\.1:\d+)/$", text, re.M)
    hub = re.search(r"Hub: (http://127\.0\.0\.1:\d+)/hub/", text)
    if not (pid and lms and hub):
        proc.kill()
        raise AssertionError("The demo did not start:\n" + text)
    return proc, int(pid.group(1)), lms.group(1), hub.group(1)


async def start_kernel(browser: LTIBrowser, hub: str, user: str) -> None:
    await wait_for_lab(browser, hub, user)
    xsrf = browser.cookies.get("_xsrf", path=f"/user/{user}/")
    resp = await browser.client.request(
        "POST",
        f"{hub}/user/{user}/api/kernels",
        json={"name": "python3"},
        headers={"X-XSRFToken": xsrf},
    )
    assert resp.status_code == 201, resp.text


@pytest.mark.parametrize(
    "how, sig",
    [("scripts/demo.sh", signal.SIGTERM), ("ananke demo", signal.SIGINT)],
    ids=["demo.sh-SIGTERM", "ananke-demo-SIGINT"],
)
async def test_a_signal_stops_the_whole_demo(tmp_path, how, sig):
    root = tmp_path / "demo"
    command = (
        [str(REPO / "scripts/demo.sh")]
        if how == "scripts/demo.sh"
        else [
            str(Path(sys.executable).parent / "ananke"),
            "demo",
        ]
    )
    proc, demo_pid, lms, hub = start_demo([*command, "--dir", str(root)])
    snapshot = {}
    try:
        async with LTIBrowser() as browser:
            assert (await browser.launch(lms, "3", "homework")).status_code == 200
            await start_kernel(browser, hub, "u3")
        for _ in range(100):  # bounded: the kernel process appears within ~20 s
            snapshot = tree(demo_pid)
            if any(PARTS["kernel"] in cmdline(pid) for pid in snapshot):
                break
            await asyncio.sleep(0.2)
        seen = {part for part, text in PARTS.items() if any(text in cmdline(p) for p in snapshot)}
        assert seen == set(PARTS), f"not running before the stop: {set(PARTS) - seen}"
        # The criterion below finds every process of the running stack.
        assert all(names_dir(pid, root) for pid in snapshot), {
            pid: cmdline(pid) for pid in snapshot if not names_dir(pid, root)
        }

        os.kill(demo_pid, sig)
        await asyncio.to_thread(proc.wait, EXIT_WAIT)  # the script ends with the demo
        left = leftovers(snapshot, root)
        for _ in range(LEFTOVER_WAIT * 5):
            if not left:
                break
            await asyncio.sleep(0.2)
            left = leftovers(snapshot, root)
        assert not left, f"still running after the demo stopped: {left}"
        assert proc.returncode == 0, os.read(proc.stdout.fileno(), 65536).decode()
    finally:
        for pid in [*leftovers(snapshot, root), proc.pid, demo_pid]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait(10)


async def test_stop_takes_a_hub_that_ends_just_after_its_stop_timeout(tmp_path, monkeypatch):
    """The hub ends between DemoStack.stop's timeout and its SIGKILL to the hub's group
    (seen when a hub stopped 100 labs in about HUB_STOP_TIMEOUT): stop must not fail."""
    from ananke_hub.testlms import demo

    ignores_term = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ready', flush=True); time.sleep(30)"
    )
    hub = await asyncio.create_subprocess_exec(
        sys.executable, "-c", ignores_term, stdout=subprocess.PIPE, start_new_session=True
    )
    assert await hub.stdout.readline() == b"ready\n"
    monkeypatch.setattr(demo, "HUB_STOP_TIMEOUT", 0.2)
    real_killpg = os.killpg

    def hub_gone_meanwhile(pgid, sig):
        real_killpg(pgid, signal.SIGKILL)
        while True:  # reaped: the group no longer exists when stop's signal is sent
            try:
                real_killpg(pgid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        real_killpg(pgid, sig)

    monkeypatch.setattr(demo.os, "killpg", hub_gone_meanwhile)
    stack = demo.DemoStack(tmp_path)
    stack.processes = {"hub": hub}
    await stack.stop()
    assert hub.returncode == -signal.SIGKILL
