"""``ananke demo``: a hub, Kore and the built-in LMS on 127.0.0.1, on free ports.

The same :class:`DemoStack` starts the stack for the hub-level tests and the
benchmarks, so what a newcomer tries is what the tests check.
"""

import asyncio
import json
import os
import shutil
import signal
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tornado.httpclient import AsyncHTTPClient, HTTPClientError

from .paths import SHIPPED_HUB_CONFIG, StateLayout, shipped_fragments

DEMO_CLIENT_ID = "ananke-demo-client"
DEMO_DEPLOYMENT_ID = "ananke-demo-deployment"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


class DemoStack:
    """Processes of a demo: the built-in LMS, then JupyterHub (which starts Kore)."""

    def __init__(
        self,
        root: Path,
        *,
        extra_config: dict | None = None,
        platform_args=(),
        platform_module: str = "ananke_hub.platform",
    ):
        self.root = Path(root).resolve()
        # Any module that takes the built-in platform's flags and serves the same URLs
        # (/, /launch, /auth, /jwks) can stand in for it, e.g. a third-party platform.
        self.platform_module = platform_module
        self.ports = DemoPorts.pick()
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
        return f"http://127.0.0.1:{self.ports.platform}"

    def registration(self) -> dict:
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
            except RuntimeError:
                await self.stop()
                if attempt == attempts or not self._port_was_taken():
                    raise
                self.ports = DemoPorts.pick()

    def _port_was_taken(self) -> bool:
        """True if a process failed on a taken port (its log is moved aside for the retry)."""
        taken = False
        for log in self.log_dir.glob("*.log"):
            if "Address already in use" in log.read_text(errors="replace"):
                log.replace(log.with_suffix(".log.port-taken"))
                taken = True
        return taken

    async def _start(self, timeout: float) -> None:
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
                f"--tool-jwks-url={hub}/services/kore/jwks",
                *self.platform_args,
            ],
            cwd=self.root,
        )
        await self._wait_http("platform", f"{self.platform_url}/", timeout)
        self.layout.root.mkdir(parents=True, exist_ok=True)
        await self._spawn(
            "jupyterhub",
            [sys.executable, "-m", "jupyterhub", "-f", str(SHIPPED_HUB_CONFIG)],
            cwd=self.layout.root,
        )
        await self._wait_http("jupyterhub", f"{hub}/hub/health", timeout)
        await self._wait_http("jupyterhub", f"{hub}/services/kore/jwks", timeout)

    async def stop(self) -> None:
        for name in reversed(list(self.processes)):
            proc = self.processes.pop(name)
            if proc.returncode is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()

    async def __aenter__(self) -> "DemoStack":
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop()


async def _serve(root: Path, open_browser: bool) -> int:
    stack = DemoStack(root)
    print("Starting the built-in LMS, JupyterHub and Kore ...", flush=True)
    async with stack:
        print(
            f"\nAnanke demo running. Open the demo LMS:\n\n    {stack.platform_url}/\n\n"
            f"Launch as a student or instructor there. Hub: {stack.hub_url}/hub/ . "
            f"Logs: {stack.log_dir} . Stop with Ctrl-C.",
            flush=True,
        )
        if open_browser:
            import webbrowser

            webbrowser.open(f"{stack.platform_url}/")
        stopped = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stopped.set)
        watchers = [asyncio.ensure_future(p.wait()) for p in stack.processes.values()]
        stop_waiter = asyncio.ensure_future(stopped.wait())
        await asyncio.wait([stop_waiter, *watchers], return_when=asyncio.FIRST_COMPLETED)
        if not stopped.is_set():
            print(f"A process of the demo exited; see {stack.log_dir}", file=sys.stderr)
            return 1
        print("Stopping ...", flush=True)
    return 0


def run_demo(root: Path, open_browser: bool = False) -> int:
    try:
        return asyncio.run(_serve(root, open_browser))
    except (RuntimeError, TimeoutError) as exc:
        print(f"ananke demo: {exc}", file=sys.stderr)
        return 1
