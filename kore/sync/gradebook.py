"""What a course's nbgrader gradebook says, read once per grade sync.

The gradebook is the SQLite file nbgrader keeps in the grader account's home. It is
read in a worker thread, confined to that home as its owner like every other access
to it (:mod:`ananke_hub.courses.nbgrader_setup`), and turned into plain data: the
assignments with their maximum, the students, and each submission's score.

A submission's score is nbgrader's: the sum of its graded cells, minus the late
penalty, never below 0 (as ``nbgrader export`` computes it). A submission that still
has cells to grade by hand is "pending manual grading". In nbgrader a submission is in
the gradebook once it was autograded; before that the student counts as "not submitted".

Next to the gradebook: the submissions whose autograding the sandbox stopped at a limit
(:mod:`ananke_hub.lab.sandbox.records`), which the grade sync reports instead of sending.
"""

from dataclasses import dataclass, field

from ananke_hub import fsutil
from ananke_hub.courses import nbgrader_setup
from ananke_hub.courses.layout import CoursePaths
from ananke_hub.lab.sandbox import records


class GradebookUnreadable(Exception):
    """The course's gradebook exists but cannot be read; the message says why."""


@dataclass(frozen=True)
class Assignment:
    name: str
    max_score: float


@dataclass(frozen=True)
class Submission:
    score: float
    needs_manual_grade: bool = False


@dataclass(frozen=True)
class GradebookSnapshot:
    #: In nbgrader's order (due date, then name).
    assignments: list[Assignment] = field(default_factory=list)
    students: dict[str, nbgrader_setup.StudentRecord] = field(default_factory=dict)
    #: (username, assignment name) -> submission; missing = not submitted.
    submissions: dict[tuple[str, str], Submission] = field(default_factory=dict)
    #: False when the course has no gradebook yet (its files are not created).
    exists: bool = True
    #: (username, assignment name) -> why the sandbox stopped its autograding.
    autograde_limits: dict[tuple[str, str], str] = field(default_factory=dict)


def _number(value) -> float:
    return float(value) if isinstance(value, int | float) else 0.0


def _snapshot(gb) -> GradebookSnapshot:
    from nbgrader.api import Assignment as NbAssignment
    from nbgrader.api import Grade, SubmittedNotebook
    from nbgrader.api import Student as NbStudent
    from nbgrader.api import SubmittedAssignment as NbSubmission
    from sqlalchemy import func

    assignments = [Assignment(a.name, _number(a.max_score)) for a in gb.assignments]
    students = {
        s.id: nbgrader_setup.StudentRecord(
            s.id, s.lms_user_id or "", s.first_name or "", s.last_name or "", s.email or ""
        )
        for s in gb.students
    }
    # Grouped queries over nbgrader's tables instead of loading each submission as an
    # object (several queries each: 20 s for 5000). The sums are nbgrader's own: a
    # submission's score is the sum of its grades' scores (Grade.score: manual if given,
    # else automatic, plus extra credit), its late penalty the sum over its notebooks.
    grades = {
        sub_id: (total, manual)
        for sub_id, total, manual in gb.db.query(
            SubmittedNotebook.assignment_id,
            func.sum(Grade.score),
            func.max(Grade.needs_manual_grade),
        )
        .join(Grade, Grade.notebook_id == SubmittedNotebook.id)
        .group_by(SubmittedNotebook.assignment_id)
    }
    penalties = dict(
        gb.db.query(
            SubmittedNotebook.assignment_id, func.sum(SubmittedNotebook.late_submission_penalty)
        ).group_by(SubmittedNotebook.assignment_id)
    )
    rows = (
        gb.db.query(NbSubmission.id, NbStudent.id, NbAssignment.name)
        .join(NbSubmission.student)
        .join(NbSubmission.assignment)
    )
    submissions = {}
    for sub_id, student_id, assignment in rows:
        total, manual = grades.get(sub_id, (0.0, False))
        score = max(0.0, _number(total) - _number(penalties.get(sub_id)))
        submissions[(student_id, assignment)] = Submission(round(score, 6), bool(manual))
    return GradebookSnapshot(assignments, students, submissions)


def read_gradebook(paths: CoursePaths) -> GradebookSnapshot:
    """The course's gradebook as data. Blocking: call it in a thread."""
    try:
        present = paths.home.is_dir() and fsutil.exists_in_home(
            paths.home, nbgrader_setup.GRADEBOOK_FILE
        )
    except (OSError, ValueError) as exc:
        raise GradebookUnreadable(f"the course directory {paths.home} is unusable: {exc}") from exc
    if not present:
        return GradebookSnapshot(exists=False)
    try:
        snapshot = nbgrader_setup.read_gradebook(paths, _snapshot)
    except Exception as exc:  # SQLAlchemy, nbgrader, fsutil: all mean "cannot read it"
        raise GradebookUnreadable(
            f"nbgrader's gradebook {paths.gradebook} cannot be read ({type(exc).__name__}: {exc})"
        ) from exc
    try:
        limits = records.parse(fsutil.read_file_in_home(paths.home, records.LIMITS_FILE))
    except (OSError, ValueError) as exc:
        raise GradebookUnreadable(
            f"{paths.home / records.LIMITS_FILE} cannot be read: {exc}"
        ) from exc
    snapshot.autograde_limits.update(limits)
    return snapshot
