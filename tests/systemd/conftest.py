"""Fixtures for tests against a real systemd: a booted container per test module.

Needs root, systemd-nspawn (package systemd-container), nsenter, overlayfs and mmdebstrap
or debootstrap. Without them the tests are skipped with the reason, except in CI (the
``CI`` variable set), where a missing prerequisite fails them: CI must run them.
Deselect them locally with ``-m "not systemd"``.

Fixtures:

* ``systemd_layers`` (session): the rootfs layers, top first: the working tree's wheel,
  the venv with its dependencies, Debian (see ``rootfs.py``; cached between runs).
* ``systemd_container`` (module): a booted :class:`nspawn.SystemdContainer` on a fresh
  overlay of those layers: ``run(argv, check=True, env=None) -> CompletedProcess``,
  ``rootfs``, ``path()``, ``run_in_netns()``, ``unit_properties()``, ``uid_of()``,
  ``journal()``.

Set ``ANANKE_TEST_KEEP=1`` to keep a container's upper layer (its changes) for a look
after a failure; the summary at the end of the session gives the build and boot times.
"""

import os
import shutil
from pathlib import Path

import pytest
import rootfs
from nspawn import SystemdContainer, new_run_dir


def missing_prerequisites() -> list[str]:
    missing = []
    if os.geteuid() != 0:
        missing.append("root (nspawn, overlay mounts and dynamic users need it)")
    for tool, package in [("systemd-nspawn", "systemd-container"), ("nsenter", "util-linux"),
                          ("mount", "mount")]:
        if shutil.which(tool) is None:
            missing.append(f"{tool} (apt-get install {package})")
    if rootfs.bootstrap_tool() is None:
        missing.append("mmdebstrap or debootstrap (apt-get install mmdebstrap)")
    filesystems = Path("/proc/filesystems")
    if filesystems.exists() and "overlay" not in filesystems.read_text():
        missing.append("overlayfs in the kernel (modprobe overlay)")
    return missing


def require_systemd_prerequisites() -> None:
    missing = missing_prerequisites()
    if not missing:
        return
    reason = "real-systemd tests need: " + "; ".join(missing)
    if os.environ.get("CI"):
        pytest.fail(reason + " (CI must run them: scripts/test.sh installs the packages)",
                    pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def systemd_run_dir():
    require_systemd_prerequisites()
    run = new_run_dir()
    yield run
    rootfs.remove_tree(run)


@pytest.fixture(scope="session")
def systemd_layers(systemd_run_dir) -> list[Path]:
    try:
        return rootfs.ensure_layers(systemd_run_dir)
    except rootfs.RootfsError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="module")
def systemd_container(systemd_layers, systemd_run_dir):
    container = SystemdContainer(systemd_layers, systemd_run_dir,
                                 keep=bool(os.environ.get("ANANKE_TEST_KEEP")))
    try:
        container.start()
    except BaseException:
        container.stop()
        raise
    yield container
    container.stop()


def pytest_terminal_summary(terminalreporter):
    if rootfs.timings:
        parts = ", ".join(f"{step} {secs:.1f} s" for step, secs in rootfs.timings.items())
        terminalreporter.write_line(f"systemd test harness: {parts}")
