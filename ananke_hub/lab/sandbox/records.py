"""Which submissions' autograding the sandbox stopped at a limit, kept in the course.

``.ananke/autograde_limits.json`` in the course directory (the grader's home): written by
:class:`~ananke_hub.lab.sandbox.execute.SandboxedExecute` in the grader's lab when a
submission hits a limit, cleared when the same submission is autograded without; read by
Kore's grade sync, which then reports that submission instead of sending a score.
Only the grader's own process writes it; the sandboxed code never sees the course
directory. Imports nothing heavy: Kore reads it too.
"""

import json
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path

LIMITS_FILE = ".ananke/autograde_limits.json"


def _key(assignment: str, student: str) -> str:
    return f"{assignment}/{student}"


def parse(data: bytes | None) -> dict[tuple[str, str], str]:
    """(student, assignment) -> message, from the file's content; junk counts as nothing."""
    try:
        entries = json.loads(data or b"{}")
    except ValueError:
        return {}
    if not isinstance(entries, dict):
        return {}
    found = {}
    for entry in entries.values():
        if isinstance(entry, dict) and all(
            isinstance(entry.get(k), str) for k in ("student", "assignment", "message")
        ):
            found[(entry["student"], entry["assignment"])] = entry["message"]
    return found


def update(root: str | os.PathLike, assignment: str, student: str, message: str | None) -> None:
    """Record ``message`` for the submission, or clear it (``None``). Atomic (a reader
    sees the old file or the new one)."""
    path = Path(root) / LIMITS_FILE
    try:
        entries = json.loads(path.read_bytes())
        if not isinstance(entries, dict):
            entries = {}
    except (OSError, ValueError):
        entries = {}
    key = _key(assignment, student)
    if message is None:
        if key not in entries:
            return
        del entries[key]
    else:
        entries[key] = {
            "assignment": assignment,
            "student": student,
            "message": message,
            "time": datetime.now(UTC).isoformat(timespec="seconds"),
        }
    path.parent.mkdir(mode=0o700, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".autograde_limits-")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(entries, f, indent=1)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
