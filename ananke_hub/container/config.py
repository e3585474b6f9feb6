"""A container's ``config.py``: the settings of one Ananke container, validated.

``containers/<name>/config.py`` is a traitlets config file (``c.Container.port = 8000``),
read with traitlets' own loader, never executed by us. Every setting is a trait of
:class:`Container` with ``help=`` for admins; a wrong value becomes a :class:`ConfigError`
that names the file and the setting and says how to fix it.

The images (``images/ananke-base``, ``images/ananke-nbgrader``) and the manager agree on
where things live inside a container through the ``IN_CONTAINER_*`` constants below:
change them in one place only.
"""

import difflib
import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path

from traitlets import Bool, Dict, Enum, Float, Int, List, TraitError, Unicode, validate
from traitlets.config import Config, Configurable, PyFileConfigLoader

from ..fragments import line_of

#: The hub's config fragments, mounted read-only from ``<container>/jupyterhub_config.d``.
IN_CONTAINER_CONFIG_DIR = "/etc/ananke/config.d"
#: Persistent state (cookie secret, crypt key, Kore's keys, course registry, backups),
#: mounted from ``<container>/runtime/state``.
IN_CONTAINER_STATE_DIR = "/var/lib/ananke"
#: Homes of systemd's dynamic users (``StateDirectory=`` of DynamicUser units lives in
#: /var/lib/private, see systemd.exec(5)), mounted from ``<container>/runtime/homes``.
IN_CONTAINER_HOMES_DIR = "/var/lib/private"
#: nbgrader's exchange, mounted from ``<container>/runtime/exchange``. Not under /home:
#: dynamic users cannot reach /home (ProtectHome).
IN_CONTAINER_EXCHANGE_DIR = "/opt/nbgrader_exchange"
#: The persistent journal (optional), mounted from ``<container>/runtime/logs``:
#: journald keeps logs on disk when this directory exists (journald.conf(5), Storage=auto).
IN_CONTAINER_JOURNAL_DIR = "/var/log/journal"
#: An enterprise root CA from the host; the image's boot runs update-ca-certificates,
#: which adds ``*.crt`` files of this directory to the trust store.
IN_CONTAINER_CA_FILE = "/usr/local/share/ca-certificates/ananke-enterprise-ca.crt"
#: The port the hub's proxy listens on inside the container (00_base.py's bind_url).
IN_CONTAINER_HUB_PORT = 8000
#: The systemd unit that runs JupyterHub inside the container.
HUB_UNIT = "jupyterhub.service"
#: Its proxy's unit (images/ananke-base/assets/jupyterhub-proxy.service).
PROXY_UNIT = "jupyterhub-proxy.service"

#: Paths the manager mounts itself; an extra volume on one of them would hide our data.
MANAGED_MOUNTS = (
    IN_CONTAINER_CONFIG_DIR,
    IN_CONTAINER_STATE_DIR,
    IN_CONTAINER_HOMES_DIR,
    IN_CONTAINER_EXCHANGE_DIR,
)

#: The file and directories of a container directory.
CONFIG_FILE = "config.py"
FRAGMENTS_DIR = "jupyterhub_config.d"
RUNTIME_DIR = "runtime"

#: Where podman's --tz looks zones up (the host's tzdata).
ZONEINFO_DIR = Path("/usr/share/zoneinfo")

#: podman's --ulimit names (podman-run(1), "--ulimit"; setrlimit(2)).
ULIMIT_NAMES = frozenset(
    "core cpu data fsize locks memlock msgqueue nice nofile nproc rss rtprio rttime "
    "sigpending stack".split()
)

# podman's container names (libpod's NameRegex).
_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
# RFC 1123 host names: dot-separated labels of letters, digits and inner hyphens.
_HOST_LABEL_RE = re.compile(r"^(?!-)[a-zA-Z0-9-]{1,63}(?<!-)$")
# Sizes as podman takes them: a whole number and an optional unit b, k, m or g.
_SIZE_RE = re.compile(r"^([0-9]+)([bkmg]?)$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
# CDI names of NVIDIA GPUs as `nvidia-ctk cdi generate` writes them: an index, a MIG
# device (gpu:mig), a UUID, or all (NVIDIA Container Toolkit, "Support for CDI").
_GPU_RE = re.compile(r"^nvidia\.com/gpu=(all|[0-9]+|[0-9]+:[0-9]+|(GPU|MIG)-[0-9a-fA-F-]+)$")
# An OCI runtime named as podman knows it (containers.conf [engine.runtimes]).
_RUNTIME_NAME_RE = re.compile(r"^[a-z][a-z0-9_-]*$")
_VOLUME_OPTIONS = frozenset("ro rw z Z U nosuid nodev noexec suid dev exec".split())
#: Podman refuses memory limits under 6 MiB (podman-run(1), "--memory").
MIN_MEMORY_BYTES = 6 << 20


class ConfigError(Exception):
    """A container's config.py is wrong: which file, which setting, and the fix."""

    def __init__(self, path, setting: str | None, message: str, hint: str = ""):
        self.path = Path(path) if path is not None else None
        self.setting = setting
        self.message = message
        self.hint = hint
        parts = [f"{self.path}:" if self.path else ""]
        if setting:
            parts.append(f"{setting}:" if setting.startswith("c.") else f"c.Container.{setting}:")
        parts.append(message)
        if hint:
            parts.append(f"-> {hint}")
        super().__init__(" ".join(p for p in parts if p))


def parse_size(value: str) -> int:
    """Bytes of a podman size ("8g", "512m", "1048576"); ValueError if it is none."""
    match = _SIZE_RE.fullmatch(value.strip())
    if not match:
        raise ValueError(value)
    return int(match.group(1)) * _SIZE_UNITS[match.group(2).lower()]


def _size_error(value) -> str:
    if str(value).strip().startswith("-"):
        return f'{value!r} is negative. Write a size such as "8g" (8 GiB) or "512m".'
    return (
        f'{value!r} is not a size. Write a whole number and a unit: "8g" (8 GiB), "512m" (512 MiB).'
    )


def _check_host_path(path: str, what: str) -> str:
    """An absolute host path, or TraitError saying how to write it."""
    if path.startswith("~"):
        home = os.path.expanduser("~")
        fixed = home + path[1:] if path.startswith("~/") else "/home/<user>" + path[1:]
        raise TraitError(
            f"{what} {path!r} starts with '~', which podman does not expand. "
            f"Write the absolute path, e.g. {fixed!r}."
        )
    if not os.path.isabs(path):
        raise TraitError(
            f"{what} {path!r} is relative. Write the absolute path, "
            f"e.g. {os.path.join('/srv', path)!r} (or {os.path.abspath(path)!r})."
        )
    return os.path.normpath(path)


def parse_volume(spec: str) -> tuple[str, str, list[str]]:
    """``host:container[:options]`` -> (host, container, options); TraitError if wrong."""
    parts = spec.split(":")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
        raise TraitError(
            f"{spec!r} is not a volume. Write 'HOST:CONTAINER' or 'HOST:CONTAINER:ro', "
            "e.g. '/srv/datasets:/srv/datasets:ro'."
        )
    host = _check_host_path(parts[0], "host path")
    target = parts[1]
    if not target.startswith("/"):
        raise TraitError(
            f"container path {target!r} in {spec!r} must be absolute, e.g. '/srv/{target}'."
        )
    target = os.path.normpath(target)
    for managed in MANAGED_MOUNTS:
        if target == managed or target.startswith(managed + "/"):
            raise TraitError(
                f"{spec!r} would hide {managed}, which the container manager mounts "
                "from runtime/ (or jupyterhub_config.d/). Mount it somewhere else, "
                "e.g. '/srv/data'."
            )
    options = parts[2].split(",") if len(parts) == 3 else []
    unknown = [o for o in options if o not in _VOLUME_OPTIONS]
    if unknown:
        raise TraitError(
            f"unknown volume option(s) {', '.join(unknown)} in {spec!r}. "
            f"Known: {', '.join(sorted(_VOLUME_OPTIONS))}."
        )
    return host, target, options


def parse_ulimit(name: str, value) -> tuple[int, int]:
    """(soft, hard) of an ulimit value: 1024, "1024:4096" or -1 (unlimited)."""
    text = str(value)
    try:
        soft_text, _, hard_text = text.partition(":")
        soft = int(soft_text)
        hard = int(hard_text) if hard_text else soft
    except ValueError:
        raise TraitError(
            f"ulimit {name}={value!r} is not a limit. Write a number, 'SOFT:HARD' "
            "(e.g. '65536:65536') or -1 for unlimited."
        ) from None
    if soft < -1 or hard < -1 or soft == 0 or hard == 0:
        raise TraitError(f"ulimit {name}={value!r}: limits are positive numbers or -1.")
    if hard != -1 and (soft == -1 or soft > hard):
        raise TraitError(f"ulimit {name}={value!r}: the soft limit is above the hard limit.")
    return soft, hard


class Container(Configurable):
    """One Ananke container: image, resources, ports and mounts (``c.Container.*``)."""

    image = Unicode(
        "ananke-nbgrader",
        config=True,
        help="""The image to run: "ananke-nbgrader" (hub, Kore and nbgrader courses) or
        "ananke-base" (hub and LTI login only), or your own image built on one of them.
        It must exist locally (`podman images`): build it or `podman load` it first;
        the manager never pulls from a registry.""",
    )
    name = Unicode(
        "",
        config=True,
        help="""The podman container name. Empty: the name of the container directory
        (containers/my-hub/ -> "my-hub").""",
    )
    hostname = Unicode(
        "",
        config=True,
        help="""The host name inside the container (shown in shells and logs). Empty: the
        container name, with "_" replaced by "-".""",
    )
    port = Int(
        IN_CONTAINER_HUB_PORT,
        config=True,
        help="""The host port the hub is published on (1-65535). The LMS and users reach
        the hub at this port (usually through a reverse proxy on the host that adds
        HTTPS). Each container on a host needs its own port.""",
    )
    bind_address = Unicode(
        "127.0.0.1",
        config=True,
        help="""The host address the port is published on. The default, 127.0.0.1, keeps the
        hub's plain HTTP off the network: a reverse proxy on the same host (nginx, Apache,
        Caddy) terminates HTTPS and forwards to it, which LTI 1.3 needs anyway (Moodle
        sends launches to https URLs and browsers drop SameSite=None cookies without
        TLS). Set "0.0.0.0" (all addresses) or one address of the host (such as the
        extra loopback address of a local Moodle test setup) to reach the hub directly.""",
    )
    container_port = Int(
        IN_CONTAINER_HUB_PORT,
        config=True,
        help="""The port the hub listens on inside the container. Change it only together
        with c.JupyterHub.bind_url in jupyterhub_config.d/00_base.py.""",
    )
    memory = Unicode(
        "8g",
        allow_none=True,
        config=True,
        help="""Memory limit of the whole container (hub and all labs): a number and a unit,
        "8g" (8 GiB) or "512m". Per-user limits are c.Spawner.mem_limit in
        jupyterhub_config.d/10_servers.py. None: no limit.""",
    )
    memory_swap = Unicode(
        None,
        allow_none=True,
        config=True,
        help="""Memory plus swap the container may use, at least `memory` ("16g"), or "-1"
        for unlimited swap. None: podman's default (twice `memory`).""",
    )
    cpus = Float(
        None,
        allow_none=True,
        config=True,
        help="""CPU cores the container may use in total (a number > 0, 2.5 = two and a half
        cores). None: no limit. Per-user limits are c.Spawner.cpu_limit in
        10_servers.py.""",
    )
    pids_limit = Int(
        32768,
        config=True,
        help="""Most processes and threads in the container, or -1 for no limit. Podman's
        default (2048) is too small for a class: every lab and kernel has dozens of
        threads.""",
    )
    gpus = List(
        Unicode(),
        config=True,
        help="""NVIDIA GPUs passed into the container, by their CDI names: ["all"] or
        ["nvidia.com/gpu=0", "nvidia.com/gpu=1"]. Needs the NVIDIA Container Toolkit on
        the host and a CDI spec (`sudo nvidia-ctk cdi generate
        --output=/etc/cdi/nvidia.yaml`; `nvidia-ctk cdi list` shows the names).""",
    )
    volumes = List(
        Unicode(),
        config=True,
        help="""Extra host directories mounted into the container, as
        "HOST:CONTAINER" or "HOST:CONTAINER:ro" (read-only), e.g.
        "/srv/datasets:/srv/datasets:ro". Host paths must be absolute (no "~", no
        relative paths) and exist. Labs see the file system read-only except their home:
        list a writable volume in c.AnankeSystemdSpawner.readwrite_paths too.""",
    )
    timezone = Unicode(
        "local",
        config=True,
        help="""The container's time zone, as in /usr/share/zoneinfo ("Europe/Berlin",
        "UTC"), or "local" for the host's. Sets /etc/localtime inside (podman --tz), which
        the hub's and the labs' clocks and nbgrader's due dates use.""",
    )
    ca_file = Unicode(
        "",
        config=True,
        help="""Absolute host path of an enterprise root CA certificate (PEM). It is mounted
        read-only into the container's trust store, so the hub trusts an LMS, a proxy or
        a package index whose TLS certificate it signed. Empty: none.""",
    )
    network = Enum(
        ["bridge", "host"],
        "bridge",
        config=True,
        help="""Podman network mode. "bridge" (default): the container has its own network
        and only `port` is published. "host": the container shares the host's network
        (the hub listens on container_port of every host address; `port` and
        `bind_address` do not apply).""",
    )
    runtime = Unicode(
        "runc",
        config=True,
        help="""The OCI runtime podman starts the container with: "runc" (default),
        "crun" or an absolute path. runc is the default because systemd as PID 1 with
        dynamic users ran reliably with it on the machines Ananke is tested on (rootful
        podman in CI), where crun did not; crun, podman's own default on recent Debian
        and Ubuntu, may work on yours. Install the package of the runtime you name.""",
    )
    ulimits = Dict(
        {"nofile": "16384:16384", "nproc": "16384:16384"},
        config=True,
        help="""Resource limits of the container's processes, as {"name": "SOFT:HARD"}
        (podman --ulimit; names as in setrlimit(2): nofile, nproc, ...), -1 for unlimited.
        Set explicitly because podman's defaults (up to 1048576 open files) can exceed
        the hard limit of the shell podman runs in (CI runners and nested containers
        have 20000 or less), and the container then fails to start ("error setting
        rlimit"); the defaults fit under such limits. `ulimit -Hn` and `ulimit -Hu` show
        yours.""",
    )
    restart = Enum(
        ["no", "on-failure", "always", "unless-stopped"],
        "always",
        config=True,
        help="""Podman restart policy. "always" (default) restarts the container when it
        stops on its own, and starts it at boot when podman-restart.service is enabled
        (`sudo systemctl enable podman-restart.service`, or `systemctl --user enable
        podman-restart.service` plus `loginctl enable-linger` for rootless podman).""",
    )
    stop_timeout = Int(
        60,
        config=True,
        help="""Seconds `ananke container remove` (podman stop) gives systemd in the
        container to stop the hub and every lab before it kills them.""",
    )
    persist_journal = Bool(
        False,
        config=True,
        help="""Keep the container's journal (hub, Kore and lab logs) in runtime/logs on the
        host, so it survives re-creation. Off: the journal lives in the container and
        goes with it.""",
    )
    extra_args = List(
        Unicode(),
        config=True,
        help="""Extra `podman run` options, passed after all others and before the image:
        the escape hatch for what no setting covers, e.g. ["--security-opt",
        "label=disable"] on SELinux hosts, or ["--dns", "10.0.0.53"]. Not validated.""",
    )

    # -- validation of single settings -------------------------------------------------

    @validate("image")
    def _valid_image(self, proposal):
        value = proposal["value"].strip()
        if not value or any(ch.isspace() for ch in value) or value.startswith("-"):
            raise TraitError(
                f"{proposal['value']!r} is not an image name. Write a name from "
                '`podman images`, e.g. "ananke-nbgrader".'
            )
        return value

    @validate("name")
    def _valid_name(self, proposal):
        value = proposal["value"]
        if value and not _NAME_RE.fullmatch(value):
            raise TraitError(
                f"{value!r} is not a container name. Use letters, digits, '_', '.', '-', "
                'starting with a letter or digit, e.g. "my-hub".'
            )
        return value

    @validate("hostname")
    def _valid_hostname(self, proposal):
        value = proposal["value"]
        if value and not _is_hostname(value):
            raise TraitError(
                f"{value!r} is not a host name. Use letters, digits and '-' (dots between "
                'labels), e.g. "hub-datascience".'
            )
        return value

    @validate("port", "container_port")
    def _valid_port(self, proposal):
        value = proposal["value"]
        if not 1 <= value <= 65535:
            raise TraitError(f"{value} is not a port. Use a number from 1 to 65535, e.g. 8000.")
        return value

    @validate("bind_address")
    def _valid_bind_address(self, proposal):
        value = proposal["value"].strip().strip("[]")
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            raise TraitError(
                f'{proposal["value"]!r} is not an IP address. Use "127.0.0.1" (this host '
                'only), "0.0.0.0" (every address) or one of the host\'s addresses.'
            ) from None

    @validate("memory")
    def _valid_memory(self, proposal):
        value = proposal["value"]
        if value is None:
            return None
        try:
            size = parse_size(value)
        except ValueError:
            raise TraitError(_size_error(value)) from None
        if size < MIN_MEMORY_BYTES:
            raise TraitError(
                f"{value!r} is too little memory for a hub (podman's minimum is 6m). "
                'Give the container several GiB, e.g. "8g".'
            )
        return value.strip().lower()

    @validate("memory_swap")
    def _valid_memory_swap(self, proposal):
        value = proposal["value"]
        if value is None or value.strip() == "-1":
            return value if value is None else "-1"
        try:
            size = parse_size(value)
        except ValueError:
            raise TraitError(_size_error(value) + ' Or "-1" for unlimited swap.') from None
        if size == 0:
            raise TraitError('0 is no swap limit. Write at least `memory`, or "-1".')
        return value.strip().lower()

    @validate("cpus")
    def _valid_cpus(self, proposal):
        value = proposal["value"]
        if value is not None and not value > 0:
            raise TraitError(
                f"{value} CPUs: write a number above 0 (e.g. 4 or 2.5), or None for no limit."
            )
        return value

    @validate("pids_limit")
    def _valid_pids_limit(self, proposal):
        value = proposal["value"]
        if value != -1 and value < 64:
            raise TraitError(
                f"{value} processes cannot run a hub. Write -1 (no limit) or a number of "
                "thousands, e.g. 32768."
            )
        return value

    @validate("gpus")
    def _valid_gpus(self, proposal):
        gpus = list(proposal["value"])
        for gpu in gpus:
            if gpu != "all" and not _GPU_RE.fullmatch(gpu):
                raise TraitError(
                    f'unknown GPU {gpu!r}. Write "all" or NVIDIA CDI device names such as '
                    '"nvidia.com/gpu=0" (see `nvidia-ctk cdi list` on the host).'
                )
        if "all" in gpus and len(gpus) > 1:
            raise TraitError('"all" already passes every GPU: list either "all" or devices.')
        return gpus

    @validate("volumes")
    def _valid_volumes(self, proposal):
        volumes = list(proposal["value"])
        targets = set()
        for spec in volumes:
            _, target, _ = parse_volume(spec)
            if target in targets:
                raise TraitError(f"two volumes are mounted at {target}: keep one.")
            targets.add(target)
        return volumes

    @validate("timezone")
    def _valid_timezone(self, proposal):
        value = proposal["value"].strip()
        if value == "local":
            return value
        parts = value.split("/")
        zone_file = ZONEINFO_DIR.joinpath(*parts) if value else ZONEINFO_DIR
        if (
            not value
            or value.startswith("/")
            or any(p in ("", ".", "..") for p in parts)
            or not zone_file.is_file()
        ):
            hint = ""
            if ZONEINFO_DIR.is_dir() and value:
                names = difflib.get_close_matches(value, _zone_names(), n=1)
                hint = f" Did you mean {names[0]!r}?" if names else ""
            raise TraitError(
                f"unknown time zone {value!r} (not in {ZONEINFO_DIR}).{hint} Write a zone "
                'such as "Europe/Berlin" or "UTC", or "local" for the host\'s '
                "(`timedatectl list-timezones` lists them)."
            )
        return value

    @validate("ca_file")
    def _valid_ca_file(self, proposal):
        value = proposal["value"]
        return _check_host_path(value, "CA file") if value else value

    @validate("runtime")
    def _valid_runtime(self, proposal):
        value = proposal["value"]
        if os.path.isabs(value) or _RUNTIME_NAME_RE.fullmatch(value):
            return value
        raise TraitError(
            f'{value!r} is not an OCI runtime. Write "runc", "crun" or the absolute '
            "path of the runtime's program."
        )

    @validate("ulimits")
    def _valid_ulimits(self, proposal):
        limits = dict(proposal["value"])
        for name, value in limits.items():
            if name not in ULIMIT_NAMES:
                raise TraitError(
                    f"unknown ulimit {name!r}. Known: {', '.join(sorted(ULIMIT_NAMES))}."
                )
            parse_ulimit(name, value)
        return limits

    @validate("stop_timeout")
    def _valid_stop_timeout(self, proposal):
        if proposal["value"] < 1:
            raise TraitError("write the number of seconds, at least 1 (e.g. 60).")
        return proposal["value"]

    # -- what the settings resolve to ------------------------------------------------

    def check(self) -> list[tuple[str, str]]:
        """Checks across settings; a list of (setting, message), empty when all is well."""
        problems = []
        if self.memory_swap not in (None, "-1"):
            if self.memory is None:
                problems.append(("memory_swap", "needs a `memory` limit as well."))
            elif parse_size(self.memory_swap) < parse_size(self.memory):
                problems.append(
                    (
                        "memory_swap",
                        f"{self.memory_swap!r} is less than memory ({self.memory!r}): it is "
                        'memory plus swap. Write at least the memory, or "-1".',
                    )
                )
        return problems


def _is_hostname(value: str) -> bool:
    return len(value) <= 253 and all(_HOST_LABEL_RE.fullmatch(p) for p in value.split("."))


def _zone_names() -> list[str]:
    names = []
    for root, _dirs, files in os.walk(ZONEINFO_DIR):
        rel = os.path.relpath(root, ZONEINFO_DIR)
        names.extend(f if rel == "." else f"{rel}/{f}" for f in files)
    return names


@dataclass(frozen=True)
class ContainerLayout:
    """The files of one container directory: config, fragments and runtime data."""

    directory: Path

    @property
    def dir_name(self) -> str:
        return self.directory.name

    @property
    def config_file(self) -> Path:
        return self.directory / CONFIG_FILE

    @property
    def fragments(self) -> Path:
        return self.directory / FRAGMENTS_DIR

    @property
    def runtime(self) -> Path:
        return self.directory / RUNTIME_DIR

    @property
    def homes(self) -> Path:
        return self.runtime / "homes"

    @property
    def state(self) -> Path:
        return self.runtime / "state"

    @property
    def exchange(self) -> Path:
        return self.runtime / "exchange"

    @property
    def logs(self) -> Path:
        return self.runtime / "logs"


@dataclass(frozen=True)
class LoadedContainer:
    """A container's validated settings, with its directory and resolved names."""

    settings: Container
    layout: ContainerLayout

    @property
    def name(self) -> str:
        return self.settings.name or self.layout.dir_name

    @property
    def hostname(self) -> str:
        if self.settings.hostname:
            return self.settings.hostname
        return self.name.replace("_", "-").strip("-.")


def read_config_file(path: Path) -> Config:
    """The traitlets Config of a container's config.py (traitlets' loader runs it)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            path,
            None,
            "no config.py here.",
            f"make it from a template first: ananke container init {path.parent.name} "
            f"--containers-dir {path.parent.parent} (then edit {path.name}).",
        )
    loader = PyFileConfigLoader(path.name, path=str(path.parent))
    try:
        return loader.load_config()
    except Exception as exc:  # anything the file raises: report where, do not crash
        line = line_of(exc, path)
        where = f"line {line}: " if line else ""
        raise ConfigError(
            path,
            None,
            f"{where}{type(exc).__name__}: {exc}",
            "fix that line; config.py only sets values, e.g. c.Container.port = 8000.",
        ) from exc


def container_from_config(config: Config, path: Path) -> Container:
    """Apply ``config`` to a Container one setting at a time, naming the one that fails."""
    for section in config:
        if section != "Container":
            raise ConfigError(
                path,
                f"c.{section}",
                f"unknown section c.{section}: config.py sets c.Container.* only.",
                "the hub's own settings go into jupyterhub_config.d/.",
            )
    settings = Container()
    known = Container.class_traits(config=True)
    for key, value in config.get("Container", Config()).items():
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = (
                f"did you mean c.Container.{close[0]}?"
                if close
                else (f"known settings: {', '.join(sorted(known))}.")
            )
            raise ConfigError(path, key, "is not a setting.", hint)
        try:
            setattr(settings, key, value)
        except TraitError as exc:
            raise ConfigError(path, key, str(exc)) from None
    for setting, message in settings.check():
        raise ConfigError(path, setting, message)
    return settings


def load_container(directory: Path) -> LoadedContainer:
    """Read and validate ``<directory>/config.py``; ConfigError says what to fix."""
    layout = ContainerLayout(Path(directory).absolute())
    settings = container_from_config(read_config_file(layout.config_file), layout.config_file)
    return LoadedContainer(settings=settings, layout=layout)
