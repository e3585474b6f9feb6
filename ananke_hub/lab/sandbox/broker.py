"""The sandbox broker: a root service that starts sandboxed kernels as transient units.

A grader account's lab is a non-root dynamic user and cannot create system units. The
broker can: systemd starts it as root for each connection to its Unix socket
(``ananke-sandbox-broker.socket``, ``Accept=yes``: one broker process per connection,
systemd.socket(5)), and it runs one kernel per connection:

1. It learns who is calling from the kernel (``SO_PEERCRED``, unix(7)), never from the
   request: the caller's uid must resolve to a grader account (``grader-<course id>``),
   whose course then gives the limits' ceilings (the course's settings in Kore).
2. It checks the request (:func:`check_request`): the scratch directory must be a
   directory the caller owns directly in its own scratch area
   ``<homes root>/<grader>/.ananke-sandbox/``, written without ``..`` or links; every
   limit must be a whole number no higher than the course allows.
3. It starts the kernel with ``systemd-run`` (argv, no shell) in a transient unit with a
   throwaway dynamic user, no network and a file system view holding only the scratch
   directory (read-write) and the Python installation (read-only) (:func:`unit_argv`).
4. It stops the unit (every process in it: ``KillMode=control-group``) when the caller
   says ``stop`` or hangs up, removes the scratch directory, and answers with the exit
   status and systemd's result (``timeout`` when ``RuntimeMaxSec=`` ended it).

Protocol: JSON lines. Request ``{"scratch", "argv", "env", "limits"}``; answers
``{"error": "..."}`` (refused) or ``{"unit": "..."}`` then ``{"exit": n, "result": "..."}``.
"""

import json
import logging
import os
import pwd
import re
import secrets
import select
import shutil
import socket
import stat
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

# Light imports only: systemd starts a broker process for every kernel.
from ...courses.layout import course_of_grader

#: Where the socket unit listens; the labs see it read-only (ReadOnlyPaths=/).
BROKER_SOCKET = "/run/ananke-sandbox/broker.sock"
#: The caller's scratch area, inside its home (which only it and root can reach).
SCRATCH_AREA = ".ananke-sandbox"
SCRATCH_NAME_RE = re.compile(r"^ananke-sandbox-[A-Za-z0-9_]{4,64}$")
ENV_NAME_RE = re.compile(r"^[A-Z][A-Z0-9_]{0,63}$")
#: The scratch directory's tmpfs (/tmp) ceiling, for every course.
DISK_MB_MAX = 4096
REQUEST_MAX_BYTES = 64 * 1024
#: systemd.exec(5) directories the kernel never sees: an empty tmpfs on each.
HIDDEN = ("/var", "/srv", "/mnt", "/media", "/opt", "/run")

log = logging.getLogger("ananke.sandbox.broker")


class Refused(ValueError):
    """A request the broker does not run; the message says why."""


@dataclass(frozen=True)
class Caller:
    uid: int
    name: str
    course_id: str


@dataclass(frozen=True)
class Request:
    scratch: str
    argv: list[str]
    env: dict[str, str]
    limits: dict[str, int]


#: Request limit -> the CourseSettings field that caps it.
LIMIT_CAPS = {
    "time_limit": "sandbox_time_limit",
    "memory_mb": "sandbox_memory_mb",
    "cpu_seconds": "sandbox_cpu_seconds",
    "tasks_max": "sandbox_tasks",
}


def identify(uid: int) -> Caller:
    """The grader account behind ``uid`` (from the system's user database), or Refused."""
    if uid == 0:
        raise Refused("root does not need the broker (its kernels use bubblewrap).")
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        raise Refused(f"uid {uid} is no known user.") from None
    course_id = course_of_grader(name)
    if course_id is None:
        raise Refused(f"{name} is not a course's grader account; only they autograde.")
    return Caller(uid, name, course_id)


def course_caps(course_id: str) -> dict[str, int]:
    """The ceilings of the limits for ``course_id``: its settings in the course registry."""
    from ...courses.registry import CourseRegistry
    from ...courses.settings import CourseSettings

    course = CourseRegistry().get(course_id)
    if course is None:
        raise Refused(f"course {course_id} is not in the course registry.")
    settings = CourseSettings.from_dict(course.settings or {})
    caps = {key: getattr(settings, field) for key, field in LIMIT_CAPS.items()}
    caps["disk_mb"] = DISK_MB_MAX
    return caps


def _owned_dir(path: Path, uid: int, what: str) -> None:
    try:
        st = os.lstat(path)
    except OSError as exc:
        raise Refused(f"{what} {path} cannot be checked: {exc.strerror}.") from None
    if not stat.S_ISDIR(st.st_mode):
        raise Refused(f"{what} {path} is not a directory (links are refused).")
    if st.st_uid != uid:
        raise Refused(f"{what} {path} does not belong to the caller.")


def check_request(raw: object, caller: Caller, caps: dict[str, int], homes_root: str) -> Request:
    """The request, checked against the caller and its course's ceilings; or Refused."""
    if not isinstance(raw, dict):
        raise Refused("the request must be a JSON object.")
    unknown = set(raw) - {"scratch", "argv", "env", "limits"}
    if unknown:
        raise Refused(f"unknown request field(s): {', '.join(sorted(unknown))}.")

    scratch = raw.get("scratch")
    home = Path(homes_root) / caller.name
    area = home / SCRATCH_AREA
    if not isinstance(scratch, str) or os.path.normpath(scratch) != scratch:
        raise Refused(f"scratch {scratch!r} is not a normalised path.")
    path = Path(scratch)
    if path.parent != area or not SCRATCH_NAME_RE.match(path.name):
        raise Refused(f"scratch {scratch} is not a directory in the caller's area {area}.")
    # Each step, without following links: home, area, scratch all the caller's.
    _owned_dir(home, caller.uid, "home")
    _owned_dir(area, caller.uid, "scratch area")
    _owned_dir(path, caller.uid, "scratch")

    argv = raw.get("argv")
    if (
        not isinstance(argv, list)
        or not 0 < len(argv) <= 64
        or not all(isinstance(a, str) and "\0" not in a for a in argv)
        or not argv[0].startswith("/")
    ):
        raise Refused("argv must be a list of at most 64 strings, starting with an absolute path.")

    env = raw.get("env", {})
    if not isinstance(env, dict) or len(env) > 32:
        raise Refused("env must be an object of at most 32 variables.")
    for key, value in env.items():
        if not ENV_NAME_RE.match(key) or not isinstance(value, str) or set(value) & {"\0", "\n"}:
            raise Refused(f"environment variable {key!r} is not allowed as given.")

    limits = raw.get("limits")
    if not isinstance(limits, dict) or set(limits) != set(caps):
        raise Refused(f"limits must give exactly {', '.join(sorted(caps))}.")
    for key, value in limits.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise Refused(f"limit {key} must be a positive whole number, got {value!r}.")
        if value > caps[key]:
            raise Refused(
                f"limit {key}={value} is above the course's {caps[key]}; instructors raise "
                "it in the course's settings in Kore."
            )
    return Request(scratch, argv, dict(env), dict(limits))


def python_dirs() -> list[str]:
    """The broker's own Python installation (the labs' venv): the kernel's, read-only."""
    prefixes = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix)}
    return sorted(p for p in prefixes if not (p == "/usr" or p.startswith("/usr/")))


def _ancestors_below_hidden(path: str) -> list[str]:
    """``path``'s ancestors below one of HIDDEN, top first."""
    parents = [str(p) for p in reversed(Path(path).parents)]
    return [p for p in parents if any(p.startswith(h + "/") for h in HIDDEN)]


def unit_argv(unit: str, req: Request) -> list[str]:
    """``systemd-run`` for one kernel (systemd.exec(5), systemd.resource-control(5))."""
    lim = req.limits
    mib = 1024 * 1024
    props = [
        # A throwaway user, allocated now, released at the end: never root, never the
        # grader (systemd.exec(5), "DynamicUser="); implies RemoveIPC= and more.
        "DynamicUser=yes",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=",
        "AmbientCapabilities=",
        # No network but its own, empty loopback. ZMQ resolves addresses even for its
        # IPC transport (libzmq aborts without AF_INET), so the families stay: there is
        # nothing to reach with them.
        "PrivateNetwork=yes",
        "PrivateIPC=yes",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK",
        "RestrictNamespaces=yes",
        "PrivateDevices=yes",
        "ProtectSystem=strict",
        "ProtectHome=tmpfs",
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectKernelLogs=yes",
        "ProtectControlGroups=yes",
        "ProtectClock=yes",
        "ProtectHostname=yes",
        "ProtectProc=invisible",
        "LockPersonality=yes",
        "RestrictRealtime=yes",
        "RestrictSUIDSGID=yes",
        "SystemCallArchitectures=native",
        # Homes, the exchange, Ananke's state, the broker's socket: out of sight, under
        # empty tmpfs of root's (not read-only: systemd makes the bind mounts' points
        # there). /tmp is the kernel's scratch space with a size: its disk quota.
        f"TemporaryFileSystem={' '.join(HIDDEN)}",
        f"TemporaryFileSystem=/tmp:size={lim['disk_mb']}M,mode=1777",
        # The directories on the way to the scratch directory are made again (in the
        # tmpfs above) for its bind mount: traversable, not listable.
        *(f"TemporaryFileSystem={p}:mode=0711" for p in _ancestors_below_hidden(req.scratch)),
        "InaccessiblePaths=-/etc/ananke",
        f"BindPaths={req.scratch}",
        *(f"BindReadOnlyPaths={p}" for p in python_dirs()),
        # Sockets the kernel makes in the scratch directory must be the grader's to
        # connect to; only the grader (and root) can reach that directory at all.
        "UMask=0000",
        f"WorkingDirectory={req.scratch}",
        # Limits: the whole unit's memory and tasks, per-process address space and CPU
        # time, wall time. Stopping the unit kills all its processes.
        f"MemoryMax={lim['memory_mb']}M",
        "MemorySwapMax=0",
        f"TasksMax={lim['tasks_max']}",
        # Also per uid (each kernel has its own): where systemd has no pids controller
        # (some containers), TasksMax= alone would not stop a fork bomb.
        f"LimitNPROC={lim['tasks_max']}",
        "CPUQuota=100%",
        f"LimitAS={lim['memory_mb'] * mib}",
        f"LimitCPU={lim['cpu_seconds']}",
        f"LimitFSIZE={lim['disk_mb'] * mib}",
        "LimitNOFILE=1024",
        "LimitCORE=0",
        f"RuntimeMaxSec={lim['time_limit']}",
        "KillMode=control-group",
    ]
    argv = ["systemd-run", "--wait", "--collect", "--service-type=exec", f"--unit={unit}"]
    for prop in props:
        argv += ["--property", prop]
    for key, value in sorted(req.env.items()):
        argv.append(f"--setenv={key}={value}")
    return [*argv, "--", *req.argv]


def peer_uid(conn: socket.socket) -> int:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid


def _send(conn: socket.socket, message: dict) -> None:
    try:
        conn.sendall(json.dumps(message).encode() + b"\n")
    except OSError:
        pass  # the caller is gone; the unit is stopped all the same


def _read_request(conn: socket.socket) -> object:
    conn.settimeout(10)
    data = b""
    while b"\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
        if len(data) > REQUEST_MAX_BYTES:
            raise Refused("the request is too large.")
    try:
        return json.loads(data.split(b"\n", 1)[0])
    except ValueError:
        raise Refused("the request is not one line of JSON.") from None


def _remove_scratch(path: str, uid: int) -> None:
    # The kernel's files (its dynamic user's, maybe unwritable to the grader) go with it.
    # shutil.rmtree does not follow links (fd-based on Linux); the top must still be the
    # caller's directory.
    try:
        st = os.lstat(path)
    except OSError:
        return
    if stat.S_ISDIR(st.st_mode) and st.st_uid == uid:
        shutil.rmtree(path, ignore_errors=True)


def serve(conn: socket.socket, homes_root: str, caps_of=course_caps) -> int:
    """Handle one connection; returns the kernel's exit status (or 1 if refused)."""
    try:
        caller = identify(peer_uid(conn))
        req = check_request(_read_request(conn), caller, caps_of(caller.course_id), homes_root)
    except Refused as exc:
        log.warning("Refused: %s", exc)
        _send(conn, {"error": f"The sandbox broker refused: {exc}"})
        return 1
    except (OSError, ValueError) as exc:
        log.warning("Refused a request that could not be read: %s", exc)
        _send(conn, {"error": f"The sandbox broker could not read the request: {exc}"})
        return 1
    unit = f"ananke-sandbox-{caller.uid}-{secrets.token_hex(6)}.service"
    log.info("course:%s uid:%d starting %s, limits %s", caller.course_id, caller.uid, unit,
             req.limits)
    proc = subprocess.Popen(unit_argv(unit, req), stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _send(conn, {"unit": unit})
    conn.settimeout(None)
    stopped = False
    while proc.poll() is None and not stopped:
        ready, _, _ = select.select([conn], [], [], 0.5)
        if ready:
            try:
                data = conn.recv(4096)
            except OSError:
                data = b""
            if not data or b"stop" in data:
                stopped = True
    if stopped:
        # A stop right after the start can come before systemd-run has made the unit
        # (stopping a unit that does not exist yet does nothing, and the kernel would
        # then run to its time limit): stop again until systemd-run returns.
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            subprocess.run(["systemctl", "stop", unit], stdin=subprocess.DEVNULL,
                           capture_output=True, timeout=120, check=False)
            try:
                proc.wait(timeout=1)
            except subprocess.TimeoutExpired:
                pass
    _, err = proc.communicate(timeout=120)
    found = re.search(r"Finished with result: (\S+)", err or "")
    result = found.group(1) if found else ("stopped" if stopped else "unknown")
    _remove_scratch(req.scratch, caller.uid)
    log.info("course:%s unit %s ended: exit %s, result %s", caller.course_id, unit,
             proc.returncode, result)
    _send(conn, {"exit": proc.returncode, "result": result})
    return proc.returncode


def main() -> int:
    # The broker is a program of its own (its socket unit starts it): its logger writes
    # to stderr, which systemd sends to the journal.
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    # systemd passes the accepted connection as fd 3 (sd_listen_fds(3), Accept=yes).
    if os.environ.get("LISTEN_FDS") != "1":
        print("ananke-sandbox-broker runs from its socket unit (Accept=yes).", file=sys.stderr)
        return 2
    conn = socket.socket(fileno=3)
    from ...courses.layout import CourseLayout

    try:
        serve(conn, CourseLayout().homes_root)
    finally:
        conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
