"""The host side of rootless Podman: what a container admin's host lacks, and a safe
way for the host admin to make a container admin.

``ananke container doctor`` (:func:`doctor`) runs as the container admin and lists what
rootless Podman with systemd inside needs from the host (subordinate uid/gid ranges,
linger, cgroup v2 with delegated controllers, user namespaces, uidmap, slirp4netns, a
real login session), each missing piece with the command that fixes it.
``ananke host add-admin NAME`` (:func:`add_admin`) runs as root and creates (or
completes) a container admin: an account with a private home, a subordinate range of
its own, linger, and optionally a range of host ports. See docs/admin/hosting.md.

Every file is read below :attr:`Host.root` (``/`` on a real host) and every command goes
through :attr:`Host.run` (argv lists, no shell), so the tests can give both a fake tree.
"""

import os
import re
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

#: Container uids 0..65535 must be mapped: dynamic users take 61184-65519
#: (systemd.exec(5), "DynamicUser=") and nobody is 65534. Root inside is the admin.
MIN_SUBIDS = 65536
#: Where new subordinate ranges start (useradd's SUB_UID_MIN default, login.defs(5)).
SUBID_START = 100000
#: Host port ranges per container admin: lines "NAME START END" (see hosting.md).
PORT_RANGES_FILE = "etc/ananke/port-ranges"
#: A user's lingering flag (loginctl(1), "enable-linger").
LINGER_DIR = "var/lib/systemd/linger"
#: cgroup controllers a rootless systemd container needs delegated: -m (memory) and
#: --pids-limit (pids), both set by default in config.py.
NEEDED_CONTROLLERS = ("memory", "pids")
#: The drop-in that delegates all controllers to users' managers (systemd.resource-control(5)).
DELEGATE_DROPIN = "/etc/systemd/system/user@.service.d/delegate.conf"
DELEGATE_FIX = (
    f"as root: mkdir -p {os.path.dirname(DELEGATE_DROPIN)} && printf '[Service]\\n"
    f"Delegate=cpu cpuset io memory pids\\n' > {DELEGATE_DROPIN} && systemctl daemon-reload "
    "(then log out and in again)"
)
HIDEPID_FIX = "see docs/admin/hosting.md, '/proc': mount /proc with hidepid=invisible"

# useradd(8)'s portable names, also what podman and systemd accept as user names.
_ADMIN_NAME_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")


class HostError(Exception):
    """The host set-up cannot go on: what is wrong and what to do."""


@dataclass
class Host:
    """The machine the checks look at: a root directory and a way to run commands."""

    root: Path = Path("/")
    run: Callable = field(default=lambda argv: subprocess.run(argv, check=False))
    which: Callable = field(default=shutil.which)
    euid: Callable = field(default=os.geteuid)

    def path(self, absolute: str) -> Path:
        return self.root / absolute.lstrip("/")

    def read(self, absolute: str) -> str | None:
        try:
            return self.path(absolute).read_text()
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            return None


@dataclass(frozen=True)
class Finding:
    level: str  # "ok", "warning" or "error"
    what: str
    fix: str = ""

    def format(self) -> str:
        text = f"{self.level:<7} {self.what}"
        return text + (f"\n        fix: {self.fix}" if self.fix else "")


# -- /etc/passwd, /etc/subuid, /etc/subgid, port ranges ----------------------------------


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int
    home: str


def accounts(host: Host) -> dict[str, Account]:
    found = {}
    for line in (host.read("/etc/passwd") or "").splitlines():
        parts = line.split(":")
        if len(parts) >= 7 and parts[2].isdigit() and parts[3].isdigit():
            found[parts[0]] = Account(parts[0], int(parts[2]), int(parts[3]), parts[5])
    return found


def subid_entries(host: Host, kind: str) -> list[tuple[str, int, int]]:
    """(owner, start, count) of /etc/subuid (kind "uid") or /etc/subgid ("gid")."""
    entries = []
    for line in (host.read(f"/etc/sub{kind}") or "").splitlines():
        parts = line.strip().split(":")
        if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
            entries.append((parts[0], int(parts[1]), int(parts[2])))
    return entries


def _own(entry_owner: str, account: Account) -> bool:
    # subuid(5): the owner is a login name or a numeric uid.
    return entry_owner in (account.name, str(account.uid))


def subid_ranges(host: Host, account: Account, kind: str) -> list[tuple[int, int]]:
    return [(s, c) for o, s, c in subid_entries(host, kind) if _own(o, account)]


def subid_overlaps(host: Host, account: Account, kind: str) -> list[str]:
    """Other owners whose ranges overlap this account's: they could read its files."""
    entries = subid_entries(host, kind)
    mine = [(s, c) for o, s, c in entries if _own(o, account)]
    others = set()
    for owner, start, count in entries:
        if _own(owner, account):
            continue
        if any(start < s + c and s < start + count for s, c in mine):
            others.add(owner)
    return sorted(others)


def free_subid_start(host: Host, kind: str) -> int:
    """The start of a free range of MIN_SUBIDS ids after every range in the file."""
    ends = [s + c for _, s, c in subid_entries(host, kind)]
    return max([SUBID_START, *ends])


def port_ranges(host: Host) -> dict[str, tuple[int, int]]:
    ranges = {}
    for line in (host.read("/" + PORT_RANGES_FILE) or "").splitlines():
        parts = line.split("#", 1)[0].split()
        if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
            ranges[parts[0]] = (int(parts[1]), int(parts[2]))
    return ranges


def parse_port_range(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"\s*([0-9]+)\s*-\s*([0-9]+)\s*", text)
    if not match:
        raise HostError(f"{text!r} is not a port range. Write START-END, e.g. 20000-20099.")
    start, end = int(match.group(1)), int(match.group(2))
    if not 1024 <= start <= end <= 65535:
        raise HostError(
            f"{text!r}: a range of unprivileged ports, 1024 <= START <= END <= 65535 "
            "(e.g. 20000-20099)."
        )
    return start, end


# -- what the kernel, systemd and the session provide -----------------------------------


def proc_hidepid(host: Host) -> str | None:
    """The hidepid= option /proc is mounted with, or None."""
    for line in (host.read("/proc/mounts") or "").splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[1] == "/proc" and parts[2] == "proc":
            for option in parts[3].split(","):
                if option.startswith("hidepid="):
                    value = option.partition("=")[2]
                    return None if value in ("0", "off") else value
    return None


def user_manager_cgroup(uid: int) -> str:
    """The cgroup of the user's systemd manager, where rootless podman puts its containers
    (through the manager's D-Bus API, podman's systemd cgroup manager)."""
    return f"/user.slice/user-{uid}.slice/user@{uid}.service"


def _kernel_findings(host: Host, rootful: bool = False) -> list[Finding]:
    findings = []
    controllers = host.read("/sys/fs/cgroup/cgroup.controllers")
    if controllers is None:
        findings.append(
            Finding(
                # Rootful podman with runc copes with hybrid cgroups (docs/developer/containers.md).
                "warning" if rootful else "error",
                "cgroup v2 is not mounted at /sys/fs/cgroup (hybrid or v1): systemd in a "
                "rootless container needs the unified hierarchy.",
                "boot the host with systemd.unified_cgroup_hierarchy=1 on the kernel "
                "command line (GRUB_CMDLINE_LINUX in /etc/default/grub, then update-grub)",
            )
        )
    else:
        findings.append(Finding("ok", "cgroup v2 (unified hierarchy)"))
    clone = host.read("/proc/sys/kernel/unprivileged_userns_clone")
    max_ns = host.read("/proc/sys/user/max_user_namespaces")
    if (clone is not None and clone.strip() == "0") or (
        max_ns is not None and max_ns.strip() == "0"
    ):
        findings.append(
            Finding(
                "error",
                "unprivileged user namespaces are switched off in the kernel.",
                "as root: sysctl -w kernel.unprivileged_userns_clone=1 "
                "user.max_user_namespaces=28633, and the same in /etc/sysctl.d/ananke.conf",
            )
        )
    else:
        findings.append(Finding("ok", "unprivileged user namespaces"))
    return findings


def doctor(
    host: Host,
    account: Account,
    env: dict,
    *,
    port: int | None = None,
    bind_address: str | None = None,
    runtime: str | None = None,
    wants_cpus: bool = False,
) -> list[Finding]:
    """What rootless Podman with systemd inside needs from this host for ``account``."""
    rootful = account.uid == 0
    findings = _kernel_findings(host, rootful)
    if rootful:
        findings.append(
            Finding(
                "warning",
                "running as root: containers are rootful. Container admins run "
                "`ananke container` as their own, unprivileged account (docs/admin/hosting.md).",
            )
        )
    for tool, package in [("podman", "podman")] + (
        [] if rootful else [
            ("newuidmap", "uidmap"), ("newgidmap", "uidmap"), ("slirp4netns", "slirp4netns")
        ]
    ) + ([(runtime, runtime)] if runtime and not os.path.isabs(runtime) else []):  # fmt: skip
        if host.which(tool) is None:
            findings.append(
                Finding("error", f"{tool} is not installed.", f"as root: apt-get install {package}")
            )
    if rootful:
        return findings

    name = account.name
    for kind in ("uid", "gid"):
        total = sum(c for _, c in subid_ranges(host, account, kind))
        if total < MIN_SUBIDS:
            findings.append(
                Finding(
                    "error",
                    f"{name} has {total} subordinate {kind}s in /etc/sub{kind}; a container "
                    f"with dynamic users needs {MIN_SUBIDS} (uids up to 65535 inside).",
                    f"as root: ananke host add-admin {name} (then: podman system migrate)",
                )
            )
        else:
            findings.append(Finding("ok", f"{total} subordinate {kind}s"))
        others = subid_overlaps(host, account, kind)
        if others:
            findings.append(
                Finding(
                    "error",
                    f"{name}'s subordinate {kind}s in /etc/sub{kind} overlap those of "
                    f"{', '.join(others)}: their containers' files would be each other's.",
                    f"as root: give {name} a range of its own (usermod --del-sub{kind}s "
                    f"and --add-sub{kind}s; ananke host add-admin picks a free one)",
                )
            )

    runtime_dir = env.get("XDG_RUNTIME_DIR", "")
    if not runtime_dir or not host.path(runtime_dir).is_dir():
        findings.append(
            Finding(
                "error",
                "no XDG_RUNTIME_DIR: this is no login session of its own (su or sudo -u?); "
                "rootless podman and systemd's user manager need one.",
                f"log in as {name} over ssh, or as root: machinectl shell {name}@",
            )
        )
    manager = user_manager_cgroup(account.uid)
    cgroup2 = host.read("/sys/fs/cgroup/cgroup.controllers") is not None
    if cgroup2 and not host.path(f"/sys/fs/cgroup{manager}").is_dir():
        findings.append(
            Finding(
                "error",
                f"{name}'s systemd user manager (user@{account.uid}.service) is not running: "
                "podman puts rootless containers into its cgroups.",
                f"log in as {name} over ssh, or as root: machinectl shell {name}@ "
                f"(and loginctl enable-linger {name} to keep it running)",
            )
        )
    elif cgroup2:
        delegated = (host.read(f"/sys/fs/cgroup{manager}/cgroup.controllers") or "").split()
        missing = [c for c in NEEDED_CONTROLLERS if c not in delegated]
        if wants_cpus and "cpu" not in delegated:
            missing.append("cpu")
        if missing:
            findings.append(
                Finding(
                    "error",
                    f"cgroup controllers {', '.join(missing)} are not delegated to "
                    f"{name}'s systemd (c.Container.memory, pids_limit and cpus need them).",
                    DELEGATE_FIX,
                )
            )
        else:
            findings.append(Finding("ok", f"delegated cgroup controllers: {' '.join(delegated)}"))

    if not host.path(f"/{LINGER_DIR}/{name}").exists():
        findings.append(
            Finding(
                "warning",
                f"linger is off for {name}: the containers stop when you log out and do "
                "not start at boot.",
                f"loginctl enable-linger {name} (or as root: ananke host add-admin {name})",
            )
        )
    else:
        findings.append(Finding("ok", "linger"))

    home = host.path(account.home)
    try:
        mode = home.stat().st_mode & 0o777
    except OSError:
        mode = None
    if mode is not None and mode & 0o077:
        findings.append(
            Finding(
                "warning",
                f"your home {account.home} is {mode:04o}: other users can look into it "
                "(container directories, runtime data).",
                f"chmod 700 {shlex.quote(account.home)}",
            )
        )
    if proc_hidepid(host) is None:
        findings.append(
            Finding(
                "warning",
                "/proc is mounted without hidepid: other users on this host see your "
                "processes and their command lines (those of your containers too).",
                "for the host admin: " + HIDEPID_FIX,
            )
        )

    if port is not None:
        findings += _port_findings(host, name, port, bind_address)
    return findings


def _port_findings(host: Host, name: str, port: int, bind_address: str | None) -> list[Finding]:
    findings = []
    text = host.read("/proc/sys/net/ipv4/ip_unprivileged_port_start")
    lowest = int(text) if text and text.strip().isdigit() else 1024
    if port < lowest:
        findings.append(
            Finding(
                "error",
                f"c.Container.port = {port}: ports below {lowest} cannot be published "
                "without root.",
                "use a port of your range (or 1024 and above) behind the host's reverse proxy",
            )
        )
    ranges = port_ranges(host)
    for owner, (start, end) in sorted(ranges.items()):
        if owner != name and start <= port <= end:
            findings.append(
                Finding(
                    "error",
                    f"c.Container.port = {port} is in {owner}'s port range {start}-{end} "
                    f"(/{PORT_RANGES_FILE}).",
                    f"use a port of your own range {_range_text(ranges.get(name))}",
                )
            )
    own = ranges.get(name)
    if own and not own[0] <= port <= own[1]:
        findings.append(
            Finding(
                "warning",
                f"c.Container.port = {port} is outside your range {own[0]}-{own[1]}.",
                f"use a port from {own[0]} to {own[1]}",
            )
        )
    if bind_address not in (None, "127.0.0.1", "::1"):
        findings.append(
            Finding(
                "warning",
                f"c.Container.bind_address = {bind_address!r}: the hub's plain HTTP is "
                "published beyond this host.",
                'keep "127.0.0.1" behind the host\'s HTTPS reverse proxy',
            )
        )
    return findings


def _range_text(own) -> str:
    return f"{own[0]}-{own[1]}" if own else "(ask the host admin for one)"


# -- ananke host add-admin --------------------------------------------------------------


def _write_port_ranges(host: Host, ranges: dict[str, tuple[int, int]]) -> None:
    path = host.path("/" + PORT_RANGES_FILE)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = "# Host ports per container admin: NAME START END (ananke host add-admin)\n"
    body += "".join(f"{n} {s} {e}\n" for n, (s, e) in sorted(ranges.items()))
    # Readable by all (doctor reads it as the admin); replaced atomically.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".port-ranges.")
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), 0o644)
        f.write(body)
    os.replace(tmp, path)


def add_admin(
    name: str,
    *,
    ports: str | None = None,
    host: Host | None = None,
    dry_run: bool = False,
    out=print,
) -> int:
    """Create or complete the container admin ``name``; idempotent."""
    host = host or Host()
    if not _ADMIN_NAME_RE.fullmatch(name or ""):
        raise HostError(
            f"{name!r} is not a user name for a container admin. Use lower-case letters, "
            "digits, '_' and '-', starting with a letter, e.g. hub-physics."
        )
    if not dry_run and host.euid() != 0:
        raise HostError("run as root (sudo ananke host add-admin ...): it creates a user.")
    wanted_ports = parse_port_range(ports) if ports else None
    if wanted_ports:
        for owner, (start, end) in port_ranges(host).items():
            if owner != name and start <= wanted_ports[1] and wanted_ports[0] <= end:
                raise HostError(
                    f"ports {ports} overlap {owner}'s range {start}-{end} (/{PORT_RANGES_FILE}). "
                    "Pick a range no other admin has."
                )

    def run(argv: list[str]) -> None:
        out("+ " + shlex.join(argv))
        if dry_run:
            return
        result = host.run(argv)
        if result.returncode != 0:
            raise HostError(f"{argv[0]} failed (exit {result.returncode}): {shlex.join(argv)}")

    account = accounts(host).get(name)
    if account is None:
        # --user-group: a group of its own; useradd also gives the new user subordinate
        # ranges when login.defs allows (Debian does: SUB_UID_COUNT 65536).
        run(["useradd", "--create-home", "--user-group", "--shell", "/bin/bash", name])
        account = accounts(host).get(name)
        if account is None:
            if dry_run:
                account = Account(name, -1, -1, f"/home/{name}")
            else:
                raise HostError(f"useradd ran, but {name} is not in /etc/passwd.")
    elif account.uid == 0:
        raise HostError(f"{name} is root: a container admin must be an unprivileged user.")

    for kind in ("uid", "gid"):
        others = subid_overlaps(host, account, kind)
        if others:
            raise HostError(
                f"{name}'s subordinate {kind}s overlap those of {', '.join(others)} in "
                f"/etc/sub{kind}: their containers' files would be each other's. Remove "
                f"{name}'s overlapping range (usermod --del-sub{kind}s START-END {name}) and "
                "run add-admin again."
            )
        total = sum(c for _, c in subid_ranges(host, account, kind))
        if total < MIN_SUBIDS:
            start = free_subid_start(host, kind)
            end = start + MIN_SUBIDS - 1
            run(["usermod", f"--add-sub{kind}s", f"{start}-{end}", name])
        else:
            out(f"{name}: {total} subordinate {kind}s already")

    home = host.path(account.home)
    if home.is_dir() and not home.is_symlink():
        st = home.stat()
        if not dry_run and st.st_uid == account.uid and st.st_mode & 0o077:
            # Other users must not list the admin's containers' directories and data.
            os.chmod(home, 0o700)
        out(f"{name}: home {account.home} mode 0700")
    elif not dry_run:
        out(f"warning: {account.home} is not a directory: create it (mode 0700, owned by {name})")

    run(["loginctl", "enable-linger", name])

    if wanted_ports:
        ranges = port_ranges(host)
        ranges[name] = wanted_ports
        if not dry_run:
            _write_port_ranges(host, ranges)
        out(f"{name}: ports {wanted_ports[0]}-{wanted_ports[1]} in /{PORT_RANGES_FILE}")

    for finding in _kernel_findings(host):
        if finding.level != "ok":
            out(finding.format())
    if proc_hidepid(host) is None:
        out(
            "warning /proc is mounted without hidepid: container admins see each other's "
            f"processes.\n        fix: {HIDEPID_FIX}"
        )
    out(f"{name} is a container admin. Next, as {name} (ssh, not su): ananke container doctor")
    return 0
