"""Fixtures shared by several test modules (a module's own fixture of the same name wins)."""

from pathlib import Path

import pytest
from fs_trees import make_course, make_outside


@pytest.fixture
def course(tmp_path) -> Path:
    """A grader's home as nbgrader leaves it (tests/fs_trees.py), for the file-work tests
    (test_fsutil.py, test_manage_files.py)."""
    return make_course(tmp_path)


@pytest.fixture
def outside(tmp_path) -> Path:
    """Somebody else's files next to ``course``, which no file work may touch."""
    return make_outside(tmp_path)
