"""Run inside the container as a grader lab would (a dynamic user's unit): the malicious
submission of test_autograde_sandbox.py, an honest one, one that sleeps past the time
limit and a fork bomb, each through nbgrader's sandboxed executor (SandboxedExecute, as
``nbgrader autograde`` runs it with the shipped lab config). The grader's course
directory is laid out as nbgrader's: gradebook.db, source/, release/, submitted/ and
feedback/ of another student. Prints what happened as JSON on the last line.

argv: the attack notebook's code (a file), the marker of the background process, the
TCP port of a listener on the container's loopback, the sandbox's time limit and tasks.
"""

import hashlib
import json
import os
import sqlite3
import sys
from pathlib import Path

import nbformat
from traitlets.config import Config

from ananke_hub.lab.sandbox.execute import SandboxedExecute, SandboxLimitExceeded

attack_code, marker, port, time_limit, tasks = sys.argv[1:6]
home = Path(os.getcwd())
ps = "ps1"

db = sqlite3.connect(home / "gradebook.db")
db.execute("CREATE TABLE IF NOT EXISTS grade (student TEXT, manual_score REAL)")
db.execute("CREATE TABLE IF NOT EXISTS submitted_notebook (id INTEGER, assignment_id INTEGER)")
db.execute("CREATE TABLE IF NOT EXISTS submitted_assignment (id INTEGER, student_id TEXT)")
db.execute("DELETE FROM grade")
db.executemany("INSERT INTO grade VALUES (?, ?)", [("u100", 1.0), ("u150", 0.0)])
db.commit()
db.close()
for folder, text in [("source", "HIDDEN TESTS assert answer() == 42"), ("release", "release"),
                     ("submitted/u100", "u100's own work"), ("feedback/u100", "u100 feedback")]:
    (home / folder / ps).mkdir(parents=True, exist_ok=True)
    (home / folder / ps / f"{ps}.ipynb").write_text(text)


def digest() -> dict:
    files = [home / "gradebook.db", *sorted(home.glob("*/*/*/*.ipynb")), *home.glob("*/*/*.ipynb")]
    return {str(p.relative_to(home)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


before = digest()
params = {
    "me": "u150", "victim": "u100", "gradebook": str(home / "gradebook.db"),
    "source": str(home / "source" / ps / f"{ps}.ipynb"),
    "release": str(home / "release" / ps / f"{ps}.ipynb"),
    "victim_submission": str(home / "submitted/u100" / ps / f"{ps}.ipynb"),
    "victim_feedback": str(home / "feedback/u100" / ps / f"{ps}.ipynb"),
    "victim_home": "/var/lib/private/u100", "grader_home": str(home),
    "homes": "/var/lib/private", "port": int(port), "lms_host": "127.0.0.1", "marker": marker,
}
# The attack's gradebook SQL joins nbgrader's tables; ours is simpler: same effect.
attack = Path(attack_code).read_text().replace(
    "UPDATE grade SET manual_score = 99 WHERE notebook_id IN (SELECT sn.id FROM "
    '"\n        "submitted_notebook sn JOIN submitted_assignment sa ON sn.assignment_id = sa.id "'
    '\n        "WHERE sa.student_id = ?)',
    "UPDATE grade SET manual_score = 99 WHERE student = ?",
)
config = Config()
config.SandboxProvisioner.time_limit = int(time_limit)
config.SandboxProvisioner.tasks_max = int(tasks)
config.SandboxProvisioner.memory_mb = 1024  # the course's ceiling in the test
submissions = {
    "u150": f"PARAMS = {json.dumps(params)!r}\n{attack}",
    "u101": "def answer():\n    return 42\nprint('ANSWER', answer())\n",
    "u160": "import time\ntime.sleep(600)\n",
    "u170": "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n",
}
if os.environ.get("ANANKE_AUTOGRADE_SANDBOX") == "off":
    # The negative control: no unbounded sleeper or fork bomb without the sandbox.
    del submissions["u160"], submissions["u170"]
results = {}
for student, code in submissions.items():
    folder = home / "autograded" / student / ps
    folder.mkdir(parents=True, exist_ok=True)
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(code)]
    try:
        nb, _ = SandboxedExecute(timeout=300, config=config).preprocess(
            nb, {"metadata": {"path": str(folder)}}
        )
        text = "".join(o.get("text", "") for o in nb.cells[0].outputs)
        errors = [o.get("ename") for o in nb.cells[0].outputs if o.get("output_type") == "error"]
        results[student] = {"output": text, "errors": errors}
    except SandboxLimitExceeded as exc:
        results[student] = {"limit": str(exc)}
    except Exception as exc:  # reported, not hidden: the test says which
        results[student] = {"exception": f"{type(exc).__name__}: {exc}"}

report = {}
for line in results["u150"].get("output", "").splitlines():
    if line.startswith("ATTACK-REPORT "):
        report = json.loads(line.removeprefix("ATTACK-REPORT "))
survivors = []
for entry in os.scandir("/proc"):
    if entry.name.isdigit() and entry.name != str(os.getpid()):
        try:
            cmdline = Path(f"/proc/{entry.name}/cmdline").read_bytes()
            # (systemd-run, which started this script, has the marker in its argv too)
            if marker.encode() in cmdline and b"sandbox_attack.py" not in cmdline:
                survivors.append(int(entry.name))
        except OSError:
            pass
after = digest()
print(json.dumps({
    "grader_uid": os.getuid(), "results": results, "report": report,
    "changed": sorted(k for k in before if before[k] != after.get(k)),
    "survivors": survivors,
    "scratch_left": sorted(os.listdir(home / ".ananke-sandbox"))
    if (home / ".ananke-sandbox").exists() else [],
}))
