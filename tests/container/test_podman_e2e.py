"""End to end through the real nbgrader image: Podman, systemd as PID 1, the manager.

The image is built from the working tree on a locally made Debian base
(``scripts/build-images.sh``; no image registry is needed). The container manager
creates the container from ``containers/template-nbgrader`` (``ananke container init``); its
``config.py`` names the test image, a free port and runc. From outside the container,
as an LMS and a browser would: two students launch from the built-in LMS (LTI 1.3) and
their labs start as systemd dynamic users; one writes a file through its lab's contents
API. Then ``ananke container remove`` and ``create``: the file is still there with the
same owner (uid and name), and Kore publishes the same key (kid) as before, because the
boot unit created the secrets once in the state volume and never again.
"""

import asyncio
import os
import secrets
import shutil
import time
from dataclasses import dataclass, field

import httpx
import pytest
from hubtest import wait_for_lab
from lti_browser import LTIBrowser
from podman_hub import (
    ManagedHub,
    Platform,
    TcpRelay,
    bridge_gateway,
    podman,
    remove_stale_containers,
    timings,
    wait_http,
)

from ananke_hub import proxy_unit
from ananke_hub.testlms.demo import DEMO_CLIENT_ID, DEMO_DEPLOYMENT_ID

pytestmark = [pytest.mark.podman, pytest.mark.slow]

#: LMS user ids of the demo course's students -> hub user names.
STUDENTS = {"3": "u3", "4": "u4"}
#: Containers are named after the test process, so a later run removes what a killed one left.
CONTAINER_PREFIX = "ananke-e2e-"
NOTE = "notes/persist.txt"
NOTE_TEXT = "written through the lab before the container was re-created\n"


@dataclass
class Deployment:
    hub: ManagedHub
    platform: Platform
    jwks: dict
    uids: dict[str, int] = field(default_factory=dict)


def kids(jwks: dict) -> list[str]:
    return sorted(key["kid"] for key in jwks["keys"])


async def launch(platform_url: str, hub_url: str, sub: str) -> str:
    """One student's LTI launch until the lab answers; the lab page's text."""
    async with LTIBrowser(timeout=60) as browser:
        resp = await browser.launch(platform_url, sub, "homework")
        assert resp.status_code < 400, (resp.status_code, resp.url)
        lab = await wait_for_lab(browser, hub_url, STUDENTS[sub], timeout=180)
        return lab.text


def launch_all(deployment: Deployment, subs) -> list[str]:
    async def both():
        return await asyncio.gather(
            *(launch(deployment.platform.url, deployment.hub.url, sub) for sub in subs)
        )

    return asyncio.run(both())


@pytest.fixture(scope="module")
def deployment(podman_images, tmp_path_factory):
    remove_stale_containers(CONTAINER_PREFIX)
    root = tmp_path_factory.mktemp("podman-e2e")
    name = f"{CONTAINER_PREFIX}{os.getpid()}-{secrets.token_hex(3)}"
    hub = ManagedHub(root, podman_images, name)
    platform = Platform(root, hub.url)
    relay = None
    try:
        platform.start()
        gateway = bridge_gateway()
        relay = TcpRelay(gateway, ("127.0.0.1", platform.port))
        relay.start()
        hub.prepare({
            "issuer": platform.url,
            "client_id": DEMO_CLIENT_ID,
            "deployment_ids": [DEMO_DEPLOYMENT_ID],
            # The browser (this test) goes to the LMS on 127.0.0.1; the hub fetches the
            # keyset from inside the container, through the relay on the bridge.
            "authorize_url": f"{platform.url}/auth",
            "jwks_url": f"http://{gateway}:{relay.port}/jwks",
            "access_token_url": f"http://{gateway}:{relay.port}/token",
        })
        start = time.monotonic()
        hub.create()
        jwks = hub.wait_ready()
        timings["container create until the hub answers"] = time.monotonic() - start
        yield Deployment(hub, platform, jwks)
    finally:
        hub.force_remove()
        if relay is not None:
            relay.stop()
        platform.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_launches_start_labs_as_dynamic_users(deployment):
    hub = deployment.hub
    start = time.monotonic()
    pages = launch_all(deployment, STUDENTS)
    timings["two launches until both labs answer"] = time.monotonic() - start
    assert all("JupyterLab" in page for page in pages)
    for user in STUDENTS.values():
        props = hub.unit_properties(f"jupyter-{user}", "User", "DynamicUser", "ActiveState")
        assert props == {"User": user, "DynamicUser": "yes", "ActiveState": "active"}, props
        uid = hub.uid_of(user)
        assert uid is not None, f"{user} does not resolve inside the container"
        # The home is on the host, in the container directory's runtime/homes.
        assert hub.host_home(user).stat().st_uid == uid
        deployment.uids[user] = uid
    assert deployment.uids["u3"] != deployment.uids["u4"]
    # The shipped config chose the systemd spawner because PID 1 is systemd.
    assert hub.exec("cat", "/proc/1/comm").stdout.strip() == "systemd"


def test_file_written_through_the_lab_belongs_to_the_student(deployment):
    hub = deployment.hub
    uid = deployment.uids["u3"]
    folder = hub.api("PUT", "/user/u3/api/contents/notes", {"type": "directory"})
    assert folder.status_code in (200, 201), folder.text
    resp = hub.api("PUT", f"/user/u3/api/contents/{NOTE}",
                   {"type": "file", "format": "text", "content": NOTE_TEXT})
    assert resp.status_code == 201, resp.text
    on_host = hub.host_home("u3") / NOTE
    assert on_host.read_text() == NOTE_TEXT
    assert (on_host.stat().st_uid, on_host.stat().st_gid) == (uid, uid)


def test_lab_offers_the_images_teaching_kernel(deployment):
    specs = deployment.hub.api("GET", "/user/u3/api/kernelspecs")
    assert specs.status_code == 200, specs.text
    teaching = specs.json()["kernelspecs"]["teaching"]["spec"]
    assert teaching["display_name"] == "Python 3 (teaching)"
    assert teaching["argv"][0] == "/opt/ananke/kernels/teaching/bin/python"


def test_image_processes_skip_the_iri_grammar(deployment):
    """The hub's, Kore's and the labs' imports do not load rfc3987-syntax (and lark): an
    optional jsonschema checker that builds a grammar at import, seconds of CPU per
    process on a host and minutes under emulation; the images leave it out."""
    probe = (
        "import sys, jupyterhub.app, kore.app, jupyter_server.serverapp, jsonschema; "
        "print(sorted(m for m in ('rfc3987_syntax', 'lark') if m in sys.modules))"
    )
    out = deployment.hub.exec("/opt/ananke/venv/bin/python", "-c", probe)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_hub_survives_its_proxy_units_restart_and_routes_come_back(deployment):
    """The proxy is a unit of its own (jupyterhub-proxy.service, ananke_hub/proxy_unit.py):
    with it stopped for longer than JupyterHub 6.1's fixed wait for a proxy it starts
    itself (15 s), the hub keeps running; started again, it answers without routes until
    the hub adds them back (its check_routes): the hub's, Kore's and the running lab's."""
    hub = deployment.hub
    before = hub.unit_properties("jupyterhub.service", "MainPID", "NRestarts", "ActiveState")
    assert before["ActiveState"] == "active", before
    proxy = hub.unit_properties("jupyterhub-proxy.service", "ActiveState", "MainPID")
    assert proxy["ActiveState"] == "active", proxy
    # Not the hub's child: its own unit's process, systemd's child.
    parent = hub.exec("cat", f"/proc/{proxy['MainPID']}/stat").stdout.rsplit(")", 1)[1].split()[1]
    assert parent == "1", parent

    hub.exec("systemctl", "stop", "jupyterhub-proxy.service")
    with httpx.Client(timeout=5) as client:
        with pytest.raises(httpx.HTTPError):
            client.get(f"{hub.url}/hub/health")
    # Longer than JupyterHub's own proxy wait, and long enough for the hub's route check
    # (every ROUTE_CHECK_INTERVAL s) to find no proxy at least once.
    time.sleep(proxy_unit.ROUTE_CHECK_INTERVAL + 5)
    assert hub.unit_properties("jupyterhub.service", "MainPID", "NRestarts",
                               "ActiveState") == before  # fmt: skip

    hub.exec("systemctl", "start", "jupyterhub-proxy.service")
    # Every route is back without a hub restart: the hub's own, Kore's, the lab's.
    wait = 4 * proxy_unit.ROUTE_CHECK_INTERVAL + 60
    wait_http(f"{hub.url}/hub/health", wait, what="the hub through the restarted proxy",
              diagnose=hub.diagnose)  # fmt: skip
    assert kids(wait_http(f"{hub.url}/services/kore/jwks", wait, what="Kore's JWKS",
                          diagnose=hub.diagnose).json()) == kids(deployment.jwks)  # fmt: skip
    deadline = time.monotonic() + wait
    while (status := hub.api("GET", "/user/u3/api/status")).status_code != 200:
        if time.monotonic() > deadline:
            pytest.fail(f"u3's lab route did not come back: {status.status_code}\n"
                        f"{hub.diagnose()}")  # fmt: skip
        time.sleep(2)
    assert hub.unit_properties("jupyterhub.service", "MainPID", "NRestarts",
                               "ActiveState") == before  # fmt: skip


def test_recreated_container_keeps_files_owners_and_kore_key(deployment):
    hub = deployment.hub
    uid = deployment.uids["u3"]
    start = time.monotonic()
    hub.remove()
    assert podman("container", "exists", hub.name, check=False).returncode == 1
    # The data is on the host and nobody touched it.
    on_host = hub.host_home("u3") / NOTE
    assert on_host.read_text() == NOTE_TEXT
    assert on_host.stat().st_uid == uid

    hub.create()
    jwks = hub.wait_ready()
    timings["remove + create until the hub answers"] = time.monotonic() - start
    # The same signing key: the LMS's copy of the tool's keyset stays valid.
    assert kids(jwks) == kids(deployment.jwks)
    assert jwks == deployment.jwks

    # The student comes back from the LMS: the lab starts as the same dynamic user.
    (page,) = launch_all(deployment, ["3"])
    assert "JupyterLab" in page
    assert hub.uid_of("u3") == uid
    owner = hub.exec("stat", "--format=%U %u", f"{hub.container_home('u3')}/{NOTE}").stdout
    assert owner.split() == ["u3", str(uid)]
    read_back = hub.api("GET", f"/user/u3/api/contents/{NOTE}")
    assert read_back.status_code == 200, read_back.text
    assert read_back.json()["content"] == NOTE_TEXT
    # The hub's own secrets were not made again either: the admin token still works and
    # the old user record (with its encrypted auth_state) is readable.
    state = hub.api("GET", "/hub/api/users/u4?include_stopped_servers")
    assert state.status_code == 200, state.text
