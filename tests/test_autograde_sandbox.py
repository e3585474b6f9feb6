"""Autograding cannot be used to cheat: a malicious submission against the sandbox.

Real nbgrader with the shipped lab config (tests/nbgrader_users.py): as root every
account is its own uid, so the grader account autogrades as a non-root uid, as in a lab,
and the sandbox is bubblewrap in a user namespace. One student (u100) is graded first;
then one ``nbgrader autograde`` run grades two honest students, ``u150`` whose notebook
attacks everything in reach, one that sleeps past the time limit and one that forks
without end. Every attack must fail, u100's gradebook rows, submission and feedback must
be unchanged, the honest scores right, and no process of the grader's uid may be left.

The same attacks in a course whose grader runs with the sandbox switched off
(``ANANKE_AUTOGRADE_SANDBOX=off``) succeed: the negative control, proving that the
sandbox is what stops them. (The fork bomb and the sleeper run only sandboxed; the
control's notebook starts 300 processes instead, a bounded stand-in.)
"""

import json
import os
import shutil
import socket
import sqlite3
import threading
from pathlib import Path

import pytest
from nbgrader_users import ASSIGNMENT, COURSE_ID, IS_ROOT, Classroom, finish

from ananke_hub.courses.settings import CourseSettings
from ananke_hub.lab.sandbox import records

pytestmark = pytest.mark.skipif(
    shutil.which("bwrap") is None and not os.environ.get("CI"),
    reason="needs bubblewrap (apt-get install bubblewrap; scripts/test.sh installs it)",
)

MARKER = "ananke-sandbox-test-leftover"
LIMITS = CourseSettings(execute_timeout=60, sandbox_time_limit=15, sandbox_tasks=64)

ATTACK = r"""
import json, os, socket, sqlite3, subprocess, sys
P = json.loads(PARAMS)
report = {}

def attempt(name, fn):
    try:
        report[name] = {"ok": True, "value": repr(fn())[:200]}
    except BaseException as exc:
        report[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}

def set_scores(student):
    db = sqlite3.connect(P["gradebook"], timeout=2)
    rows = db.execute(
        "UPDATE grade SET manual_score = 99 WHERE notebook_id IN (SELECT sn.id FROM "
        "submitted_notebook sn JOIN submitted_assignment sa ON sn.assignment_id = sa.id "
        "WHERE sa.student_id = ?)", (student,)).rowcount
    db.commit()
    db.close()
    assert rows, "no rows"
    return rows

def append(path):
    with open(path, "a") as f:
        f.write("tampered")

def connect(host):
    socket.create_connection((host, P["port"]), timeout=3).close()

def spawn(n):
    children = []
    try:
        for _ in range(n):
            children.append(subprocess.Popen(["sleep", "60"]))
    finally:
        for child in children:
            child.kill()
            child.wait()
    return len(children)

attempt("gradebook_own", lambda: set_scores(P["me"]))
attempt("gradebook_other", lambda: set_scores(P["victim"]))
attempt("read_source", lambda: open(P["source"]).read().index("HIDDEN TESTS"))
attempt("read_release", lambda: len(open(P["release"]).read()))
attempt("read_other_submission", lambda: len(open(P["victim_submission"]).read()))
attempt("modify_other_submission", lambda: append(P["victim_submission"]))
attempt("read_other_feedback", lambda: len(open(P["victim_feedback"]).read()))
attempt("modify_other_feedback", lambda: append(P["victim_feedback"]))
attempt("read_other_home", lambda: os.listdir(P["victim_home"]))
attempt("list_grader_home", lambda: os.listdir(P["grader_home"]))
attempt("list_homes", lambda: os.listdir(P["homes"]))
attempt("list_var_lib_ananke", lambda: os.listdir("/var/lib/ananke"))
attempt("tcp_loopback", lambda: connect("127.0.0.1"))
attempt("tcp_lms", lambda: connect(P["lms_host"]))
attempt("spawn_300", lambda: spawn(300))
attempt("allocate_8gb", lambda: len(bytes(8 * 1024**3)))  # calloc: not touched
attempt("leave_background", lambda: subprocess.Popen(
    [sys.executable, "-c", "import time; time.sleep(300)", P["marker"]],
    start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).pid)
print("ATTACK-REPORT " + json.dumps(report))
"""
SLEEP = "import time\ntime.sleep(120)\n"
FORK_BOMB = (
    "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
)

ALL_ATTACKS = (
    "gradebook_own gradebook_other read_source read_release read_other_submission "
    "modify_other_submission read_other_feedback modify_other_feedback read_other_home "
    "list_grader_home list_homes list_var_lib_ananke tcp_loopback tcp_lms spawn_300 "
    "allocate_8gb"
).split()


def outward_address() -> str:
    """This machine's address toward the rest of the network (the LMS's side); no packet
    is sent."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("192.0.2.1", 9))  # TEST-NET-1: routing only
        return probe.getsockname()[0]
    except OSError:
        return "127.0.0.1"
    finally:
        probe.close()


class Listener:
    """A TCP server on every interface that counts connections: the hub, the LMS."""

    def __init__(self):
        self.sock = socket.create_server(("0.0.0.0", 0))  # noqa: S104
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.close()

    def close(self):
        self.sock.close()


def gradebook_rows(room) -> dict[str, set]:
    db = sqlite3.connect(f"file:{room.paths.gradebook}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {t: set(db.execute(f'SELECT * FROM "{t}"')) for t in tables}  # noqa: S608
    finally:
        db.close()


def write_solution(room, student, code: str) -> None:
    """The student replaces the solution stub of the fetched notebook with ``code``."""
    import nbformat

    from ananke_hub import fsutil

    rel = f"{COURSE_ID}/{ASSIGNMENT}/{ASSIGNMENT}.ipynb"
    nb = nbformat.reads(fsutil.read_file_in_home(student.home, rel).decode(), as_version=4)
    (cell,) = [c for c in nb.cells if "raise NotImplementedError()" in c.source]
    cell.source = cell.source.replace("raise NotImplementedError()", "return 42") + "\n" + code
    fsutil.write_file_in_home(student.home, rel, nbformat.writes(nb).encode())


def processes_of(uid: int) -> list[str]:
    """Live processes of ``uid`` (state and command line). Zombies are dead: a killed
    sandbox's processes wait as zombies until the host's init reaps them."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if entry.stat().st_uid != uid:
                continue
            with open(f"/proc/{entry.name}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if state not in ("Z", "X"):
            found.append(f"{entry.name} {state} {cmdline}")
    return found


def processes_with(marker: str) -> list[int]:
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                    if marker.encode() in f.read():
                        found.append(int(entry.name))
            except OSError:
                pass
    return found


def attack_report(room, student: str) -> dict:
    import nbformat

    path = room.paths.home / "autograded" / student / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            for line in output.get("text", "").splitlines():
                if line.startswith("ATTACK-REPORT "):
                    return json.loads(line.removeprefix("ATTACK-REPORT "))
    raise AssertionError(f"no attack report in {path}")


def run_class(*, sandbox: bool, marker: str) -> dict:
    """A course, u100 graded, then one autograde run with the others; what came out."""
    room = Classroom.temporary(grader_uid=62203 if sandbox else 62303)
    listener = Listener()
    try:
        if not sandbox:
            room.grader_env["ANANKE_AUTOGRADE_SANDBOX"] = "off"
        room.create_course(LIMITS)
        base = 62210 if sandbox else 62310
        names = ["u100", "u101", "u102", "u150"] + (["u160", "u170"] if sandbox else [])
        students = {n: room.add_student(n, base + i) for i, n in enumerate(names)}
        room.enrol(*students.values())
        room.write_source()
        finish(
            room.nbgrader(
                room.grader, ["generate_assignment", ASSIGNMENT], ["release_assignment", ASSIGNMENT]
            )
        )
        fetch = ["fetch_assignment", ASSIGNMENT, "--course", COURSE_ID]
        finish(*(room.nbgrader(s, fetch) for s in students.values()))
        home = room.paths.home
        params = {
            "me": "u150",
            "victim": "u100",
            "gradebook": str(room.paths.gradebook),
            "source": str(home / "source" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"),
            "release": str(home / "release" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"),
            "victim_submission": str(
                home / "submitted" / "u100" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"
            ),
            "victim_feedback": str(home / "feedback" / "u100" / ASSIGNMENT / f"{ASSIGNMENT}.html"),
            "victim_home": str(students["u100"].home),
            "grader_home": str(home),
            "homes": str(home.parent),
            "port": listener.port,
            "lms_host": outward_address(),
            "marker": marker,
        }
        room.answer(students["u100"], 42)
        room.answer(students["u101"], 42)
        room.answer(students["u102"], 41)
        write_solution(room, students["u150"], f"PARAMS = {json.dumps(params)!r}\n{ATTACK}")
        if sandbox:
            write_solution(room, students["u160"], SLEEP)
            write_solution(room, students["u170"], FORK_BOMB)
        submit = ["submit", ASSIGNMENT, "--course", COURSE_ID]
        finish(*(room.nbgrader(s, submit) for s in students.values()))

        # u100 first, with its feedback; then the rest of the class in one run.
        finish(
            room.nbgrader(
                room.grader,
                ["collect", ASSIGNMENT],
                ["autograde", ASSIGNMENT, "--student", "u100"],
                ["generate_feedback", ASSIGNMENT, "--student", "u100"],
            )
        )
        victim_files = {
            Path(p): Path(p).read_bytes()
            for p in (params["victim_submission"], params["victim_feedback"])
        }
        before = gradebook_rows(room)
        (grading,) = finish(room.nbgrader(room.grader, ["autograde", ASSIGNMENT]), check=False)
        from nbgrader.api import Gradebook

        with Gradebook(room.paths.gradebook_url, COURSE_ID) as gb:
            scores = {
                s.student.id: s.score
                for s in gb.assignment_submissions(ASSIGNMENT)
                if s.student.id in ("u100", "u101", "u102", "u150")
            }
        return {
            "room": room,
            "grading": grading,
            "report": attack_report(room, "u150"),
            "scores": scores,
            "before": before,
            "after": gradebook_rows(room),
            "victim_files": victim_files,
            "listener": listener.accepted,
            "leftover": processes_with(marker),
            "grader_processes": processes_of(room.grader.uid) if IS_ROOT else [],
            "limits": records.parse(
                (home / records.LIMITS_FILE).read_bytes()
                if (home / records.LIMITS_FILE).exists()
                else None
            ),
            "autograded": sorted(
                p.name for p in (home / "autograded").iterdir() if (p / ASSIGNMENT).is_dir()
            ),
        }
    except BaseException:
        room.cleanup()
        raise
    finally:
        listener.close()


@pytest.fixture(scope="module")
def sandboxed():
    marker = f"{MARKER}-sandboxed-{os.getpid()}"
    result = run_class(sandbox=True, marker=marker)
    yield result
    for pid in processes_with(marker):
        os.kill(pid, 9)
    result["room"].cleanup()


@pytest.fixture(scope="module")
def unsandboxed():
    marker = f"{MARKER}-control-{os.getpid()}"
    result = run_class(sandbox=False, marker=marker)
    yield result
    for pid in processes_with(marker):
        os.kill(pid, 9)
    result["room"].cleanup()


def test_every_attack_fails_in_the_sandbox(sandboxed):
    report = sandboxed["report"]
    failed_as_wanted = {name: not report[name]["ok"] for name in ALL_ATTACKS}
    assert all(failed_as_wanted.values()), json.dumps(report, indent=1)
    # The files are not in view, the memory is not granted.
    assert report["read_source"]["error"].startswith("FileNotFoundError")
    assert report["allocate_8gb"]["error"].startswith("MemoryError")
    assert sandboxed["listener"] == 0


def test_the_gradebook_and_the_other_students_files_are_untouched(sandboxed):
    before, after = sandboxed["before"], sandboxed["after"]
    for table, rows in before.items():
        assert rows <= after[table], f"rows of {table} changed"
    for path, content in sandboxed["victim_files"].items():
        assert path.read_bytes() == content, path


def test_honest_students_get_their_scores_in_the_same_run(sandboxed):
    # u150's answer is right; its attacks changed no score, its own neither.
    assert sandboxed["scores"] == {"u100": 1.0, "u101": 1.0, "u102": 0.0, "u150": 1.0}


def test_limits_end_only_the_submission_that_hit_them(sandboxed):
    grading = sandboxed["grading"]
    assert "u160" in grading and "exceeded the time limit of 15 s" in grading, grading[-3000:]
    assert grading.count("exceeded the time limit") >= 2  # the sleeper and the fork bomb
    assert "u160" not in sandboxed["autograded"] and "u170" not in sandboxed["autograded"]
    assert {"u101", "u102", "u150"} <= set(sandboxed["autograded"])
    # Recorded for Kore's grade sync, which reports them instead of sending a score.
    assert set(sandboxed["limits"]) == {("u160", ASSIGNMENT), ("u170", ASSIGNMENT)}
    assert "exceeded the time limit of 15 s" in sandboxed["limits"][("u160", ASSIGNMENT)]


def test_no_process_survives_the_grading(sandboxed):
    assert sandboxed["report"]["leave_background"]["ok"]  # it could start one...
    assert sandboxed["leftover"] == []  # ...which did not outlive its sandbox
    assert sandboxed["grader_processes"] == []


def test_without_the_sandbox_the_attacks_succeed(unsandboxed):
    """The negative control: the same notebook, the grader's own permissions."""
    report = unsandboxed["report"]
    succeeded = [
        "gradebook_own",
        "gradebook_other",
        "read_source",
        "read_release",
        "read_other_submission",
        "modify_other_submission",
        "read_other_feedback",
        "modify_other_feedback",
        "list_grader_home",
        "list_homes",
        "tcp_loopback",
        "spawn_300",
        "allocate_8gb",
        "leave_background",
    ]
    if not IS_ROOT:
        succeeded.append("read_other_home")  # one uid for everyone
    if outward_address() != "127.0.0.1":
        succeeded.append("tcp_lms")
    assert all(report[name]["ok"] for name in succeeded), json.dumps(report, indent=1)
    assert unsandboxed["listener"] >= 1
    before, after = unsandboxed["before"], unsandboxed["after"]
    assert any(not rows <= after[table] for table, rows in before.items())
    assert any(p.read_bytes() != c for p, c in unsandboxed["victim_files"].items())
    assert unsandboxed["leftover"]  # the background process outlived the grading
    assert unsandboxed["scores"]["u150"] > 1.0 or unsandboxed["scores"]["u100"] > 1.0
    assert "Sandbox OFF" in unsandboxed["grading"]
