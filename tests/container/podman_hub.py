"""An Ananke container made by the container manager, the built-in LMS on the host, and a
relay between them: what the Podman end-to-end test drives.

Network, as on these machines (docs/developer/containers.md):

* The container has podman's default bridge network; the manager publishes the hub on
  ``127.0.0.1:<free port>`` of the host (``c.Container.port``).
* The built-in LMS listens on the host's 127.0.0.1 only, which a bridged container cannot
  reach. The browser (this test, on the host) uses it there; the hub inside fetches the
  LMS's keyset through :class:`TcpRelay`, which listens on the bridge's gateway address
  (the host side of podman's bridge) and forwards to the LMS. So the registration has
  ``jwks_url`` on the gateway and the other URLs on 127.0.0.1: only the hub fetches
  ``jwks_url``.
"""

import asyncio
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from ananke_hub.container import manager
from ananke_hub.container.config import IN_CONTAINER_HOMES_DIR
from ananke_hub.testlms.demo import DEMO_CLIENT_ID, DEMO_DEPLOYMENT_ID, free_port

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "containers" / "template-nbgrader"
ADMIN_SCOPES = [
    "admin:users", "admin:servers", "admin:auth_state", "list:users", "read:hub",
    # The labs' own REST API (contents), as the hub's admin sees it.
    "access:servers",
]
#: Seconds per step, for the session's summary (no timing asserts: benchmarks/ measures).
timings: dict[str, float] = {}
#: Linux's IP_FREEBIND (ip(7)): bind to an address the host does not have yet. Podman
#: creates its bridge (and the gateway address) with the first container.
IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)


def clean_env(**extra) -> dict:
    env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "LANG": "C.UTF-8",
           "HOME": os.environ.get("HOME", "/root")}
    env.update(extra)
    return env


def podman(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    proc = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout,
                          env=clean_env(), check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} failed ({proc.returncode}):\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc


def remove_stale_containers(prefix: str) -> None:
    """Remove containers named ``<prefix><pid>-...`` whose test process is gone (killed)."""
    names = podman("ps", "--all", "--format", "{{.Names}}", "--filter", f"name=^{prefix}",
                   check=False).stdout.split()
    for name in names:
        pid = name.removeprefix(prefix).split("-", 1)[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            podman("rm", "--force", "--time=5", name, check=False)


def forget_old_images(repository: str, tag_prefix: str, keep: str) -> None:
    """Untag ``repository:<tag_prefix>*`` images other than ``keep`` (the Debian bases of
    older cached rootfs layers); their layers go once no image is built on them any more.
    Other tags (a developer's own ``:bookworm``) stay."""
    refs = podman("images", "--format", "{{.Repository}}:{{.Tag}}", "--filter",
                  f"reference={repository}", check=False).stdout.split()
    for ref in refs:
        if ref.startswith(f"{repository}:{tag_prefix}") and ref != keep:
            podman("untag", ref, check=False)


def bridge_gateway(network: str = "podman") -> str:
    """The host's address on podman's default bridge (podman-network-inspect(1))."""
    info = json.loads(podman("network", "inspect", network).stdout)
    for subnet in info[0].get("subnets") or []:
        if subnet.get("gateway"):
            return subnet["gateway"]
    raise AssertionError(f"podman network {network} has no gateway: {info}")


class TcpRelay:
    """Forward TCP connections from ``listen_host:<free port>`` to ``target``.

    An asyncio server in a thread of its own, so the synchronous tests can use it.
    """

    def __init__(self, listen_host: str, target: tuple[str, int]):
        self.listen_host = listen_host
        self.target = target
        self.port: int | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server = None

    async def _pipe(self, reader, writer):
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _handle(self, reader, writer):
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def _start(self):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
        sock.bind((self.listen_host, 0))
        self._server = await asyncio.start_server(self._handle, sock=sock)
        return sock.getsockname()[1]

    def start(self) -> int:
        self._thread.start()
        self.port = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self.port

    def stop(self) -> None:
        async def close():
            if self._server is not None:
                self._server.close()

        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)


class Platform:
    """The built-in LMS (``python -m ananke_hub.testlms``) on the host's 127.0.0.1."""

    def __init__(self, root: Path, hub_url: str):
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.hub_url = hub_url
        self.log_path = root / "platform.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        hub = self.hub_url
        argv = [
            sys.executable, "-m", "ananke_hub.testlms", f"--port={self.port}",
            f"--issuer={self.url}", f"--state-dir={self.root / 'platform'}",
            f"--client-id={DEMO_CLIENT_ID}", f"--deployment-id={DEMO_DEPLOYMENT_ID}",
            f"--tool-login-url={hub}/hub/lti13/oauth_login",
            f"--tool-redirect-uri={hub}/hub/lti13/oauth_callback",
            f"--tool-target-link-uri={hub}/hub/",
            f"--tool-jwks-url={hub}/services/kore/jwks",
        ]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        wait_http(f"{self.url}/", 60, what="the built-in LMS", proc=self.proc)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def wait_http(url: str, timeout: float, *, what: str, proc=None, ok=lambda r: r.status_code < 400,
              diagnose=lambda: "", interval: float = 1) -> httpx.Response:
    deadline = time.monotonic() + timeout
    last = "no answer"
    with httpx.Client(timeout=5) as client:
        while True:
            if proc is not None and proc.poll() is not None:
                raise AssertionError(f"{what} exited with {proc.returncode}")
            try:
                resp = client.get(url)
                if ok(resp):
                    return resp
                last = f"{resp.status_code} {resp.text[:200]!r}"
            except httpx.HTTPError as exc:
                last = repr(exc)
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{what} did not answer at {url} within {timeout:.0f} s (last: {last})\n"
                    f"{diagnose()}"
                )
            time.sleep(interval)


class ManagedHub:
    """One container of ``ananke container`` in a temporary containers directory."""

    def __init__(self, root: Path, image: str, name: str):
        self.root = root
        self.containers = root / "containers"
        self.name = name
        self.dir = self.containers / name
        self.image = image
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.admin_token = os.urandom(24).hex()

    # -- the container directory ---------------------------------------------------------

    def prepare(self, registration: dict) -> None:
        """Make the container from the nbgrader template as an admin does (`ananke container
        init`); set image, port and runtime; add the test fragment."""
        self.containers.mkdir(parents=True)
        shutil.copytree(TEMPLATE, self.containers / TEMPLATE.name)
        manager.init(self.containers, self.dir.name, "nbgrader", out=lambda _: None)
        with open(self.dir / "config.py", "a") as f:
            f.write(
                "\n# The Podman end-to-end test:\n"
                f"c.Container.image = {self.image!r}\n"
                f"c.Container.port = {self.port}\n"
                'c.Container.bind_address = "127.0.0.1"\n'
                'c.Container.network = "bridge"\n'
                'c.Container.runtime = "runc"\n'
                'c.Container.memory = "4g"\n'
                "c.Container.stop_timeout = 30\n"
                'c.Container.restart = "no"\n'
            )
        settings = {
            "JupyterHub": {
                "services": [{"name": "test-admin", "api_token": self.admin_token}],
                "load_roles": [
                    {"name": "test-admin", "scopes": ADMIN_SCOPES, "services": ["test-admin"]}
                ],
            },
            "LMSRegistration": registration,
        }
        fragment = self.dir / "jupyterhub_config.d" / "90_test.json"
        fragment.write_text(json.dumps(settings, indent=2) + "\n")
        fragment.chmod(0o600)  # holds a token

    # -- the container manager -----------------------------------------------------------

    def manager(self, *args: str) -> str:
        ananke = Path(sys.executable).with_name("ananke")
        argv = [str(ananke), "container", "--containers-dir", str(self.containers), *args]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=300,
                              env=clean_env(), check=False)
        if proc.returncode != 0:
            raise AssertionError(f"ananke container {' '.join(args)} failed "
                                 f"({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc.stdout

    def create(self) -> None:
        self.manager("create", self.name)

    def remove(self) -> None:
        self.manager("remove", self.name)

    def force_remove(self) -> None:
        """Cleanup whatever happened: the container goes, its image stays (the cache)."""
        podman("rm", "--force", "--time=10", self.name, check=False)

    # -- inside ------------------------------------------------------------------------------

    def exec(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        return podman("exec", self.name, *argv, check=check)

    def journal(self, unit: str | None = None, lines: int = 150) -> str:
        argv = ["journalctl", "--no-pager", f"--lines={lines}"]
        if unit:
            argv.append(f"--unit={unit}")
        proc = self.exec(*argv, check=False)
        return proc.stdout + proc.stderr

    def diagnose(self) -> str:
        state = podman("ps", "--all", "--filter", f"name=^{self.name}$", check=False).stdout
        console = podman("logs", "--tail=40", self.name, check=False)
        return (f"--- podman ps\n{state}\n--- console\n{console.stdout}{console.stderr}\n"
                f"--- ananke-boot\n{self.journal('ananke-boot', 40)}\n"
                f"--- jupyterhub\n{self.journal('jupyterhub', 120)}\n"
                f"--- jupyterhub-proxy\n{self.journal('jupyterhub-proxy', 40)}")

    def wait_ready(self, timeout: float = 240) -> dict:
        """Wait until the hub and Kore answer through the published port; Kore's JWKS."""
        wait_http(f"{self.url}/hub/health", timeout, what="the hub", diagnose=self.diagnose)
        resp = wait_http(
            f"{self.url}/services/kore/jwks", 120, what="Kore's JWKS",
            ok=lambda r: r.status_code == 200 and r.headers.get(
                "content-type", "").startswith("application/json"),
            diagnose=self.diagnose,
        )
        return resp.json()

    def uid_of(self, user: str) -> int | None:
        proc = self.exec("getent", "passwd", user, check=False)
        return int(proc.stdout.split(":")[2]) if proc.returncode == 0 else None

    def unit_properties(self, unit: str, *names: str) -> dict[str, str]:
        out = self.exec("systemctl", "show", unit, *(f"--property={n}" for n in names)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def host_home(self, user: str) -> Path:
        """A user's home on the host (runtime/homes, mounted at /var/lib/private)."""
        return self.dir / "runtime" / "homes" / user

    def container_home(self, user: str) -> str:
        return f"{IN_CONTAINER_HOMES_DIR}/{user}"

    # -- the hub's REST API and the labs' -------------------------------------------------------

    def api(self, method: str, path: str, body: dict | None = None) -> httpx.Response:
        with httpx.Client(timeout=60) as client:
            return client.request(method, f"{self.url}{path}", json=body,
                                  headers={"Authorization": f"token {self.admin_token}"})

    def wait_server(self, user: str, timeout: float = 180) -> dict:
        deadline = time.monotonic() + timeout
        model = {}
        while time.monotonic() < deadline:
            model = self.api("GET", f"/hub/api/users/{user}").json()
            server = (model.get("servers") or {}).get("")
            if server and server.get("ready"):
                return model
            time.sleep(1)
        raise AssertionError(f"{user}'s server did not become ready: {model}\n{self.diagnose()}")
