"""Ananke's hub, Kore and the built-in LMS as systemd units inside a test container.

The same pieces as ``ananke demo`` (``DemoStack``), but the hub runs under a real systemd
as PID 1, so the shipped config picks ``AnankeSystemdSpawner`` and labs become transient
units with dynamic users. Config comes from ``ananke init-config`` (the shipped
fragments) plus one JSON fragment with ports, the LMS registration and a test service
holding an admin API token, written the way ``DemoStack.prepare`` writes its own.

Ports are fixed: the container has a network namespace of its own.
"""

import json
import os
import secrets
import sys
from pathlib import Path

from nspawn import CLEAN_PATH, SystemdContainer
from rootfs import VENV

from ananke_hub.testlms.demo import DEMO_CLIENT_ID, DEMO_DEPLOYMENT_ID

CONFIG_DIR = "/etc/ananke/config.d"
STATE_DIR = "/var/lib/ananke"
EXCHANGE = "/opt/nbgrader_exchange"
HUB_UNIT = "jupyterhub"
LMS_UNIT = "ananke-lms"
PYTHON = f"{VENV}/bin/python"
HUB_PORT, HUB_API_PORT, PROXY_API_PORT, LMS_PORT = 8000, 8081, 8001, 8765
ADMIN_SCOPES = [
    "admin:users", "admin:servers", "admin:auth_state", "list:users", "read:hub",
    # The labs' own APIs (contents), as the hub's admin sees them.
    "access:servers",
]
CLIENT = Path(__file__).with_name("lti_client.py")


class ContainerHub:
    def __init__(self, container: SystemdContainer):
        self.container = container
        self.admin_token = secrets.token_hex(24)
        self.hub_url = f"http://127.0.0.1:{HUB_PORT}"
        self.platform_url = f"http://127.0.0.1:{LMS_PORT}"

    # -- set-up --------------------------------------------------------------------------------

    def registration(self) -> dict:
        lms = self.platform_url
        return {
            "issuer": lms,
            "client_id": DEMO_CLIENT_ID,
            "deployment_ids": [DEMO_DEPLOYMENT_ID],
            "authorize_url": f"{lms}/auth",
            "jwks_url": f"{lms}/jwks",
            "access_token_url": f"{lms}/token",
        }

    def configure(self) -> None:
        c = self.container
        c.run([f"{VENV}/bin/ananke", "init-config", CONFIG_DIR])
        settings = {
            "JupyterHub": {
                "bind_url": f"{self.hub_url}/",
                "hub_bind_url": f"http://127.0.0.1:{HUB_API_PORT}",
                "services": [{"name": "test-admin", "api_token": self.admin_token}],
                "load_roles": [
                    {"name": "test-admin", "scopes": ADMIN_SCOPES, "services": ["test-admin"]}
                ],
            },
            "ConfigurableHTTPProxy": {"api_url": f"http://127.0.0.1:{PROXY_API_PORT}"},
            "LMSRegistration": self.registration(),
        }
        fragment = c.path(f"{CONFIG_DIR}/90_test.json")
        fragment.write_text(json.dumps(settings, indent=2) + "\n")
        fragment.chmod(0o600)  # holds a token
        c.path(STATE_DIR).mkdir(parents=True, exist_ok=True)
        # The exchange must exist before a lab starts: it is in the labs' ReadWritePaths=.
        # TODO(issue 7): the image's boot step creates it; until then the test does.
        exchange = c.path(EXCHANGE)
        exchange.mkdir(parents=True, exist_ok=True)
        exchange.chmod(0o777)

    def shipped_hub_config(self) -> str:
        found = sorted(self.container.rootfs.glob(
            "opt/ananke/venv/lib/python3*/site-packages/ananke_hub/share/jupyterhub_config.py"
        ))
        if not found:
            raise FileNotFoundError("ananke_hub/share/jupyterhub_config.py is not in the venv")
        return "/" + str(found[0].relative_to(self.container.rootfs))

    def start(self) -> None:
        self.configure()
        hub = self.hub_url
        self.container.run([
            "systemd-run", f"--unit={LMS_UNIT}", "--property=StateDirectory=ananke-lms",
            "--working-directory=/var/lib/ananke-lms",
            PYTHON, "-m", "ananke_hub.testlms",
            f"--port={LMS_PORT}",
            f"--issuer={self.platform_url}",
            "--state-dir=/var/lib/ananke-lms",
            f"--client-id={DEMO_CLIENT_ID}",
            f"--deployment-id={DEMO_DEPLOYMENT_ID}",
            f"--tool-login-url={hub}/hub/lti13/oauth_login",
            f"--tool-redirect-uri={hub}/hub/lti13/oauth_callback",
            f"--tool-target-link-uri={hub}/hub/",
            f"--tool-jwks-url={hub}/services/kore/jwks",
        ])
        self.container.run([
            "systemd-run", f"--unit={HUB_UNIT}", f"--working-directory={STATE_DIR}",
            f"--setenv=ANANKE_CONFIG_DIR={CONFIG_DIR}",
            f"--setenv=ANANKE_STATE_DIR={STATE_DIR}",
            # The proxy and jupyterhub-singleuser are found on the hub's PATH.
            f"--setenv=PATH={VENV}/bin:{CLEAN_PATH}",
            f"{VENV}/bin/jupyterhub", "-f", self.shipped_hub_config(),
        ])
        self.client("wait-http", f"{self.platform_url}/", f"{hub}/hub/health",
                    f"{hub}/services/kore/jwks")

    # -- driving it ------------------------------------------------------------------------------

    def client(self, *args: str, timeout: float = 300):
        """Run lti_client.py in the container's network namespace; its JSON output."""
        env = {
            "PATH": os.environ.get("PATH", CLEAN_PATH),
            "LANG": "C.UTF-8",
            "ANANKE_TEST_TOKEN": self.admin_token,
        }
        proc = self.container.run_in_netns([sys.executable, str(CLIENT), *args], env=env,
                                           timeout=timeout, check=False)
        if proc.returncode != 0:
            raise AssertionError(
                f"lti_client {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-4000:]}"
                f"\n--- hub log\n{self.container.journal(HUB_UNIT, 80)}"
            )
        return json.loads(proc.stdout)

    def launch(self, subs: list[str], link: str = "homework") -> dict:
        """LTI launches of ``subs`` at once, each until its JupyterLab answers."""
        return self.client("launch", f"--platform={self.platform_url}", f"--hub={self.hub_url}",
                           f"--link={link}", *subs)

    def api(self, method: str, path: str, body: dict | None = None) -> dict:
        """A hub REST API call with the admin token: ``{"status": ..., "body": ...}``."""
        args = ["request", method, f"{self.hub_url}/hub/api{path}"]
        if body is not None:
            args.append(f"--json={json.dumps(body)}")
        return self.client(*args)

    def lab_api(self, user: str, method: str, path: str, body: dict | None = None) -> dict:
        """A call to the user's own server (jupyter-server's REST API) with the admin token."""
        args = ["request", method, f"{self.hub_url}/user/{user}/api{path}"]
        if body is not None:
            args.append(f"--json={json.dumps(body)}")
        return self.client(*args)

    def stop_server(self, user: str) -> None:
        resp = self.api("DELETE", f"/users/{user}/server")
        assert resp["status"] in (202, 204), resp
        self.client("wait-server", f"--hub={self.hub_url}", user, "--stopped")

    def start_server(self, user: str) -> None:
        resp = self.api("POST", f"/users/{user}/server")
        assert resp["status"] in (201, 202), resp
        self.client("wait-server", f"--hub={self.hub_url}", user, "--ready")

    def logs(self) -> str:
        c = self.container
        return f"--- {HUB_UNIT}\n{c.journal(HUB_UNIT)}\n--- {LMS_UNIT}\n{c.journal(LMS_UNIT, 50)}"
