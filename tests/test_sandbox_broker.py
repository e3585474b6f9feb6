"""The sandbox broker's checks (ananke_hub/lab/sandbox/broker.py) and the Validate button's
sandbox, without systemd. Under a real systemd: tests/systemd/test_sandbox_broker_systemd.py.
"""

import json
import os
import shutil
import socket

import nbformat
import pytest

from ananke_hub.lab.sandbox import broker, bubblewrap, provisioner
from ananke_hub.spawner import LAB_CONFIG_DIR, lab_jupyter_path

GRADER = "grader-c-00000000c0ffee00"
CALLER = broker.Caller(4242, GRADER, "c-00000000c0ffee00")
CAPS = {"time_limit": 60, "memory_mb": 1024, "cpu_seconds": 60, "tasks_max": 64, "disk_mb": 256}
LIMITS = {"time_limit": 30, "memory_mb": 512, "cpu_seconds": 30, "tasks_max": 32, "disk_mb": 64}
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="makes directories of another uid")


@pytest.fixture
def homes(tmp_path):
    """A homes root with the caller's home, scratch area and one scratch directory."""
    area = tmp_path / GRADER / broker.SCRATCH_AREA
    (area / "ananke-sandbox-ok12").mkdir(parents=True)
    for path in (tmp_path / GRADER, area, area / "ananke-sandbox-ok12"):
        os.chown(path, CALLER.uid, CALLER.uid)
    return tmp_path


def request(homes, **changes):
    scratch = str(homes / GRADER / broker.SCRATCH_AREA / "ananke-sandbox-ok12")
    raw = {"scratch": scratch, "argv": ["/usr/bin/python3", "-c", "1"], "env": {},
           "limits": dict(LIMITS)}
    raw.update(changes)
    return raw


@needs_root
def test_a_good_request_is_accepted_as_sent(homes):
    req = broker.check_request(request(homes), CALLER, CAPS, str(homes))
    assert req.limits == LIMITS and req.argv[0] == "/usr/bin/python3"


@needs_root
@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"scratch": "/tmp"}, "not a directory in the caller's area"),
        ({"scratch": "AREA/../ananke-sandbox-ok12"}, "not a normalised path"),
        ({"scratch": "AREA/ananke-sandbox-ok12/../../../etc"}, "not a normalised path"),
        ({"scratch": "AREA"}, "not a directory in the caller's area"),
        ({"scratch": "AREA/ananke-sandbox-link"}, "links are refused"),
        ({"scratch": "AREA/ananke-sandbox-root"}, "does not belong to the caller"),
        ({"scratch": "AREA/ananke-sandbox-none"}, "cannot be checked"),
        ({"scratch": 7}, "not a normalised path"),
        ({"limits": {**LIMITS, "time_limit": 61}}, "time_limit=61 is above the course's 60"),
        ({"limits": {**LIMITS, "disk_mb": 10**9}}, "above the course's 256"),
        ({"limits": {**LIMITS, "tasks_max": 0}}, "must be a positive whole number"),
        ({"limits": {**LIMITS, "memory_mb": True}}, "must be a positive whole number"),
        ({"limits": {**LIMITS, "memory_mb": "512"}}, "must be a positive whole number"),
        ({"limits": {"time_limit": 1}}, "limits must give exactly"),
        ({"argv": "python3 -c 1"}, "argv must be a list"),
        ({"argv": ["python3"]}, "starting with an absolute path"),
        ({"env": {"lower": "x"}}, "is not allowed as given"),
        ({"env": {"A": "x\nB=y"}}, "is not allowed as given"),
        ({"uid": 0}, "unknown request field(s): uid"),
    ],
)
def test_requests_that_try_to_break_out_are_refused(homes, change, words):
    area = homes / GRADER / broker.SCRATCH_AREA
    (area / "ananke-sandbox-link").symlink_to(homes)
    (area / "ananke-sandbox-root").mkdir()  # root's, not the caller's
    if isinstance(change.get("scratch"), str):
        change = {"scratch": change["scratch"].replace("AREA", str(area))}
    with pytest.raises(broker.Refused) as refused:
        broker.check_request(request(homes, **change), CALLER, CAPS, str(homes))
    assert words in str(refused.value)


@needs_root
def test_a_home_that_is_not_the_callers_is_refused(homes):
    os.chown(homes / GRADER, 0, 0)
    with pytest.raises(broker.Refused, match="home .* does not belong to the caller"):
        broker.check_request(request(homes), CALLER, CAPS, str(homes))


def test_only_grader_accounts_are_served():
    with pytest.raises(broker.Refused, match="root does not need the broker"):
        broker.identify(0)
    nobody = 65534
    with pytest.raises(broker.Refused, match="is not a course's grader account|no known user"):
        broker.identify(nobody)


def test_the_caller_is_known_by_its_credentials_not_by_the_request():
    """Over a socket, the broker asks the kernel who is calling: here root, refused,
    whatever the request claims."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    ours.sendall(json.dumps({"caller": GRADER}).encode() + b"\n")
    assert broker.serve(theirs, "/nonexistent", caps_of=lambda c: CAPS) == 1
    answer = json.loads(ours.makefile("rb").readline())
    uid = os.getuid()
    expected = "root does not need the broker" if uid == 0 else "grader account"
    assert expected in answer["error"] or "no known user" in answer["error"]


def test_the_unit_confines_the_kernel():
    req = broker.Request("/var/lib/private/g/.ananke-sandbox/ananke-sandbox-x",
                         ["/opt/ananke/venv/bin/python", "-m", "ipykernel_launcher"],
                         {"HOME": "/x"}, dict(LIMITS))
    argv = broker.unit_argv("ananke-sandbox-1-ab.service", req)
    assert argv[0] == "systemd-run" and argv[-3:] == req.argv
    props = [argv[i + 1] for i, a in enumerate(argv) if a == "--property"]
    for prop in ("DynamicUser=yes", "PrivateNetwork=yes", "ProtectSystem=strict",
                 "ProtectHome=tmpfs", "NoNewPrivileges=yes", "MemoryMax=512M", "TasksMax=32",
                 "RuntimeMaxSec=30", "LimitCPU=30", "TemporaryFileSystem=/tmp:size=64M,mode=1777",
                 f"BindPaths={req.scratch}", "KillMode=control-group", "LimitNPROC=32",
                 "TemporaryFileSystem=/var/lib/private/g:mode=0711",
                 "TemporaryFileSystem=/var/lib/private/g/.ananke-sandbox:mode=0711"):
        assert prop in props, prop
    assert "--setenv=HOME=/x" in argv


def test_the_systemd_backend_without_its_broker_is_refused(tmp_path, monkeypatch):
    from test_sandbox import run

    monkeypatch.setenv(provisioner.BACKEND_ENV, "systemd")
    monkeypatch.setattr(provisioner.systemd, "broker_available", lambda: False)
    with pytest.raises(bubblewrap.SandboxUnavailable, match="ananke-sandbox-broker.socket"):
        run("print('never')", tmp_path)


def _validate(tmp_path, monkeypatch, user: str) -> dict:
    """The lab's Validate, as nbgrader's handler runs it, in ``user``'s lab."""
    from nbgrader.apps import NbGrader
    from nbgrader.validator import Validator

    monkeypatch.setenv("JUPYTERHUB_USER", user)
    kind = "grader" if user == GRADER else "learner"
    monkeypatch.setenv("JUPYTER_PATH", lab_jupyter_path(kind))
    monkeypatch.setenv("JUPYTER_CONFIG_PATH", str(LAB_CONFIG_DIR))
    secret = tmp_path / "gradebook.db"
    secret.write_text("grades")
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    cell = nbformat.v4.new_code_cell(
        f"import os\nassert not os.path.exists({str(secret)!r}), 'I can see the gradebook'"
    )
    cell.metadata["nbgrader"] = {"grade": True, "grade_id": "t1", "points": 1,
                                 "solution": False, "locked": True, "schema_version": 3}
    nb.cells = [cell]
    path = tmp_path / "work" / "ps1.ipynb"
    path.parent.mkdir(exist_ok=True)
    nbformat.write(nb, path)
    app = NbGrader()
    app.config_file_paths.append([str(LAB_CONFIG_DIR)])
    app.load_config_file()
    return Validator(config=app.config, ignore_checksums=True).validate(str(path))


@pytest.mark.skipif(shutil.which("bwrap") is None and not os.environ.get("CI"),
                    reason="needs bubblewrap (scripts/test.sh installs it)")
def test_validate_in_a_grader_lab_runs_in_the_sandbox(tmp_path, monkeypatch):
    monkeypatch.setattr(provisioner, "_probed", {})
    monkeypatch.setenv(provisioner.BACKEND_ENV, "bubblewrap")
    result = _validate(tmp_path, monkeypatch, GRADER)
    assert result == {}, result  # the cell passed: it could not see the gradebook
    # Without the sandbox the same cell sees the file: the negative control.
    monkeypatch.setenv(provisioner.BACKEND_ENV, "off")
    result = _validate(tmp_path, monkeypatch, GRADER)
    assert "I can see the gradebook" in json.dumps(result), result


def test_validate_in_a_students_lab_is_unchanged(tmp_path, monkeypatch):
    # A student validates their own work as themselves: no sandbox kernel is chosen.
    result = _validate(tmp_path, monkeypatch, "u123")
    assert "I can see the gradebook" in json.dumps(result), result
