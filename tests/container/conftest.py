"""Fixtures for the Podman end-to-end test (marker ``podman``): the real images, built.

Needs root, podman with runc, and mmdebstrap or debootstrap (the Debian base comes from
the real-systemd tests' cached rootfs, ``tests/systemd/rootfs.py``, imported as a local
image). Without them the tests are skipped with the reason, except in CI (``CI`` set),
where anything missing fails them: CI must run them (scripts/test.sh installs podman).

``podman_images`` (session) runs ``scripts/build-images.sh --tag test`` and yields the
nbgrader image's name; the images stay as a cache for the next run (Podman's layer
cache makes a warm build take seconds). The build's log is ``<cache>/podman-build.log``.
"""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS / "systemd"))
sys.path.insert(0, str(TESTS))  # hubtest.py, lti_browser.py
import rootfs  # noqa: E402  (tests/systemd/rootfs.py: the cached Debian base)
from podman_hub import forget_old_images, timings  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "scripts" / "build-images.sh"
IMAGE_TAG = "test"



def missing_prerequisites() -> list[str]:
    missing = []
    if os.geteuid() != 0:
        missing.append("root (rootful podman, dynamic users)")
    for tool, package in [("podman", "podman"), ("runc", "runc")]:
        if shutil.which(tool) is None:
            missing.append(f"{tool} (apt-get install {package})")
    if rootfs.bootstrap_tool() is None:
        missing.append("mmdebstrap or debootstrap (apt-get install mmdebstrap)")
    return missing


def require_podman() -> None:
    missing = missing_prerequisites()
    if not missing:
        return
    reason = "Podman tests need: " + "; ".join(missing)
    if os.environ.get("CI"):
        pytest.fail(reason + " (CI must run them: scripts/test.sh installs podman and runc)",
                    pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def podman_images() -> str:
    """Build (or reuse) the images from the working tree; the nbgrader image's name."""
    require_podman()
    try:
        start = time.monotonic()
        base = rootfs.ensure_base()
        timings["debian rootfs"] = time.monotonic() - start
    except rootfs.RootfsError as exc:
        pytest.fail(str(exc), pytrace=False)
    log = rootfs.cache_root() / "podman-build.log"
    debian_image = f"localhost/ananke-debian:{base.name}"
    argv = [
        str(BUILD_SCRIPT), "--tag", IMAGE_TAG, "--rootfs", str(base),
        # One local Debian image per cached rootfs: a new rootfs is imported again.
        "--debian-image", debian_image,
        # conda-forge is not reachable in CI: venv kernels, without probing for it.
        "--kernels", "venv",
    ]
    start = time.monotonic()
    with open(log, "wb") as out:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                              # The host's own pip settings (index, CA) for the wheel build
                              # on the host; nothing of it reaches the image's build steps.
                              env=dict(os.environ), check=False, timeout=3600)
    timings["image build"] = time.monotonic() - start
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-4000:]
        pytest.fail(f"scripts/build-images.sh failed ({proc.returncode}); log {log}:\n{tail}",
                    pytrace=False)
    forget_old_images("localhost/ananke-debian", "rootfs-", keep=debian_image)
    return f"localhost/ananke-nbgrader:{IMAGE_TAG}"


def pytest_terminal_summary(terminalreporter):
    if timings:
        parts = ", ".join(f"{step} {secs:.1f} s" for step, secs in timings.items())
        terminalreporter.write_line(f"podman test harness: {parts}")
