"""The autograding sandbox inside a grader account's lab under a real systemd.

A grader lab is a transient unit with a dynamic user (the spawner's properties:
DynamicUser=, StateDirectory=, User=, NoNewPrivileges=, PrivateTmp=, a read-only /).
bubblewrap must be able to make its namespaces there without root, and the kernel must
see only its scratch copy: not the grader's home (the gradebook), not /var/lib, no TCP.
"""

import json
import shutil
from pathlib import Path

import pytest

pytestmark = pytest.mark.systemd

CHECK = Path(__file__).with_name("sandbox_check.py")
GRADER = "grader-c-00000000c0ffee00"


def test_a_dynamic_user_lab_autogrades_in_the_sandbox(systemd_container):
    c = systemd_container
    bwrap = shutil.which("bwrap")
    # The image installs Debian's bubblewrap; the test rootfs gets the host's binary
    # (same Debian release; it needs only libc, libcap and libselinux).
    assert bwrap, "bubblewrap is not installed on the host (scripts/test.sh installs it)"
    c.copy_in(Path(bwrap), "/usr/bin/bwrap", mode=0o755)
    c.copy_in(CHECK, "/opt/ananke-test/sandbox_check.py")
    proc = c.run(
        [
            "systemd-run", "--wait", "--pipe", "--quiet", "--unit=jupyter-grader-test",
            "-p", "DynamicUser=yes", "-p", f"User={GRADER}", "-p", f"StateDirectory={GRADER}",
            "-p", f"WorkingDirectory=/var/lib/{GRADER}", "-p", "NoNewPrivileges=yes",
            "-p", "PrivateTmp=yes", "-p", "ReadOnlyPaths=/",
            "/opt/ananke/venv/bin/python", "/opt/ananke-test/sandbox_check.py",
        ],
        check=False,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    line = [s for s in result["outputs"].splitlines() if s.startswith("SEEN ")]
    assert line, result
    seen = json.loads(line[0].removeprefix("SEEN "))
    assert result["grader_uid"] != 0 and seen["uid"] == result["grader_uid"]  # never root
    assert seen["cwd"].startswith("/tmp/ananke-sandbox-") and "data.csv" in seen["files"]
    assert seen["gradebook"] is False and seen["var_lib"] is False
    assert seen["tcp"] in ("ConnectionRefusedError", "OSError")  # its own empty loopback
