"""A booted systemd container for tests: systemd-nspawn on an overlay of cached layers.

The machines this project runs on have no systemd as PID 1, so the tests boot one:
``systemd-nspawn --boot`` (systemd-nspawn(1)) on a fresh overlay of the layers from
``rootfs.py``, with only a loopback network (``--private-network``: other processes
hold ports 8000, 8001 and 8081 on the host's loopback). Without a host systemd, nspawn
needs ``--register=no --keep-unit``, and ``machinectl`` cannot reach the container:
commands run in it through ``nsenter`` into every namespace of its PID 1, with a clean
environment (nsenter passes the caller's environment on)::

    with SystemdContainer(layers, workdir) as c:
        c.run(["systemctl", "is-system-running"])          # CompletedProcess, text
        c.path("/var/lib/private/u3").stat()                # the root seen from the host
        c.run_in_netns([sys.executable, "client.py"])       # a host program on its loopback

Writes through ``path()`` go to the container's own upper layer, never to the cache.
"""

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import time
from pathlib import Path

from rootfs import (
    CLEAN_PATH,
    cache_root,
    clean_env,
    forget_nspawn_machine,
    mount_overlay,
    remove_tree,
    timed,
    unmount,
)

#: States of ``systemctl is-system-running`` after boot (systemctl(1)). "degraded" means
#: some unit failed; the tests that care check their own units.
BOOTED_STATES = {"running", "degraded"}


class ContainerError(RuntimeError):
    """The container did not boot, or a command in it failed (output included)."""


class CommandFailed(subprocess.CalledProcessError):
    def __str__(self):
        return (
            f"{' '.join(map(str, self.cmd))} exited with {self.returncode}\n"
            f"--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"
        )


def runs_root() -> Path:
    return cache_root() / "runs"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def new_run_dir() -> Path:
    """A directory for this process's containers; stale ones of dead test runs are removed."""
    root = runs_root()
    root.mkdir(parents=True, exist_ok=True)
    for run in root.iterdir():
        try:
            owner = int((run / "owner.pid").read_text())
        except (OSError, ValueError):
            # Just made by another test run that has not written its pid yet?
            if time.time() - run.stat().st_mtime < 60:
                continue
            owner = 0
        if owner and _pid_alive(owner):
            continue
        # A test run that was killed: stop what it left running, then remove it. The
        # container's PID 1 first: killing it ends its whole pid namespace (nspawn's
        # death alone would leave it running). Pids are checked first: they may have
        # been reused by unrelated processes since.
        for pidfile, is_ours in [*((p, _is_container_init) for p in run.glob("*/init.pid")),
                                 *((p, _is_nspawn) for p in run.glob("*/nspawn.pid"))]:
            with contextlib.suppress(OSError, ValueError):
                pid = int(pidfile.read_text())
                if is_ours(pid):
                    os.kill(pid, signal.SIGKILL)
        if any(run.glob("*/init.pid")):
            time.sleep(0.5)  # let the kernel tear the namespaces down before unmounting
        for pidfile in run.glob("*/nspawn.pid"):
            with contextlib.suppress(OSError):
                # nspawn's lock on the image, named after the root's inode (a normal
                # exit removes it).
                st = (pidfile.parent / "root").stat()
                Path(f"/run/systemd/nspawn/locks/inode-{st.st_dev}:{st.st_ino}").unlink()
            forget_nspawn_machine(pidfile.parent.name)
        remove_tree(run)
    run = root / f"{os.getpid()}-{secrets.token_hex(4)}"
    run.mkdir()
    (run / "owner.pid").write_text(str(os.getpid()))
    return run


def _children(pid: int) -> list[int]:
    kids = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            kids += [int(k) for k in task.read_text().split()]
    return kids


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _is_nspawn(pid: int) -> bool:
    return _comm(pid) == "systemd-nspawn"


def _is_container_init(pid: int) -> bool:
    return _comm(pid) == "systemd" and _is_pid1_of_its_namespace(pid)


def _is_pid1_of_its_namespace(pid: int) -> bool:
    # proc(5): "NSpid:" lists the pid in each nested pid namespace, innermost last.
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("NSpid:"):
                ids = line.split()[1:]
                return len(ids) > 1 and ids[-1] == "1"
    return False


class SystemdContainer:
    """One booted container. See the module docstring."""

    def __init__(self, layers: list[Path], workdir: Path, *, name: str | None = None,
                 binds: list[tuple[Path, str, bool]] = (), keep: bool = False):
        self.layers = [Path(p) for p in layers]
        self.name = name or f"ananke-test-{secrets.token_hex(4)}"
        self.dir = Path(workdir) / self.name
        self.rootfs = self.dir / "root"
        self.binds = list(binds)
        self.keep = keep  # leave the upper layer for a look after a failure
        self.log_path = self.dir / "console.log"
        self.pid: int | None = None  # the container's systemd, as the host sees it
        self._nspawn: subprocess.Popen | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self, timeout: float = 90) -> None:
        self.dir.mkdir(parents=True)
        mount_overlay(self.layers, self.dir / "upper", self.dir / "work", self.rootfs)
        argv = [
            "systemd-nspawn", "--quiet", "--boot", "--register=no", "--keep-unit",
            "--private-network", f"--machine={self.name}", f"--directory={self.rootfs}",
            "--console=read-only",
        ]
        for host, inside, read_only in self.binds:
            argv.append(f"--bind{'-ro' if read_only else ''}={host}:{inside}")
        with timed("container boot"):
            with open(self.log_path, "wb") as log:
                self._nspawn = subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    env=clean_env(), start_new_session=True,
                )
            (self.dir / "nspawn.pid").write_text(str(self._nspawn.pid))
            self.pid = self._wait_for_init(timeout)
            (self.dir / "init.pid").write_text(str(self.pid))
            self._wait_booted(timeout)

    def _deadline_check(self, deadline: float, what: str) -> None:
        if self._nspawn.poll() is not None:
            raise ContainerError(
                f"systemd-nspawn exited with {self._nspawn.returncode} while {what}:\n"
                f"{self.console_log()[-3000:]}"
            )
        if time.monotonic() > deadline:
            raise ContainerError(f"timed out {what}; console log {self.log_path}")

    def _wait_for_init(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while True:
            for kid in _children(self._nspawn.pid):
                if _is_pid1_of_its_namespace(kid):
                    return kid
            self._deadline_check(deadline, "waiting for the container's PID 1")
            time.sleep(0.05)

    def _wait_booted(self, timeout: float) -> None:
        # `is-system-running --wait` can return before D-Bus is up: poll instead.
        deadline = time.monotonic() + timeout
        state = ""
        while True:
            proc = self.run(["systemctl", "is-system-running"], check=False)
            state = proc.stdout.strip()
            if state in BOOTED_STATES:
                return
            self._deadline_check(deadline, f"booting (last state {state!r})")
            time.sleep(0.2)

    def stop(self, timeout: float = 30) -> None:
        """Power the container off, unmount its root and remove its directory."""
        if self._nspawn is not None and self._nspawn.poll() is None:
            # nspawn turns SIGTERM into a clean shutdown of the booted system
            # (systemd-nspawn(1), "--kill-signal=": SIGRTMIN+3 for --boot).
            self._nspawn.send_signal(signal.SIGTERM)
            try:
                self._nspawn.wait(timeout)
            except subprocess.TimeoutExpired:
                if self.pid:  # killing PID 1 of a pid namespace kills all of it
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(self.pid, signal.SIGKILL)
                self._nspawn.kill()
                self._nspawn.wait(10)
        forget_nspawn_machine(self.name)
        if self.keep:
            unmount(self.rootfs)
        else:
            remove_tree(self.dir)

    def __enter__(self) -> "SystemdContainer":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- inside --------------------------------------------------------------------------------

    def _nsenter(self, *namespaces: str) -> list[str]:
        if self.pid is None:
            raise ContainerError("the container is not running")
        return ["nsenter", f"--target={self.pid}", *namespaces, "--"]

    def run(self, argv: list[str], check: bool = True, env: dict | None = None, *,
            input: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
        """Run ``argv`` inside the container as root; returns stdout/stderr as text.

        The environment is a clean one (PATH, LANG, HOME) plus ``env``.
        """
        return self._run([*self._nsenter("--all"), *argv], clean_env(env), check, input, timeout)

    def run_in_netns(self, argv: list[str], check: bool = True, env: dict | None = None, *,
                     input: str | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
        """Run a *host* program in the container's network namespace only.

        It sees the host's files and the container's loopback: a test client reaches the
        services of the container at 127.0.0.1. ``env`` is its whole environment
        (default: a clean one).
        """
        return self._run([*self._nsenter("--net"), *argv], env or clean_env(), check, input,
                         timeout)

    @staticmethod
    def _run(argv, env, check, input, timeout) -> subprocess.CompletedProcess:
        proc = subprocess.run(argv, env=env, input=input, capture_output=True, text=True,
                              timeout=timeout, check=False)
        if check and proc.returncode != 0:
            raise CommandFailed(proc.returncode, argv, proc.stdout, proc.stderr)
        return proc

    def path(self, container_path: str) -> Path:
        """The host path of ``container_path`` (an absolute path inside the container)."""
        if not container_path.startswith("/"):
            raise ValueError(f"{container_path!r} is not an absolute path")
        return self.rootfs / container_path.lstrip("/")

    def copy_in(self, source: Path, container_path: str, mode: int = 0o644) -> None:
        dest = self.path(container_path)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, dest)
        dest.chmod(mode)

    def unit_properties(self, unit: str, *names: str) -> dict[str, str]:
        """``systemctl show`` properties of ``unit`` as a dict (systemctl(1), "show")."""
        out = self.run(["systemctl", "show", unit, *(f"--property={n}" for n in names)]).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def uid_of(self, user: str) -> int | None:
        """The uid ``user`` resolves to in the container (NSS, with libnss-systemd), or None."""
        proc = self.run(["getent", "passwd", user], check=False)
        if proc.returncode != 0:
            return None
        return int(proc.stdout.split(":")[2])

    def journal(self, unit: str | None = None, lines: int = 300) -> str:
        argv = ["journalctl", "--no-pager", "--output=short-monotonic", f"--lines={lines}"]
        if unit:
            argv.append(f"--unit={unit}")
        return self.run(argv, check=False).stdout

    def console_log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


__all__ = ["CLEAN_PATH", "CommandFailed", "ContainerError", "SystemdContainer", "new_run_dir"]
