"""Ids the course-management API takes instead of paths, checked before any use.

Routes and request bodies name backups, assignments and notebooks by id; the server
joins an id to a path only after it matched its pattern here AND was found among the
real entries (not links) of the directory it names (the caller does that lookup).

- backup id: ``b-`` + 32 lowercase hex (a uuid4), so it can be a file name as it is;
- operation id: 32 lowercase hex;
- assignment id: nbgrader's assignment is a directory under ``source/``: letters,
  digits, ``_ . -``, starting with a letter or digit, not ending in ``.``;
- notebook name: a ``.ipynb`` file name of letters, digits, space and ``_ . ( ) -``.
"""

import re
import uuid

BACKUP_ID_RE = re.compile(r"^b-[0-9a-f]{32}$")
OPERATION_ID_RE = re.compile(r"^[0-9a-f]{32}$")
ASSIGNMENT_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
NOTEBOOK_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.()-]{0,123}\.ipynb$")


class InvalidName(ValueError):
    """An id or name that does not have the required form; the message says which."""


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_backup_id(value) -> str:
    if not isinstance(value, str) or not BACKUP_ID_RE.fullmatch(value):
        raise InvalidName(
            f"{_shown(value)} is not a backup id (b- and 32 lowercase hex digits). "
            "Take the id from the list of backups."
        )
    return value


def check_operation_id(value) -> str:
    if not isinstance(value, str) or not OPERATION_ID_RE.fullmatch(value):
        raise InvalidName(f"{_shown(value)} is not an operation id (32 lowercase hex digits).")
    return value


def check_assignment_id(value) -> str:
    if not isinstance(value, str) or not ASSIGNMENT_ID_RE.fullmatch(value) or value.endswith("."):
        raise InvalidName(
            f"{_shown(value)} is not an assignment name: up to 64 letters, digits, '_', "
            "'.' or '-', starting with a letter or digit and not ending in '.'. Take the "
            "name from the course's contents."
        )
    return value


def check_notebook_name(value) -> str:
    if not isinstance(value, str) or not NOTEBOOK_NAME_RE.fullmatch(value):
        raise InvalidName(
            f"{_shown(value)} is not a notebook name: a file name ending in .ipynb made of "
            "letters, digits, spaces and '_ . ( ) -', starting with a letter or digit. "
            "Take the name from the course's contents."
        )
    return value


def is_assignment_id(value) -> bool:
    try:
        check_assignment_id(value)
    except InvalidName:
        return False
    return True


def is_notebook_name(value) -> bool:
    try:
        check_notebook_name(value)
    except InvalidName:
        return False
    return True


def new_backup_id() -> str:
    return "b-" + uuid.uuid4().hex


def new_operation_id() -> str:
    return uuid.uuid4().hex
