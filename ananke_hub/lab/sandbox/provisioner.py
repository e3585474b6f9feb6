"""``ananke-sandbox``: a jupyter_client kernel provisioner that confines the kernel.

Registered under the entry point group ``jupyter_client.kernel_provisioners``; a kernel
spec selects it with ``"metadata": {"kernel_provisioner": {"provisioner_name":
"ananke-sandbox"}}`` (jupyter_client's provisioning docs), which is what
:class:`~ananke_hub.lab.sandbox.execute.SandboxKernelManager` does for the kernels that
autograde student code.

For each kernel it:

1. makes a private scratch directory and copies the notebook's directory into it
   (regular files only, never following a link: a submission may hold links to the
   gradebook);
2. switches the kernel to ZMQ's ``ipc`` transport with its sockets in the scratch
   directory: in the sandbox's own network namespace the host's loopback is out of
   reach, but a Unix socket in a shared directory is not. The connection file goes
   there too (the kernel reads it; it holds only this kernel's key);
3. with the systemd broker's socket present (and not as root), asks the broker
   (:mod:`.broker`, :mod:`.systemd`) to run the kernel in a transient unit with a
   dynamic user of its own; otherwise runs the kernel under bubblewrap
   (:mod:`.bubblewrap`). Either way with an environment built from nothing (the
   grader's hub token and the like stay outside) and hard limits, never as root nor as
   the grader account (bubblewrap as root first switches to a throwaway uid);
4. stops everything after ``time_limit`` seconds, remembering which limit was hit
   (:attr:`limit_exceeded`), and at cleanup kills what is left and removes the scratch
   directory.

nbclient then talks to the kernel as to any other and builds the executed notebook from
its messages: results flow back only that way, and the gradebook is never in reach.
"""

import asyncio
import os
import secrets
import shutil
import sys
import tempfile
from pathlib import Path

from jupyter_client.provisioning import LocalProvisioner
from traitlets import Integer, Unicode, default

from ananke_hub import fsutil

from . import bubblewrap, systemd
from .broker import BROKER_SOCKET, SCRATCH_AREA

# Environment variable an admin sets for the labs (c.Spawner.environment) to choose the
# backend; see SandboxProvisioner.backend.
BACKEND_ENV = "ANANKE_AUTOGRADE_SANDBOX"
BACKENDS = ("auto", "systemd", "bubblewrap", "off")
# Throwaway uids when the grader runs as root: far above systemd's dynamic users
# (61184-65519) and container ranges, never in /etc/passwd.
THROWAWAY_UIDS = range(0x6A000000, 0x6B000000)
# Variables the kernel may inherit; everything else (tokens, the hub's URLs, the
# grader's paths) is left out.
PASS_ENV = ("LANG", "LC_ALL", "LC_CTYPE", "TZ", "PYTHONPATH", "LD_LIBRARY_PATH")

# Per bwrap and euid: whether nested user namespaces can be forbidden, or why no sandbox.
_probed: dict[tuple, bool | str] = {}


class SandboxProvisioner(LocalProvisioner):
    """Runs a kernel confined by bubblewrap, with limits; see the module's docstring."""

    # The limits are set per course by its instructors in Kore (CourseSettings, written
    # to the course's nbgrader_config.json); these are the defaults.
    memory_mb = Integer(
        2048,
        config=True,
        help="Address space of each process of the sandboxed kernel, in MiB. Allocating "
        "more raises MemoryError in the student's cell.",
    )
    tasks_max = Integer(
        128,
        config=True,
        help="Processes and threads the sandboxed kernel may have at once (a fork bomb "
        "stops there).",
    )
    cpu_seconds = Integer(
        600,
        config=True,
        help="CPU time of each process of the sandboxed kernel, in seconds.",
    )
    time_limit = Integer(
        600,
        config=True,
        help="Seconds one notebook's kernel may live. When they are up, the sandbox is "
        "stopped and that submission's autograding fails with 'exceeded the time limit'; "
        "the other submissions are graded. Per cell, Execute.timeout applies as well.",
    )
    file_size_mb = Integer(
        256, config=True, help="Largest file the sandboxed code can write, in MiB."
    )
    tmp_size_mb = Integer(64, config=True, help="Size of the sandbox's private /tmp, in MiB.")
    scratch_root = Unicode(
        config=True,
        help="Directory in which each sandboxed kernel gets its scratch directory "
        "(default: the system's temporary directory).",
    )

    @default("scratch_root")
    def _default_scratch_root(self):
        return tempfile.gettempdir()

    # Not a config setting: instructors edit their course's nbgrader config, and turning
    # the sandbox off is for the hub's admin (the labs' environment, c.Spawner.environment).
    @property
    def backend(self) -> str:
        value = os.environ.get(BACKEND_ENV, "auto").strip().lower() or "auto"
        if value not in BACKENDS:
            raise bubblewrap.SandboxUnavailable(
                f"{BACKEND_ENV}={value!r} is not one of {', '.join(BACKENDS)}: the hub's admin "
                "must correct it in c.Spawner.environment."
            )
        return value

    limit_exceeded: str | None = None
    _request: dict | None = None
    _broker_process: systemd.BrokerProcess | None = None
    scratch: str | None = None
    _uid: int | None = None
    _watchdog: asyncio.Task | None = None

    def limits(self) -> bubblewrap.Limits:
        tasks = self.tasks_max
        if self._uid is None:
            # Without root the kernel keeps the grader's uid (in its own user namespace),
            # and RLIMIT_NPROC counts all the uid's tasks: allow the ones it has.
            tasks += _tasks_of(os.getuid())
        return bubblewrap.Limits(
            memory_mb=self.memory_mb,
            tasks=tasks,
            cpu_seconds=self.cpu_seconds,
            file_size_mb=self.file_size_mb,
        )

    # -- launch -------------------------------------------------------------------------

    async def pre_launch(self, **kwargs):
        backend = self.backend
        if backend == "off":
            self.log.warning(
                "Sandbox OFF (%s=off, set by the hub's admin): student code runs "
                "unconfined as %s, with access to the gradebook and every submission.",
                BACKEND_ENV,
                _whoami(),
            )
            return await super().pre_launch(**kwargs)
        if backend == "auto":
            # The broker needs a caller it can name (a grader account); root has bubblewrap.
            use_broker = os.geteuid() != 0 and systemd.broker_available()
            backend = "systemd" if use_broker else "bubblewrap"
        if backend == "systemd":
            return await self._pre_launch_systemd(**kwargs)
        self._uid = secrets.choice(THROWAWAY_UIDS) if os.geteuid() == 0 else None
        try:
            tools = bubblewrap.find_tools()
            key = (tools.bwrap, os.geteuid())
            if key not in _probed:
                try:
                    _probed[key] = await asyncio.to_thread(bubblewrap.probe, tools, self._uid)
                except bubblewrap.SandboxUnavailable as exc:
                    _probed[key] = str(exc)
                if _probed[key] is False and self._uid is None:
                    self.log.warning(
                        "Sandbox: nested user namespaces cannot be forbidden here "
                        "(bubblewrap's --disable-userns needs a writable /proc/sys); "
                        "student code could make user namespaces inside its sandbox."
                    )
            if isinstance(_probed[key], str):
                raise bubblewrap.SandboxUnavailable(_probed[key])
            no_nested_userns = _probed[key]
        except bubblewrap.SandboxUnavailable as exc:
            raise bubblewrap.SandboxUnavailable(
                f"{exc} Autograding is refused rather than run unsandboxed; an admin can "
                f"turn the sandbox off explicitly with {BACKEND_ENV}=off in the labs' "
                "environment."
            ) from None

        # The notebook's folder (nbclient passes it as cwd); never the course directory
        # or the home, which hold the gradebook and everyone's work.
        cwd = kwargs.get("cwd")
        protected = [os.path.expanduser("~"), os.getcwd()]
        _refuse_protected_folder(cwd, protected)
        self.scratch = tempfile.mkdtemp(prefix="ananke-sandbox-", dir=self.scratch_root)
        if cwd:
            await asyncio.to_thread(_copy_tree, Path(cwd), Path(self.scratch))
        _sockets_in(self.parent, self.scratch)
        kwargs = await super().pre_launch(**kwargs)
        if self._uid is not None:
            await asyncio.to_thread(_give, Path(self.scratch), self._uid)

        read_only = _python_dirs([*protected, *([cwd] if cwd else [])])
        env = kernel_environment(self.scratch)
        limits = self.limits()
        kwargs["cmd"] = bubblewrap.command(
            kwargs["cmd"],
            scratch=self.scratch,
            read_only=read_only,
            env=env,
            limits=limits,
            tmp_size_mb=self.tmp_size_mb,
            tools=tools,
            uid=self._uid,
            no_nested_userns=no_nested_userns,
        )
        # bubblewrap's own environment: nothing of the grader's.
        kwargs["env"] = {"PATH": "/usr/bin:/bin"}
        kwargs["cwd"] = self.scratch
        self.log.info(
            "Sandbox: kernel %s confined by bubblewrap as %s, scratch %s, limits %s, "
            "time limit %d s",
            self.kernel_id,
            f"uid {self._uid}" if self._uid is not None else f"{_whoami()} (user namespace)",
            self.scratch,
            limits,
            self.time_limit,
        )
        return kwargs

    async def _pre_launch_systemd(self, **kwargs):
        """The kernel in a transient unit started by the broker (:mod:`.broker`)."""
        if not systemd.broker_available():
            raise bubblewrap.SandboxUnavailable(
                f"{BACKEND_ENV}=systemd, but the sandbox broker's socket {BROKER_SOCKET} is "
                "missing: enable ananke-sandbox-broker.socket (the images do). Autograding "
                "is refused rather than run unsandboxed."
            )
        cwd = kwargs.get("cwd")
        home = os.path.realpath(os.path.expanduser("~"))
        _refuse_protected_folder(cwd, [home, os.getcwd()])
        # The broker accepts only a directory of ours directly in this area of our home.
        area = os.path.join(home, SCRATCH_AREA)
        os.makedirs(area, mode=0o700, exist_ok=True)
        self.scratch = tempfile.mkdtemp(prefix="ananke-sandbox-", dir=area)
        if cwd:
            await asyncio.to_thread(_copy_tree, Path(cwd), Path(self.scratch))
        _sockets_in(self.parent, self.scratch)
        kwargs = await super().pre_launch(**kwargs)
        # The kernel's throwaway user must read its notebook and connection file and make
        # its sockets here; nobody else can reach this directory (our home, under
        # /var/lib/private, 0700 root).
        await asyncio.to_thread(_open_to_kernel, Path(self.scratch))
        env = kernel_environment(self.scratch)
        self._request = {
            "scratch": self.scratch,
            "argv": kwargs["cmd"],
            "env": env,
            "limits": {
                "time_limit": self.time_limit,
                "memory_mb": self.memory_mb,
                "cpu_seconds": self.cpu_seconds,
                "tasks_max": self.tasks_max,
                "disk_mb": self.tmp_size_mb,
            },
        }
        kwargs["cwd"] = self.scratch
        self.log.info(
            "Sandbox: kernel %s in a systemd unit with a dynamic user (broker %s), scratch "
            "%s, limits %s",
            self.kernel_id,
            BROKER_SOCKET,
            self.scratch,
            self._request["limits"],
        )
        return kwargs

    async def poll(self):
        ret = await super().poll()
        result = getattr(self.process, "result", None)
        if ret is not None and result == "timeout" and self.limit_exceeded is None:
            # systemd's RuntimeMaxSec= ended it (systemd.service(5), "RuntimeMaxSec=").
            self._exceeded(f"exceeded the time limit of {self.time_limit} s")
        return ret

    async def launch_kernel(self, cmd, **kwargs):
        if self._request is not None:
            self.process = await asyncio.to_thread(systemd.start, self._request)
            self._broker_process = self.process
            self.pid = self.pgid = None
            self.cwd = self.scratch
            self._watchdog = asyncio.ensure_future(self._stop_after_time_limit())
            return self.connection_info
        info = await super().launch_kernel(cmd, **kwargs)
        if self.scratch is not None:
            self._watchdog = asyncio.ensure_future(self._stop_after_time_limit())
        return info

    async def _stop_after_time_limit(self) -> None:
        await asyncio.sleep(self.time_limit)
        if self.process is not None and self.process.poll() is None:
            self._exceeded(f"exceeded the time limit of {self.time_limit} s")
            await self.kill()

    def _exceeded(self, what: str) -> None:
        self.limit_exceeded = what
        # The kernel manager carries it to SandboxedExecute after the provisioner is gone.
        self.parent.sandbox_limit_exceeded = what
        self.log.error("Sandbox: kernel %s %s and was stopped.", self.kernel_id, what)

    # -- the end ------------------------------------------------------------------------

    async def cleanup(self, restart: bool = False) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if self.process is not None and self.process.poll() is None:
            # The whole process group; bubblewrap's --die-with-parent and the PID
            # namespace take everything inside with it.
            await self.kill()
            await self.wait()
        if self._broker_process is not None:
            # The broker answers only once the unit and all its processes are gone.
            await asyncio.to_thread(self._broker_process.wait, 180)
            self._broker_process.close()
            self._broker_process = None
            self.process = None
        self._request = None
        await super().cleanup(restart=restart)
        # Also on a restart: pre_launch makes a new one.
        if self.scratch is not None:
            await asyncio.to_thread(shutil.rmtree, self.scratch, True)
            self.scratch = None


def _whoami() -> str:
    return f"uid {os.geteuid()}"


def _tasks_of(uid: int) -> int:
    """Processes and threads of ``uid`` now (what RLIMIT_NPROC counts)."""
    count = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid:
                    count += len(os.listdir(f"/proc/{entry.name}/task"))
            except OSError:
                pass
    return count


def kernel_environment(scratch: str) -> dict[str, str]:
    """The kernel's whole environment, for either backend: built from nothing but
    :data:`PASS_ENV` (the grader's tokens and paths stay outside), with the scratch
    directory as home."""
    env = {k: os.environ[k] for k in PASS_ENV if k in os.environ}
    env.update(
        HOME=scratch,
        TMPDIR=bubblewrap.SANDBOX_TMP,
        USER="student",
        PATH=os.pathsep.join(
            [os.path.dirname(sys.executable), "/usr/local/bin", "/usr/bin", "/bin"]
        ),
        # glibc reserves 64 MiB of address space per thread arena; the address space
        # limit is for the student's data, not for arenas.
        MALLOC_ARENA_MAX="2",
        MPLCONFIGDIR=os.path.join(scratch, ".matplotlib"),
    )
    return env


def _refuse_protected_folder(cwd: str | None, protected: list[str]) -> None:
    """Refuse a notebook folder that is or holds the grader's home or the course
    directory: copying it would put the gradebook and everyone's work in reach."""
    if cwd and _contains_any(cwd, protected):
        raise bubblewrap.SandboxUnavailable(
            f"The notebook's folder {cwd} is (or contains) the grader's home or the "
            "course directory; it is not copied into the sandbox. Autograde from "
            "nbgrader's submitted/autograded folders."
        )


def _sockets_in(km, scratch: str) -> None:
    """ZMQ's ipc transport with the sockets and the connection file in ``scratch``: the
    sandbox's own network namespace cannot reach the host's loopback, a shared
    directory it can."""
    km.transport = "ipc"
    km.ip = os.path.join(scratch, "kernel")
    km.cache_ports = False
    km.connection_file = os.path.join(scratch, "connection.json")


def _contains_any(path: str, others: list[str]) -> bool:
    """Whether ``path`` is one of ``others`` or an ancestor of one (after resolving links)."""
    path = os.path.realpath(path).rstrip("/") + "/"
    return any((os.path.realpath(o).rstrip("/") + "/").startswith(path) for o in others)


def _python_dirs(protect: list[str]) -> list[str]:
    """The directories the kernel's Python needs: its installation and its ``sys.path``
    entries outside ``/usr``. A directory that is or contains one of ``protect`` (the
    grader's home, the notebook's directory, the working directory: ``sys.path`` may
    hold ``''``) is left out; nested ones are covered by their parent."""
    exe_prefix = os.path.dirname(os.path.dirname(os.path.realpath(sys.executable)))
    candidates = [sys.prefix, sys.base_prefix, exe_prefix]
    candidates += [p for p in sys.path if p and os.path.isdir(p)]
    chosen: list[str] = []
    for path in sorted({os.path.realpath(p) for p in candidates}):
        if path == "/usr" or path.startswith("/usr/"):
            continue  # bound whole
        if _contains_any(path, protect):
            continue
        if any(path.startswith(c + "/") for c in chosen):
            continue
        chosen.append(path)
    return chosen


def _copy_tree(src: Path, dst: Path) -> None:
    """Regular files and directories of ``src`` into ``dst``; links and special files
    are left out, and nothing below ``src`` is followed (:func:`fsutil.copy_into`)."""
    fsutil.copy_into(src, dst, follow_top=True)


def _open_to_kernel(root: Path) -> None:
    """Directories 0777 and files 0666 (we made every entry, none is a link)."""
    fsutil.set_tree_modes(root, 0o777, 0o666)


def _give(root: Path, uid: int) -> None:
    """The scratch tree to the throwaway uid (we made every entry, so no link is in it)."""
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            os.chown(os.path.join(dirpath, name), uid, uid, follow_symlinks=False)
    os.chown(root, uid, uid)
    # bubblewrap enters it as root without capabilities before switching to the uid.
    os.chmod(root, 0o711)  # noqa: S103 (traverse only; its entries are the uid's, 0700/0600)
