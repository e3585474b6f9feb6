"""The seed's deployment model in a real VM: two unprivileged container admins, rootless
Podman, images from the release archives, LTI launches into each hub, isolation.

In a Debian VM (vm.py) the host admin runs ``ananke host add-admin`` for admin1 and
admin2; each admin's image store was loaded from ``ananke-base-test.tar.gz``
(scripts/save-images.sh) with ``podman load`` on the test host in that admin's id
mapping (conftest.py: the same load in the VM takes minutes under emulation) and is
moved into the admin's home. Then each admin, over SSH in a login session of its own,
makes the container directory with ``ananke container init hub --template base``, sets
image and port and runs ``ananke container create``. The built-in LMS runs on this host,
one per hub; the browser (this test) reaches the hubs through QEMU's forwarded ports,
the hubs reach their LMS's keyset through QEMU's guestfwd. Then: a launch per hub starts a lab as a dynamic user; a file
written in admin1's lab survives ``remove`` + ``create`` with its owner; admin2 can
reach none of admin1's containers, storage, volumes, home, processes' runtime or ports
range.
"""

import asyncio
import json
import re
import secrets
import shutil
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import vm as vmlib
from hubtest import wait_for_lab
from lti_browser import LTIBrowser
from podman_hub import ADMIN_SCOPES, Platform, wait_http
from vm import ADMIN_IDS, ADMINS, HUB_PORTS, IMAGE, STORES_DIR, TAG, timings

from ananke_hub.testlms.demo import DEMO_CLIENT_ID, DEMO_DEPLOYMENT_ID, free_port

pytestmark = [pytest.mark.vm, pytest.mark.slow]

HUB = "hub"
NOTE = "notes/persist.txt"
NOTE_TEXT = "written in the lab before the container was re-created\n"
#: Under software emulation a hub and a lab start 15-50x slower than on the host.
SLOW = 1200
#: Seconds between polls of a starting hub.
POLL = 5
#: Steps of a container's start, by the first journal line (inside the container) that
#: shows each; printed as seconds since ``ananke container create`` began, so the summary
#: says where a create's time goes (docs/developer/testing.md, "The VM test").
START_STEPS = [
    ("systemd started", r"systemd\[1\]: (systemd \d+ running|Detected virtualization)"),
    ("boot unit started", r"Starting .*Ananke: persistent state"),
    ("boot unit done", r"Finished .*Ananke: persistent state"),
    ("proxy unit started", r"Started .*JupyterHub's proxy"),
    ("proxy listening", r"Proxying http"),
    ("hub unit started", r"Started .*JupyterHub \(Ananke\)"),
    ("hub config loaded (imports done)", r"Loading config file|Running JupyterHub version"),
    ("hub reached the proxy", r"Not starting proxy|Hub API listening"),
    ("kore start", r"Starting managed service kore"),
    ("hub running", r"JupyterHub is now running"),
]


class AdminHub:
    """One admin's container in the VM, driven as that admin over SSH."""

    def __init__(self, vm: vmlib.VM, admin: str, host_port: int, lms_addr: str):
        self.vm = vm
        self.admin = admin
        self.host_port = host_port
        self.url = f"http://127.0.0.1:{host_port}"
        self.lms_addr = lms_addr
        self.token = secrets.token_hex(24)
        self.dir = f"/home/{admin}/containers/{HUB}"

    def sh(self, *argv: str, check: bool = True, timeout: float = 900):
        return self.vm.ssh(self.admin, list(argv), check=check, timeout=timeout)

    def prepare(self, platform: Platform) -> None:
        self.manager("init", HUB, "--template", "base")
        config = (
            "\n# The VM test:\n"
            f'c.Container.image = "localhost/{IMAGE}:{TAG}"\n'
            f"c.Container.port = {HUB_PORTS[self.admin]}\n"
            # The VM's own address: QEMU's forwarded port arrives there (where a host's
            # reverse proxy would connect to 127.0.0.1).
            f'c.Container.bind_address = "{vmlib.GUEST_ADDR}"\n'
            'c.Container.memory = "2g"\n'
            "c.Container.stop_timeout = 30\n"
            'c.Container.restart = "no"\n'
        )
        fwd = f"http://{self.lms_addr}:{vmlib.GUEST_FORWARD_PORT}"
        fragment = {
            "JupyterHub": {
                "services": [{"name": "test-admin", "api_token": self.token}],
                "load_roles": [
                    {"name": "test-admin", "scopes": ADMIN_SCOPES, "services": ["test-admin"]}
                ],
            },
            # A lab under emulation on a loaded machine took longer than the shipped
            # 120 s to answer its first request (10_servers.py); the hub then stopped it.
            "Spawner": {"http_timeout": 900},
            "LMSRegistration": {
                "issuer": platform.url,
                "client_id": DEMO_CLIENT_ID,
                "deployment_ids": [DEMO_DEPLOYMENT_ID],
                "authorize_url": f"{platform.url}/auth",
                "jwks_url": f"{fwd}/jwks",
                "access_token_url": f"{fwd}/token",
            },
        }
        self.vm.ssh(self.admin, ["tee", "-a", f"{self.dir}/config.py"], input=config.encode())
        target = f"{self.dir}/jupyterhub_config.d/90_test.json"
        self.vm.ssh(self.admin, ["tee", target], input=json.dumps(fragment).encode())
        self.sh("chmod", "600", target)

    def manager(self, *args: str) -> str:
        return self.sh("ananke", "container", "--containers-dir", "containers", *args,
                       timeout=SLOW).stdout  # fmt: skip

    def exec(self, *argv: str, check: bool = True):
        return self.sh("podman", "exec", HUB, *argv, check=check, timeout=300)

    def diagnose(self) -> str:
        """What a failing step needs to say why: the container, the hub's journal (its
        own unit's, whole since the container's start, then the last of everything), the
        VM's clock against this host's."""
        out = self.sh("podman", "ps", "-a", check=False).stdout
        hub = self.exec("journalctl", "--no-pager", "-o", "short-precise", "-u",
                        "jupyterhub.service", "-n", "400", check=False)  # fmt: skip
        journal = self.exec("journalctl", "--no-pager", "-o", "short-precise", "-n", "80",
                            check=False)  # fmt: skip
        try:
            clock = f"{self.vm.clock_offset():+.1f} s"
        except Exception as exc:  # evidence only: never hide the failure being diagnosed
            clock = f"not measured ({exc})"
        return (
            f"--- podman ps ({self.admin})\n{out}\n"
            f"--- the hub's journal (jupyterhub.service)\n{hub.stdout}{hub.stderr}\n"
            f"--- the container's journal, last lines\n{journal.stdout}{journal.stderr}\n"
            f"--- the VM's clock against this host's: {clock}"
        )

    def uptime(self) -> float:
        """The VM's CLOCK_MONOTONIC (what the container's journal stamps -o short-monotonic)."""
        return float(self.vm.ssh("root", ["cat", "/proc/uptime"], timeout=300).stdout.split()[0])

    def start_steps(self, since: float) -> dict[str, float]:
        """Seconds from ``since`` (VM uptime) to each of START_STEPS, from the journal."""
        out = self.exec("journalctl", "--no-pager", "-o", "short-monotonic", "-b",
                        check=False).stdout  # fmt: skip
        found = {}
        for line in out.splitlines():
            stamp = re.match(r"\[\s*([\d.]+)\]", line)
            if not stamp:
                continue
            for label, pattern in START_STEPS:
                if label not in found and re.search(pattern, line):
                    found[label] = round(float(stamp.group(1)) - since, 1)
        return found

    def create_and_wait(self, label: str = "") -> dict:
        """``ananke container create``, then wait for the hub and Kore; the step times go
        to the summary. Kore's JWKS."""
        since = self.uptime()
        start = time.monotonic()
        self.manager("create", HUB)
        who = f"{self.admin}{label}"
        timings[f"create command ({who})"] = time.monotonic() - start
        jwks = self.wait_ready()
        timings[f"create until hub and kore answer ({who})"] = time.monotonic() - start
        timings[f"in-container steps since create ({who}), s"] = self.start_steps(since)
        return jwks

    def wait_ready(self) -> dict:
        # Every poll costs the starting proxy and hub CPU (an error page each): under
        # emulation, seconds apart.
        wait_http(f"{self.url}/hub/health", SLOW, what=f"{self.admin}'s hub", interval=POLL,
                  diagnose=self.diagnose)  # fmt: skip
        return wait_http(f"{self.url}/services/kore/jwks", SLOW, what="Kore's JWKS", interval=POLL,
                         diagnose=self.diagnose).json()  # fmt: skip

    def api(self, method: str, path: str, body=None):
        import httpx

        with httpx.Client(timeout=120) as client:
            return client.request(method, f"{self.url}{path}", json=body,
                                  headers={"Authorization": f"token {self.token}"})  # fmt: skip

    def owner_on_host(self, path: str) -> int:
        """The owner uid of a file under runtime/homes as the VM (the host) sees it."""
        out = self.vm.ssh("root", ["stat", "--format=%u", f"{self.dir}/runtime/homes/{path}"])
        return int(out.stdout.strip())


async def _launch(platform_url: str, hub_url: str, sub: str, user: str) -> str:
    async with LTIBrowser(timeout=SLOW) as browser:
        resp = await browser.launch(platform_url, sub, "homework")
        # The body carries the hub's reason (e.g. which check refused the id_token).
        assert resp.status_code < 400, f"{resp.status_code} at {resp.url}:\n{resp.text[-3000:]}"
        lab = await wait_for_lab(browser, hub_url, user, timeout=SLOW)
        return lab.text


def launch(platform: Platform, hub: AdminHub, sub: str = "3") -> str:
    """An LTI launch as learner ``sub`` through ``hub``, until the lab answers; on failure
    the error says why (the hub's answer, its journal, the VM's clock)."""
    # The LMS's id_token lives 60 s by this host's clock; the hub checks it by the VM's.
    offsets = timings.setdefault(f"vm clock offset before launches ({hub.admin}), s", [])
    offsets.append(round(hub.vm.sync_clock(), 1))
    try:
        return asyncio.run(_launch(platform.url, hub.url, sub, f"u{sub}"))
    except Exception as exc:
        raise AssertionError(f"launch through {hub.admin}'s hub failed: {exc}\n"
                             f"{hub.diagnose()}") from exc  # fmt: skip


def python_start(vm: vmlib.VM) -> None:
    """Measured for the summary: what a Python start of the CLI costs in the VM, and
    whether its modules load from valid bytecode (a module compiled from source on every
    start would be a large, avoidable cost under emulation)."""

    def run(*argv):
        start = time.monotonic()
        proc = vm.ssh("admin1", list(argv), check=False, timeout=600)
        return time.monotonic() - start, proc

    timings["ssh round trip in the VM"] = run("true")[0]
    python = f"{vmlib.rootfs.VENV}/bin/python"
    timings["python -c pass in the VM"] = run(python, "-c", "pass")[0]
    timings["ananke container --help in the VM"] = run("ananke", "container", "--help")[0]
    _, proc = run("env", "PYTHONDONTWRITEBYTECODE=1", python, "-v", "-c",
                  "import ananke_hub.container.manager")  # fmt: skip
    lines = proc.stderr.splitlines()
    from_pyc = sum(1 for x in lines if "code object from '" in x)
    from_source = sum(1 for x in lines if "code object from /" in x)
    timings["CLI modules from bytecode / from source"] = f"{from_pyc}/{from_source}"


def provision(vm: vmlib.VM) -> None:
    """The host admin's and the container admins' set-up (docs/admin/hosting.md)."""
    for admin, ports in ADMINS.items():
        start = time.monotonic()
        # The host admin's command, for real.
        vm.ssh("root", ["ananke", "host", "add-admin", admin, "--ports", ports])
        timings[f"add-admin {admin}"] = time.monotonic() - start
        # The store on the disk was loaded for these ids (vmlib.ADMIN_IDS).
        uid = int(vm.ssh("root", ["id", "-u", admin]).stdout)
        subuid = vm.ssh("root", ["grep", f"^{admin}:", "/etc/subuid"]).stdout.split(":")
        assert (uid, int(subuid[1])) == ADMIN_IDS[admin], (
            f"{admin} got uid {uid} and subordinate ids from {subuid[1]}, but its image store "
            f"was loaded for {ADMIN_IDS[admin]}: update vm.ADMIN_IDS"
        )
        home = f"/home/{admin}"
        dirs = [f"{home}/.ssh", f"{home}/.local", f"{home}/.local/share",
                f"{home}/.local/share/containers"]  # fmt: skip
        vm.ssh("root", ["install", "-d", "-m", "700", "-o", admin, "-g", admin, *dirs])
        vm.ssh("root", ["install", "-m", "600", "-o", admin, "-g", admin,
                        "/root/.ssh/authorized_keys", f"{home}/.ssh/authorized_keys"])  # fmt: skip
        # Where rootless Podman keeps its images: the store loaded for this admin.
        vm.ssh("root", ["python3", "-c", "import os, sys; os.rename(*sys.argv[1:])",
                        f"{STORES_DIR}/{admin}", f"{home}/.local/share/containers/storage"])  # fmt: skip
    python_start(vm)
    for admin in ADMINS:
        images = vm.ssh(admin, ["podman", "images", "--format", "{{.Repository}}:{{.Tag}}"])
        assert f"localhost/{IMAGE}:{TAG}" in images.stdout.split(), images.stdout
        vm.ssh(admin, ["mkdir", "-p", "containers"])
        vm.ssh(admin, ["tar", "-x", "-C", "containers", "-f",
                       "/usr/share/ananke-vm-test/template.tar"])  # fmt: skip


@pytest.fixture(scope="module")
def deployment(vm_disk, tmp_path_factory):
    disk, kernel, initrd, key = vm_disk
    root = tmp_path_factory.mktemp("vm-run")
    ports = {admin: free_port() for admin in ADMINS}
    lms_addrs = {"admin1": "10.77.0.100", "admin2": "10.77.0.101"}
    platforms = {a: Platform(root / a, f"http://127.0.0.1:{ports[a]}") for a in ADMINS}
    for admin, platform in platforms.items():
        (root / admin).mkdir()
        platform.start()
    guest = vmlib.VM(
        disk, kernel, initrd, key, root, snapshot=True,
        forwards={ports[a]: HUB_PORTS[a] for a in ADMINS},
        guest_forwards={lms_addrs[a]: platforms[a].port for a in ADMINS},
    )  # fmt: skip
    hubs = {}
    try:
        start = time.monotonic()
        guest.start()
        timings["boot until ssh"] = time.monotonic() - start
        provision(guest)
        for admin in ADMINS:
            hubs[admin] = AdminHub(guest, admin, ports[admin], lms_addrs[admin])
            hubs[admin].prepare(platforms[admin])
        start = time.monotonic()
        # Both admins at once, as on a real host: the VM has two virtual CPUs. (Before
        # the proxy became a unit of its own, two hubs starting at once under emulation
        # missed JupyterHub's fixed wait for its proxy and restarted in a loop.)
        with ThreadPoolExecutor(len(hubs)) as pool:
            futures = {admin: pool.submit(hub.create_and_wait) for admin, hub in hubs.items()}
            jwks = {admin: future.result() for admin, future in futures.items()}
        timings["two creates until both hubs answer"] = time.monotonic() - start
        # The image's modules, as the hub loads them: from the image's bytecode?
        probe = hubs["admin1"].exec("env", "PYTHONDONTWRITEBYTECODE=1",
                                    "/opt/ananke/venv/bin/python", "-v", "-c",
                                    "import jupyterhub.app, kore", check=False).stderr  # fmt: skip
        from_pyc, from_source = probe.count("code object from '"), probe.count("object from /")
        timings["image modules from bytecode / from source"] = f"{from_pyc}/{from_source}"
        yield guest, hubs, platforms, jwks
    finally:
        for hub in hubs.values():
            hub.sh("podman", "stop", "-a", "--time=10", check=False, timeout=120)
        guest.stop()
        for platform in platforms.values():
            platform.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_doctor_is_content_for_both_admins(deployment):
    _, hubs, _, _ = deployment
    for hub in hubs.values():
        out = hub.sh("ananke", "container", "--containers-dir", "containers", "doctor", HUB,
                     check=False)  # fmt: skip
        assert out.returncode == 0, out.stdout + out.stderr
        assert "0 error(s)" in out.stdout


def test_launch_through_each_hub_starts_a_lab_as_a_dynamic_user(deployment):
    _, hubs, platforms, _ = deployment
    for admin, hub in hubs.items():
        start = time.monotonic()
        assert "JupyterLab" in launch(platforms[admin], hub)
        timings[f"launch until the lab answers ({admin})"] = time.monotonic() - start
        props = hub.exec("systemctl", "show", "jupyter-u3", "--property=User",
                         "--property=DynamicUser", "--property=ActiveState").stdout  # fmt: skip
        assert dict(line.split("=", 1) for line in props.split()) == {
            "User": "u3", "DynamicUser": "yes", "ActiveState": "active"
        }  # fmt: skip
        uid = int(hub.exec("id", "-u", "u3").stdout)
        assert 61184 <= uid <= 65519


def test_file_in_a_lab_survives_remove_and_create_with_its_owner(deployment):
    _, hubs, platforms, jwks = deployment
    hub = hubs["admin1"]
    assert hub.api("PUT", "/user/u3/api/contents/notes", {"type": "directory"}).status_code in (
        200, 201,
    )  # fmt: skip
    put = hub.api("PUT", f"/user/u3/api/contents/{NOTE}",
                  {"type": "file", "format": "text", "content": NOTE_TEXT})  # fmt: skip
    assert put.status_code == 201, put.text
    uid_inside = int(hub.exec("stat", "--format=%u", f"/var/lib/private/u3/{NOTE}").stdout)
    owner = hub.owner_on_host(f"u3/{NOTE}")
    # Rootless: the dynamic uid lives in admin1's subordinate range on the host.
    subuid = hub.vm.ssh("root", ["grep", "^admin1:", "/etc/subuid"]).stdout.split(":")
    assert owner == int(subuid[1]) + uid_inside - 1

    start = time.monotonic()
    hub.manager("remove", HUB)
    timings["remove command"] = time.monotonic() - start
    assert hub.create_and_wait(", again") == jwks["admin1"]
    timings["remove + create until the hub answers"] = time.monotonic() - start
    assert "JupyterLab" in launch(platforms["admin1"], hub)
    read = hub.api("GET", f"/user/u3/api/contents/{NOTE}")
    assert read.status_code == 200 and read.json()["content"] == NOTE_TEXT
    assert hub.owner_on_host(f"u3/{NOTE}") == owner
    assert hub.exec("stat", "--format=%U %u", f"/var/lib/private/u3/{NOTE}").stdout.split() == [
        "u3", str(uid_inside),
    ]  # fmt: skip


def test_admin2_cannot_reach_admin1s_containers_storage_volumes_home(deployment):
    guest, hubs, _, _ = deployment
    a1 = hubs["admin1"]

    def as_admin2(*argv):
        return guest.ssh("admin2", list(argv), check=False, timeout=300)

    # Containers: admin2's podman does not see admin1's, cannot exec into or stop them.
    listed = as_admin2("podman", "ps", "-a", "--format", "{{.Names}} {{.Labels}}").stdout
    assert "/home/admin1" not in listed
    assert as_admin2("podman", "exec", HUB, "cat", f"/var/lib/private/u3/{NOTE}").stdout != (
        NOTE_TEXT
    )  # fmt: skip
    pid = guest.ssh("admin1", ["podman", "inspect", "--format", "{{.State.Pid}}", HUB]).stdout
    assert as_admin2("kill", "-0", pid.strip()).returncode != 0
    assert as_admin2("nsenter", "-t", pid.strip(), "-m", "true").returncode != 0
    # Storage, volumes (runtime/), the home, the runtime directory.
    uid1 = guest.ssh("admin1", ["id", "-u"]).stdout.strip()
    for path in [
        "/home/admin1",
        "/home/admin1/containers",
        "/home/admin1/.local/share/containers/storage",
        f"{a1.dir}/runtime/homes/u3",
        f"{a1.dir}/runtime/state",
        f"/run/user/{uid1}",
    ]:
        assert as_admin2("ls", path).returncode != 0, path
    assert as_admin2("cat", f"{a1.dir}/jupyterhub_config.d/90_test.json").returncode != 0
    # Ports: admin1's range is refused to admin2 by doctor.
    config = f"/home/admin2/containers/{HUB}/config.py"
    guest.ssh("admin2", ["tee", "-a", config], input=b"\nc.Container.port = 20050\n")
    doctor = as_admin2("ananke", "container", "--containers-dir", "containers", "doctor", HUB)
    assert doctor.returncode == 2 and "admin1's port range 20000-20099" in doctor.stdout
