"""``ananke demo``: a hub, Kore and the built-in LMS on 127.0.0.1, on free ports.

The same :class:`DemoStack` starts the stack for the hub-level tests and the
benchmarks, so what a newcomer tries is what the tests check.

A demo keeps its state across runs: the hub's database and homes, the LMS's keys and
gradebook, and its ports (``ports.json``). The LMS's port is part of its issuer, and a
course belongs to the issuer and the LMS course it was launched from: a new port would
be a new LMS, with new, empty courses.
"""

import asyncio
import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import sys
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from tornado.httpclient import AsyncHTTPClient, HTTPClientError

from ananke_hub.framing import select_content_url
from ananke_hub.paths import SHIPPED_HUB_CONFIG, StateLayout, shipped_fragments

DEMO_CLIENT_ID = "ananke-demo-client"
DEMO_DEPLOYMENT_ID = "ananke-demo-deployment"
#: Where a demo remembers its ports, in its directory.
PORTS_FILE = "ports.json"
#: Seconds the hub gets to stop its labs and services after SIGTERM (it stops each
#: service with SIGINT and waits up to 10 s before SIGTERM); then the rest is ended.
HUB_STOP_TIMEOUT = 30
#: Seconds leftover processes get between SIGTERM and SIGKILL.
KILL_TIMEOUT = 5


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        # As the servers bind: a port whose last connections linger in TIME_WAIT is free.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class DemoPortTaken(RuntimeError):
    """The LMS's remembered port is taken: the message says by what and what to do."""


@dataclass(frozen=True)
class DemoPorts:
    hub: int
    hub_api: int
    proxy_api: int
    kore: int
    platform: int

    @classmethod
    def pick(cls) -> "DemoPorts":
        # Hold all sockets until all are picked, so the five ports differ.
        sockets = [socket.socket() for _ in range(5)]
        try:
            for s in sockets:
                s.bind(("127.0.0.1", 0))
            return cls(*(s.getsockname()[1] for s in sockets))
        finally:
            for s in sockets:
                s.close()

    def replace_taken(self) -> "DemoPorts":
        """These ports, with a new free one for each taken one except the LMS's."""
        new = DemoPorts.pick()
        changes = {
            f.name: getattr(new, f.name)
            for f in fields(self)
            if f.name != "platform" and not port_is_free(getattr(self, f.name))
        }
        return replace(self, **changes)

    @classmethod
    def load(cls, path: Path) -> "DemoPorts | None":
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except ValueError as exc:
            raise RuntimeError(f"{path} is not valid JSON ({exc}); fix or remove it.") from exc
        try:
            return cls(**{f.name: int(data[f.name]) for f in fields(cls)})
        except (KeyError, TypeError, ValueError) as exc:
            raise RuntimeError(
                f"{path} must hold the ports {', '.join(f.name for f in fields(cls))}; "
                f"fix or remove it ({exc!r})."
            ) from exc

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time) of a process from /proc/<pid>/stat, None if gone."""
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ")".
    rest = data[data.rindex(b")") + 2 :].split()
    if rest[0] == b"Z":  # a zombie has ended; only its parent's wait is missing
        return None
    return int(rest[1]), int(rest[19])


def works_in(pid: int, directory: Path) -> bool:
    """Whether the process's working directory is ``directory`` or below it."""
    try:
        cwd = Path(os.readlink(f"/proc/{pid}/cwd"))
    except OSError:
        return False
    return cwd == directory or directory in cwd.parents


def children_of(pid: int) -> list[int]:
    return [child for child, (ppid, _) in _all_processes().items() if ppid == pid]


def _all_processes() -> dict[int, tuple[int, int]]:
    procs = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None:
                procs[int(entry.name)] = stat
    return procs


class ProcessTree:
    """Processes and their descendants, each known by pid and start time (a pid that
    comes back for another process is not ours)."""

    def __init__(self, members: dict[int, int]):
        self.members = members  # pid -> start time

    @classmethod
    def of(cls, roots: set[int]) -> "ProcessTree":
        tree = cls({})
        tree._grow(roots)
        return tree

    def _grow(self, roots: set[int]) -> None:
        procs = _all_processes()
        todo = [pid for pid in roots if pid in procs]
        while todo:
            pid = todo.pop()
            if pid in self.members:
                continue
            self.members[pid] = procs[pid][1]
            todo += [child for child, (ppid, _) in procs.items() if ppid == pid]

    def alive(self) -> list[int]:
        alive = []
        for pid, started in self.members.items():
            stat = _stat(pid)
            if stat is not None and stat[1] == started:
                alive.append(pid)
        return alive

    async def end(self, timeout: float) -> None:
        """SIGTERM every member still alive (and what they started meanwhile), then
        SIGKILL what is left after ``timeout`` seconds."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            self._grow(set(self.alive()))
            alive = self.alive()
            for pid in alive:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + timeout
            while alive and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
                alive = self.alive()
            if not alive:
                return


def adopt_orphans() -> bool:
    """Make this process the reaper of its descendants' orphans (Linux
    PR_SET_CHILD_SUBREAPER, prctl(2)): a lab or kernel whose parent died stays our
    descendant, so stopping the demo finds it. False where the call is unavailable."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER = 36
    except (OSError, AttributeError):
        return False


class DemoStack:
    """Processes of a demo: the built-in LMS, then JupyterHub (which starts Kore)."""

    def __init__(
        self,
        root: Path,
        *,
        extra_config: dict | None = None,
        platform_args=(),
        platform_module: str = "ananke_hub.testlms",
        persist_platform: bool = True,
        register_by_url: bool = False,
        platform_host: str = "127.0.0.1",
    ):
        self.root = Path(root).resolve()
        #: The host name of the LMS's URLs. "localhost" makes it another site than the
        #: hub's 127.0.0.1 for browsers (cross-site frames and cookies, as a real LMS).
        self.platform_host = platform_host
        #: Leave 30_lms.py's registration out: the LMS registers by a pasted URL
        #: (:meth:`new_registration_url`, the LMS's /admin/tools page).
        self.register_by_url = register_by_url
        # Any module that takes the built-in platform's flags and serves the same URLs
        # (/, /launch, /auth, /jwks) can stand in for it, e.g. a third-party platform.
        self.platform_module = platform_module
        # The built-in LMS keeps its gradebook across runs (--persist), as an LMS does;
        # a stand-in module without that flag passes False.
        self.persist_platform = persist_platform
        # The LMS's issuer names its port: a demo keeps the ports of its first run.
        self.ports_file = self.root / PORTS_FILE
        remembered = DemoPorts.load(self.ports_file)
        self.ports = remembered or DemoPorts.pick()
        self.platform_port_fixed = remembered is not None
        #: Set when this process adopts orphans (PR_SET_CHILD_SUBREAPER, see run_demo):
        #: then its children besides the stack's are the stack's orphans too.
        self.adopts_orphans = False
        self.extra_config = extra_config or {}
        self.platform_args = list(platform_args)
        self.layout = StateLayout(self.root / "state")
        self.config_dir = self.root / "config.d"
        self.log_dir = self.root / "logs"
        self.processes: dict[str, asyncio.subprocess.Process] = {}

    @property
    def hub_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.hub}"

    @property
    def platform_url(self) -> str:
        return f"http://{self.platform_host}:{self.ports.platform}"

    def registration(self) -> dict:
        if self.register_by_url:
            return {
                "issuer": "",
                "client_id": [],
                "deployment_ids": [],
                "authorize_url": "",
                "jwks_url": "",
                "access_token_url": "",
            }
        return {
            "issuer": self.platform_url,
            "client_id": DEMO_CLIENT_ID,
            "deployment_ids": [DEMO_DEPLOYMENT_ID],
            "authorize_url": f"{self.platform_url}/auth",
            "jwks_url": f"{self.platform_url}/jwks",
            "access_token_url": f"{self.platform_url}/token",
        }

    def prepare(self) -> None:
        """Write the demo's config directory: the shipped fragments plus 90_demo.json."""
        self.config_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for source in shipped_fragments():
            target = self.config_dir / source.name
            if not target.exists():  # keep what a user edited in an earlier demo run
                shutil.copyfile(source, target)
        settings = {
            "JupyterHub": {
                "bind_url": f"{self.hub_url}/",
                "hub_bind_url": f"http://127.0.0.1:{self.ports.hub_api}",
            },
            "ConfigurableHTTPProxy": {"api_url": f"http://127.0.0.1:{self.ports.proxy_api}"},
            "Kore": {"port": self.ports.kore},
            "LMSRegistration": self.registration(),
            # Run as root, the local spawner's labs are root: allowed for this loopback demo.
            "AnankeLocalSpawner": {"allow_root": True},
        }
        for section, values in self.extra_config.items():
            settings.setdefault(section, {}).update(values)
        # JSON, not Python: generated settings are data (see fragments.py).
        (self.config_dir / "90_demo.json").write_text(json.dumps(settings, indent=2) + "\n")
        self.upgrade_database()

    def upgrade_database(self) -> None:
        """A demo directory of an earlier release: upgrade its database, as an admin
        does with `ananke upgrade-db` (the hub refuses an old one), and say so."""
        from ananke_hub.courses.schema import upgrade

        database = self.layout.root / "courses.sqlite"
        if database.exists():
            said = []
            before, after = upgrade(f"sqlite:///{database}", said.append)
            if before != after:
                print("\n".join(f"demo: {line}" for line in said), flush=True)

    def _env(self) -> dict:
        env = dict(os.environ)
        bindir = str(Path(sys.executable).parent)
        env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
        env["ANANKE_CONFIG_DIR"] = str(self.config_dir)
        env["ANANKE_STATE_DIR"] = str(self.layout.root)
        env.pop("JUPYTERHUB_CRYPT_KEY", None)  # the hub reads its own, persisted key
        return env

    async def _spawn(self, name: str, argv: list[str], cwd: Path) -> None:
        log = open(self.log_dir / f"{name}.log", "ab")  # closed below, once the child has it
        self.processes[name] = await asyncio.create_subprocess_exec(
            *argv,
            cwd=cwd,
            env=self._env(),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()  # the child has its own copy of the descriptor

    async def _wait_http(self, name: str, url: str, timeout: float) -> None:
        client = AsyncHTTPClient()
        deadline = time.monotonic() + timeout
        while True:
            proc = self.processes[name]
            if proc.returncode is not None:
                raise RuntimeError(
                    f"{name} exited with code {proc.returncode}; see {self.log_dir / name}.log"
                )
            try:
                await client.fetch(url, request_timeout=2)
                return
            except (HTTPClientError, OSError):
                pass  # not up yet (the proxy answers 404 until the hub added its routes)
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} did not answer at {url}; see {self.log_dir}")
            await asyncio.sleep(0.2)

    async def start(self, timeout: float = 60, attempts: int = 3) -> None:
        """Start the LMS and the hub; on a port taken meanwhile by another process, retry."""
        for attempt in range(1, attempts + 1):
            try:
                return await self._start(timeout)
            except DemoPortTaken:
                raise
            except RuntimeError:
                await self.stop()
                if attempt == attempts or not self._port_was_taken():
                    raise
                fixed = self.platform_port_fixed
                self.ports = self.ports.replace_taken() if fixed else DemoPorts.pick()

    def _port_was_taken(self) -> bool:
        """True if a process failed on a taken port (its log is moved aside for the retry)."""
        taken = False
        for log in self.log_dir.glob("*.log"):
            if "Address already in use" in log.read_text(errors="replace"):
                log.replace(log.with_suffix(".log.port-taken"))
                taken = True
        return taken

    def _check_platform_port(self) -> None:
        port = self.ports.platform
        if not self.platform_port_fixed or port_is_free(port):
            return
        raise DemoPortTaken(
            f"Port {port} on 127.0.0.1 is taken by another process, and the demo's LMS "
            f"needs it: its issuer {self.platform_url} names the port, and the courses of "
            f"earlier runs of this demo belong to that issuer. Stop the process holding it "
            f"(`ss -ltnp 'sport = :{port}'` shows which; maybe this demo still runs "
            f"elsewhere) and start the demo again. To start afresh on new ports instead, "
            f"remove {self.ports_file}: the hub then makes new, empty courses for the new "
            "issuer."
        )

    async def _start(self, timeout: float) -> None:
        self._check_platform_port()
        if self.platform_port_fixed:
            # Other ports may be taken since the last run; they are not part of anyone's
            # identity (the hub's cookies ignore the port), so they move.
            self.ports = self.ports.replace_taken()
        self.prepare()
        hub = self.hub_url
        platform_state = self.root / "platform"
        await self._spawn(
            "platform",
            [
                sys.executable,
                "-m",
                self.platform_module,
                f"--port={self.ports.platform}",
                f"--issuer={self.platform_url}",
                f"--state-dir={platform_state}",
                f"--client-id={DEMO_CLIENT_ID}",
                f"--deployment-id={DEMO_DEPLOYMENT_ID}",
                f"--tool-login-url={hub}/hub/lti13/oauth_login",
                f"--tool-redirect-uri={hub}/hub/lti13/oauth_callback",
                f"--tool-target-link-uri={hub}/hub/",
                *(
                    []  # a Dynamic Registration sets it, as in Moodle
                    if self.register_by_url
                    else [f"--tool-content-selection-url={select_content_url(hub + '/hub/')}"]
                ),
                f"--tool-jwks-url={hub}/services/kore/jwks",
                *(["--persist"] if self.persist_platform else []),
                *self.platform_args,
            ],
            cwd=self.root,
        )
        await self._wait_http("platform", f"{self.platform_url}/", timeout)
        # The LMS is up with this issuer: from now on the demo keeps its port.
        self.ports.save(self.ports_file)
        self.platform_port_fixed = True
        self.layout.root.mkdir(parents=True, exist_ok=True)
        await self._start_hub(timeout)

    async def _start_hub(self, timeout: float) -> None:
        await self._spawn(
            "jupyterhub",
            [sys.executable, "-m", "jupyterhub", "-f", str(SHIPPED_HUB_CONFIG)],
            cwd=self.layout.root,
        )
        await self._wait_http("jupyterhub", f"{self.hub_url}/hub/health", timeout)
        await self._wait_http("jupyterhub", f"{self.hub_url}/services/kore/jwks", timeout)

    async def new_registration_url(self) -> str | None:
        """A registration URL for the demo's LMS; None if an LMS is registered already."""
        from ananke_hub.courses.registry import CourseRegistry
        from ananke_hub.registrations import RegistrationStore, registration_url

        def make() -> str | None:
            registry = CourseRegistry(url=f"sqlite:///{self.layout.root / 'courses.sqlite'}")
            try:
                store = RegistrationStore(registry)
                if store.entries():
                    return None
                return store.create_ticket(ttl=3600, actor="demo")
            finally:
                registry.close()

        secret = await asyncio.to_thread(make)
        return registration_url(self.hub_url, secret) if secret else None

    async def restart_hub(self, timeout: float = 60) -> None:
        """Stop JupyterHub if it still runs (and with it Kore and the proxy), then start it
        again on the same state and ports; the LMS keeps running. For tests of what
        survives a restart or a crash."""
        proc = self.processes.pop("jupyterhub")
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                # It may end between the timeout and this signal (a hub stopping 100
                # labs took just that long): its group is then gone, as wanted.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
        await self._start_hub(timeout)

    async def stop(self) -> None:
        """Stop the hub (which stops its labs and services), then the LMS; then end
        whatever of the stack is left: the hub's children run in their own sessions,
        so neither a signal to the hub's group nor the hub's death reaches them."""
        roots = {p.pid for p in self.processes.values() if p.returncode is None}
        if self.adopts_orphans:
            # Orphans of the stack work in the demo's directory (homes, state); a browser
            # that --open started is our child too, but elsewhere, and stays.
            roots |= {pid for pid in children_of(os.getpid()) if works_in(pid, self.root)}
        stack = ProcessTree.of(roots)
        for name in reversed(list(self.processes)):
            proc = self.processes.pop(name)
            if proc.returncode is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), HUB_STOP_TIMEOUT)
            except TimeoutError:
                # It may end between the timeout and this signal (a hub stopping 100
                # labs took just that long): its group is then gone, as wanted.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
        await stack.end(KILL_TIMEOUT)

    async def __aenter__(self) -> "DemoStack":
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop()


async def _serve(root: Path, open_browser: bool, register_by_url: bool = False) -> int:
    stack = DemoStack(root, register_by_url=register_by_url)
    stack.adopts_orphans = adopt_orphans()
    # Signals stop the demo from the first moment: one while starting stops the start.
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, stopped.set)
    print("Starting the built-in LMS, JupyterHub and Kore ...", flush=True)
    starting = asyncio.ensure_future(stack.start())
    stop_waiter = asyncio.ensure_future(stopped.wait())
    try:
        await asyncio.wait([starting, stop_waiter], return_when=asyncio.FIRST_COMPLETED)
        if stopped.is_set():
            starting.cancel()
            print("Stopping ...", flush=True)
            return 0
        starting.result()  # raises what the start raised
        if register_by_url:
            url = await stack.new_registration_url()
            if url:
                print(
                    "\nRegister the demo LMS by URL: open its Manage tools page\n\n"
                    f"    {stack.platform_url}/admin/tools\n\npaste this registration URL "
                    f"(valid for one hour, once) and click Add:\n\n    {url}\n",
                    flush=True,
                )
            else:
                print("\nThe demo LMS is registered already (`ananke lms list`).", flush=True)
        print(
            f"\nAnanke demo running. Open the demo LMS:\n\n    {stack.platform_url}/\n\n"
            f"Launch as a student or instructor there. Hub: {stack.hub_url}/hub/ . "
            f"Logs: {stack.log_dir} . Stop with Ctrl-C.",
            flush=True,
        )
        if open_browser:
            import webbrowser

            webbrowser.open(f"{stack.platform_url}/")
        watchers = [asyncio.ensure_future(p.wait()) for p in stack.processes.values()]
        await asyncio.wait([stop_waiter, *watchers], return_when=asyncio.FIRST_COMPLETED)
        if not stopped.is_set():
            print(f"A process of the demo exited; see {stack.log_dir}", file=sys.stderr)
            return 1
        print("Stopping ...", flush=True)
        return 0
    finally:
        stop_waiter.cancel()
        if not starting.done():
            starting.cancel()
            await asyncio.wait([starting])
        await stack.stop()


def run_demo(root: Path, open_browser: bool = False, register_by_url: bool = False) -> int:
    try:
        return asyncio.run(_serve(root, open_browser, register_by_url))
    except (RuntimeError, TimeoutError) as exc:
        print(f"ananke demo: {exc}", file=sys.stderr)
        return 1
