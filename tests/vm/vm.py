"""A real host for the rootless-Podman test: a Debian VM in QEMU, built and cached here.

The machines we test on run no systemd as PID 1 and have hybrid cgroups, and their
``/dev/kvm`` cannot boot a Debian kernel (PVM nested virtualization); QEMU's software
emulation (TCG) can (docs/developer/testing.md, "The VM test"). Everything comes from
Debian packages and the cached layers of tests/systemd/rootfs.py:

* **vmroot** (``vmroot-<key>``): bookworm by mmdebstrap with systemd, logind, podman
  (crun, runc, uidmap, slirp4netns, fuse-overlayfs), openssh-server, a kernel and a small
  initrd (virtio drivers only), networkd on DHCP, a test SSH key for root. Keyed by the
  package list, the mirror, the host's CAs and the test key. ~1 GB, about a minute cold.
* **venv**: rootfs.py's venv layer built on vmroot (``/opt/ananke/venv``).
* **app**: the working tree's wheel, installed per session (``ananke`` on PATH).

:class:`VM` boots a raw disk made from those layers with ``-kernel/-initrd``,
``systemd.unified_cgroup_hierarchy=1`` and user-mode networking with ``restrict=on``:
the guest reaches nothing but the ports forwarded on 127.0.0.1 (SSH, the hubs) and, with
``guestfwd``, the one host service the test names (the built-in LMS).
"""

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "systemd"))
import rootfs  # noqa: E402
from rootfs import LayerCache, RootfsError, _digest, run_logged, timed  # noqa: E402

#: Bump when the build steps change.
VM_BUILD_VERSION = "1"
VM_PACKAGES = (
    "systemd", "systemd-sysv", "udev", "dbus", "dbus-user-session", "libpam-systemd",
    "libnss-systemd", "linux-image-amd64", "initramfs-tools", "kmod", "podman", "crun",
    "runc", "conmon", "catatonit", "uidmap", "slirp4netns", "fuse-overlayfs", "iproute2",
    "openssh-server", "procps", "python3", "python3-venv", "ca-certificates", "passwd",
    "login", "tzdata",
)  # fmt: skip
#: Drivers the initrd needs to mount the root disk (MODULES=list keeps it ~7 MB).
INITRD_MODULES = ("virtio_pci", "virtio_blk", "virtio_net", "ext4", "crc32c_generic")
#: QEMU's user network (the guest is 10.77.0.15); slirp4netns in the guest's rootless
#: containers uses 10.0.2.0/24 itself, so the VM's network must be another.
VM_NET = "10.77.0.0/24"
GUEST_ADDR = "10.77.0.15"
#: The port on which the guest reaches host services (VM(guest_forwards=...)), each on
#: an address of its own in VM_NET.
GUEST_FORWARD_PORT = 8090

#: The container admins of the test and their host port ranges (ananke host add-admin).
ADMINS = {"admin1": "20000-20099", "admin2": "20100-20199"}
#: Each admin's hub port inside the VM, in the admin's range.
HUB_PORTS = {"admin1": 20001, "admin2": 20101}
#: Where the release archives are on the VM's disk, as a user would have downloaded them.
RELEASE_DIR = "/srv/release"
#: The image tag the Podman tests build (tests/container/conftest.py).
BUILD_TAG = "test"
#: The VM test's own tag of that build, set by image id as soon as the build is done
#: (conftest.release_archives) and saved from there: on a machine where other test runs
#: build images too, ``:test`` may point at another tree's build by the time the archive
#: is written (it did once).
TAG = "vmtest"
#: The image both admins run, and its container template.
IMAGE = "ananke-base"
TEMPLATE = "template-base"
#: Seconds per step of the VM test, for the session's summary.
timings: dict[str, float] = {}

STORAGE_CONF = """\
# Rootless podman picks the slow vfs driver without this; runroot and graphroot must be
# set with the driver, or root podman's boot units fail.
[storage]
driver = "overlay"
runroot = "/run/containers/storage"
graphroot = "/var/lib/containers/storage"
"""
NETWORK_CONF = "[Match]\nName=en*\n\n[Network]\nDHCP=yes\n"


class VMError(RuntimeError):
    pass


def missing_prerequisites() -> list[str]:
    missing = []
    if os.geteuid() != 0:
        missing.append("root (mmdebstrap, overlay mounts)")
    for tool, package in [
        ("qemu-system-x86_64", "qemu-system-x86"), ("mmdebstrap", "mmdebstrap"),
        ("mkfs.ext4", "e2fsprogs"), ("ssh", "openssh-client"), ("ssh-keygen", "openssh-client"),
        ("systemd-nspawn", "systemd-container"), ("podman", "podman"),
    ]:  # fmt: skip
        if shutil.which(tool) is None:
            missing.append(f"{tool} (apt-get install {package})")
    return missing


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- the cached VM root ----------------------------------------------------------------------


def ssh_key(cache: LayerCache) -> Path:
    """The test's SSH key (made once in the cache, private to root)."""
    key = cache.root / "vm-ssh-key"
    with cache.locked():
        if not key.exists():
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "ananke-vm-test",
                 "-f", os.fspath(key)],
                check=True, capture_output=True,
            )  # fmt: skip
    return key


def vmroot_key(cache: LayerCache) -> str:
    cas = [p.read_bytes() for p in rootfs.host_ca_files()]
    pub = (ssh_key(cache).with_suffix(".pub")).read_bytes()
    return _digest(
        VM_BUILD_VERSION, rootfs.SUITE, rootfs.debian_mirror(), ",".join(VM_PACKAGES),
        ",".join(INITRD_MODULES), STORAGE_CONF, NETWORK_CONF, pub, *cas,
    )  # fmt: skip


def _customize(root: Path, pub: bytes, log: Path) -> None:
    """What the VM root needs beyond its packages; written into ``root`` directly."""

    def put(path: str, text, mode: int = 0o644) -> None:
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(text if isinstance(text, bytes) else text.encode())
        os.chmod(target, mode)

    put("/etc/hostname", "ananke-vm\n")
    put("/etc/hosts", "127.0.0.1 localhost\n127.0.1.1 ananke-vm\n")
    put("/etc/containers/storage.conf", STORAGE_CONF)
    put("/etc/systemd/network/10-en.network", NETWORK_CONF)
    put("/root/.ssh/authorized_keys", pub, 0o600)
    os.chmod(root / "root/.ssh", 0o700)
    put("/etc/initramfs-tools/conf.d/ananke-vm.conf", "MODULES=list\n")
    put("/etc/initramfs-tools/modules", "".join(m + "\n" for m in INITRD_MODULES))
    # Stopping containers at power-off must not wait out user managers' 90 s timeout.
    put("/etc/systemd/system.conf.d/ananke-vm.conf", "[Manager]\nDefaultTimeoutStopSec=15s\n")
    chroot = ["chroot", os.fspath(root)]
    run_logged([*chroot, "update-initramfs", "-u", "-k", "all"], log, "update-initramfs")
    for unit in ("systemd-networkd", "ssh"):
        run_logged(["systemctl", f"--root={root}", "enable", unit], log, f"enable {unit}")
    # sshd's host keys are made at package install; the guest's resolv.conf points nowhere.
    put("/etc/resolv.conf", "")


def ensure_vmroot(cache: LayerCache | None = None) -> Path:
    """The VM root, built on first use and cached by its inputs.

    Built without the cache's lock (it takes minutes: mmdebstrap) so that the image
    build, which needs the lock, runs meanwhile (conftest.py starts this in the
    background at the start of the session); the lock is taken to publish it.
    """
    cache = cache or LayerCache()
    pub = ssh_key(cache).with_suffix(".pub").read_bytes()
    layer = cache.root / f"vmroot-{vmroot_key(cache)}"
    if not layer.is_dir():
        build = cache.root / f"vmbuild-{os.getpid()}-{threading.get_ident()}"
        rootfs.remove_tree(build)
        build.mkdir(parents=True)
        log = build / "build.log"
        try:
            with timed("vm root (cold)"):
                argv = rootfs._bootstrap_argv("mmdebstrap", build / "root")
                argv[2] = "--include=" + ",".join(VM_PACKAGES)
                run_logged(argv, log, "mmdebstrap (vm)", timeout=1800)
                rootfs.install_host_cas(build / "root", log)
                _customize(build / "root", pub, log)
            with cache.locked():
                if not layer.is_dir():  # another run may have published one meanwhile
                    (build / "root").rename(layer)
        finally:
            shutil.copyfile(log, cache.root / "vmroot-build.log")
            rootfs.remove_tree(build)
    with cache.locked():
        cache.touch(layer)
    return layer


def kernel_and_initrd(vmroot: Path) -> tuple[Path, Path]:
    kernels = sorted((vmroot / "boot").glob("vmlinuz-*"))
    initrds = sorted((vmroot / "boot").glob("initrd.img-*"))
    if not kernels or not initrds:
        raise VMError(f"no kernel or initrd in {vmroot}/boot")
    return kernels[-1], initrds[-1]


def make_disk(tree: Path, disk: Path, size: str = "12G") -> Path:
    """An ext4 image of ``tree`` (sparse; mkfs.ext4 -d copies the files, owners included)."""
    with timed("vm disk (mkfs.ext4 -d)"):
        subprocess.run(
            ["mkfs.ext4", "-q", "-F", "-L", "root", "-d", os.fspath(tree), os.fspath(disk), size],
            check=True,
            capture_output=True,
        )
    return disk


# -- the admins' image stores, loaded on this host ----------------------------------------------

#: Each admin's uid and first subordinate id as ``useradd`` gives them in the fresh VM
#: (the first accounts from UID_MIN and SUB_UID_MIN, login.defs(5)); the test checks them.
ADMIN_IDS = {"admin1": (1000, 100000), "admin2": (1001, 165536)}
#: Where the stores wait on the disk until add-admin made their owners
#: (conftest.py moves each into ~/.local/share/containers/storage).
STORES_DIR = "/var/lib/ananke-vm-test/stores"


def load_into_rootless_store(archive: Path, store: Path, uid: int, subid: int,
                             work: Path) -> None:  # fmt: skip
    """``podman load`` of ``archive`` (a plain docker-archive tar) into ``store`` as the
    rootless Podman of an admin with ``uid`` and subordinate ids ``subid``..+65535 would.

    It runs here, not in the VM: under software emulation one admin's load of the
    nbgrader archive took more than 11 minutes; here seconds. Podman runs as root of a
    user namespace with the admin's mapping (userns_exec.py), told that it is rootless
    (``_CONTAINERS_USERNS_CONFIGURED``, as after its own re-exec), so the layers' files
    get the owners they would get in the VM: container uid 0 is ``uid``, uid N is
    ``subid + N - 1``. A store loaded by root and shared read-only
    (``additionalimagestores``) would not do: rootless Podman sees root's files as
    nobody (docs/admin/hosting.md).
    """
    work.mkdir(parents=True, exist_ok=True)
    home = work / "home"
    # Rootless Podman refuses a runroot longer than 50 characters.
    run = Path(tempfile.mkdtemp(prefix="avm-", dir="/tmp"))
    for d in (home, run, store):
        d.mkdir(parents=True, exist_ok=True)
        os.chown(d, uid, uid)
    conf = work / "storage.conf"
    conf.write_text('[storage]\ndriver = "overlay"\n')
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": os.fspath(home),
        "XDG_RUNTIME_DIR": os.fspath(run), "CONTAINERS_STORAGE_CONF": os.fspath(conf),
        "_CONTAINERS_USERNS_CONFIGURED": "done",
        "_CONTAINERS_ROOTLESS_UID": str(uid), "_CONTAINERS_ROOTLESS_GID": str(uid),
    }  # fmt: skip
    argv = [
        sys.executable, os.fspath(Path(__file__).with_name("userns_exec.py")),
        "podman", "--root", os.fspath(store), "--runroot", os.fspath(run / "containers"),
        "--storage-driver", "overlay", "load", "-i", os.fspath(archive),
    ]  # fmt: skip
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=env)  # fmt: skip
    try:
        if proc.stdout.readline() != b"ready\n":
            raise VMError(f"userns_exec.py did not start: {proc.stdout.read().decode()}")
        mapping = f"0 {uid} 1\n1 {subid} 65536\n"
        for name in ("uid_map", "gid_map"):
            Path(f"/proc/{proc.pid}/{name}").write_text(mapping)
        out, _ = proc.communicate(b"go\n", timeout=1800)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        shutil.rmtree(run, ignore_errors=True)
    if proc.returncode != 0:
        raise VMError(f"podman load into {store} failed ({proc.returncode}):\n{out.decode()}")
    # What belongs to this host's run, not to the store: Podman's database (it names
    # this run's runroot), its probes of this kernel, temporary files.
    for name in ("libpod", "tmp", "defaultNetworkBackend", "overlay/.has-mount-program"):
        path = store / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


# -- the running VM ------------------------------------------------------------------------------


class VM:
    """One QEMU TCG guest; ``ssh(user, argv)`` runs a command in it."""

    def __init__(self, disk: Path, kernel: Path, initrd: Path, key: Path, workdir: Path,
                 *, snapshot: bool, forwards: dict[int, int] | None = None,
                 guest_forwards: dict[str, int] | None = None,
                 memory_mb: int = 6144):  # fmt: skip
        self.disk, self.kernel, self.initrd, self.key = disk, kernel, initrd, key
        self.workdir = workdir
        self.snapshot = snapshot
        self.ssh_port = free_port()
        #: host port on 127.0.0.1 -> guest port (on GUEST_ADDR)
        self.forwards = dict(forwards or {})
        #: guest address (GUEST_FORWARD_PORT) -> host port on 127.0.0.1
        self.guest_forwards = dict(guest_forwards or {})
        self.memory_mb = memory_mb
        self.proc: subprocess.Popen | None = None
        self._masters: set[str] = set()
        self.console = workdir / "console.log"

    def argv(self) -> list[str]:
        nic = f"user,model=virtio-net-pci,restrict=on,net={VM_NET}"
        nic += f",hostfwd=tcp:127.0.0.1:{self.ssh_port}-:22"
        for host_port, guest_port in self.forwards.items():
            nic += f",hostfwd=tcp:127.0.0.1:{host_port}-:{guest_port}"
        relay = Path(__file__).with_name("relay.py")
        for address, host_port in self.guest_forwards.items():
            # cmd: one relay per guest connection (relay.py says why not -tcp:).
            nic += (f",guestfwd=tcp:{address}:{GUEST_FORWARD_PORT}-cmd:{sys.executable} "
                    f"{relay} {host_port}")  # fmt: skip
        argv = [
            "qemu-system-x86_64", "-accel", "tcg,thread=multi", "-cpu", "max",
            "-m", str(self.memory_mb), "-smp", str(min(4, os.cpu_count() or 2)),
            "-display", "none", "-no-reboot",
            "-kernel", os.fspath(self.kernel), "-initrd", os.fspath(self.initrd),
            "-append", "root=/dev/vda rw console=ttyS0 systemd.unified_cgroup_hierarchy=1 "
            "panic=-1",
            "-drive", f"file={self.disk},format=raw,if=virtio",
            "-nic", nic, "-serial", f"file:{self.console}",
        ]  # fmt: skip
        if self.snapshot:
            argv.append("-snapshot")
        return argv

    def start(self, timeout: float = 600) -> None:
        with timed("vm boot until ssh"):
            log = open(self.workdir / "qemu.log", "wb")
            self.proc = subprocess.Popen(
                self.argv(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
            deadline = time.monotonic() + timeout
            while True:
                if self.proc.poll() is not None:
                    qemu = (self.workdir / "qemu.log").read_text(errors="replace")[-2000:]
                    raise VMError(f"qemu exited ({self.proc.returncode}): {qemu}\n{self.tail()}")
                if self.ssh("root", ["true"], check=False, timeout=30).returncode == 0:
                    break
                if time.monotonic() > deadline:
                    raise VMError(f"no SSH within {timeout:.0f} s: {self.tail()}")
                time.sleep(3)
            self.ssh("root", ["systemctl", "is-system-running", "--wait"], check=False,
                     timeout=300)  # fmt: skip

    def tail(self) -> str:
        with contextlib.suppress(OSError):
            return self.console.read_text(errors="replace")[-3000:]
        return ""

    def _ssh_base(self, user: str) -> list[str]:
        # One SSH connection per user, reused (ControlMaster): a handshake under TCG on a
        # busy machine takes 10-20 s.
        return [
            "ssh", "-i", os.fspath(self.key), "-p", str(self.ssh_port),
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "LogLevel=ERROR", "-o", "BatchMode=yes", "-o", "ConnectTimeout=60",
            "-o", f"ControlPath={self.workdir}/ssh-%r", "-o", "ServerAliveInterval=30",
        ]  # fmt: skip

    def _master(self, user: str) -> None:
        if user in self._masters:
            return
        # -f: into the background once logged in, with its output on /dev/null (a master
        # holding our pipes would block subprocess.run until it exits).
        proc = subprocess.run(
            [*self._ssh_base(user), "-o", "ControlMaster=yes", "-f", "-N", f"{user}@127.0.0.1"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            timeout=120, check=False,
        )  # fmt: skip
        if proc.returncode == 0:
            self._masters.add(user)

    def ssh(self, user: str, argv: list[str], *, check: bool = True, timeout: float = 900,
            input: bytes | None = None) -> subprocess.CompletedProcess:  # fmt: skip
        """``argv`` as ``user`` in a login session of its own (logind, XDG_RUNTIME_DIR)."""
        import shlex

        try:
            self._master(user)
        except subprocess.TimeoutExpired:
            pass
        cmd = [*self._ssh_base(user), "-o", "ControlMaster=no", f"{user}@127.0.0.1",
               shlex.join(argv)]  # fmt: skip
        try:
            proc = subprocess.run(cmd, capture_output=True, timeout=timeout, input=input,
                                  check=False)  # fmt: skip
            proc.stdout = proc.stdout.decode(errors="replace")
            proc.stderr = proc.stderr.decode(errors="replace")
        except subprocess.TimeoutExpired:
            if check:
                raise
            return subprocess.CompletedProcess(cmd, 255, "", "timeout")
        if check and proc.returncode != 0:
            raise VMError(
                f"as {user} in the VM: {shlex.join(argv)} failed ({proc.returncode}):\n"
                f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
            )
        return proc

    def clock_offset(self) -> float:
        """Seconds the VM's clock is ahead of this host's (negative: behind).

        Within the SSH round trip: the host's time is taken as its midpoint.
        """
        before = time.time()
        guest = float(self.ssh("root", ["date", "+%s.%N"], timeout=120).stdout)
        after = time.time()
        return guest - (before + after) / 2

    def sync_clock(self) -> float:
        """Set the VM's clock to this host's; returns the offset it had.

        The VM has no time source (no network, no NTP) and a guest's clock under software
        emulation on a loaded machine drifts; the built-in LMS's id_tokens live 60 s by
        this host's clock and the hub checks them by the VM's. A real host runs NTP.
        """
        offset = self.clock_offset()
        if abs(offset) > 1:
            self.ssh("root", ["date", "--utc", "--set", f"@{time.time():.3f}"], timeout=120)
        return offset

    def close_ssh(self) -> None:
        for user in list(self._masters):
            subprocess.run([*self._ssh_base(user), "-O", "exit", f"{user}@127.0.0.1"],
                           capture_output=True, timeout=30, check=False)  # fmt: skip
            self._masters.discard(user)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.ssh("root", ["systemctl", "poweroff"], check=False, timeout=60)
        self.close_ssh()
        try:
            self.proc.wait(180)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


if __name__ == "__main__":
    try:
        print(ensure_vmroot())
        print(rootfs.timings)
    except RootfsError as exc:
        print(exc, file=sys.stderr)
        sys.exit(1)
