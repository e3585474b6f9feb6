#!/usr/bin/env bash
# The test suite: unit tests and hub-level tests against a real JupyterHub, its proxy,
# Kore and the built-in LMS, plus browser tests in headless Chromium. Extra arguments
# go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

# Browser tests drive Debian's Chromium (a test tool's own browser download cannot work
# on machines without internet access).
if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "Installing Debian's chromium for the browser tests ..."
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    else
        echo "chromium is not installed: browser tests are skipped (apt-get install chromium)." >&2
    fi
fi

# The course registry is tested on PostgreSQL as well as SQLite.
if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "Installing Debian's postgresql for the registry tests ..."
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    else
        echo "PostgreSQL is not installed: its registry tests are skipped." >&2
    fi
fi

# Autograding runs student code in bubblewrap's sandbox (ananke_hub/lab/sandbox); every test
# that autogrades needs it, and without it autograding is refused.
if ! command -v bwrap >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "Installing Debian's bubblewrap for the autograding sandbox ..."
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null
    else
        echo "bubblewrap is not installed: autograding tests fail (apt-get install bubblewrap)." >&2
    fi
fi

# benchmarks/proxy.py compares our proxy with the JupyterHub project's Node.js one
# (installed from npm by the benchmark); its quick run is a test.
if ! command -v npm >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "Installing Debian's nodejs and npm for the proxy benchmark ..."
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
    else
        echo "npm is not installed: the proxy benchmark's test is skipped (apt-get install npm)." >&2
    fi
fi

# --- Real-systemd tests (tests/systemd/, marker "systemd"): self-contained block. ---
# They boot a Debian rootfs with systemd-nspawn (package systemd-container); mmdebstrap
# builds the rootfs, about twice as fast as debootstrap on these machines. As root they
# run; in CI (CI set) a missing tool fails them instead of skipping.
if ! command -v systemd-nspawn >/dev/null 2>&1 || ! command -v mmdebstrap >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "Installing mmdebstrap and systemd-container for the real-systemd tests ..."
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mmdebstrap systemd-container >/dev/null
    else
        echo "systemd-nspawn or mmdebstrap missing: real-systemd tests are skipped" \
            "(apt-get install mmdebstrap systemd-container)." >&2
    fi
fi
# --- end of the real-systemd block ---

# --- Podman tests (tests/container/, marker "podman"): self-contained block. ---
# They build the real images (scripts/build-images.sh) and drive a container made by
# `ananke container create`. Rootful podman needs only podman and runc here
# (--no-install-recommends: fuse-overlayfs, slirp4netns, uidmap and dbus-user-session are
# for rootless podman; the kernel's overlayfs and podman's default CNI bridge serve root).
# runc, not crun: crun refuses hybrid cgroups. mmdebstrap makes the Debian base.
# As root they run; in CI (CI set) a missing tool fails them instead of skipping.
if ! command -v podman >/dev/null 2>&1 || ! command -v runc >/dev/null 2>&1 \
        || ! command -v mmdebstrap >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "Installing podman, runc and mmdebstrap for the Podman tests ..."
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            podman runc mmdebstrap >/dev/null
    else
        echo "podman, runc or mmdebstrap missing: Podman tests are skipped" \
            "(apt-get install --no-install-recommends podman runc mmdebstrap)." >&2
    fi
fi
# --- end of the Podman block ---

# --- VM test (tests/vm/, marker "vm"): self-contained block. ---
# Boots a Debian VM under QEMU's software emulation with two rootless container admins
# (docs/developer/testing.md, "The VM test"). It runs with ANANKE_VM_TEST=1; then its
# tools are installed here and, in CI, a missing one fails it.
# THE switch for CI: VM_TEST_IN_CI=1 runs it in every CI run (CI set); 0 leaves it on
# request (docs/developer/testing.md has its times: ~10-12 min warm on a quiet machine).
VM_TEST_IN_CI=1
if [ -n "${CI:-}" ] && [ "$VM_TEST_IN_CI" = 1 ]; then
    export ANANKE_VM_TEST=1
fi
if [ "${ANANKE_VM_TEST:-}" = 1 ] && { ! command -v qemu-system-x86_64 >/dev/null 2>&1 \
        || ! command -v ssh >/dev/null 2>&1 || ! command -v mkfs.ext4 >/dev/null 2>&1 \
        || ! command -v mmdebstrap >/dev/null 2>&1 || ! command -v systemd-nspawn >/dev/null 2>&1; }; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "Installing QEMU, the SSH client, e2fsprogs and mmdebstrap for the VM test ..."
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            qemu-system-x86 openssh-client e2fsprogs mmdebstrap systemd-container >/dev/null
    else
        echo "qemu-system-x86_64, ssh, mkfs.ext4, mmdebstrap or systemd-nspawn missing: the VM" \
            "test fails (apt-get install qemu-system-x86 openssh-client e2fsprogs mmdebstrap" \
            "systemd-container)." >&2
    fi
fi
# --- end of the VM block ---

.venv/bin/ruff check .
exec .venv/bin/python -m pytest -ra "$@"
