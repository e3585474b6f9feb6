"""The systemd backend of the autograding sandbox, under a real systemd.

The image's units (images/ananke-base/assets/ananke-sandbox-broker.{socket,@service})
are installed in the booted container and the course is put in the course registry with
its limits. A grader lab (a transient unit with a dynamic user and the spawner's
properties) then autogrades, through the broker, a submission that attacks everything
in reach (the list of tests/test_autograde_sandbox.py), an honest one, one that sleeps
past the time limit and a fork bomb. Every attack must fail, the course directory stay
byte-identical, the honest answer come out, both over-the-limit submissions be reported
"exceeded the time limit", and no process or sandbox unit be left. The same run with
``ANANKE_AUTOGRADE_SANDBOX=off`` is the negative control: the attacks succeed.

The broker itself must refuse a caller that is not a grader account, and a grader's
requests for a scratch directory outside its area, with ``..``, through a link, and
limits above its course's.
"""

import ast
import json
import secrets
from pathlib import Path

import pytest

pytestmark = pytest.mark.systemd

HERE = Path(__file__).parent
ASSETS = HERE.parents[1] / "images" / "ananke-base" / "assets"
COURSE = "c-00000000c0ffee00"
GRADER = f"grader-{COURSE}"
OTHER_COURSE_GRADER = "grader-c-00000000deadbeef"
TIME_LIMIT, TASKS = 20, 64
VENV_PY = "/opt/ananke/venv/bin/python"
REGISTER = f"""
from ananke_hub.courses.models import Course
from ananke_hub.courses.registry import CourseRegistry
r = CourseRegistry()
with r.session() as s:
    s.merge(Course(id={COURSE!r}, issuer="https://lms", client_id="c", deployment_id="d",
                   resource_link_id="rl", settings={{"sandbox_time_limit": {TIME_LIMIT},
                   "sandbox_tasks": {TASKS}, "sandbox_memory_mb": 1024}}))
    s.commit()
"""
LISTENER = """
import socket
s = socket.create_server(("127.0.0.1", 8765))
n = 0
while True:
    c, _ = s.accept()
    n += 1
    open("/run/tcp-accepted", "w").write(str(n))
    c.close()
"""


@pytest.fixture(scope="module")
def broker(systemd_container):
    c = systemd_container
    for name in ("ananke-sandbox-broker.socket", "ananke-sandbox-broker@.service"):
        c.copy_in(ASSETS / name, f"/etc/systemd/system/{name}")
    c.run(["systemctl", "daemon-reload"])
    c.run(["systemctl", "enable", "--now", "ananke-sandbox-broker.socket"])
    c.run(["mkdir", "-p", "/var/lib/ananke"])
    c.run([VENV_PY, "-c", REGISTER])
    c.path("/var/lib/ananke/secret.txt").write_text("state")
    c.run(["systemd-run", "--unit=tcp-listener", VENV_PY, "-c", LISTENER])
    for name in ("sandbox_attack.py", "broker_probe.py"):
        c.copy_in(HERE / name, f"/opt/ananke-test/{name}")
    c.path("/opt/ananke-test/attack.py").write_text(attack_code())
    return c


def attack_code() -> str:
    """The malicious cell of tests/test_autograde_sandbox.py (one list of attacks)."""
    tree = ast.parse((HERE.parent / "test_autograde_sandbox.py").read_text())
    (value,) = [n.value for n in tree.body if isinstance(n, ast.Assign)
                and getattr(n.targets[0], "id", "") == "ATTACK"]
    return ast.literal_eval(value)


def as_lab(c, user: str, script: list[str], env: dict | None = None, timeout=900):
    """Run a script as a lab would: a dynamic user's unit with the spawner's properties."""
    argv = [
        "systemd-run", "--wait", "--pipe", "--quiet", f"--unit=jupyter-{user}-{secrets.token_hex(3)}",
        "-p", "DynamicUser=yes", "-p", f"User={user}", "-p", f"StateDirectory={user}",
        "-p", f"WorkingDirectory=/var/lib/{user}", "-p", "NoNewPrivileges=yes",
        "-p", "PrivateTmp=yes", "-p", "ReadOnlyPaths=/",
    ]
    # systemdspawner sets HOME for dynamic users (systemd would leave it "/").
    for key, value in {"HOME": f"/var/lib/{user}", **(env or {})}.items():
        argv.append(f"--setenv={key}={value}")
    proc = c.run([*argv, VENV_PY, *script], check=False, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:] + c.journal(lines=80)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def autograde(c, sandbox: str, marker: str) -> dict:
    return as_lab(
        c, GRADER,
        ["/opt/ananke-test/sandbox_attack.py", "/opt/ananke-test/attack.py", marker, "8765",
         str(TIME_LIMIT), str(TASKS)],
        env={"ANANKE_AUTOGRADE_SANDBOX": sandbox},
    )


def tcp_accepted(c) -> int:
    """Connections the listener on the container's loopback accepted (/run is the
    container's own tmpfs, read inside)."""
    proc = c.run(["cat", "/run/tcp-accepted"], check=False)
    return int(proc.stdout) if proc.returncode == 0 else 0


def live_processes_with(c, marker: str) -> list[str]:
    out = c.run([VENV_PY, "-c", (
            "import os\nfor p in os.listdir('/proc'):\n  try:\n"
            "    print(p, open(f'/proc/{p}/stat').read().rsplit(')',1)[1].split()[0],"
            " open(f'/proc/{p}/cmdline','rb').read().replace(b'\\0',b' ').decode())\n"
        "  except (OSError, ValueError): pass")]).stdout
    return [line for line in out.splitlines() if marker in line and " Z " not in line
            and "/proc" not in line]


ATTACKS = (
    "gradebook_own gradebook_other read_source read_release read_other_submission "
    "modify_other_submission read_other_feedback modify_other_feedback read_other_home "
    "list_grader_home list_homes list_var_lib_ananke tcp_loopback spawn_300 allocate_8gb"
).split()


def test_a_malicious_submission_through_the_systemd_backend(broker):
    c = broker
    marker = f"ananke-systemd-leftover-{secrets.token_hex(4)}"
    out = autograde(c, "systemd", marker)
    report = out["report"]
    assert report, (out, c.journal(lines=200))
    succeeded = [a for a in ATTACKS if report[a]["ok"]]
    assert not succeeded, {a: report[a] for a in succeeded}
    assert out["changed"] == [], out["changed"]
    # The honest student's answer, through the same sandbox in the same run.
    assert out["results"]["u101"] == {"output": "ANSWER 42\n", "errors": []}, out["results"]
    for student in ("u160", "u170"):  # sleeper, fork bomb
        assert f"exceeded the time limit of {TIME_LIMIT} s" in out["results"][student].get(
            "limit", ""), out["results"][student]
    # Nothing survives: no background process, no sandbox unit, no scratch directory.
    assert out["survivors"] == [] and live_processes_with(c, marker) == []
    units = c.run(["systemctl", "list-units", "--all", "--no-legend", "ananke-sandbox-[0-9]*"])
    assert units.stdout.strip() == "", units.stdout
    assert out["scratch_left"] == []
    journal = c.journal(lines=3000)
    assert f"course:{COURSE}" in journal and "starting ananke-sandbox-" in journal
    assert tcp_accepted(c) == 0


def test_the_same_attacks_succeed_with_the_sandbox_off(broker):
    """The negative control: it is the sandbox that stops them."""
    c = broker
    marker = f"ananke-systemd-control-{secrets.token_hex(4)}"
    out = as_lab(
        c, GRADER,
        ["/opt/ananke-test/sandbox_attack.py", "/opt/ananke-test/attack.py", marker, "8765",
         str(TIME_LIMIT), str(TASKS)],
        env={"ANANKE_AUTOGRADE_SANDBOX": "off"},
        timeout=1500,
    )
    report = out["report"]
    for attack in ("gradebook_own", "gradebook_other", "read_source", "read_release",
                   "read_other_submission", "modify_other_submission", "list_grader_home",
                   "list_var_lib_ananke", "tcp_loopback"):
        assert report[attack]["ok"], (attack, report[attack])
    assert "gradebook.db" in out["changed"]
    assert out["survivors"], "the background process should have survived without the sandbox"
    assert tcp_accepted(c) > 0


def test_the_broker_refuses_what_it_must(broker):
    c = broker
    # A student's lab (not a grader account) is refused whatever it asks.
    student = as_lab(c, "u100", ["/opt/ananke-test/broker_probe.py"])
    assert student.pop("good_scratch_removed") is False
    for case, answer in student.items():
        assert "not a course's grader account" in answer.get("error", ""), (case, answer)
    # A grader account of a course that is not in the registry: no ceilings, refused.
    stranger = as_lab(c, OTHER_COURSE_GRADER, ["/opt/ananke-test/broker_probe.py"])
    assert stranger.pop("good_scratch_removed") is False
    assert all("not in the course registry" in a.get("error", "") for a in stranger.values())

    answers = as_lab(c, GRADER, ["/opt/ananke-test/broker_probe.py"])
    assert answers.pop("good_scratch_removed") is True  # after its kernel, by the broker
    good = answers.pop("good")
    assert good.get("unit", "").startswith("ananke-sandbox-"), good
    assert good["end"]["result"] in ("stopped", "success", "signal", "exit-code"), good
    expected = {
        "outside_area": "not a directory in the caller's area",
        "other_home": "not a directory in the caller's area",
        "dotdot": "not a normalised path",
        "dotdot_out": "not a normalised path",
        "area_itself": "not a directory in the caller's area",
        "symlink": "is not a directory (links are refused)",
        "over_time": "limit time_limit=100000 is above the course's 20",
        "over_tasks": "limit tasks_max=5000 is above the course's 64",
        "over_disk": "is above the course's",
        "negative": "must be a positive whole number",
        "missing_limit": "limits must give exactly",
        "relative_argv": "starting with an absolute path",
        "env_newline": "is not allowed as given",
        "unknown_field": "unknown request field(s): user",
    }
    for case, words in expected.items():
        assert words in answers[case].get("error", ""), (case, answers[case])
    # The refused symlink's target is untouched.
    assert c.path("/var/lib/ananke/secret.txt").read_text() == "state"
