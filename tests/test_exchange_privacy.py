"""Exchange privacy with real uids: students cannot list, read or change each other's work.

The original Ananke's issue 27: nbgrader's exchange makes every submission world
readable and writable. Here two students (uids 62001, 62002) and a grader account
(62003) run the real nbgrader with Ananke's lab config; student 2 then attacks student
1's submission by its real name (found as root), which a student could only guess.
"""

import json
import os
import stat

import pytest
from nbgrader_users import ASSIGNMENT, COURSE_ID, IS_ROOT, NOT_ROOT_REASON, Classroom, finish

from ananke_hub.courses.settings import CourseSettings

pytestmark = pytest.mark.skipif(not IS_ROOT, reason=NOT_ROOT_REASON)

# Run as a student: each attempt on someone else's submission, "ALLOWED" or the error.
ATTACK = r"""
import json, os, sys
target, harmless = sys.argv[1], sys.argv[2:] == ["--harmless"]
inbound = os.path.dirname(target)
notebook = os.path.join(target, "ps1.ipynb")
results = {}

def attempt(name, action):
    try:
        action()
        results[name] = "ALLOWED"
    except OSError as exc:
        results[name] = exc.strerror

def write(path, text):
    with open(path, "w") as f:
        f.write(text)

attempt("list inbound", lambda: os.listdir(inbound))
attempt("list submission", lambda: os.listdir(target))
attempt("read notebook", lambda: open(notebook).read())
attempt("read secret", lambda: open(os.path.join(target, "submission_secret.txt")).read())
if harmless:  # the owner's check: reads only, then stop
    print(json.dumps(results))
    sys.exit(0)
attempt("overwrite notebook", lambda: write(notebook, "{}"))
attempt("add a file", lambda: write(os.path.join(target, "extra.ipynb"), "{}"))
attempt("delete notebook", lambda: os.unlink(notebook))
attempt("rename submission", lambda: os.rename(target, target + "-moved"))
attempt("replace submission", lambda: os.rename(target, os.path.join(inbound, "x")))
attempt("chmod submission", lambda: os.chmod(target, 0o777))
attempt("delete submission", lambda: os.rmdir(target))
print(json.dumps(results))
"""

# Run as student 1 once feedback is out: can they find student 2's?
FEEDBACK_PROBE = r"""
import json, os, sys
feedback, other_secret = sys.argv[1], sys.argv[2]
results = {}
for name, action in [("list feedback", lambda: os.listdir(feedback)),
                     ("read other secret", lambda: open(other_secret).read())]:
    try:
        action()
        results[name] = "ALLOWED"
    except OSError as exc:
        results[name] = exc.strerror
print(json.dumps(results))
"""


def _results(output: str) -> dict:
    return json.loads(output.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def run():
    """The whole story once: release, fetch, submit (and a forgery), attacks, collect, feedback."""
    room = Classroom.temporary()
    try:
        # Feedback without hidden tests, tracebacks included (a failing visible assert
        # shows the lines around it: the hidden ones too, unless the notebook is re-run).
        room.create_course(
            CourseSettings(remove_hidden_tests_in_feedback=True, reexecute_for_feedback=True)
        )
        u1, u2 = room.add_student("u1", 62001), room.add_student("u2", 62002)
        room.enrol(u1, u2)
        room.write_source()
        finish(
            room.nbgrader(
                room.grader, ["generate_assignment", ASSIGNMENT], ["release_assignment", ASSIGNMENT]
            )
        )
        fetch = ["fetch_assignment", ASSIGNMENT, "--course", COURSE_ID]
        finish(room.nbgrader(u1, fetch), room.nbgrader(u2, fetch))
        room.answer(u1, 42)
        room.answer(u2, 41)
        submit = ["submit", ASSIGNMENT, "--course", COURSE_ID]
        # Student 2 submits honestly, then again in student 1's name (a later timestamp,
        # so collect would take it as student 1's newest submission).
        submit_out = finish(
            room.nbgrader(u1, submit), room.nbgrader(u2, submit, submit + ["--student", "u1"])
        )

        inbound = room.paths.inbound
        entries = {p.name: p.stat() for p in inbound.iterdir()}
        own = {
            uid: [name for name, st in entries.items() if st.st_uid == uid]
            for uid in (u1.uid, u2.uid)
        }
        real_u1 = next(inbound / n for n in own[u1.uid] if n.startswith("u1+"))
        real_u2 = next(inbound / n for n in own[u2.uid] if n.startswith("u2+"))
        forged = next(inbound / n for n in own[u2.uid] if n.startswith("u1+"))

        attack, sanity = finish(
            room.script(u2, ATTACK, str(real_u1)),
            room.script(u1, ATTACK, str(real_u1), "--harmless"),
        )
        submission_modes = {
            p.relative_to(real_u1).as_posix(): p.lstat() for p in [real_u1, *real_u1.rglob("*")]
        }
        (collect,) = finish(
            room.nbgrader(
                room.grader,
                ["collect", ASSIGNMENT],
                ["autograde", ASSIGNMENT],
                ["generate_feedback", ASSIGNMENT],
                ["release_feedback", ASSIGNMENT],
            )
        )
        fetch_feedback, probe = finish(
            room.nbgrader(u1, ["fetch_feedback", ASSIGNMENT, "--course", COURSE_ID]),
            room.script(
                u1, FEEDBACK_PROBE, str(room.paths.feedback), str(real_u2 / "submission_secret.txt")
            ),
        )
        yield {
            "room": room,
            "u1": u1,
            "u2": u2,
            "real_u1": real_u1,
            "real_u2": real_u2,
            "forged": forged,
            "attack": _results(attack),
            "sanity": _results(sanity),
            "submission_modes": submission_modes,
            "submit_out": submit_out,
            "collect": collect,
            "probe": _results(probe),
            "fetch_feedback": fetch_feedback,
        }
    finally:
        room.cleanup()


def test_a_student_cannot_list_read_or_change_another_students_submission(run):
    denied = {name: why for name, why in run["attack"].items() if why != "ALLOWED"}
    assert denied == run["attack"], f"student 2 could: {run['attack']}"
    # The same attempts by the owner succeed: they test real operations.
    assert run["sanity"]["read notebook"] == "ALLOWED"
    assert run["sanity"]["read secret"] == "ALLOWED"
    assert run["sanity"]["list submission"] == "ALLOWED"
    # Student 1's submission is unchanged and in place.
    assert (run["real_u1"] / "ps1.ipynb").exists()


def test_submission_is_the_students_and_readable_by_the_grader_only(run):
    room, modes = run["room"], run["submission_modes"]
    inbound = room.paths.inbound.stat()
    assert stat.S_IMODE(inbound.st_mode) == 0o3733
    assert inbound.st_uid == room.grader.uid
    for rel, st in modes.items():
        assert st.st_uid == run["u1"].uid, rel
        assert st.st_gid == room.grader.uid, f"{rel}: not in the grader's group"
        if stat.S_ISDIR(st.st_mode):
            assert stat.S_IMODE(st.st_mode) & 0o777 == 0o770, rel
        else:
            assert stat.S_IMODE(st.st_mode) == 0o640, rel
    assert {"ps1.ipynb", "timestamp.txt", "submission_secret.txt"} <= set(modes)


def test_grader_collects_both_students_without_warnings(run):
    room, collect = run["room"], run["collect"]
    submitted = room.paths.home / "submitted"
    assert sorted(p.name for p in submitted.iterdir()) == ["u1", "u2"]
    # Student 1's own work was collected, not student 2's later forgery in their name.
    assert "return 42" in (submitted / "u1" / ASSIGNMENT / "ps1.ipynb").read_text()
    assert "return 41" in (submitted / "u2" / ASSIGNMENT / "ps1.ipynb").read_text()
    warnings = [line for line in collect.splitlines() if "cheating" in line]
    assert len(warnings) == 1, collect
    assert run["forged"].name in warnings[0] and "Not collected" in warnings[0]
    for honest in (run["real_u1"], run["real_u2"]):
        assert honest.name not in warnings[0]


def test_a_student_cannot_find_another_students_feedback(run):
    room = run["room"]
    # Feedback exists for both (named by a hash of each submission's private secret) ...
    from nbgrader.utils import notebook_hash

    secret = (run["real_u2"] / "submission_secret.txt").read_text()
    u2_feedback = room.paths.feedback / f"{notebook_hash(secret=secret, notebook_id='ps1')}.html"
    assert u2_feedback.is_file()
    html = u2_feedback.read_text()
    assert "AssertionError" in html  # student 2's wrong answer, as feedback
    assert "hidden test" not in html and "HIDDEN TESTS" not in html  # not even in the traceback
    # ... student 1 fetched their own ...
    fetched = list((run["u1"].home / COURSE_ID / ASSIGNMENT / "feedback").glob("*/ps1.html"))
    assert len(fetched) == 1, run["fetch_feedback"]
    # ... but can neither list the feedback directory nor read the secret naming student 2's.
    assert run["probe"] == {"list feedback": os.strerror(13), "read other secret": os.strerror(13)}
