"""Per-course nbgrader settings: data an instructor can change, turned into nbgrader config.

A course's settings are stored in the course registry as a JSON object and written to
the course directory as ``nbgrader_config.json`` (nbgrader reads that file from the
course directory, after the global config). They are never Python code.

How each setting maps onto nbgrader 0.9.6:

``remove_hidden_tests_in_feedback`` (default on)
    nbgrader puts hidden tests back into a submission when it autogrades it
    (``OverwriteCells`` restores grade cells from the gradebook), and the feedback is made
    from the autograded notebook, so students would see them (nbgrader issue 917). On:
    ``nbgrader.preprocessors.ClearHiddenTests`` is added to
    ``GenerateFeedback.preprocessors``, which removes the
    ``### BEGIN HIDDEN TESTS`` ... ``### END HIDDEN TESTS`` regions from the feedback.

``reexecute_for_feedback`` (default off)
    Removing the hidden tests leaves their outputs: a failed hidden test's traceback
    still quotes its code. On: ``nbgrader.preprocessors.Execute`` runs after
    ``ClearHiddenTests`` in ``GenerateFeedback.preprocessors``, so the feedback shows the
    outputs of the notebook *without* hidden tests (scores still come from autograding).
    It costs one more run of every notebook and shows outputs that may differ from the
    graded run (random numbers, time). Only used with ``remove_hidden_tests_in_feedback``.

``execute_timeout`` (default 30)
    Seconds one cell may run during autograding (``Execute.timeout``) before the
    kernel is interrupted and the cell counts as failed.

``sandbox_time_limit``, ``sandbox_memory_mb``, ``sandbox_cpu_seconds``, ``sandbox_tasks``
    The limits of the sandbox in which autograding runs each submission
    (``SandboxProvisioner`` in :mod:`ananke_hub.lab.sandbox.provisioner`): seconds one
    notebook's kernel may live, memory (address space) and CPU seconds per process, and
    processes and threads at once. Feedback made by running the notebooks again uses
    the same sandbox and limits.
"""

from dataclasses import asdict, dataclass, field, fields

from ananke_hub.lab.sandbox import EXECUTE_CLASS

# GenerateFeedback's default preprocessors in nbgrader 0.9.6 (converters/generate_feedback.py);
# we list them explicitly because setting the trait replaces the whole list.
_FEEDBACK_BASE = [
    "nbgrader.preprocessors.GetGrades",
    "nbconvert.preprocessors.CSSHTMLHeaderPreprocessor",
]
# nbgrader's own, accepting the config HTMLExporter gives them (see nbgrader_preprocessors.py).
_CLEAR_HIDDEN_TESTS = "ananke_hub.lab.nbgrader_preprocessors.ClearHiddenTests"
# Feedback made by running the notebooks again runs student code too: in the sandbox.
_EXECUTE = EXECUTE_CLASS

EXECUTE_TIMEOUT_MAX = 3600


class SettingsError(ValueError):
    """Course settings that cannot be used; the message names the setting."""


@dataclass(frozen=True)
class CourseSettings:
    # The metadata is what instructors read next to each setting (Kore's course page).
    remove_hidden_tests_in_feedback: bool = field(
        default=True,
        metadata={
            "label": "Remove hidden tests from the feedback",
            "help": "Students' feedback leaves out the hidden tests (between ### BEGIN "
            "HIDDEN TESTS and ### END HIDDEN TESTS), which nbgrader would otherwise put "
            "back in.",
        },
    )
    reexecute_for_feedback: bool = field(
        default=False,
        metadata={
            "label": "Run the notebooks again to make the feedback",
            "help": "The feedback shows the outputs of each notebook run without the "
            "hidden tests, so a failed hidden test's error cannot quote it. Costs one more "
            "run of every notebook; outputs may differ from the graded run (random "
            "numbers, time). Scores always come from autograding. Only used with the "
            "setting above on.",
        },
    )
    execute_timeout: int = field(
        default=30,
        metadata={
            "label": "Time limit per cell during autograding",
            "help": "Seconds one cell may run before it is interrupted and counts as failed.",
            "min": 1,
            "max": EXECUTE_TIMEOUT_MAX,
            "unit": "seconds",
        },
    )

    sandbox_time_limit: int = field(
        default=600,
        metadata={
            "label": "Time limit per notebook during autograding",
            "help": "Seconds the sandbox lets one student's notebook run in all. A "
            "submission that takes longer is stopped and reported as over the limit; the "
            "rest of the class is still graded.",
            "min": 10,
            "max": 4 * 3600,
            "unit": "seconds",
        },
    )
    sandbox_memory_mb: int = field(
        default=2048,
        metadata={
            "label": "Memory per process during autograding",
            "help": "Memory (address space) each process of a student's code may use in "
            "the sandbox; allocating more fails with MemoryError.",
            "min": 256,
            "max": 65536,
            "unit": "MiB",
        },
    )
    sandbox_cpu_seconds: int = field(
        default=600,
        metadata={
            "label": "CPU time per process during autograding",
            "help": "CPU seconds each process of a student's code may use in the sandbox.",
            "min": 10,
            "max": 4 * 3600,
            "unit": "seconds",
        },
    )
    sandbox_tasks: int = field(
        default=128,
        metadata={
            "label": "Processes and threads during autograding",
            "help": "How many processes and threads a student's code may have at once in "
            "the sandbox (a fork bomb stops there).",
            "min": 16,
            "max": 4096,
        },
    )

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            # bool is an int in Python: a timeout of True is an error, not 1 second.
            if f.type is int and (isinstance(value, bool) or not isinstance(value, int)):
                raise SettingsError(
                    f"Course setting {f.name!r} must be a whole number, got {value!r}."
                )
            if f.type is bool and not isinstance(value, bool):
                raise SettingsError(
                    f"Course setting {f.name!r} must be true or false, got {value!r}."
                )
            low, high = f.metadata.get("min"), f.metadata.get("max")
            if low is not None and not low <= value <= high:
                unit = f" {f.metadata['unit']}" if "unit" in f.metadata else ""
                raise SettingsError(
                    f"Course setting {f.name!r} must be between {low} and {high}{unit}, "
                    f"got {value}."
                )

    @classmethod
    def from_dict(cls, data: dict) -> "CourseSettings":
        """Settings from stored or submitted data; missing keys take their defaults."""
        if not isinstance(data, dict):
            raise SettingsError(f"Course settings must be an object, got {type(data).__name__}.")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SettingsError(
                f"Unknown course setting(s) {', '.join(map(repr, unknown))}; "
                f"known settings: {', '.join(sorted(known))}."
            )
        return cls(**data)

    def to_dict(self) -> dict:
        return asdict(self)

    def feedback_preprocessors(self) -> list[str]:
        preprocessors = list(_FEEDBACK_BASE)
        if self.remove_hidden_tests_in_feedback:
            preprocessors.append(_CLEAR_HIDDEN_TESTS)
            if self.reexecute_for_feedback:
                preprocessors.append(_EXECUTE)
        return preprocessors

    def nbgrader_config(self, course_id: str) -> dict:
        """The content of the course directory's ``nbgrader_config.json``.

        The course directory (``CourseDirectory.root``) is not set: it is the grader's
        home, the working directory of its server and of nbgrader's commands there, and
        the home's path differs between the hub and the lab (systemd's
        ``/var/lib/private/<user>`` against ``/var/lib/<user>``).
        """
        return {
            "CourseDirectory": {"course_id": course_id},
            "GenerateFeedback": {"preprocessors": self.feedback_preprocessors()},
            "Execute": {"timeout": self.execute_timeout},
            "SandboxProvisioner": {
                "time_limit": self.sandbox_time_limit,
                "memory_mb": self.sandbox_memory_mb,
                "cpu_seconds": self.sandbox_cpu_seconds,
                "tasks_max": self.sandbox_tasks,
            },
        }
