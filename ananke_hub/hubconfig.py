"""What the shipped ``jupyterhub_config.py`` does: Ananke's fixed settings, then the fragments.

The settings made here are the ones Ananke cannot work without (the LTI authenticator,
encrypted auth_state with a persisted key, the Kore service); everything an admin tunes
lives in the numbered fragments, which are merged on top.
"""

import logging
import os
import sys
from pathlib import Path
from urllib.parse import urlparse

from traitlets.config import Config, LazyConfigValue

from . import redact
from .auth.authenticator import AnankeLTI13Authenticator
from .courses.layout import CourseLayout, layout_environment, resolved_layout_config
from .courses.provision import person_name_var
from .fragments import class_setting, load_fragments
from .paths import (  # noqa: F401 (COURSE_LAYOUT_ENV, HUB_PID_ENV: read by Kore from paths)
    COURSE_LAYOUT_ENV,
    HUB_PID_ENV,
    StateLayout,
    config_dir,
    kore_port,
    systemd_is_pid1,
)
from .persist import ensure_private_dir, ensure_private_sqlite, read_or_create_secret
from .proxy_unit import hub_settings as proxy_unit_hub_settings
from .proxy_unit import proxy_unit_enabled
from .spawner import (
    ALLOW_ROOT_SETTING,
    LOOPBACK_HOSTS,
    AnankeLocalSpawner,
    root_labs_refusal,
)

log = logging.getLogger("ananke")

#: Page templates that extend JupyterHub's own (see share/templates/page.html).
TEMPLATES_DIR = Path(__file__).parent / "share" / "templates"
KORE_SERVICE = "kore"
#: Seconds the hub waits for Kore to answer at start before it gives up (and exits).
#: Long: a Kore that dies at start fails the hub at once (JupyterHub also watches the
#: process); only a slow one is waited for. Under emulation (the VM test) with two hubs
#: starting, Kore's start took more than 120 s and the hub restarted again and again.
KORE_START_TIMEOUT = 600
KORE_ROLE = "kore-service"


def _as_list(section: Config, name: str) -> list:
    """A list setting of the fragments, also when they only appended to it."""
    value = section.get(name, [])
    # `c.JupyterHub.services.append(...)` in a fragment leaves a lazy value, not a list.
    return value.get_value([]) if isinstance(value, LazyConfigValue) else list(value)


def kore_service(config: Config, layout: StateLayout, cfg_dir: Path) -> dict:
    """The hub-managed Kore service, started by the hub as ``python -m kore``."""
    port = kore_port(config)
    return {
        "name": KORE_SERVICE,
        "url": f"http://127.0.0.1:{port}",
        "command": [sys.executable, "-m", "kore"],
        "environment": {
            "ANANKE_CONFIG_DIR": str(cfg_dir),
            "ANANKE_STATE_DIR": str(layout.root),
            # Where course files are, as the hub resolved it (Kore applies it as is).
            **layout_environment(CourseLayout(config=config)),
            # This config runs in the hub's process, whose child Kore is.
            HUB_PID_ENV: str(os.getpid()),
        },
        # Instructors open Kore from their lab: no extra consent page for our own service.
        "oauth_no_confirm": True,
        # JupyterHub gives up on the whole hub when a managed service does not answer
        # within this time (30 s by default). Kore's imports alone took 29 s on a busy
        # 2-core machine, and the hub exited with "Cannot connect to kore service".
        "timeout": KORE_START_TIMEOUT,
        # Listed in the Services menu of the hub's pages (JupyterHub shows a service there
        # when it has a url, display is true and the user holds
        # access:services!service=kore, which the "user" role of configure() gives everyone).
        "display": True,
    }


def _bind_host(c: Config) -> str:
    """The host the hub's public port listens on ("" for all interfaces)."""
    bind_url = c.JupyterHub.get("bind_url")
    if bind_url:
        return urlparse(bind_url).hostname or ""
    return c.JupyterHub.get("ip", "")


def check_root_labs(c: Config) -> None:
    """Refuse to start a hub whose local labs would run as root, unless switched on.

    The switch counts on a loopback bind only: a root lab reachable from the network
    is never what a demo needs.
    """
    if os.geteuid() != 0:
        return
    if not class_setting(c, AnankeLocalSpawner, "allow_root"):
        sys.exit(f"ananke: {root_labs_refusal()}")
    host = _bind_host(c)
    if host not in LOOPBACK_HOSTS:
        sys.exit(
            f"ananke: {ALLOW_ROOT_SETTING} is set, but the hub listens on "
            f"{host or 'all interfaces'!r}: labs running as root are allowed on a loopback "
            "address only. Set c.JupyterHub.bind_url = \"http://127.0.0.1:8000/\" (any "
            "port), or run the hub as an unprivileged user or on a systemd host."
        )
    log.warning(
        "%s is set: labs run as root on this machine. For a single-user demo only.",
        ALLOW_ROOT_SETTING,
    )


def configure(c: Config, cfg_dir: Path | None = None, layout: StateLayout | None = None) -> None:
    """Fill the hub's config ``c``: fixed settings, then the fragments of ``cfg_dir``."""
    cfg_dir = Path(cfg_dir or config_dir()).resolve()
    # Secrets out of the hub's log lines, also at DEBUG ("Config changed: {...}").
    redact.install()
    layout = layout or StateLayout.from_env()
    # Databases and secrets live here: private whatever the umask or an earlier mode.
    ensure_private_dir(layout.root)
    ensure_private_dir(layout.secrets)

    # auth_state holds the whole id_token (roles, AGS/NRPS endpoints): store it encrypted,
    # with a key created once and kept. The env var is how JupyterHub's CryptKeeper reads
    # it; spawners and services do not inherit it (not in Spawner.env_keep).
    os.environ["JUPYTERHUB_CRYPT_KEY"] = read_or_create_secret(layout.crypt_key)

    c.JupyterHub.authenticator_class = "ananke-lti13"
    c.Authenticator.enable_auth_state = True
    c.JupyterHub.cookie_secret_file = str(layout.cookie_secret)
    c.JupyterHub.db_url = layout.hub_db_url
    c.JupyterHub.pid_file = str(layout.root / "jupyterhub.pid")
    c.ConfigurableHTTPProxy.pid_file = str(layout.root / "jupyterhub-proxy.pid")
    # The PyPI proxy with more than 10 concurrent requests (see proxy.py).
    c.ConfigurableHTTPProxy.command = [sys.executable, "-m", "ananke_hub.proxy"]
    if proxy_unit_enabled():
        # The image: the proxy is jupyterhub-proxy.service (see proxy_unit.py).
        proxy_unit_hub_settings(c, layout)
    c.Spawner.default_url = "/lab"

    # Courses are provisioned at login: the authenticator returns each user's groups
    # and roles across all their courses (see courses/provision.py).
    c.Authenticator.manage_groups = True
    c.Authenticator.manage_roles = True

    systemd = systemd_is_pid1()
    if systemd:
        c.JupyterHub.spawner_class = "ananke-systemd"
    else:
        c.JupyterHub.spawner_class = "ananke-local"
        c.AnankeLocalSpawner.home_root = str(layout.local_homes)

    fragments = load_fragments(cfg_dir)
    # Course files live in the grader accounts' homes, wherever the spawner puts them:
    # the one resolution Kore and the CLI make too. The hub resolves; it takes no
    # layout from its own environment.
    c.merge(resolved_layout_config(fragments.config, layout, environ={}, systemd=systemd))
    # JupyterHub creates its database with the umask's mode: make it private first.
    ensure_private_sqlite(c.JupyterHub.db_url)

    # Read as the authenticator will (c.LTI13Authenticator's and c.Authenticator's too).
    if not class_setting(c, AnankeLTI13Authenticator, "provision_courses"):
        # A plain LTI login: the authenticator returns no groups or roles to manage.
        c.Authenticator.manage_groups = False
        c.Authenticator.manage_roles = False

    if c.JupyterHub.spawner_class == "ananke-local":
        log.warning(
            "PID 1 is not systemd: labs run as local processes of the hub's user, "
            "without dynamic users or resource limits. Fine for a demo, not for teaching."
        )
        check_root_labs(c)

    # The header shows the person's name from the LMS, not the hub user name "u2".
    c.JupyterHub.template_vars = {
        **c.JupyterHub.get("template_vars", {}),
        "ananke_person_name": person_name_var,
    }
    # Our templates first: they extend the hub's own (Kore under Services for staff only).
    c.JupyterHub.template_paths = [str(TEMPLATES_DIR), *c.JupyterHub.get("template_paths", [])]

    services = [s for s in _as_list(c.JupyterHub, "services") if s.get("name") != KORE_SERVICE]
    services.append(kore_service(c, layout, cfg_dir))
    c.JupyterHub.services = services

    # Every user may reach Kore's pages; what they may do there is decided per course.
    # A lab's own token may call Kore too (the course list in JupyterLab asks it).
    c.JupyterHub.load_roles = [
        *[
            r
            for r in _as_list(c.JupyterHub, "load_roles")
            if r.get("name") not in ("user", KORE_ROLE)
        ],
        {
            "name": "user",
            "description": "Default role of every hub user, plus access to Kore.",
            "scopes": ["self", f"access:services!service={KORE_SERVICE}"],
        },
        {
            "name": KORE_ROLE,
            "description": "Kore starts the grader servers of courses for their instructors "
            "and puts learners from the LMS roster in their course group before they launch.",
            # admin:users creates hub users for learners who never launched (roster sync);
            # admin:groups creates nbgrader-<course> if nobody launched yet and sets members.
            "scopes": ["servers", "read:users:name", "admin:users", "admin:groups"],
            "services": [KORE_SERVICE],
        },
    ]
    c.Spawner.server_token_scopes = [
        "users:activity!user",
        "access:servers!server",
        f"access:services!service={KORE_SERVICE}",
    ]
