"""Where Ananke keeps its files.

Every path the hub, Kore or the CLI uses is derived here from two roots, so that no
code takes a path from a request and a test can move everything into a temporary
directory by setting two environment variables.
"""

import os
from dataclasses import dataclass
from pathlib import Path

from .fragments import resolved_setting

#: Environment variable naming the directory of numbered config fragments.
CONFIG_DIR_ENV = "ANANKE_CONFIG_DIR"
#: Environment variable naming the directory of persistent state (keys, secrets, databases).
STATE_DIR_ENV = "ANANKE_STATE_DIR"

#: The course layout the hub resolved (its own settings, then the fragments), handed to
#: Kore in these variables so both find course files in the same place. Here, not in
#: hubconfig, so that Kore reads them without importing the hub's spawner.
COURSE_LAYOUT_ENV = {"ANANKE_HOMES_ROOT": "homes_root", "ANANKE_EXCHANGE_ROOT": "exchange_root"}
#: The hub's pid, handed to Kore so that it stops when the hub is gone (even after a
#: SIGKILL, which gives the hub no chance to stop its services).
HUB_PID_ENV = "ANANKE_HUB_PID"

DEFAULT_CONFIG_DIR = "/etc/ananke/config.d"
#: Where Kore listens on 127.0.0.1 unless c.Kore.port says otherwise.
DEFAULT_KORE_PORT = 10101
#: ``kore.app.Kore.section_names()``: the sections traitlets reads c.Kore's settings
#: from. The hub never imports Kore; tests/test_kore_settings.py keeps them equal.
KORE_SECTIONS = ("Configurable", "LoggingConfigurable", "SingletonConfigurable", "Application", "Kore")
DEFAULT_STATE_DIR = "/var/lib/ananke"

#: The fragments shipped with the package, copied by ``ananke init-config``. In a source
#: tree share/config.d is a link to the repository's config.d/ (the one source of the
#: fragments); the wheel holds the files themselves.
SHIPPED_CONFIG_DIR = Path(__file__).parent / "share" / "config.d"
#: The one hub config that loads the fragments.
SHIPPED_HUB_CONFIG = Path(__file__).parent / "share" / "jupyterhub_config.py"


def shipped_fragments() -> list[Path]:
    """The shipped fragment files (not the __pycache__ a pip install may add)."""
    suffixes = (".py", ".json", ".disabled")
    return sorted(
        p for p in SHIPPED_CONFIG_DIR.iterdir() if p.is_file() and p.name.endswith(suffixes)
    )


def config_dir() -> Path:
    return Path(os.environ.get(CONFIG_DIR_ENV, DEFAULT_CONFIG_DIR))


@dataclass(frozen=True)
class StateLayout:
    """The layout of the persistent state directory.

    Secrets live in a 0700 directory; files in it are created once and never
    regenerated (the original regenerated them on every container boot).
    """

    root: Path

    @classmethod
    def from_env(cls) -> "StateLayout":
        return cls(Path(os.environ.get(STATE_DIR_ENV, DEFAULT_STATE_DIR)))

    @property
    def secrets(self) -> Path:
        return self.root / "secrets"

    @property
    def crypt_key(self) -> Path:
        return self.secrets / "jupyterhub_crypt_key"

    @property
    def cookie_secret(self) -> Path:
        return self.secrets / "jupyterhub_cookie_secret"

    @property
    def proxy_auth_token(self) -> Path:
        """The token the hub and the proxy unit share when the proxy runs on its own
        (the image's jupyterhub-proxy.service, see proxy_unit.py)."""
        return self.secrets / "configproxy_auth_token"

    @property
    def kore_keys(self) -> Path:
        """Kore's RSA key pairs: the tool's keys that the LMS knows by the keyset URL."""
        return self.secrets / "kore-keys"

    @property
    def hub_db_url(self) -> str:
        return f"sqlite:///{self.root / 'jupyterhub.sqlite'}"

    @property
    def backups(self) -> Path:
        """Course backups (Kore): one archive per backup, readable by the hub's user only."""
        return self.root / "backups"

    @property
    def local_homes(self) -> Path:
        """Homes for the local-process spawner (laptops and CI without systemd)."""
        return self.root / "homes"


def systemd_is_pid1() -> bool:
    """True when systemd runs the machine (the sd_booted(3) check).

    Here, not in the spawner, because it decides where course files are
    (:func:`ananke_hub.courses.layout.resolved_layout_config`), which Kore resolves too.
    """
    return Path("/run/systemd/system").is_dir()


def kore_port(config) -> int:
    """``c.Kore.port`` as Kore reads it (its trait, :class:`kore.app.Kore`), for the hub:
    the service's URL and the labs' way to Kore."""
    return int(resolved_setting(config, KORE_SECTIONS, "port", DEFAULT_KORE_PORT))
