"""First step of every container boot (``ananke-boot.service``), before JupyterHub starts.

Creates what must outlive the container in the state directory, once: the hub's cookie
secret and crypt key, the proxy's API token, and Kore's first signing key (the key set the LMS knows by URL).
Existing files are read and never replaced (``ananke_hub.persist``: O_EXCL, 0600), so a
re-created container keeps its sessions, its encrypted auth_state and its key id. The
original regenerated all of this on every boot.

It also prepares the directories the manager mounts from the host, whose modes the host
does not know: the homes of dynamic users (``/var/lib/private``, 0700 root, as systemd
wants it, see systemd.exec(5) "StateDirectory=") and nbgrader's exchange root (the
project's own rule, ``nbgrader_setup.ensure_exchange_root``). A mounted enterprise root
CA joins the trust store. A missing config directory gets the shipped fragments, so the
image also runs without the manager.

Run with the venv's Python as root; exit status non-zero (and the hub does not start)
only if the state cannot be created.
"""

import logging
import os
import subprocess
import sys
from pathlib import Path

from ananke_hub.courses.layout import CourseLayout
from ananke_hub.courses.nbgrader_setup import ensure_exchange_root
from ananke_hub.fragments import FragmentError, load_fragments
from ananke_hub.keys import KeyStore
from ananke_hub.paths import StateLayout, config_dir, shipped_fragments
from ananke_hub.persist import ensure_private_dir, read_or_create_secret

log = logging.getLogger("ananke-boot")

#: systemd's directory of dynamic users' state directories (the homes).
PRIVATE_STATE_DIR = Path("/var/lib/private")
#: Where the manager mounts an enterprise root CA; update-ca-certificates(8) reads
#: every *.crt below /usr/local/share/ca-certificates.
LOCAL_CA_DIR = Path("/usr/local/share/ca-certificates")
SYSTEM_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


def create_state(layout: StateLayout) -> str:
    """Cookie secret, crypt key and Kore's key: created if missing, never regenerated."""
    layout.root.mkdir(parents=True, exist_ok=True)
    ensure_private_dir(layout.secrets)
    read_or_create_secret(layout.cookie_secret)
    read_or_create_secret(layout.crypt_key)
    # Shared by jupyterhub.service and jupyterhub-proxy.service; made here, before either.
    read_or_create_secret(layout.proxy_auth_token)
    return KeyStore(layout.kore_keys).ensure().kid


def ensure_config(directory: Path) -> None:
    """The shipped fragments, if nobody mounted a config directory (the image alone)."""
    if directory.is_dir() and any(directory.iterdir()):
        return
    directory.mkdir(parents=True, exist_ok=True)
    for source in shipped_fragments():
        (directory / source.name).write_bytes(source.read_bytes())
    log.info("No config fragments in %s: copied the shipped ones", directory)


def exchange_root(directory: Path) -> Path:
    """The exchange root the hub will use: the fragments' CourseLayout, else the default."""
    try:
        config = load_fragments(directory).config
    except FragmentError as exc:
        # The hub will refuse to start with the same error; the default still helps
        # `ananke check-config` users see a working exchange afterwards.
        log.warning("Config fragments do not load (%s); using the default exchange", exc)
        config = None
    return Path(CourseLayout(config=config).exchange_root)


def ensure_private_state_dir() -> None:
    # A directory mounted from the host may come with the host's umask (0755).
    PRIVATE_STATE_DIR.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chown(PRIVATE_STATE_DIR, 0, 0)
    os.chmod(PRIVATE_STATE_DIR, 0o700)


def trust_local_cas() -> None:
    """Add mounted CA certificates to the system trust store if any is newer than it."""
    certs = list(LOCAL_CA_DIR.rglob("*.crt")) if LOCAL_CA_DIR.is_dir() else []
    if not certs:
        return
    bundle_time = SYSTEM_CA_BUNDLE.stat().st_mtime if SYSTEM_CA_BUNDLE.exists() else 0
    if all(c.stat().st_mtime <= bundle_time for c in certs):
        return
    proc = subprocess.run(["update-ca-certificates"], capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0:
        log.error("update-ca-certificates failed: %s", proc.stderr.strip())


def main() -> int:
    # The journal records stderr with the unit's name and time: the message alone.
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    layout = StateLayout.from_env()
    cfg = config_dir()
    try:
        kid = create_state(layout)
    except OSError as exc:
        log.error(
            "Cannot create the persistent state in %s: %s. Check the state volume "
            "(runtime/state on the host) is mounted and writable by root.", layout.root, exc,
        )
        return 1
    log.info("State in %s ready; Kore signs with key %s", layout.root, kid)
    try:
        ensure_config(cfg)
    except OSError as exc:
        log.warning("Cannot copy the shipped fragments to %s: %s", cfg, exc)
    ensure_private_state_dir()
    root = exchange_root(cfg)
    ensure_exchange_root(root)
    log.info("nbgrader exchange %s ready", root)
    trust_local_cas()
    return 0


if __name__ == "__main__":
    sys.exit(main())
