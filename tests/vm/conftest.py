"""Fixtures of the VM test (marker ``vm``): release archives of the built images, and a
Debian VM with two container admins who loaded them.

Opt-in: the test runs with ``ANANKE_VM_TEST=1`` (it boots a VM under software
emulation, see docs/developer/testing.md for its times); otherwise it is skipped with
that reason. When it runs, every missing piece fails it under CI (``CI`` set) and skips
it elsewhere.

Cached in ``$ANANKE_TEST_CACHE`` (tests/systemd/rootfs.py), each keyed by its inputs:
the VM root (vm.py), the venv layer, the image archives (``vm-release-<image ids>``:
what ``scripts/save-images.sh`` writes) and the provisioned disk
(``vmdisk-<key>.raw``: users made by ``ananke host add-admin``, the archives loaded by
each admin with ``podman load``). A test run boots the cached disk with ``-snapshot``:
nothing it does stays.
"""

import hashlib
import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))  # hubtest.py, lti_browser.py
sys.path.insert(0, str(HERE.parent / "container"))  # podman_hub.py
import vm as vmlib  # noqa: E402
from vm import ADMINS, RELEASE_DIR, TAG, timings  # noqa: E402

rootfs = vmlib.rootfs
REPO = HERE.parents[1]

# The image build of the Podman tests (tests/container/conftest.py), reused as is.
_spec = importlib.util.spec_from_file_location(
    "container_conftest", REPO / "tests" / "container" / "conftest.py"
)
_container = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_container)
podman_images = _container.podman_images


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
    """scripts/save-images.sh's archives of the test images (cached by image ids)."""
    cache = rootfs.LayerCache()
    ids = [_image_id(f"localhost/{name}:{TAG}") for name in ("ananke-base", "ananke-nbgrader")]
    out = cache.root / f"vm-release-{rootfs._digest(*ids)}"
    with cache.locked():
        if not (out / "SHA256SUMS").is_file():
            start = time.monotonic()
            tmp = out.with_name(out.name + f".build-{os.getpid()}")
            rootfs.remove_tree(tmp)
            proc = subprocess.run(
                [str(REPO / "scripts" / "save-images.sh"), TAG, str(tmp)],
                capture_output=True, text=True, check=False, timeout=3600,
            )  # fmt: skip
            if proc.returncode != 0:
                pytest.fail(f"save-images.sh failed:\n{proc.stdout}\n{proc.stderr}", pytrace=False)
            tmp.rename(out)
            timings["release archives (cold)"] = time.monotonic() - start
        cache.touch(out)
    return out


def _template_tar() -> bytes:
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(REPO / "containers" / "template-nbgrader", arcname="template-nbgrader")
    return buf.getvalue()


def _provision(vm: vmlib.VM) -> None:
    """First boot of a new disk: the host admin's and the container admins' set-up."""
    for admin, ports in ADMINS.items():
        start = time.monotonic()
        # The host admin's command from docs/admin/hosting.md, for real.
        vm.ssh("root", ["ananke", "host", "add-admin", admin, "--ports", ports])
        vm.ssh("root", ["install", "-d", "-m", "700", "-o", admin, "-g", admin,
                        f"/home/{admin}/.ssh"])  # fmt: skip
        vm.ssh("root", ["install", "-m", "600", "-o", admin, "-g", admin,
                        "/root/.ssh/authorized_keys", f"/home/{admin}/.ssh/authorized_keys"])  # fmt: skip
        timings[f"add-admin {admin}"] = time.monotonic() - start
    for admin in ADMINS:
        start = time.monotonic()
        # What a container admin does with the downloaded release (hosting.md).
        vm.ssh(admin, ["sha256sum", "-c", "--ignore-missing", f"{RELEASE_DIR}/SHA256SUMS"],
               check=False)  # fmt: skip
        # Podman 4.3 cannot `podman load -i` a gzip-compressed archive (release.md).
        archive = f"{RELEASE_DIR}/ananke-nbgrader-{TAG}.tar.gz"
        vm.ssh(admin, ["sh", "-c", f"gzip -dc {archive} | podman load"], timeout=3600)
        vm.ssh(admin, ["mkdir", "-p", "containers"])
        vm.ssh(admin, ["tar", "-x", "-C", "containers"], input=_template_tar())
        timings[f"podman load {admin} (cold)"] = time.monotonic() - start


@pytest.fixture(scope="session")
def vm_disk(release_archives, tmp_path_factory):
    """(disk, kernel, initrd, key) of the provisioned VM, built on first use and cached."""
    cache = rootfs.LayerCache()
    work = tmp_path_factory.mktemp("vm-build")
    try:
        start = time.monotonic()
        vmroot = vmlib.ensure_vmroot(cache)
        wheel = rootfs.build_wheel(work / "dist")
        venv = rootfs.ensure_venv_layer(vmroot, wheel, cache)
        timings["vm root + venv"] = time.monotonic() - start
    except rootfs.RootfsError as exc:
        pytest.fail(str(exc), pytrace=False)
    kernel, initrd = vmlib.kernel_and_initrd(vmroot)
    key = vmlib.ssh_key(cache)
    sums = (release_archives / "SHA256SUMS").read_text()
    disk = cache.root / (
        "vmdisk-"
        + rootfs._digest(vmroot.name, venv.name, _sha256(wheel), sums, _template_tar())
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
            merged = work / "merged"
            rootfs.mount_overlay([app, venv, vmroot], work / "upper", work / "ovl-work", merged)
            partial = disk.with_suffix(f".part-{os.getpid()}")
            try:
                vmlib.make_disk(merged, partial)
            finally:
                rootfs.unmount(merged)
            guest = vmlib.VM(partial, kernel, initrd, key, work, snapshot=False)
            try:
                guest.start()
                _provision(guest)
            except Exception:
                guest.stop()
                partial.unlink(missing_ok=True)
                raise
            guest.stop()
            partial.rename(disk)
            timings["provisioned disk (cold)"] = time.monotonic() - start
        cache.touch(disk)
    return disk, kernel, initrd, key


def pytest_terminal_summary(terminalreporter):
    if timings or vmlib.rootfs.timings:
        merged = {**vmlib.rootfs.timings, **timings}
        parts = ", ".join(f"{step} {secs:.1f} s" for step, secs in merged.items())
        terminalreporter.write_line(f"vm test harness: {parts}")
