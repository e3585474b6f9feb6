"""An nbgrader round trip through an Ananke course: release -> fetch -> submit -> collect ->
autograde -> gradebook scores, for two students (one right, one wrong).

As root every account is its own uid (62101, 62102, grader 62103); otherwise all run as
the current user. The course is made by the hub's code (ensure_course_files,
enrol_students), nbgrader runs with the shipped lab config.
"""

import pytest
from nbgrader_users import ASSIGNMENT, COURSE_ID, Classroom, finish


@pytest.fixture(scope="module")
def course():
    room = Classroom.temporary(grader_uid=62103)
    try:
        room.create_course()
        right, wrong = room.add_student("u101", 62101), room.add_student("u102", 62102)
        room.enrol(right, wrong)
        room.write_source()
        finish(
            room.nbgrader(
                room.grader, ["generate_assignment", ASSIGNMENT], ["release_assignment", ASSIGNMENT]
            )
        )
        fetch = ["fetch_assignment", ASSIGNMENT, "--course", COURSE_ID]
        finish(room.nbgrader(right, fetch), room.nbgrader(wrong, fetch))
        room.answer(right, 42)
        room.answer(wrong, 41)
        submit = ["submit", ASSIGNMENT, "--course", COURSE_ID]
        finish(room.nbgrader(right, submit), room.nbgrader(wrong, submit))
        (grading,) = finish(
            room.nbgrader(room.grader, ["collect", ASSIGNMENT], ["autograde", ASSIGNMENT])
        )
        yield room, grading
    finally:
        room.cleanup()


def test_autograded_scores_are_in_the_gradebook(course):
    from nbgrader.api import Gradebook

    room, grading = course
    assert "cheating" not in grading
    with Gradebook(room.paths.gradebook_url, COURSE_ID) as gb:
        assert gb.find_assignment(ASSIGNMENT).max_score == 1.0
        scores = {
            s.student.id: (s.score, s.max_score) for s in gb.assignment_submissions(ASSIGNMENT)
        }
        assert scores == {"u101": (1.0, 1.0), "u102": (0.0, 1.0)}
        # The students the hub enrolled, with what the LMS told about them.
        student = gb.find_student("u101")
        assert (student.lms_user_id, student.first_name, student.email) == (
            "sub-u101",
            "U101",
            "u101@example.edu",
        )


def test_the_grader_account_owns_what_grading_made(course):
    room, _ = course
    home = room.paths.home
    for rel in ("gradebook.db", "submitted/u101/ps1/ps1.ipynb", "autograded/u102/ps1/ps1.ipynb"):
        assert (home / rel).stat().st_uid == room.grader.uid, rel
