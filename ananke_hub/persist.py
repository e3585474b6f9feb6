"""Create-once files for secrets.

A secret is written to a new file of mode 0600 (:func:`ananke_hub.fsutil.write_file`),
so it is private before it has content and an existing one is never overwritten.
Readers get the same value on every start: nothing is regenerated at boot.
"""

import os
import secrets
from pathlib import Path

from . import fsutil


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) with mode 0700 if missing; tighten it if present."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    return path


#: Files SQLite makes next to a database (rollback journal, write-ahead log, shared memory).
SQLITE_COMPANIONS = ("-journal", "-wal", "-shm")


def ensure_private_file(path: Path) -> Path:
    """Create ``path`` empty with mode 0600 if missing; tighten it to 0600 if present.

    The mode is set explicitly, so the process's umask does not matter. Links are not
    followed (a link planted in place of the file is an error).
    """
    fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
    return path


def sqlite_path(url: str) -> Path | None:
    """The database file of a ``sqlite:///`` URL; None for other databases and memory."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    if parsed.database.startswith("file:"):  # a URI filename: leave it to its owner
        return None
    return Path(parsed.database)


def ensure_private_sqlite(url: str) -> Path | None:
    """Make a SQLite database private before SQLite opens it: the file 0600 (created
    empty if missing, which SQLite takes as a new database) and any journal, WAL or
    shared-memory file left from earlier 0600 too. SQLite gives the files it creates
    later the database file's mode, so they are private as well."""
    path = sqlite_path(url)
    if path is None:
        return None
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    ensure_private_file(path)
    for suffix in SQLITE_COMPANIONS:
        companion = path.with_name(path.name + suffix)
        if companion.exists() and not companion.is_symlink():
            os.chmod(companion, 0o600)
    return path


def write_new_private_file(path: Path, data: bytes) -> None:
    """Write ``data`` to a file that must not exist yet, readable by its owner only.

    Raises FileExistsError if it exists: callers that want create-once semantics
    catch that and read the file instead.

    The file appears complete or not at all: the data goes into a private temporary
    file in the same directory first, which is then hard-linked to ``path``. A link,
    unlike a rename, fails if ``path`` exists, so an existing file is never replaced;
    and a reader never sees an empty or half-written file (a process racing us in
    :func:`read_or_create_secret`, or Kore reading a key while ``ananke keys rotate``
    writes it).
    """
    fsutil.write_file(path, data, 0o600, replace=False)


def read_or_create_secret(path: Path, nbytes: int = 32) -> str:
    """Return the hex secret stored at ``path``, creating it once if it does not exist.

    Two processes racing here both end with the value of whichever created the file.
    """
    ensure_private_dir(path.parent)
    try:
        write_new_private_file(path, secrets.token_hex(nbytes).encode("ascii"))
    except FileExistsError:
        pass
    value = path.read_text("ascii").strip()
    if not value:
        raise RuntimeError(
            f"The secret file {path} is empty. Restore it from a backup, or delete it "
            "to create a new one (users must then log in again)."
        )
    return value
