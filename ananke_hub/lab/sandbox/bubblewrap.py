"""The bubblewrap command line of one sandboxed kernel, and the check that bubblewrap works.

Knows nothing about Jupyter: :mod:`.provisioner` decides what goes in. bubblewrap(1)
(Debian's ``bubblewrap``) makes new user, mount, PID, network, IPC, UTS and cgroup
namespaces without needing a setuid helper. Inside, the kernel sees:

- ``/usr`` (and the merged-usr links ``/bin``, ``/lib``...), a few files of ``/etc``
  that programs need to start, and the Python installation directories, all read-only;
- a fresh ``/proc`` (its own PID namespace: no other process is visible), a minimal
  ``/dev`` and a small private ``/tmp``;
- its scratch directory, read-write, at the same path as outside, so that the IPC
  sockets it creates there are the ones the executor connects to;
- no network interface but its own loopback, and no capabilities.

Two modes:

- the caller is not root (a grader account's lab): bubblewrap makes a user namespace and
  the kernel keeps the caller's uid there, without capabilities and unable to make
  further user namespaces;
- the caller is root (a lab run by the local spawner as root): bubblewrap uses its
  privileges for the namespaces without a user namespace (which would map the kernel to
  root outside), and util-linux's ``setpriv`` switches the kernel to a throwaway uid
  with no capabilities and ``no_new_privs``. Bind sources are resolved as root, so a
  Python installed under ``/root`` works without the throwaway uid seeing ``/root``.

Resource limits are hard rlimits set by util-linux's ``prlimit`` before bubblewrap runs,
so neither bubblewrap nor the kernel can raise them (setrlimit(2)).
"""

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

# Files of /etc that the dynamic loader, Python and common libraries read at start;
# nothing that names users, hosts or secrets.
ETC_FILES = (
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
    "/etc/alternatives",
    "/etc/mime.types",
    "/etc/fonts",
)
# The sandbox's own /tmp: a small private tmpfs, not the host's.
SANDBOX_TMP = "/tmp"  # noqa: S108
# Top-level names that merged-usr systems make links into /usr.
USR_LINKS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")


class SandboxUnavailable(RuntimeError):
    """No sandbox can be made here; the message says why and what to do."""


@dataclass(frozen=True)
class Limits:
    """Per-process hard limits of a sandboxed kernel (prlimit(1) names in comments)."""

    memory_mb: int  # --as: address space; an allocation above it raises MemoryError
    tasks: int  # --nproc: processes and threads of the uid
    cpu_seconds: int  # --cpu: CPU time; above it the kernel gets SIGXCPU, then SIGKILL
    file_size_mb: int  # --fsize: largest file the code can write
    open_files: int = 1024  # --nofile

    def prlimit_args(self) -> list[str]:
        mb = 1024 * 1024
        return [
            f"--as={self.memory_mb * mb}",
            f"--nproc={self.tasks}",
            f"--cpu={self.cpu_seconds}",
            f"--fsize={self.file_size_mb * mb}",
            f"--nofile={self.open_files}",
            "--core=0",
        ]


@dataclass(frozen=True)
class Tools:
    bwrap: str
    prlimit: str
    setpriv: str


def find_tools() -> Tools:
    """The paths of ``bwrap``, ``prlimit`` and ``setpriv``, or :class:`SandboxUnavailable`."""
    bwrap, prlimit, setpriv = (shutil.which(n) for n in ("bwrap", "prlimit", "setpriv"))
    if bwrap is None:
        raise SandboxUnavailable(
            "bubblewrap (the `bwrap` command) is not installed, so student code cannot be "
            "run in a sandbox. Install Debian's `bubblewrap` package (apt-get install "
            "bubblewrap) in the image or on the host."
        )
    if prlimit is None or setpriv is None:
        raise SandboxUnavailable(
            "util-linux's `prlimit` or `setpriv` command is missing; install util-linux."
        )
    return Tools(bwrap, prlimit, setpriv)


def _namespaces(uid: int | None, no_nested_userns: bool = True) -> list[str]:
    common = ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts"]
    common += ["--unshare-cgroup-try"]
    if uid is None:
        # --disable-userns: the kernel cannot make user namespaces of its own (less kernel
        # surface). It sets a sysctl of the new namespace, which needs a writable
        # /proc/sys: containers (nspawn, Podman) mount it read-only, see probe().
        nested = ["--disable-userns"] if no_nested_userns else []
        return [*common, "--unshare-user", *nested, "--cap-drop", "ALL"]
    # Root: no user namespace; only what setpriv needs to give up root, and it drops
    # every capability with the uid (capabilities(7), "Effect of user ID changes").
    return [*common, "--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]


def _base_view() -> list[str]:
    args = ["--ro-bind", "/usr", "/usr"]
    for name in USR_LINKS:
        if os.path.islink(name):
            args += ["--symlink", os.readlink(name), name]
    return args


def _drop_to(uid: int | None, setpriv: str) -> list[str]:
    if uid is None:
        return []
    return [
        setpriv,
        f"--reuid={uid}",
        f"--regid={uid}",
        "--clear-groups",
        "--inh-caps=-all",
        "--no-new-privs",
        "--",
    ]


def command(
    argv: list[str],
    *,
    scratch: str,
    read_only: list[str],
    env: dict[str, str],
    limits: Limits,
    tmp_size_mb: int,
    tools: Tools,
    uid: int | None,
    no_nested_userns: bool = True,
) -> list[str]:
    """The argv that runs ``argv`` confined, with ``scratch`` as its only writable
    directory, as ``uid`` (a throwaway uid; the caller must be root) or, with ``None``,
    as the caller in a user namespace. ``env`` is the kernel's whole environment."""
    args = [tools.prlimit, *limits.prlimit_args(), "--", tools.bwrap]
    args += _namespaces(uid, no_nested_userns)
    # The sandbox ends with the process that started it, and it gets no terminal
    # (TIOCSTI injection into the grader's terminal, bwrap(1) --new-session).
    args += ["--die-with-parent", "--new-session", *_base_view()]
    for name in ETC_FILES:
        if os.path.exists(name):
            args += ["--ro-bind", name, name]
    # /tmp first: what is bound below it (a Python, the scratch directory) goes on top.
    args += ["--size", str(tmp_size_mb * 1024 * 1024), "--tmpfs", SANDBOX_TMP]
    if uid is not None:
        args += ["--chmod", "1777", SANDBOX_TMP]
    made = set()
    for path in read_only:
        # bubblewrap copies the modes of the parents it makes (/root: 0700), which would
        # shut the throwaway uid out of a Python under /root.
        for parent in reversed(Path(path).parents[:-1]):
            if str(parent) not in made | {SANDBOX_TMP} and not os.path.islink(parent):
                args += ["--perms", "0755", "--dir", str(parent)]
                made.add(str(parent))
        args += ["--ro-bind", path, path]
    args += ["--proc", "/proc", "--dev", "/dev"]
    args += ["--bind", scratch, scratch, "--chdir", scratch]
    args += ["--clearenv"]
    for key, value in sorted(env.items()):
        args += ["--setenv", key, value]
    return [*args, "--", *_drop_to(uid, tools.setpriv), *argv]


def probe(tools: Tools, uid: int | None) -> bool:
    """Start an empty sandbox; :class:`SandboxUnavailable` with bubblewrap's words if the
    kernel, a seccomp filter or an AppArmor profile forbids it here. Returns whether
    nested user namespaces can be forbidden (``--disable-userns``) too."""
    errors = []
    for no_nested in (True, False):
        args = [tools.bwrap, *_namespaces(uid, no_nested), *_base_view(), "--"]
        try:
            done = subprocess.run(
                [*args, *_drop_to(uid, tools.setpriv), "true"],
                capture_output=True,
                text=True,
                timeout=30,
                env={},
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SandboxUnavailable(f"bubblewrap could not be started: {exc}") from exc
        if done.returncode == 0:
            return no_nested
        errors.append(done.stderr.strip() or f"exit status {done.returncode}")
        if uid is not None:
            break  # no user namespace as root: nothing else to try
    raise SandboxUnavailable(
        f"bubblewrap cannot make a sandbox on this machine ({errors[-1]}). Without root "
        "it needs unprivileged user namespaces: check the sysctls user.max_user_namespaces "
        "and kernel.unprivileged_userns_clone, and that the container or service "
        "(RestrictNamespaces=, seccomp) allows them."
    )
