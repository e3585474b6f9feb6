"""A Debian root file system for the real-systemd tests, built once and cached in layers.

Three layers, each a directory, stacked with overlayfs (the kernel's overlay(5) mount):

* **base** (``rootfs-<key>``): Debian bookworm made by mmdebstrap (or debootstrap) with
  systemd, D-Bus, libnss-systemd (dynamic users' names resolve only with it) and Python,
  plus the host's CA certificates: TLS to PyPI goes through a private CA on these
  machines, as it does behind an enterprise proxy. Keyed by suite, mirror, package list
  and the certificates. ~200 MB, 40-70 s cold.
* **venv** (``venv-<key>``): ``/opt/ananke/venv`` with the dependencies of Ananke's wheel
  from PyPI, installed inside the rootfs (never with the host's pip settings). Keyed by
  the base and the wheel's ``Requires-Dist``. ~450 MB, ~40 s cold.
* **app**: the wheel of the working tree installed into that venv, without dependencies
  and without network; made fresh for every test session (a few seconds).

A container root is then these layers plus an empty upper directory, so no test can
change a cached layer and a fresh root costs one mount. Podman images (issue 7) start
from the same base: ``python tests/systemd/rootfs.py --base`` prints its path.

Cache directory: ``$ANANKE_TEST_CACHE`` or ``/var/cache/ananke-test``. Builds take a lock
there, so concurrent test runs build each layer once; layers unused for two days are
removed.
"""

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import zipfile
from email.parser import HeaderParser
from pathlib import Path

CACHE_ENV = "ANANKE_TEST_CACHE"
DEFAULT_CACHE = Path("/var/cache/ananke-test")
#: Bump when the build steps change, so that every cached layer is rebuilt.
BUILD_VERSION = "1"

SUITE = "bookworm"
PACKAGES = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "libnss-systemd",
    "python3",
    "python3-venv",
    "ca-certificates",
)
DEFAULT_MIRROR = "http://deb.debian.org/debian"
HOST_SOURCES = Path("/etc/apt/sources.list.d/debian.sources")
HOST_CA_DIR = Path("/usr/local/share/ca-certificates")

#: Where Ananke lives inside the rootfs.
VENV = "/opt/ananke/venv"
WHEELS = "/opt/ananke/wheels"

#: PATH for every command run in a rootfs or container: the host's environment (pip
#: settings pointing at host-only indexes, proxies, ...) must not leak in.
CLEAN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: Layers not used for this long are removed when another layer is built.
PRUNE_AFTER_S = 2 * 24 * 3600

#: Seconds per build step of this process, for the test session's summary.
timings: dict[str, float] = {}


class RootfsError(RuntimeError):
    """A rootfs could not be built; the message says which step and where its log is."""


def clean_env(extra: dict | None = None) -> dict:
    env = {"PATH": CLEAN_PATH, "LANG": "C.UTF-8", "HOME": "/root"}
    env.update(extra or {})
    return env


@contextlib.contextmanager
def timed(step: str):
    start = time.monotonic()
    try:
        yield
    finally:
        timings[step] = timings.get(step, 0.0) + time.monotonic() - start


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE)


def _digest(*parts) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part if isinstance(part, bytes) else str(part).encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def debian_mirror(sources: Path = HOST_SOURCES) -> str:
    """The host's Debian mirror (the deb822 stanza that carries the plain suite)."""
    try:
        text = sources.read_text()
    except OSError:
        return DEFAULT_MIRROR
    for stanza in text.split("\n\n"):
        fields = {}
        for line in stanza.splitlines():
            key, sep, value = line.partition(":")
            if sep and not line.startswith((" ", "#")):
                fields[key.strip().lower()] = value.strip()
        if SUITE in fields.get("suites", "").split() and fields.get("uris"):
            return fields["uris"].split()[0]
    return DEFAULT_MIRROR


def host_ca_files() -> list[Path]:
    if not HOST_CA_DIR.is_dir():
        return []
    return sorted(p for p in HOST_CA_DIR.rglob("*.crt") if p.is_file())


def bootstrap_tool() -> str | None:
    """mmdebstrap (about twice as fast here: 40-70 s instead of 130 s), else debootstrap."""
    for tool in ("mmdebstrap", "debootstrap"):
        if shutil.which(tool):
            return tool
    return None


def run_logged(argv: list[str], log: Path, step: str, *, env=None, timeout: float = 900) -> None:
    """Run ``argv`` with its output appended to ``log``; raise RootfsError if it fails."""
    with open(log, "ab") as out:
        out.write(f"\n$ {' '.join(argv)}\n".encode())
        out.flush()
        try:
            proc = subprocess.run(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                env=env or clean_env(), timeout=timeout, check=False,
            )
        except subprocess.TimeoutExpired:
            raise RootfsError(f"{step}: timed out after {timeout:.0f} s; see {log}") from None
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise RootfsError(f"{step} failed (exit {proc.returncode}); log {log}:\n{tail}")


# -- mounts -----------------------------------------------------------------------------------


def is_mountpoint(path: Path) -> bool:
    target = os.fspath(Path(path).resolve())
    with open("/proc/self/mountinfo") as f:
        # Field 5 is the mount point (proc(5)); spaces in it are written as \040.
        return any(line.split()[4].replace("\\040", " ") == target for line in f)


def mount_overlay(lower: list[Path], upper: Path, work: Path, merged: Path) -> None:
    """Mount ``lower`` (top first) + ``upper`` on ``merged`` (overlay(5) / mount(8))."""
    for d in (upper, work, merged):
        d.mkdir(parents=True, exist_ok=True)
    options = (
        f"lowerdir={':'.join(os.fspath(p) for p in lower)},"
        f"upperdir={upper},workdir={work}"
    )
    proc = subprocess.run(
        ["mount", "-t", "overlay", "overlay", "-o", options, os.fspath(merged)],
        capture_output=True, text=True, env=clean_env(), check=False,
    )
    if proc.returncode != 0:
        raise RootfsError(
            f"Cannot mount an overlay on {merged}: {proc.stderr.strip()}. The systemd tests "
            "need root and overlayfs (modprobe overlay)."
        )


def unmount(path: Path) -> None:
    if is_mountpoint(path):
        subprocess.run(["umount", os.fspath(path)], env=clean_env(), check=False,
                       capture_output=True)
    if is_mountpoint(path):  # still busy: detach, the kernel frees it when unused
        subprocess.run(["umount", "--lazy", os.fspath(path)], env=clean_env(), check=True,
                       capture_output=True)


def remove_tree(path: Path) -> None:
    """Remove a build or run directory; never through a mount still in place under it."""
    path = Path(path)
    if not path.exists():
        return
    with open("/proc/self/mountinfo") as f:
        mounts = [line.split()[4] for line in f]
    prefix = os.fspath(path.resolve()) + "/"
    for mount in sorted((m for m in mounts if m.startswith(prefix)), reverse=True):
        unmount(Path(mount))
    shutil.rmtree(path, ignore_errors=True)


# -- systemd-nspawn without booting (for building) ---------------------------------------------


def nspawn_run(root: Path, argv: list[str], log: Path, step: str, *, binds=(), network=True,
               setenv: dict | None = None, timeout: float = 900) -> None:
    """Run one command in ``root`` with systemd-nspawn (no boot), output to ``log``.

    nspawn gives the command /proc, /dev and a fresh environment (systemd-nspawn(1),
    "--setenv="), so nothing of the host's environment reaches pip. ``binds`` are
    ``(host_path, container_path, read_only)`` tuples.
    """
    cmd = [
        "systemd-nspawn", "--quiet", "--register=no", "--keep-unit",
        f"--machine=ananke-build-{secrets.token_hex(4)}", f"--directory={root}",
    ]
    if not network:
        cmd.append("--private-network")
    for host, inside, read_only in binds:
        cmd.append(f"--bind{'-ro' if read_only else ''}={host}:{inside}")
    for key, value in (setenv or {}).items():
        cmd.append(f"--setenv={key}={value}")
    machine = cmd[4].split("=", 1)[1]
    try:
        run_logged([*cmd, "--", *argv], log, step, timeout=timeout)
    finally:
        forget_nspawn_machine(machine)


def forget_nspawn_machine(machine: str) -> None:
    """Remove what nspawn leaves in /run/systemd/nspawn for ``machine`` without a host systemd.

    Only this machine's entry, and the directories only if empty: other containers may run.
    """
    base = Path("/run/systemd/nspawn")
    shutil.rmtree(base / "propagate" / machine, ignore_errors=True)
    for d in (base / "propagate", base / "locks", base):
        with contextlib.suppress(OSError):
            d.rmdir()


# -- the cache --------------------------------------------------------------------------------


class LayerCache:
    """Cached layers in one directory, built under an exclusive lock."""

    def __init__(self, root: Path | None = None):
        self.root = Path(root or cache_root())

    @contextlib.contextmanager
    def locked(self):
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(self.root / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def layer(self, kind: str, key: str) -> Path:
        return self.root / f"{kind}-{key}"

    def build_dir(self) -> Path:
        path = self.root / f"build-{secrets.token_hex(6)}"
        path.mkdir(parents=True)
        return path

    def touch(self, layer: Path) -> None:
        (self.root / f".used-{layer.name}").touch()

    def prune(self, keep: set[Path]) -> None:
        """Remove layers unused for PRUNE_AFTER_S and build directories of dead builds."""
        now = time.time()
        for path in self.root.iterdir():
            if not path.is_dir() or path in keep:
                continue
            if path.name.startswith(("rootfs-", "venv-")):
                stamp = self.root / f".used-{path.name}"
                used = stamp.stat().st_mtime if stamp.exists() else path.stat().st_mtime
                if now - used > PRUNE_AFTER_S:
                    remove_tree(path)
                    stamp.unlink(missing_ok=True)
            elif path.name.startswith("build-"):
                remove_tree(path)  # we hold the build lock: nobody else is building


# -- layer 1: Debian ---------------------------------------------------------------------------


def base_key() -> str:
    cas = [p.read_bytes() for p in host_ca_files()]
    return _digest(BUILD_VERSION, SUITE, debian_mirror(), ",".join(PACKAGES), *cas)


def _bootstrap_argv(tool: str, target: Path) -> list[str]:
    include = "--include=" + ",".join(PACKAGES)
    if tool == "mmdebstrap":
        return [
            "mmdebstrap", "--variant=minbase", include,
            # Documentation is not needed in a test system; dpkg skips it when unpacking.
            "--dpkgopt=path-exclude=/usr/share/man/*",
            "--dpkgopt=path-exclude=/usr/share/doc/*",
            "--dpkgopt=path-exclude=/usr/share/locale/*",
            SUITE, os.fspath(target), debian_mirror(),
        ]
    return ["debootstrap", "--variant=minbase", include, SUITE, os.fspath(target), debian_mirror()]


def install_host_cas(root: Path, log: Path) -> None:
    """Copy the host's CA certificates into ``root`` and rebuild its trust store there.

    update-ca-certificates(8) adds every ``*.crt`` of /usr/local/share/ca-certificates to
    /etc/ssl/certs/ca-certificates.crt, which Debian's pip and OpenSSL read.
    """
    target = root / "usr/local/share/ca-certificates"
    for source in host_ca_files():
        dest = target / source.relative_to(HOST_CA_DIR)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, dest)
    run_logged(["chroot", os.fspath(root), "update-ca-certificates"], log, "update-ca-certificates")


def ensure_base(cache: LayerCache | None = None) -> Path:
    """The base layer (Debian + systemd + Python + host CAs); built if missing."""
    cache = cache or LayerCache()
    layer = cache.layer("rootfs", base_key())
    with cache.locked():
        if not layer.is_dir():
            tool = bootstrap_tool()
            if tool is None:
                raise RootfsError(
                    "Neither mmdebstrap nor debootstrap is installed: "
                    "apt-get install mmdebstrap (scripts/test.sh does it in CI)."
                )
            build = cache.build_dir()
            log = build / "build.log"
            try:
                with timed("rootfs (cold)"):
                    run_logged(_bootstrap_argv(tool, build / "root"), log, tool)
                    install_host_cas(build / "root", log)
                (build / "root").rename(layer)
            finally:
                shutil.copyfile(log, cache.root / "rootfs-build.log")
                remove_tree(build)
        cache.touch(layer)
        cache.prune(keep={layer})
    return layer


# -- the project's wheel ------------------------------------------------------------------------

#: What the wheel is built from; the tree is shared with others at work, so build a copy
#: (setuptools reuses a build/ directory and would pack files deleted since).
_SOURCE_ITEMS = ("pyproject.toml", "README.md", "LICENSE", "config.d", "ananke_hub", "kore")


def project_root() -> Path:
    return Path(__file__).resolve().parents[2]


def build_wheel(dest: Path, source: Path | None = None) -> Path:
    """Build the working tree's wheel into ``dest`` with the host's venv pip; return it."""
    source = Path(source or project_root())
    dest.mkdir(parents=True, exist_ok=True)
    with timed("wheel build"):
        copy = dest / "src"
        copy.mkdir()
        ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build", "node_modules")
        for name in _SOURCE_ITEMS:
            item = source / name
            if item.is_dir():
                shutil.copytree(item, copy / name, symlinks=True, ignore=ignore)
            elif item.is_file():
                shutil.copyfile(item, copy / name)
        log = dest / "wheel.log"
        run_logged(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", os.fspath(dest),
             os.fspath(copy)],
            log, "pip wheel",
            # The host's own pip settings apply here: this pip runs on the host.
            env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
        )
        shutil.rmtree(copy)
    wheels = sorted(dest.glob("ananke-*.whl"))
    if len(wheels) != 1:
        raise RootfsError(f"expected one ananke wheel in {dest}, found {wheels}")
    return wheels[0]


def wheel_requirements(wheel: Path) -> list[str]:
    """The wheel's Requires-Dist without the optional extras (test, docs)."""
    with zipfile.ZipFile(wheel) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        meta = HeaderParser().parsestr(zf.read(name).decode())
    return sorted(r for r in meta.get_all("Requires-Dist") or [] if "extra ==" not in r)


# -- layer 2: the venv with Ananke's dependencies ------------------------------------------------


def ensure_venv_layer(base: Path, wheel: Path, cache: LayerCache | None = None) -> Path:
    """``/opt/ananke/venv`` with the wheel's dependencies from PyPI, as an overlay layer."""
    cache = cache or LayerCache()
    requirements = wheel_requirements(wheel)
    layer = cache.layer("venv", _digest(BUILD_VERSION, base.name, *requirements))
    with cache.locked():
        if not layer.is_dir():
            build = cache.build_dir()
            log = build / "build.log"
            merged = build / "root"
            try:
                with timed("venv layer (cold)"):
                    mount_overlay([base], build / "upper", build / "work", merged)
                    reqs = build / "in" / "requirements.txt"
                    reqs.parent.mkdir()
                    reqs.write_text("\n".join(requirements) + "\n")
                    binds = [(build / "in", "/opt/ananke/build", True)]
                    nspawn_run(merged, ["/usr/bin/python3", "-m", "venv", VENV], log,
                               "python3 -m venv")
                    nspawn_run(
                        merged,
                        [f"{VENV}/bin/pip", "install", "--quiet", "--progress-bar=off",
                         "-r", "/opt/ananke/build/requirements.txt"],
                        log, "pip install (dependencies, from PyPI)", binds=binds,
                        setenv={"PIP_DISABLE_PIP_VERSION_CHECK": "1"},
                    )
                    unmount(merged)
                (build / "upper").rename(layer)
            finally:
                shutil.copyfile(log, cache.root / "venv-build.log")
                remove_tree(build)
        cache.touch(layer)
    return layer


# -- layer 3: our wheel ------------------------------------------------------------------------


def make_app_layer(layers: list[Path], wheel: Path, workdir: Path) -> Path:
    """Install ``wheel`` (no dependencies, no network) on top of ``layers``; return the layer.

    ``workdir`` is private to the caller (not the shared cache); the layer is
    ``workdir/app``.
    """
    log = workdir / "app-layer.log"
    merged = workdir / "app-root"
    with timed("app layer (our wheel)"):
        wheels = workdir / "wheels"
        wheels.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(wheel, wheels / wheel.name)
        mount_overlay(layers, workdir / "app", workdir / "app-work", merged)
        try:
            nspawn_run(
                merged,
                [f"{VENV}/bin/pip", "install", "--quiet", "--no-deps", "--no-index",
                 "--force-reinstall", f"{WHEELS}/{wheel.name}"],
                log, "pip install (our wheel)", binds=[(wheels, WHEELS, True)], network=False,
                setenv={"PIP_DISABLE_PIP_VERSION_CHECK": "1"},
            )
        finally:
            unmount(merged)
    return workdir / "app"


def ensure_layers(workdir: Path, cache: LayerCache | None = None) -> list[Path]:
    """All three layers, top first, for a container root; ``workdir`` holds the app layer."""
    cache = cache or LayerCache()
    base = ensure_base(cache)
    wheel = build_wheel(workdir / "dist")
    venv = ensure_venv_layer(base, wheel, cache)
    app = make_app_layer([venv, base], wheel, workdir)
    return [app, venv, base]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", action="store_true",
                        help="only build the Debian base layer and print its path")
    args = parser.parse_args(argv)
    try:
        base = ensure_base()
        if args.base:
            print(base)
            return 0
        dist = Path(os.environ.get("TMPDIR", "/tmp")) / f"ananke-wheel-{secrets.token_hex(4)}"
        try:
            venv = ensure_venv_layer(base, build_wheel(dist))
        finally:
            shutil.rmtree(dist, ignore_errors=True)
        print(json.dumps({"base": str(base), "venv": str(venv), "timings": timings}, indent=2))
        return 0
    except RootfsError as exc:
        print(f"rootfs: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
