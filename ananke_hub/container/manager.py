"""``ananke container init|create|remove|list|shell|logs``: podman driven with argv lists.

A command-line tool, not a server: podman runs through ``subprocess.run`` with argument
lists (never a shell), and its output goes straight to the admin's terminal.

What outlives a container is in ``<container>/runtime/`` on the host: ``remove`` runs
``podman stop`` and ``podman rm`` and never touches it; ``create`` makes the directories
when missing and reuses them when present, so homes, keys and the exchange survive
re-creation.
"""

import json
import os
import resource
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

from ..paths import shipped_fragments
from ..persist import ensure_private_dir
from .args import LABEL_DIR, run_argv
from .config import (
    CONFIG_FILE,
    HUB_UNIT,
    PROXY_UNIT,
    ConfigError,
    ContainerLayout,
    LoadedContainer,
    load_container,
    parse_ulimit,
    parse_volume,
)

#: Environment variable naming the containers directory (default ./containers).
CONTAINERS_DIR_ENV = "ANANKE_CONTAINERS_DIR"
#: Environment variable naming the podman program (default: podman on PATH).
PODMAN_ENV = "ANANKE_PODMAN"
#: Container directories named like this are templates to copy, not containers.
TEMPLATE_PREFIX = "template-"
#: A template's manifest: which shipped fragments its containers leave out.
TEMPLATE_MANIFEST = "template.toml"
#: Fragments every container gets besides the shipped ones (c.Container's companions).
CONTAINER_FRAGMENTS_DIR = Path(__file__).parent / "fragments"
#: The template `ananke container init` uses unless told otherwise.
DEFAULT_TEMPLATE = "nbgrader"
#: Where podman looks for CDI specs (NVIDIA Container Toolkit, "Support for CDI").
CDI_SPEC_DIRS = (Path("/etc/cdi"), Path("/var/run/cdi"))


class ContainerError(Exception):
    """Something the admin has to fix before the command can run."""


class PodmanNotFound(ContainerError):
    def __init__(self, program: str):
        super().__init__(
            f"podman not found ({program!r} is not on PATH). Install it "
            "(Debian/Ubuntu: sudo apt-get install podman) or set "
            f"{PODMAN_ENV} to the podman program."
        )


def is_rootless() -> bool:
    """Podman runs rootless when its caller is not root (podman(1), "Rootless mode")."""
    return os.geteuid() != 0


def host_findings(container: LoadedContainer | None = None):
    """``ananke container doctor``'s findings for this user (and a container's settings)."""
    import pwd

    from .host import Account, Host, doctor

    entry = pwd.getpwuid(os.getuid())
    account = Account(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir)
    extra = {}
    if container is not None:
        settings = container.settings
        if settings.network == "bridge":
            extra.update(port=settings.port, bind_address=settings.bind_address)
        extra.update(runtime=settings.runtime, wants_cpus=settings.cpus is not None)
    return doctor(Host(), account, dict(os.environ), **extra)


def doctor_command(containers_dir: Path, name: str | None, out=print) -> int:
    """Print what the host lacks for rootless containers; 2 if something must be fixed."""
    container = load_container(container_dir(containers_dir, name)) if name else None
    findings = host_findings(container)
    for finding in findings:
        out(finding.format())
    errors = [f for f in findings if f.level == "error"]
    warnings = [f for f in findings if f.level == "warning"]
    out(f"{len(errors)} error(s), {len(warnings)} warning(s)")
    return 2 if errors else 0


def default_containers_dir() -> Path:
    return Path(os.environ.get(CONTAINERS_DIR_ENV) or "containers")


def find_podman() -> str:
    """The podman program to run, or PodmanNotFound with how to install it."""
    program = os.environ.get(PODMAN_ENV) or "podman"
    found = shutil.which(program)
    if not found:
        raise PodmanNotFound(program)
    return found


def _named_dir(containers_dir: Path, name: str) -> Path:
    """``<containers_dir>/<name>``, refusing names that are paths or templates."""
    if not name or "/" in name or name in (".", "..") or name.startswith("-"):
        raise ContainerError(
            f"{name!r} is not a container name: give the name of a directory in "
            f"{containers_dir}, e.g. my-hub."
        )
    directory = Path(containers_dir) / name
    if name.startswith(TEMPLATE_PREFIX):
        template = name.removeprefix(TEMPLATE_PREFIX)
        raise ContainerError(
            f"{directory} is a template. Make a container from it and create that: "
            f"ananke container init my-hub --template {template} && "
            "ananke container create my-hub"
        )
    return directory


def container_dir(containers_dir: Path, name: str) -> Path:
    """``<containers_dir>/<name>``, an existing container directory."""
    directory = _named_dir(containers_dir, name)
    if not directory.is_dir():
        raise ContainerError(
            f"no container directory {directory}. Make one from a template first: "
            f"ananke container init {name}"
        )
    return directory


@dataclass(frozen=True)
class TemplatePlan:
    """What a container made from a template holds: file name -> source file."""

    config_py: Path
    fragments: dict[str, Path]


def template_plan(containers_dir: Path, template: str) -> TemplatePlan:
    """The files ``init`` copies for ``<containers_dir>/template-<template>``.

    The shipped fragments come from the installed package (config.d/ at the repository's
    root is their one source); a template holds only its config.py, its own fragments
    and its manifest of shipped fragments it leaves out.
    """
    source = Path(containers_dir) / f"{TEMPLATE_PREFIX}{template}"
    if not (source / CONFIG_FILE).is_file():
        raise ContainerError(
            f"no template {source} (it has no {CONFIG_FILE}). The templates are the "
            "directories template-* of containers/ in Ananke's repository; pass "
            "--containers-dir to the directory that holds them, or --template base or "
            "nbgrader."
        )
    manifest = source / TEMPLATE_MANIFEST
    try:
        leave_out = tomllib.loads(manifest.read_text()).get("leave_out", [])
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ContainerError(
            f"{manifest}: {exc}. A template needs it: leave_out = [names of shipped "
            "fragments its containers do not get]."
        ) from exc
    shipped = {p.name: p for p in shipped_fragments()}
    unknown = sorted(set(leave_out) - set(shipped))
    if unknown:
        raise ContainerError(
            f"{manifest}: leave_out names {', '.join(unknown)}, which Ananke does not ship "
            f"(shipped: {', '.join(sorted(shipped))}). Fix the list."
        )
    fragments = {n: p for n, p in shipped.items() if n not in leave_out}
    extra = sorted(CONTAINER_FRAGMENTS_DIR.glob("[0-9]*"))
    own = source / "jupyterhub_config.d"
    extra += sorted(own.glob("[0-9]*")) if own.is_dir() else []
    for path in extra:
        if path.name in shipped:
            raise ContainerError(
                f"{path} has the name of a shipped fragment: a container gets the shipped "
                "one. Give it a number and name of its own."
            )
        fragments[path.name] = path
    return TemplatePlan(source / CONFIG_FILE, dict(sorted(fragments.items())))


def _write_private(path: Path, data: bytes) -> None:
    # Fragments hold the LMS registration and may hold passwords: 0600 before content.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(data)


def init(containers_dir: Path, name: str, template: str = DEFAULT_TEMPLATE, out=print) -> int:
    """Make ``<containers_dir>/<name>`` from a template: its config.py and the fragments
    of :func:`template_plan` in ``jupyterhub_config.d``. Never touches an existing one."""
    directory = _named_dir(containers_dir, name)
    if directory.exists():
        raise ContainerError(
            f"{directory} exists already; init never overwrites an admin's files. Edit it, "
            f"or choose another name."
        )
    plan = template_plan(containers_dir, template)
    # Built under a temporary name, renamed into place: no half-made container directory.
    staging = directory.with_name(f".{name}.init-{os.getpid()}")
    ensure_private_dir(staging / "jupyterhub_config.d")
    os.chmod(staging, 0o700)
    try:
        _write_private(staging / CONFIG_FILE, plan.config_py.read_bytes())
        for fragment, source in plan.fragments.items():
            _write_private(staging / "jupyterhub_config.d" / fragment, source.read_bytes())
        os.rename(staging, directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    out(f"Made {directory} from the {template} template, with the shipped fragments.")
    out(
        f"Next: edit {directory / CONFIG_FILE} and "
        f"{directory / 'jupyterhub_config.d' / '30_lms.py'}, then run "
        f"`ananke container create {name}`."
    )
    return 0


# -- checks of the host (not part of the pure argument generation) ------------------------


@dataclass
class HostReport:
    errors: list[str]
    warnings: list[str]


def check_host(container: LoadedContainer) -> HostReport:
    """What the host must provide for this container: files that exist, sane limits."""
    settings = container.settings
    report = HostReport(errors=[], warnings=[])
    config_file = container.layout.config_file
    for spec in settings.volumes:
        host, _, _ = parse_volume(spec)
        if not os.path.exists(host):
            report.errors.append(
                f"{config_file}: c.Container.volumes: {host} does not exist on this host. "
                f"Create it (mkdir -p {shlex.quote(host)}) or fix the path."
            )
    if settings.ca_file and not os.path.isfile(settings.ca_file):
        report.errors.append(
            f"{config_file}: c.Container.ca_file: {settings.ca_file} is not a file. "
            "Point it at the PEM file of your root CA."
        )
    if not container.layout.fragments.is_dir():
        report.errors.append(
            f"{container.layout.fragments} is missing: the hub's config fragments go there. "
            f"Run `ananke init-config {container.layout.fragments}`."
        )
    cores = os.cpu_count() or 1
    if settings.cpus is not None and settings.cpus > cores:
        report.warnings.append(
            f"c.Container.cpus = {settings.cpus:g} but this host has {cores} cores: "
            "the limit has no effect beyond them."
        )
    if settings.gpus and not any(d.is_dir() and any(d.glob("nvidia*")) for d in CDI_SPEC_DIRS):
        report.warnings.append(
            "c.Container.gpus is set but no NVIDIA CDI spec is in /etc/cdi or /var/run/cdi: "
            "podman will not find the GPUs. Run: sudo nvidia-ctk cdi generate "
            "--output=/etc/cdi/nvidia.yaml"
        )
    for name, value in settings.ulimits.items():
        rlimit = getattr(resource, f"RLIMIT_{name.upper()}", None)
        if rlimit is None:
            continue
        _, hard = parse_ulimit(name, value)
        _, own_hard = resource.getrlimit(rlimit)
        if own_hard != resource.RLIM_INFINITY and (hard == -1 or hard > own_hard):
            report.warnings.append(
                f"c.Container.ulimits[{name!r}] = {value!r} is above this shell's hard limit "
                f"({own_hard}); if podman fails with 'error setting rlimit', lower it."
            )
    return report


def check_fragments(container: LoadedContainer) -> list[str]:
    """Errors of ``ananke check-config`` on the container's fragments (offline)."""
    from ..checkconfig import check_config_dir

    fragments = container.layout.fragments
    problems = check_config_dir(fragments, check_network=False)
    return [
        f"{fragments}/{p.format().removeprefix(f'{p.level:<7} ')}" for p in problems if p.is_error
    ]


# -- running podman ----------------------------------------------------------------------


def _run(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=False, **kwargs)


def _exists(podman: str, kind: str, name: str) -> bool:
    # `podman container exists` / `podman image exists`: exit 0 yes, 1 no.
    result = _run([podman, kind, "exists", name], stdout=subprocess.DEVNULL)
    if result.returncode not in (0, 1):
        raise ContainerError(f"`podman {kind} exists {name}` failed (exit {result.returncode}).")
    return result.returncode == 0


def ensure_runtime(layout: ContainerLayout, persist_journal: bool) -> list[Path]:
    """Create the runtime directories that are missing; never empty an existing one."""
    created = []
    layout.runtime.mkdir(exist_ok=True)
    # /var/lib/private must be 0700: dynamic users reach their homes only through
    # systemd's bind mounts (systemd.exec(5), "DynamicUser="). The state holds secrets.
    private = [layout.homes, layout.state]
    for path in private:
        if not path.exists():
            created.append(path)
        ensure_private_dir(path)
    others = [layout.exchange] + ([layout.logs] if persist_journal else [])
    for path in others:
        if not path.exists():
            # The image's boot unit sets the exchange root's owner and mode (root, 0755).
            path.mkdir(mode=0o755)
            created.append(path)
    return created


def create(
    containers_dir: Path,
    name: str,
    *,
    dry_run: bool = False,
    check_config: bool = True,
    check_rootless_host: bool = True,
    out=print,
) -> int:
    """Create and start the container of ``<containers_dir>/<name>``."""
    directory = container_dir(containers_dir, name)
    container = load_container(directory)
    rootless = is_rootless()
    argv = run_argv(container, podman="podman", rootless=rootless)

    report = check_host(container)
    errors = list(report.errors)
    if rootless and check_rootless_host:
        # What `ananke container doctor` finds missing would make podman or systemd fail
        # later with a less helpful message.
        errors += [f"{f.what} Fix: {f.fix}" for f in host_findings(container) if f.level == "error"]
    if check_config and container.layout.fragments.is_dir():
        errors += check_fragments(container)
    for warning in report.warnings:
        out(f"warning: {warning}")
    if dry_run:
        for error in errors:
            out(f"error: {error}")
        if errors:
            out("(create would refuse until these are fixed)")
        out(shlex.join(argv))
        return 1 if errors else 0
    if errors:
        raise ContainerError(
            "cannot create "
            f"{container.name}:\n  "
            + "\n  ".join(errors)
            + ("\n(fragment problems: fix them, or pass --no-check-config)" if check_config else "")
            + (
                "\n(host problems: `ananke container doctor` explains them; "
                "--no-host-check skips them)"
                if rootless and check_rootless_host
                else ""
            )
        )

    podman = find_podman()
    argv[0] = podman
    if _exists(podman, "container", container.name):
        raise ContainerError(
            f"a container named {container.name} exists already. Remove it first "
            f"(ananke container remove {name}; its runtime data stays)."
        )
    if not _exists(podman, "image", container.settings.image):
        raise ContainerError(
            f"image {container.settings.image} not found. Build it (scripts/build-images.sh "
            "builds ananke-base and ananke-nbgrader) or load it "
            f"(gzip -dc {container.settings.image}-VERSION.tar.gz | podman load); "
            "see docs/admin/containers.md."
        )
    created = ensure_runtime(container.layout, container.settings.persist_journal)
    reused = "new" if created else "reused"
    out(f"{container.name}: runtime data in {container.layout.runtime} ({reused})")
    result = _run(argv)
    if result.returncode != 0:
        raise ContainerError(
            f"podman run failed (exit {result.returncode}); the command was:\n  " + shlex.join(argv)
        )
    settings = container.settings
    where = (
        f"http://{settings.bind_address}:{settings.port}/hub"
        if settings.network == "bridge"
        else f"port {settings.container_port} of this host"
    )
    out(
        f"{container.name} is starting: the hub answers at {where} within a minute. "
        f"Logs: ananke container logs {name}"
    )
    return 0


def resolve_name(directory: Path, out=print) -> str:
    """The podman name of a container directory, even when its config.py is broken."""
    try:
        return load_container(directory).name
    except ConfigError as exc:
        out(f"warning: {exc}; using the directory name {directory.name}")
        return directory.name


def remove(containers_dir: Path, name: str, out=print) -> int:
    """Stop and remove the container; its runtime/ directory stays."""
    directory = container_dir(containers_dir, name)
    podman_name = resolve_name(directory, out)
    podman = find_podman()
    if not _exists(podman, "container", podman_name):
        out(f"{podman_name}: no such container (nothing to remove).")
        return 0
    # podman stop waits --stop-timeout seconds for systemd's orderly shutdown.
    stopped = _run([podman, "stop", podman_name], stdout=subprocess.DEVNULL)
    if stopped.returncode != 0:
        raise ContainerError(f"podman stop {podman_name} failed (exit {stopped.returncode}).")
    removed = _run([podman, "rm", podman_name], stdout=subprocess.DEVNULL)
    if removed.returncode != 0:
        raise ContainerError(f"podman rm {podman_name} failed (exit {removed.returncode}).")
    out(
        f"{podman_name} removed. Its data stays in {directory / 'runtime'}: "
        f"`ananke container create {name}` brings it back."
    )
    return 0


@dataclass(frozen=True)
class ListedContainer:
    directory: str
    name: str
    state: str
    status: str
    image: str


def podman_states(podman: str) -> dict[str, dict]:
    """Podman's view of every container (``podman ps -a --format json``), by name."""
    result = _run([podman, "ps", "--all", "--format", "json"], capture_output=True, text=True)
    if result.returncode != 0:
        raise ContainerError(f"podman ps failed (exit {result.returncode}): {result.stderr}")
    entries = json.loads(result.stdout or "[]") or []
    states = {}
    for entry in entries:
        names = entry.get("Names") or []
        for podman_name in [names] if isinstance(names, str) else names:
            states[podman_name] = entry
    return states


def list_containers(containers_dir: Path, out=print) -> list[ListedContainer]:
    """Every container directory of ``containers_dir`` with podman's state of it."""
    containers_dir = Path(containers_dir)
    if not containers_dir.is_dir():
        raise ContainerError(
            f"no containers directory {containers_dir}. Pass --containers-dir or set "
            f"{CONTAINERS_DIR_ENV}."
        )
    try:
        states = podman_states(find_podman())
        missing = None
    except PodmanNotFound as exc:
        states, missing = {}, exc
    listed = []
    for directory in sorted(p for p in containers_dir.iterdir() if (p / CONFIG_FILE).is_file()):
        if directory.name.startswith(TEMPLATE_PREFIX):
            listed.append(ListedContainer(directory.name, "-", "template", "", ""))
            continue
        podman_name = resolve_name(directory, out)
        entry = states.get(podman_name)
        if missing:
            state, status, image = "unknown", "podman not found", ""
        elif entry is None:
            state, status, image = "not created", "", ""
        else:
            state = entry.get("State", "")
            status, image = entry.get("Status", ""), entry.get("Image", "")
            labels = entry.get("Labels") or {}
            if labels.get(LABEL_DIR) not in (None, str(directory.absolute())):
                status = f"{status} (created from {labels[LABEL_DIR]})".strip()
        listed.append(ListedContainer(directory.name, podman_name, state, status, image))
    return listed


def print_list(listed: list[ListedContainer], out=print) -> None:
    if not listed:
        out("no containers here (directories with a config.py).")
        return
    rows = [("DIRECTORY", "NAME", "STATE", "IMAGE", "STATUS")] + [
        (c.directory, c.name, c.state, c.image, c.status) for c in listed
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for row in rows:
        out("  ".join(v.ljust(w) for v, w in zip(row[:4], widths, strict=True)) + "  " + row[4])


def _require_running(podman: str, podman_name: str) -> bool:
    result = _run(
        [podman, "container", "inspect", "--format", "{{.State.Running}}", podman_name],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise ContainerError(
            f"no container {podman_name}: create it with `ananke container create`."
        )
    return result.stdout.strip() == "true"


def shell(containers_dir: Path, name: str, out=print) -> int:
    """An interactive bash in the running container (as its root, which is no host root
    for rootless podman)."""
    podman_name = resolve_name(container_dir(containers_dir, name), out)
    podman = find_podman()
    if not _require_running(podman, podman_name):
        raise ContainerError(
            f"{podman_name} is not running: start it with `podman start {podman_name}`."
        )
    return _run([podman, "exec", "-it", podman_name, "bash"]).returncode


def logs(
    containers_dir: Path, name: str, follow: bool = False, console: bool = False, out=print
) -> int:
    """The hub's log: its systemd unit's journal inside the container.

    ``podman logs`` only shows what PID 1 writes to the console, which for a systemd
    container is the boot messages; the hub (and Kore, its child) log to the journal.
    When the container is not running (or with ``console``) podman's log is shown, which
    is where a failed boot shows up.
    """
    podman_name = resolve_name(container_dir(containers_dir, name), out)
    podman = find_podman()
    running = _require_running(podman, podman_name)
    if console or not running:
        if not running:
            out(
                f"{podman_name} is not running; its console output (systemd's boot):",
            )
        argv = [podman, "logs", *(["--follow"] if follow else []), podman_name]
    else:
        argv = [podman, "exec", podman_name, "journalctl", "--no-pager",
                "-u", HUB_UNIT, "-u", PROXY_UNIT]  # fmt: skip
        argv += ["--follow"] if follow else ["--lines", "200"]
    sys.stdout.flush()
    return _run(argv).returncode
