"""Fixtures of the VM test (marker ``vm``): the release archive of the built base image,
and a Debian VM disk with everything the two container admins need.

Opt-in: the test runs with ``ANANKE_VM_TEST=1`` (it boots a VM under software
emulation, see docs/developer/testing.md for its times); otherwise it is skipped with
that reason. When it runs, every missing piece fails it under CI (``CI`` set) and skips
it elsewhere.

Cached in ``$ANANKE_TEST_CACHE`` (tests/systemd/rootfs.py), each keyed by its inputs:
the VM root (vm.py), the venv layer (the systemd tests' own, reused), the image archive
(``vm-release-<image id>``: what ``scripts/save-images.sh`` writes) and the disk
(``vmdisk-<key>.raw``). The disk holds the archive in /srv/release and each admin's
image store, loaded on this host from that archive with ``podman load`` in the admin's
id mapping (vm.load_into_rootless_store). A test run boots the cached disk with
``-snapshot`` (nothing it does stays), runs ``ananke host add-admin`` for both admins
and moves each store into its admin's home (test_rootless_vm.py).
"""

import hashlib
import importlib.util
import os
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))  # hubtest.py, lti_browser.py
sys.path.insert(0, str(HERE.parent / "container"))  # podman_hub.py
import vm as vmlib  # noqa: E402
from vm import (  # noqa: E402
    ADMIN_IDS,
    BUILD_TAG,
    IMAGE,
    RELEASE_DIR,
    STORES_DIR,
    TAG,
    TEMPLATE,
    timings,
)

rootfs = vmlib.rootfs
REPO = HERE.parents[1]

# The image build of the Podman tests (tests/container/conftest.py), reused as is.
_spec = importlib.util.spec_from_file_location(
    "container_conftest", REPO / "tests" / "container" / "conftest.py"
)
_container = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_container)
podman_images = _container.podman_images


#: The VM root's build, started in the background when the session selects the VM test.
_vmroot_build: Future | None = None


def pytest_collection_finish(session):
    """Start building the VM root (mmdebstrap: minutes when cold) as soon as the VM test
    is selected, so that it runs while the image build and the rest of the suite run
    (vm.ensure_vmroot builds without the cache's lock); vm_disk waits for it."""
    global _vmroot_build
    if os.environ.get("ANANKE_VM_TEST") != "1" or vmlib.missing_prerequisites():
        return
    if any(item.get_closest_marker("vm") for item in session.items):
        _vmroot_build = ThreadPoolExecutor(1, thread_name_prefix="vmroot").submit(
            vmlib.ensure_vmroot
        )


def require_vm() -> None:
    if os.environ.get("ANANKE_VM_TEST") != "1":
        pytest.skip(
            "the VM test runs on request: ANANKE_VM_TEST=1 (it boots a Debian VM under "
            "QEMU's software emulation; docs/developer/testing.md has its times)"
        )
    missing = vmlib.missing_prerequisites()
    if missing:
        reason = "the VM test needs: " + "; ".join(missing)
        if os.environ.get("CI"):
            pytest.fail(reason + " (scripts/test.sh installs them)", pytrace=False)
        pytest.skip(reason)


def _image_id(ref: str) -> str:
    return subprocess.run(
        ["podman", "image", "inspect", "--format", "{{.Id}}", ref],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


@pytest.fixture(scope="session")
def vm_enabled() -> None:
    require_vm()


@pytest.fixture(scope="session")
def release_archives(vm_enabled, podman_images) -> Path:
    """scripts/save-images.sh's archive of the base image (cached by its image id).

    The base image is enough: its hub logs LTI launches in and starts labs as dynamic
    users (template-base); courses and nbgrader are the rootful Podman test's. Its
    archive is two thirds of the nbgrader image's.
    """
    cache = rootfs.LayerCache()
    image_id = _image_id(f"localhost/{IMAGE}:{BUILD_TAG}")
    subprocess.run(["podman", "tag", image_id, f"localhost/{IMAGE}:{TAG}"], check=True,
                   capture_output=True)  # fmt: skip
    out = cache.root / f"vm-release-{rootfs._digest(image_id, TAG)}"
    with cache.locked():
        if not (out / "SHA256SUMS").is_file():
            start = time.monotonic()
            tmp = out.with_name(out.name + f".build-{os.getpid()}")
            rootfs.remove_tree(tmp)
            proc = subprocess.run(
                [str(REPO / "scripts" / "save-images.sh"), TAG, str(tmp), IMAGE],
                capture_output=True, text=True, check=False, timeout=3600,
            )  # fmt: skip
            if proc.returncode != 0:
                pytest.fail(f"save-images.sh failed:\n{proc.stdout}\n{proc.stderr}", pytrace=False)
            if _image_id(f"localhost/{IMAGE}:{TAG}") != image_id:
                rootfs.remove_tree(tmp)
                pytest.fail(f"localhost/{IMAGE}:{TAG} was re-tagged while it was saved: "
                            "another run builds the same image", pytrace=False)  # fmt: skip
            tmp.rename(out)
            timings["release archives (cold)"] = time.monotonic() - start
        cache.touch(out)
    return out


def _wheel_content(wheel: Path) -> str:
    """A digest of the wheel's files (names and bytes): its zip's timestamps change with
    every build, its content only with the sources."""
    import zipfile

    h = hashlib.sha256()
    with zipfile.ZipFile(wheel) as zf:
        for name in sorted(zf.namelist()):
            h.update(name.encode() + b"\0" + zf.read(name) + b"\0")
    return h.hexdigest()


def _template_tar() -> bytes:
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(REPO / "containers" / TEMPLATE, arcname=TEMPLATE)
    return buf.getvalue()


def _load_stores(archive: Path, sums: str, work: Path) -> Path:
    """Each admin's image store, ``podman load``-ed from the release archive here.

    ``work`` must be reachable by the admins' uids (Podman runs as them).
    """
    expected = {line.split()[1]: line.split()[0] for line in sums.splitlines() if line.strip()}
    if _sha256(archive) != expected.get(archive.name):
        pytest.fail(f"{archive} does not match its SHA256SUMS", pytrace=False)
    plain = work / archive.name.removesuffix(".gz")
    with open(plain, "wb") as out:
        # Podman 4.3 cannot `podman load -i` a gzip-compressed archive (release.md).
        subprocess.run(["gzip", "-dc", os.fspath(archive)], stdout=out, check=True)
    os.chmod(plain, 0o644)
    stores = work / "stores"
    stores.mkdir()
    for admin, (uid, subid) in ADMIN_IDS.items():
        start = time.monotonic()
        vmlib.load_into_rootless_store(plain, stores / admin, uid, subid, work / f"load-{admin}")
        timings[f"podman load for {admin} (on this host)"] = time.monotonic() - start
    plain.unlink()
    return stores


@pytest.fixture(scope="session")
def vm_disk(release_archives, tmp_path_factory):
    """(disk, kernel, initrd, key) of the VM, built on first use and cached."""
    cache = rootfs.LayerCache()
    work = tmp_path_factory.mktemp("vm-build")
    try:
        start = time.monotonic()
        vmroot = _vmroot_build.result() if _vmroot_build else vmlib.ensure_vmroot(cache)
        timings["waited for the vm root (built in the background)"] = time.monotonic() - start
        wheel = rootfs.build_wheel(work / "dist")
        # The systemd tests' venv layer (same Debian release, same Python): built once for
        # both. It lies on their Debian layer; on the VM root its files are the same.
        venv = rootfs.ensure_venv_layer(rootfs.ensure_base(cache), wheel, cache)
        timings["vm root + venv"] = time.monotonic() - start
    except rootfs.RootfsError as exc:
        pytest.fail(str(exc), pytrace=False)
    kernel, initrd = vmlib.kernel_and_initrd(vmroot)
    key = vmlib.ssh_key(cache)
    sums = (release_archives / "SHA256SUMS").read_text()
    disk = cache.root / (
        "vmdisk-"
        + rootfs._digest(
            vmlib.VM_BUILD_VERSION,
            vmroot.name,
            venv.name,
            _wheel_content(wheel),
            sums,
            _template_tar(),
            sorted(ADMIN_IDS.items()),
        )  # fmt: skip
        + ".raw"
    )
    with cache.locked():
        if not disk.is_file():
            start = time.monotonic()
            app = rootfs.make_app_layer([venv, vmroot], wheel, work)
            bin_dir = app / "usr/local/bin"
            bin_dir.mkdir(parents=True, exist_ok=True)
            (bin_dir / "ananke").symlink_to(f"{rootfs.VENV}/bin/ananke")
            release = app / RELEASE_DIR.lstrip("/")
            release.mkdir(parents=True)
            for item in release_archives.iterdir():
                os.link(item, release / item.name)
            share = app / "usr/share/ananke-vm-test"
            share.mkdir(parents=True)
            (share / "template.tar").write_bytes(_template_tar())
            # The stores hold overlay whiteouts (character devices 0/0): inside an overlay's
            # upper directory they would be whiteouts themselves, so they stay outside and
            # are bind-mounted into the tree that mkfs copies.
            # Not under pytest's temporary directory (0700 root): Podman runs as the admins.
            load = Path(tempfile.mkdtemp(prefix="ananke-vm-load-", dir="/var/tmp"))
            os.chmod(load, 0o711)
            try:
                stores = _load_stores(release_archives / f"{IMAGE}-{TAG}.tar.gz", sums, load)
            except BaseException:
                rootfs.remove_tree(load)
                raise
            merged = work / "merged"
            rootfs.mount_overlay([app, venv, vmroot], work / "upper", work / "ovl-work", merged)
            target = merged / STORES_DIR.lstrip("/")
            target.mkdir(parents=True)
            partial = disk.with_suffix(f".part-{os.getpid()}")
            try:
                subprocess.run(["mount", "--bind", os.fspath(stores), os.fspath(target)],
                               check=True, capture_output=True)  # fmt: skip
                try:
                    vmlib.make_disk(merged, partial)
                finally:
                    rootfs.unmount(target)
            except BaseException:
                partial.unlink(missing_ok=True)
                raise
            finally:
                rootfs.unmount(merged)
                # Tens of thousands of files: removed while the VM boots, not before.
                threading.Thread(target=rootfs.remove_tree, args=(load,)).start()
            # One disk is kept: an older one (another wheel) is 2-3 GB nobody boots again.
            for old in cache.root.glob("vmdisk-*.raw"):
                old.unlink()
            partial.rename(disk)
            timings["vm disk (cold)"] = time.monotonic() - start
        cache.touch(disk)
    return disk, kernel, initrd, key


def pytest_terminal_summary(terminalreporter):
    if timings or vmlib.rootfs.timings:
        merged = {**vmlib.rootfs.timings, **timings}
        parts = ", ".join(
            f"{step} {secs:.1f} s" if isinstance(secs, float) else f"{step} {secs}"
            for step, secs in merged.items()
        )
        terminalreporter.write_line(f"vm test harness: {parts}")
