"""Safe file-system work, for every process of Ananke: the hub, Kore and the labs.

Root (the hub, Kore) works in users' homes and in the nbgrader exchange, where users
can put symbolic links, FIFOs and hard links while their labs run; a lab's exchange
plugins copy other users' files. Every function here keeps the same rules:

* **No link is followed.** Paths are opened one component at a time from a directory
  descriptor with ``O_NOFOLLOW``. Relative paths inside a home or the exchange
  (:func:`split_relpath`) are refused if absolute or with ``..``, and a link anywhere on
  them is refused (:class:`UnsafePath`). Above the entry an absolute path names, a link
  is accepted only where nobody but root (or this process's own user) could have made
  it: the link and its directory belong to root and the directory is not writable by
  others (systemd's ``/var/lib/<user>`` links to ``/var/lib/private/<user>``). The
  entry itself and everything below it is never followed: links, devices, FIFOs and
  sockets found in a tree are skipped and reported, never copied nor opened.
* **Ownership.** Whatever root creates in a home gets the home's *current* uid and
  gid, read from the home directory at write time, through the new file's descriptor
  (``fchown``) before it has content. The hub never runs a second process as the
  user: starting a dynamic user's command would chown the whole home to a fresh uid and
  lock the running lab out of its own files (systemd.exec(5), "DynamicUser=",
  "StateDirectory=": the state directory is chowned at every start of the unit).
* **Nothing half-made is visible.** Files are written to a temporary name in the same
  directory, fsynced, then renamed (or hard-linked, to never replace); copies of trees
  are built in a private temporary sibling (``.<name>.partial-<hex>``) and renamed to
  their name in one step, refusing to replace anything already there
  (``renameat2(RENAME_NOREPLACE)``).
* Regular files with several hard links are neither handed to a user (chown) nor
  copied by root: in a user's home such a file may be a file from elsewhere linked in.

:func:`run_in_home` is for libraries that take a path and open it themselves (SQLite,
for nbgrader's gradebook): the work runs in a thread confined to the home with the
home owner's file-system identity, so links in the home cannot lead it out.

Callers pass paths derived from configuration (:class:`~ananke_hub.courses.layout.
CourseLayout`), never from a request. No subprocess is started: ``os`` and ``shutil``
only (``shutil.rmtree`` works on descriptors on Linux and does not follow links, see
its ``avoids_symlink_attacks``).

Runs in the hub, in Kore and in the labs: imports the standard library only (the labs
may import nothing else of the hub package; tests/test_layout.py checks it).
"""

import contextlib
import ctypes
import errno
import os
import platform
import secrets
import shutil
import stat
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import TypeVar

T = TypeVar("T")

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: a FIFO put in place of a checked file must not block the reader.
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_SPECIAL_BITS = stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX
_CHUNK = 1 << 20

#: Deeper trees are refused (a course tree is a few levels deep; this bounds recursion).
MAX_DEPTH = 128


class UnsafePath(PermissionError, ValueError):
    """A path Ananke refuses to use: absolute where a relative one was due, with ``..``,
    through a link, a device or FIFO, or a file with several hard links.

    A PermissionError (an OSError: ``except OSError`` around file work sees it) and a
    ValueError (the data's fault: bad input, never retried), as ``io.UnsupportedOperation``
    is both.
    """


@dataclass(frozen=True)
class Owner:
    uid: int
    gid: int

    @classmethod
    def of(cls, st: os.stat_result) -> "Owner":
        return cls(st.st_uid, st.st_gid)


@dataclass
class CopyReport:
    """What a copy (or an extraction) made: regular files, their bytes, what it left out.

    ``skipped`` holds paths relative to the copied tree ('/'-separated) of links,
    special files and hard-linked files, which are never copied.
    """

    files: int = 0
    bytes: int = 0
    skipped: list[str] = field(default_factory=list)


# -- paths ---------------------------------------------------------------------------------------


def split_relpath(relpath: str | os.PathLike) -> tuple[str, ...]:
    """The components of a relative path inside a home; refuses anything that could leave it."""
    text = os.fspath(relpath)
    if not isinstance(text, str) or not text or "\x00" in text:
        raise UnsafePath(f"{relpath!r} is not a usable relative path")
    path = PurePosixPath(text)
    if path.is_absolute():
        raise UnsafePath(f"{text!r} is absolute; only paths inside a home are allowed")
    parts = path.parts
    if not parts or any(part == ".." for part in parts):
        raise UnsafePath(f"{text!r} leaves the home ('..'); only paths inside a home are allowed")
    return parts


def _components(path: str | os.PathLike) -> tuple[str, ...]:
    """The components of an absolute path (configuration's, never a request's)."""
    text = os.fspath(path)
    if not isinstance(text, str):
        raise TypeError(f"{path!r} is not a text path")
    if "\x00" in text:
        raise UnsafePath(f"{text!r} contains a NUL character")
    if not text.startswith("/"):
        raise UnsafePath(f"{text!r} is not an absolute path; only absolute paths are used here")
    parts = PurePosixPath(text).parts[1:]
    if ".." in parts:
        raise UnsafePath(f"Refusing {text}: it contains '..'")
    return parts


def _shown(parts: tuple[str, ...]) -> str:
    return "/" + "/".join(parts)


# -- opening paths -------------------------------------------------------------------------------


def _trusted_uids() -> set[int]:
    return {0, os.geteuid()}


def _link_is_trusted(dir_fd: int, link_st: os.stat_result) -> bool:
    """Whether a link was put there by root (or by our own user): it may then be followed."""
    dir_st = os.fstat(dir_fd)
    trusted = _trusted_uids()
    return (
        link_st.st_uid in trusted
        and dir_st.st_uid in trusted
        and not dir_st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    )


def _refuse_link(shown: str) -> UnsafePath:
    return UnsafePath(
        f"Refusing to use {shown}: it is a symbolic link. Ananke does not follow links in "
        "homes or the exchange; remove the link and try again."
    )


@contextlib.contextmanager
def opened(fd: int) -> Iterator[int]:
    """``fd``, closed at the end of the block."""
    try:
        yield fd
    finally:
        os.close(fd)


def open_dir_at(dir_fd: int, name: str, shown: str, *, trust_links: bool = False) -> int:
    """Open directory ``name`` below ``dir_fd``; a link is refused unless root's own.

    NotADirectoryError if it is something else than a directory or a link.
    """
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        # O_NOFOLLOW|O_DIRECTORY on a link gives ENOTDIR (or ELOOP): see which it was.
        if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
            raise
    st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    if not stat.S_ISLNK(st.st_mode):
        raise NotADirectoryError(errno.ENOTDIR, f"{shown} is not a directory")
    if trust_links and _link_is_trusted(dir_fd, st):
        return os.open(name, _DIR_FLAGS & ~os.O_NOFOLLOW, dir_fd=dir_fd)
    raise _refuse_link(shown)


def descend(
    fd: int,
    parts: tuple[str, ...],
    shown: Callable[[int], str],
    *,
    trust_links: int = 0,
    create_mode: int | None = None,
    owner: "Owner | None" = None,
    on_made: Callable[[int], None] | None = None,
) -> int:
    """A new descriptor of ``fd/parts...``, walked one component at a time.

    Links are trusted (see :func:`_link_is_trusted`) in the first ``trust_links``
    components only. With ``create_mode``, missing directories are made with ``owner``
    and that mode (umask does not apply), and ``on_made(i)`` is told of each; existing
    ones are left as they are. ``shown(i)`` is the path to name in errors for component
    ``i``.
    """
    fd = os.dup(fd)
    try:
        for i, name in enumerate(parts):
            trust = i < trust_links
            try:
                next_fd = open_dir_at(fd, name, shown(i), trust_links=trust)
            except FileNotFoundError:
                if create_mode is None:
                    raise
                try:
                    next_fd = make_dir_at(fd, name, owner, create_mode)
                except FileExistsError:  # made meanwhile
                    next_fd = open_dir_at(fd, name, shown(i), trust_links=trust)
                else:
                    fsync_quietly(fd)
                    if on_made is not None:
                        on_made(i)
            os.close(fd)
            fd = next_fd
        return fd
    except BaseException:
        os.close(fd)
        raise


def _open_root() -> int:
    return os.open("/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


def _open_parent(path: str | os.PathLike) -> tuple[int, str, str]:
    """A descriptor of the directory holding ``path``, the last name, and ``path`` to show."""
    parts = _components(path)
    if not parts:
        raise UnsafePath("Refusing to work on / itself")
    with opened(_open_root()) as root_fd:
        fd = descend(root_fd, parts[:-1], lambda i: _shown(parts[: i + 1]), trust_links=len(parts))
    return fd, parts[-1], _shown(parts)


@contextlib.contextmanager
def parent_dir(path: str | os.PathLike) -> Iterator[tuple[int, str, str]]:
    """(descriptor of the directory holding ``path``, last name, ``path`` to show), closed after."""
    fd, name, shown = _open_parent(path)
    try:
        yield fd, name, shown
    finally:
        os.close(fd)


def open_dir(path: str | os.PathLike) -> int:
    """A descriptor of the real directory ``path`` (UnsafePath if it is a link)."""
    with parent_dir(path) as (parent_fd, name, shown):
        return open_dir_at(parent_fd, name, shown)


def open_regular(path: str | os.PathLike) -> int:
    """A read descriptor of the regular file ``path`` (UnsafePath for a link or special file)."""
    with parent_dir(path) as (parent_fd, name, shown):
        fd = open_regular_at(parent_fd, name, shown)
        if fd is None:
            raise UnsafePath(
                f"Refusing to read {shown}: it is not a regular file (a link, a device, a "
                "FIFO or a file with several hard links)."
            )
        return fd


def open_regular_at(dir_fd: int, name: str, shown: str, *, hard_links: bool = False) -> int | None:
    """A read descriptor of regular file ``name``; None for anything else.

    A file with several hard links counts as something else unless ``hard_links``. The
    entry is looked at before it is opened (opening a device can have effects) and again
    through the descriptor (it may have been swapped meanwhile).
    """
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        if not _is_copyable(st, hard_links):
            return None
        fd = os.open(name, _READ_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return None
        raise
    st = os.fstat(fd)
    if not _is_copyable(st, hard_links):
        os.close(fd)
        return None
    os.set_blocking(fd, True)
    return fd


def _is_copyable(st: os.stat_result, hard_links: bool = False) -> bool:
    return stat.S_ISREG(st.st_mode) and (hard_links or st.st_nlink == 1)


def fsync_quietly(fd: int) -> None:
    with contextlib.suppress(OSError):  # some file systems cannot fsync directories
        os.fsync(fd)


# -- creating entries ----------------------------------------------------------------------------


def plain_mode(st_mode: int) -> int:
    """The permission bits kept on copies: no setuid, setgid or sticky bit."""
    return stat.S_IMODE(st_mode) & ~_SPECIAL_BITS


def set_owner(fd: int, owner: Owner | None) -> None:
    if owner is not None:
        st = os.fstat(fd)
        if (st.st_uid, st.st_gid) != (owner.uid, owner.gid):
            os.fchown(fd, owner.uid, owner.gid)


def _set_mode(fd: int, mode: int) -> None:
    if stat.S_IMODE(os.fstat(fd).st_mode) != mode:
        os.fchmod(fd, mode)


def make_dir_at(dir_fd: int, name: str, owner: Owner | None, mode: int = 0o700) -> int:
    """Create directory ``name`` (``owner``, ``mode``) and return its descriptor."""
    os.mkdir(name, 0o700, dir_fd=dir_fd)
    fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    try:
        set_owner(fd, owner)
        os.fchmod(fd, mode)  # after chown, which may clear bits; umask does not apply
    except BaseException:
        os.close(fd)
        raise
    return fd


def make_private_top(parent_fd: int, name: str, shown: str) -> int:
    """The temporary top directory of a copy: ours, 0700, so nobody reaches inside."""
    fd = make_dir_at(parent_fd, name, None, 0o700)
    st = os.fstat(fd)
    if st.st_uid != os.geteuid():  # swapped for somebody else's directory before we opened it
        os.close(fd)
        raise UnsafePath(f"{shown} was replaced while Ananke created it; try again")
    return fd


def temp_name(name: str) -> str:
    return f".{name[:150]}.partial-{secrets.token_hex(6)}"


def ensure_dir(path: str | os.PathLike, *, owner: Owner | None = None, mode: int = 0o700) -> int:
    """A descriptor of directory ``path``, made (with its missing parents) if missing.

    Directories made get ``owner`` and ``mode``; existing ones are left as they are.
    A link in the way is refused as everywhere else.
    """
    parts = _components(path)
    with opened(_open_root()) as root_fd:
        return descend(
            root_fd,
            parts,
            lambda i: _shown(parts[: i + 1]),
            trust_links=len(parts) - 1,
            create_mode=mode,
            owner=owner,
        )


# -- homes -----------------------------------------------------------------------------------------


def _open_base(path: str | os.PathLike) -> int:
    """Open a home (or the exchange root): an absolute path whose last component is no link."""
    path = os.fspath(path)
    if not os.path.isabs(path):
        raise ValueError(f"{path!r} must be an absolute path")
    try:
        return open_dir(path)
    except NotADirectoryError:
        raise UnsafePath(f"Refusing to use {path}: it is not a directory.") from None


def _walk(
    base_fd: int,
    parts: tuple[str, ...],
    where: str,
    *,
    create_mode: int | None = None,
    owner: Owner | None = None,
) -> int:
    """A new descriptor of ``base/parts...`` (no link followed); missing directories
    created if ``create_mode`` is set, with ``owner`` and that mode."""
    try:
        return descend(
            base_fd,
            parts,
            lambda i: os.path.join(where, *parts[: i + 1]),
            create_mode=create_mode,
            owner=owner,
        )
    except NotADirectoryError as exc:
        raise UnsafePath(
            f"{exc.strerror}: Ananke uses only real directories in users' homes; remove it "
            "and try again."
        ) from None


@contextlib.contextmanager
def _in_home(
    home: str | os.PathLike, relpath: str | os.PathLike, *, make_parents: bool = False
) -> Iterator[tuple[int | None, str, Owner]]:
    """(descriptor of the directory holding ``home/relpath``, the last name, the home's
    current owner); the descriptor is None if that directory is missing, unless
    ``make_parents`` (then missing ones are made 0755 with the home's owner)."""
    parts = split_relpath(relpath)
    with opened(_open_base(home)) as home_fd:
        owner = Owner.of(os.fstat(home_fd))
        try:
            dir_fd = _walk(
                home_fd,
                parts[:-1],
                os.fspath(home),
                create_mode=0o755 if make_parents else None,
                owner=owner,
            )
        except FileNotFoundError:
            dir_fd = None
        if dir_fd is None:
            yield None, parts[-1], owner
            return
        with opened(dir_fd):
            yield dir_fd, parts[-1], owner


def home_owner(home: str | os.PathLike) -> Owner:
    """The home's current uid and gid (the home itself must not be a link)."""
    with opened(_open_base(home)) as fd:
        return Owner.of(os.fstat(fd))


def ensure_home(home: str | os.PathLike, mode: int = 0o700) -> Owner:
    """Create ``home`` if missing (owned by the hub, ``mode``); return its current owner.

    An existing home keeps its owner and mode: systemd gives it to the dynamic user
    when the user's unit starts (systemd.exec(5), "StateDirectory="). Missing parents are
    created 0700, as systemd expects of ``/var/lib/private``.
    """
    home = Path(home)
    if not home.is_absolute():
        raise ValueError(f"{home} must be an absolute path")
    # The parent 0700 (``/var/lib/private``); directories above it, if missing, 0755 as
    # mkdir(1) would make them: labs of other users may have to traverse them.
    os.close(ensure_dir(home.parent.parent, mode=0o755))
    with opened(ensure_dir(home.parent, mode=0o700)) as parent_fd:
        try:
            fd = make_dir_at(parent_fd, home.name, None, mode)
        except FileExistsError:
            try:
                fd = open_dir_at(parent_fd, home.name, str(home))
            except NotADirectoryError:
                raise UnsafePath(f"Refusing to use {home}: it is not a directory.") from None
        with opened(fd):
            return Owner.of(os.fstat(fd))


def ensure_dir_in_home(
    home: str | os.PathLike, relpath: str | os.PathLike, mode: int = 0o755
) -> None:
    """Make sure ``home/relpath`` is a directory; new ones get the home's owner and ``mode``."""
    parts = split_relpath(relpath)
    with opened(_open_base(home)) as home_fd:
        owner = Owner.of(os.fstat(home_fd))
        os.close(_walk(home_fd, parts, os.fspath(home), create_mode=mode, owner=owner))


def write_file_in_home(
    home: str | os.PathLike,
    relpath: str | os.PathLike,
    data: bytes,
    mode: int = 0o644,
    *,
    replace: bool = True,
) -> None:
    """Write ``data`` to ``home/relpath`` atomically, owned by the home's current owner.

    Missing parent directories are created (0755, the home's owner). With
    ``replace=False`` an existing file is kept and FileExistsError raised: the file is
    created once, complete (a hard link of the finished temporary file, which fails if
    the name exists). A link at the final name is replaced, never followed.
    """
    with _in_home(home, relpath, make_parents=True) as (dir_fd, name, owner):
        _write_at(dir_fd, name, data, mode, owner, replace)


def _write_data(fd: int, data: bytes) -> int:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    return len(data)


def write_file(
    path: str | os.PathLike, data: bytes, mode: int = 0o600, *, replace: bool = True
) -> None:
    """Write ``data`` to the file ``path`` atomically, as this process's user (secrets,
    keys, state files of the hub and Kore).

    As :func:`write_file_in_home` does in a home: the directory is reached without
    following a link that root did not make (it must exist); the file is complete when
    it appears; ``replace=False`` creates it once (FileExistsError if the name exists,
    a link there included).
    """
    with parent_dir(os.path.abspath(path)) as (dir_fd, name, _):
        _write_at(dir_fd, name, data, mode, None, replace)


# errno values of link(2) meaning "this file system has no hard links".
_NO_HARD_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP}


def _write_at(
    dir_fd: int, name: str, data: bytes, mode: int, owner: Owner | None, replace: bool
) -> None:
    tmp = f".{name[:200]}.{secrets.token_hex(6)}.tmp"

    def fill(fd: int) -> int:
        return _write_data(fd, data)

    try:
        # Owner and mode before content: the file is never readable by the wrong people.
        write_file_at(dir_fd, tmp, fill, mode=mode, owner=owner)
        if replace:
            # rename(2) replaces the directory entry; a link there is replaced, not followed.
            os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        else:
            # link(2), unlike rename, fails if the name exists: nothing is ever replaced.
            try:
                os.link(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
            except OSError as exc:
                if exc.errno not in _NO_HARD_LINKS:
                    raise
                # No hard links on this file system: O_EXCL on the final name (created
                # once still holds; a reader may briefly see a partial file).
                write_file_at(dir_fd, name, fill, mode=mode, owner=owner)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=dir_fd)
    fsync_quietly(dir_fd)


def read_file_in_home(
    home: str | os.PathLike, relpath: str | os.PathLike, max_bytes: int = 1 << 20
) -> bytes | None:
    """The content of the regular file ``home/relpath``, or None if it does not exist.

    Links and special files (a FIFO would block the reader) are refused.
    """
    with _in_home(home, relpath) as (dir_fd, name, _):
        if dir_fd is None:
            return None
        try:
            fd = os.open(name, _READ_FLAGS, dir_fd=dir_fd)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise UnsafePath(
                    f"Refusing to read {home}/{relpath}: it is a symbolic link"
                ) from None
            raise
        with opened(fd):
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise UnsafePath(f"Refusing to read {home}/{relpath}: not a regular file")
            chunks, size = [], 0
            while size <= max_bytes:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
            if size > max_bytes:
                raise ValueError(f"{home}/{relpath} is larger than {max_bytes} bytes")
            return b"".join(chunks)


def exists_in_home(home: str | os.PathLike, relpath: str | os.PathLike) -> bool:
    """Whether ``home/relpath`` exists (as anything, a link included), without following links."""
    with _in_home(home, relpath) as (dir_fd, name, _):
        return dir_fd is not None and _exists_at(dir_fd, name)


def chown_like_home(home: str | os.PathLike, relpath: str | os.PathLike) -> None:
    """Give the existing ``home/relpath`` the home's current owner (the entry itself, no link).

    A regular file with several hard links is refused: it may be a file from outside the
    home linked in, which root must not hand over.
    """
    parts = split_relpath(relpath)
    with opened(_open_base(home)) as home_fd:
        owner = Owner.of(os.fstat(home_fd))
        with opened(_walk(home_fd, parts[:-1], os.fspath(home))) as dir_fd:
            st = os.stat(parts[-1], dir_fd=dir_fd, follow_symlinks=False)
            if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
                raise UnsafePath(
                    f"Refusing to chown {home}/{relpath}: it has {st.st_nlink} hard links"
                )
            if (st.st_uid, st.st_gid) != (owner.uid, owner.gid):
                os.chown(parts[-1], owner.uid, owner.gid, dir_fd=dir_fd, follow_symlinks=False)


# -- directories shared between users (the nbgrader exchange) ---------------------------------


def ensure_owned_dir(
    base: str | os.PathLike, relpath: str | os.PathLike, *, mode: int, owner: Owner
) -> Owner | None:
    """Make ``base/relpath`` a directory with ``owner`` and ``mode``; return its previous owner.

    ``base`` is a trusted directory (owned by the hub); the parents of ``relpath`` must
    exist. The directory is created if missing (None is returned then), else its owner
    and mode are corrected through its descriptor: a link put in its place is refused.
    """
    parts = split_relpath(relpath)
    with opened(_open_base(base)) as base_fd:
        where = os.fspath(base)
        with opened(_walk(base_fd, parts[:-1], where)) as parent_fd:
            try:
                os.mkdir(parts[-1], 0o700, dir_fd=parent_fd)
                created = True
            except FileExistsError:
                created = False
            with opened(_walk(parent_fd, parts[-1:], os.path.join(where, *parts[:-1]))) as fd:
                previous = None if created else Owner.of(os.fstat(fd))
                set_owner(fd, owner)
                # After chown: chown(2) may clear the setgid bit, which the mode sets again.
                _set_mode(fd, mode)
            return previous


def reown_tree(
    base: str | os.PathLike,
    relpath: str | os.PathLike,
    *,
    old: Owner,
    new: Owner,
    group_only: bool = False,
) -> int:
    """Below ``base/relpath``, give entries of the ``old`` owner to ``new``; return how many.

    With ``group_only`` only the group changes, for entries whose gid is ``old.gid``
    (students' submissions in the exchange keep their uid). Links are neither followed
    nor changed; entries owned by root and regular files with several hard links are
    skipped (they may have been linked in from elsewhere).
    """
    changed = 0
    parts = split_relpath(relpath)
    with opened(_open_base(base)) as base_fd:
        stack = [_walk(base_fd, parts, os.fspath(base))]
        while stack:
            dir_fd = stack.pop()
            with opened(dir_fd):
                for name in os.listdir(dir_fd):
                    st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                    if stat.S_ISLNK(st.st_mode) or st.st_uid == 0:
                        continue
                    if stat.S_ISDIR(st.st_mode):
                        try:
                            stack.append(open_dir_at(dir_fd, name, name))
                        except (UnsafePath, NotADirectoryError):
                            continue  # replaced by a link meanwhile
                    elif not _is_copyable(st):
                        continue
                    if group_only:
                        if st.st_gid == old.gid and st.st_gid != new.gid:
                            os.chown(name, -1, new.gid, dir_fd=dir_fd, follow_symlinks=False)
                            changed += 1
                    elif st.st_uid == old.uid and (st.st_uid, st.st_gid) != (new.uid, new.gid):
                        os.chown(name, new.uid, new.gid, dir_fd=dir_fd, follow_symlinks=False)
                        changed += 1
    return changed


# -- renaming without replacing ------------------------------------------------------------------

_RENAME_NOREPLACE = 1  # renameat2(2)
_libc = None


def _c():
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def _renameat2():
    return getattr(_c(), "renameat2", None)


def rename_noreplace(src_dir_fd: int, src: str, dst_dir_fd: int, dst: str) -> None:
    """Rename ``src`` to ``dst`` (both relative to their directories), never replacing.

    FileExistsError if ``dst`` exists: rename(2) alone would silently replace a file or
    an empty directory there (a user may have made one meanwhile).
    """
    func = _renameat2()
    if func is not None:
        result = func(src_dir_fd, os.fsencode(src), dst_dir_fd, os.fsencode(dst), _RENAME_NOREPLACE)
        if result == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise OSError(err, os.strerror(err), dst)
    # No RENAME_NOREPLACE on this file system: check, then rename (a small window only).
    try:
        os.stat(dst, dir_fd=dst_dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        os.rename(src, dst, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd)
        return
    raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), dst)


def _exists_at(dir_fd: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def refuse_existing(dir_fd: int, name: str, shown: str) -> None:
    if _exists_at(dir_fd, name):
        raise FileExistsError(
            errno.EEXIST, f"{shown} already exists; Ananke does not replace it", shown
        )


def publish(parent_fd: int, temp: str, top_fd: int, name: str) -> None:
    """Rename the finished temporary ``temp`` (open as ``top_fd``) to ``name``, durably."""
    st, top = os.stat(temp, dir_fd=parent_fd, follow_symlinks=False), os.fstat(top_fd)
    if (st.st_dev, st.st_ino) != (top.st_dev, top.st_ino):
        raise UnsafePath(f"{temp} was replaced while Ananke filled it; nothing was published")
    rename_noreplace(parent_fd, temp, parent_fd, name)
    fsync_quietly(parent_fd)


def discard(parent_fd: int, temp: str) -> None:
    """Remove a temporary entry after a failure (best effort, nothing followed)."""
    with contextlib.suppress(OSError):
        st = os.stat(temp, dir_fd=parent_fd, follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(temp, dir_fd=parent_fd)
        else:
            os.unlink(temp, dir_fd=parent_fd)


# -- walking trees -------------------------------------------------------------------------------


@dataclass
class Entry:
    """An entry met by :func:`walk`: ``rel`` is its '/'-separated path below the top."""

    rel: str
    name: str
    parent_fd: int
    st: os.stat_result
    fd: int | None = None  # a directory's descriptor while it is visited


def walk(
    top_fd: int,
    skipped: Callable[[str], None],
    *,
    avoid: tuple[int, int] | None = None,
    hard_links: bool = False,
    ignore: Callable[[str, list[str]], Iterable[str]] | None = None,
    rel: str = "",
    depth: int = 0,
) -> Iterator[tuple[str, Entry]]:
    """Events ("dir", e), then its content, then ("end", e); ("file", e) for regular files.

    Names are visited in sorted order. Links, special files and (unless ``hard_links``)
    hard-linked files are passed to ``skipped`` (their relative path). ``avoid`` is a
    (dev, ino) not to enter (the copy being made, when it lies inside the tree).
    ``ignore(rel, names)`` names entries of directory ``rel`` to pass over silently.
    """
    if depth > MAX_DEPTH:
        raise UnsafePath(f"{rel} is more than {MAX_DEPTH} directories deep; not copied")
    names = sorted(os.listdir(top_fd))
    if ignore is not None:
        left_out = set(ignore(rel, names))
        names = [name for name in names if name not in left_out]
    for name in names:
        path = f"{rel}/{name}" if rel else name
        try:
            st = os.stat(name, dir_fd=top_fd, follow_symlinks=False)
        except FileNotFoundError:
            continue  # removed meanwhile: a lab may be running
        if stat.S_ISDIR(st.st_mode):
            if avoid is not None and (st.st_dev, st.st_ino) == avoid:
                continue
            try:
                fd = os.open(name, _DIR_FLAGS, dir_fd=top_fd)
            except FileNotFoundError:
                continue
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                skipped(path)  # replaced by a link meanwhile
                continue
            with opened(fd):
                entry = Entry(path, name, top_fd, os.fstat(fd), fd)
                yield "dir", entry
                yield from walk(
                    fd,
                    skipped,
                    avoid=avoid,
                    hard_links=hard_links,
                    ignore=ignore,
                    rel=path,
                    depth=depth + 1,
                )
                yield "end", entry
        elif _is_copyable(st, hard_links):
            yield "file", Entry(path, name, top_fd, st)
        else:
            skipped(path)


def _copy_data(src_fd: int, dest_fd: int, limit: int | None = None) -> int:
    copied = 0
    while limit is None or copied < limit:
        want = _CHUNK if limit is None else min(_CHUNK, limit - copied)
        chunk = os.read(src_fd, want)
        if not chunk:
            break
        copied += _write_data(dest_fd, chunk)
    return copied


def write_file_at(
    dir_fd: int,
    name: str,
    fill: Callable[[int], int],
    *,
    mode: int,
    owner: Owner | None,
    times_ns: tuple[int, int] | None = None,
) -> int:
    """Create ``name`` (must not exist), owner and mode first, then ``fill(fd)``; fsynced."""
    fd = os.open(name, _CREATE_FLAGS, 0o600, dir_fd=dir_fd)
    try:
        set_owner(fd, owner)
        os.fchmod(fd, mode)
        size = fill(fd)
        if times_ns is not None:
            os.utime(fd, ns=times_ns)
        os.fsync(fd)
        return size
    finally:
        os.close(fd)


def _finish_dir(fd: int, st: os.stat_result, owner: Owner | None) -> None:
    set_owner(fd, owner)
    os.fchmod(fd, plain_mode(st.st_mode))
    os.utime(fd, ns=(st.st_atime_ns, st.st_mtime_ns))
    fsync_quietly(fd)


# -- the public functions ------------------------------------------------------------------------


def copy_tree(src: Path, dest: Path, *, owner: Owner | None = None) -> CopyReport:
    """Copy directory ``src`` to the new directory ``dest``, following no link.

    Directories and regular files are copied with their modes (minus setuid, setgid
    and sticky bits) and times; everything made gets ``owner`` (else this process's user).
    Links, devices, FIFOs, sockets and hard-linked files are skipped and listed in the
    report. ``dest`` appears complete or not at all (FileExistsError if it exists);
    ``src`` must be a real directory (UnsafePath if it is a link).
    """
    report = CopyReport()
    with opened(open_dir(src)) as src_fd, parent_dir(dest) as (parent_fd, name, shown):
        refuse_existing(parent_fd, name, shown)
        temp = temp_name(name)
        top_fd = make_private_top(parent_fd, temp, shown)
        try:
            with opened(top_fd):
                top_st = os.fstat(top_fd)
                avoid = (top_st.st_dev, top_st.st_ino)
                _copy_into(src_fd, top_fd, _CopyRules(owner=owner), report, avoid=avoid)
                _finish_dir(top_fd, os.fstat(src_fd), owner)
                publish(parent_fd, temp, top_fd, name)
        except BaseException:
            discard(parent_fd, temp)
            raise
    return report


@dataclass(frozen=True)
class _CopyRules:
    owner: Owner | None = None
    hard_links: bool = False  # copy regular files with several links too
    ignore: Callable[[str, list[str]], Iterable[str]] | None = None
    modes: tuple[int, int] | None = None  # (dirs, files) instead of the sources' modes and times


def _copy_into(src_fd: int, dest_fd: int, rules: _CopyRules, report: CopyReport, *, avoid) -> None:
    dests = [dest_fd]
    events = walk(
        src_fd, report.skipped.append, avoid=avoid, hard_links=rules.hard_links, ignore=rules.ignore
    )
    try:
        with contextlib.closing(events):
            for kind, entry in events:
                if kind == "dir":
                    dests.append(make_dir_at(dests[-1], entry.name, rules.owner, 0o700))
                elif kind == "end":
                    fd = dests.pop()
                    with opened(fd):
                        if rules.modes is None:
                            _finish_dir(fd, entry.st, rules.owner)
                        else:
                            _set_mode(fd, rules.modes[0])
                else:
                    _copy_entry(entry, dests[-1], rules, report)
    finally:
        for fd in dests[1:]:
            os.close(fd)


def _copy_entry(entry: Entry, dest_dir_fd: int, rules: _CopyRules, report: CopyReport) -> None:
    src_fd = open_regular_at(entry.parent_fd, entry.name, entry.rel, hard_links=rules.hard_links)
    if src_fd is None:  # changed into something else meanwhile
        report.skipped.append(entry.rel)
        return
    with opened(src_fd):
        st = os.fstat(src_fd)
        size = write_file_at(
            dest_dir_fd,
            entry.name,
            lambda fd: _copy_data(src_fd, fd),
            mode=plain_mode(st.st_mode) if rules.modes is None else rules.modes[1],
            owner=rules.owner,
            times_ns=(st.st_atime_ns, st.st_mtime_ns) if rules.modes is None else None,
        )
    report.files += 1
    report.bytes += size


def copy_into(
    src: str | os.PathLike,
    dest: str | os.PathLike,
    *,
    ignore: Callable[[str, list[str]], Iterable[str]] | None = None,
    follow_top: bool = False,
    dir_mode: int = 0o700,
    file_mode: int = 0o600,
) -> CopyReport:
    """Copy the contents of directory ``src`` into the existing directory ``dest``.

    For a process copying as itself (a lab's exchange plugins, its sandbox): ``src`` is
    opened by its path (``follow_top``: even if it is a link; else a link there is an
    OSError, ELOOP or ENOTDIR); nothing below it is followed: links and special files
    are skipped and listed in the report. Files with several hard links are copied
    (the user's own). New directories get ``dir_mode`` and files ``file_mode``, until
    the caller sets their final modes; ``dest`` and everything below it is reached
    through descriptors. ``ignore`` is a :func:`shutil.copytree`-style callable
    (a directory's path below ``src``, its names).
    """
    src = os.fspath(src)
    rules = _CopyRules(
        hard_links=True,
        ignore=None if ignore is None else lambda rel, names: ignore(_join(src, rel), names),
        modes=(dir_mode, file_mode),
    )
    report = CopyReport()
    flags = _DIR_FLAGS & ~os.O_NOFOLLOW if follow_top else _DIR_FLAGS
    with opened(os.open(src, flags)) as src_fd, opened(os.open(dest, _DIR_FLAGS)) as dest_fd:
        dest_st = os.fstat(dest_fd)
        _copy_into(src_fd, dest_fd, rules, report, avoid=(dest_st.st_dev, dest_st.st_ino))
        fsync_quietly(dest_fd)
    return report


def _join(top: str, rel: str) -> str:
    return os.path.join(top, rel) if rel else top


def set_tree_modes(top: str | os.PathLike, dir_mode: int, file_mode: int) -> None:
    """Give every directory of the tree ``top`` ``dir_mode`` and every file ``file_mode``
    (``top`` last); links and special files are left alone, nothing is followed."""
    with opened(os.open(top, _DIR_FLAGS)) as top_fd:
        events = walk(top_fd, lambda rel: None, hard_links=True)
        with contextlib.closing(events):
            for kind, entry in events:
                if kind == "end":
                    _set_mode(entry.fd, dir_mode)
                elif kind == "file":
                    os.chmod(entry.name, file_mode, dir_fd=entry.parent_fd, follow_symlinks=False)
        _set_mode(top_fd, dir_mode)


def copy_file(src: Path, dest: Path, *, owner: Owner | None = None) -> int:
    """Copy regular file ``src`` to the new file ``dest``; returns the bytes copied.

    ``src`` must be a regular file with one link (UnsafePath for a link, a special
    file or a hard link); ``dest`` must not exist (FileExistsError). The copy is
    written to a temporary name, fsynced and renamed, with ``owner`` and ``src``'s mode
    (minus setuid/setgid/sticky).
    """
    with opened(open_regular(src)) as src_fd, parent_dir(dest) as (parent_fd, name, shown):
        refuse_existing(parent_fd, name, shown)
        st = os.fstat(src_fd)
        return write_new_file(
            parent_fd,
            name,
            lambda fd: _copy_data(src_fd, fd),
            mode=plain_mode(st.st_mode),
            owner=owner,
            times_ns=(st.st_atime_ns, st.st_mtime_ns),
        )


def write_new_file(parent_fd: int, name: str, fill: Callable[[int], int], **attrs) -> int:
    """Make file ``name`` in ``parent_fd`` complete or not at all (temp, fsync, rename);
    ``attrs`` are :func:`write_file_at`'s (``mode``, ``owner``, ``times_ns``)."""
    temp = temp_name(name)
    try:
        size = write_file_at(parent_fd, temp, fill, **attrs)
        rename_noreplace(parent_fd, temp, parent_fd, name)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp, dir_fd=parent_fd)
        raise
    fsync_quietly(parent_fd)
    return size


def remove_tree(path: Path) -> bool:
    """Remove the file or directory tree ``path``; False if nothing was there.

    A link is removed itself, never what it points to; links inside the tree are
    removed the same way (``shutil.rmtree`` works on descriptors). Idempotent: a
    missing parent counts as nothing there.
    """
    try:
        parent_fd, name, shown = _open_parent(path)
    except FileNotFoundError:
        return False
    with opened(parent_fd):
        removed = _remove_entry(parent_fd, name, shown)
        if removed:
            fsync_quietly(parent_fd)
        return removed


def _remove_entry(dir_fd: int, name: str, shown: str) -> bool:
    """Remove entry ``name`` of ``dir_fd`` (a whole tree for a directory); False if absent."""
    for _ in range(5):
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        try:
            if stat.S_ISDIR(st.st_mode):
                shutil.rmtree(name, dir_fd=dir_fd)
            else:
                os.unlink(name, dir_fd=dir_fd)
        except OSError as exc:
            # rmtree refuses a link put in place of the directory meanwhile, and entries
            # may vanish under a running lab: look again.
            if exc.errno != errno.ENOENT and _kind_at(dir_fd, name) == stat.S_IFMT(st.st_mode):
                raise
            continue
        return True
    raise UnsafePath(f"{shown} keeps changing while Ananke removes it; try again")


def _kind_at(dir_fd: int, name: str) -> int | None:
    try:
        return stat.S_IFMT(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except FileNotFoundError:
        return None


def remove_leftovers(dest: Path) -> int:
    """Remove the temporaries (``.<name>.partial-*``) a crashed copy to ``dest`` left.

    For operations resumed after a crash: the copy is then simply made again. Returns
    how many went; a missing parent directory has none.
    """
    try:
        parent_fd, name, shown = _open_parent(dest)
    except FileNotFoundError:
        return 0
    prefix = f".{name[:150]}.partial-"
    removed = 0
    with opened(parent_fd):
        for entry in os.listdir(parent_fd):
            if entry.startswith(prefix) and _remove_entry(parent_fd, entry, shown):
                removed += 1
        if removed:
            fsync_quietly(parent_fd)
    return removed


def move_aside(path: Path, aside_dir: Path, *, owner: Owner | None = None) -> Path:
    """Move ``path`` into ``aside_dir`` as ``<name>-<UTC time>`` (made unique); return it.

    ``aside_dir`` (and missing parents) are made 0700 with ``owner``. The move is a
    rename, so both must be on one file system (they are: both are in one home).
    A link at ``path`` is moved as a link.
    """
    with parent_dir(path) as (parent_fd, name, shown):
        if not _exists_at(parent_fd, name):
            raise FileNotFoundError(errno.ENOENT, f"{shown} does not exist", shown)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        base = f"{name[:200]}-{stamp}"
        with opened(ensure_dir(aside_dir, owner=owner, mode=0o700)) as aside_fd:
            for n in range(1, 1000):
                new = base if n == 1 else f"{base}-{n}"
                try:
                    rename_noreplace(parent_fd, name, aside_fd, new)
                except FileExistsError:
                    continue
                fsync_quietly(aside_fd)
                fsync_quietly(parent_fd)
                return Path(aside_dir) / new
    raise FileExistsError(errno.EEXIST, f"No free name for {shown} in {aside_dir}", shown)


def clear_dir(path: Path, keep: set[str] | frozenset[str] = frozenset()) -> int:
    """Remove every entry of directory ``path`` but the names in ``keep``; return how many.

    Nothing is followed: a link in the directory is removed itself. A missing
    directory has nothing to clear (0); a link at ``path`` is refused (UnsafePath).
    """
    try:
        fd = open_dir(path)
    except FileNotFoundError:
        return 0
    removed = 0
    with opened(fd):
        for name in os.listdir(fd):
            if name in keep:
                continue
            if _remove_entry(fd, name, os.path.join(os.fspath(path), name)):
                removed += 1
        fsync_quietly(fd)
    return removed


def tree_size(path: Path) -> tuple[int, int]:
    """(files, bytes) of the regular files a copy of ``path`` would hold; nothing followed.

    ``path`` may be a directory or a regular file; a link there is refused.
    """
    with parent_dir(path) as (parent_fd, name, shown):
        st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
        if stat.S_ISLNK(st.st_mode):
            raise _refuse_link(shown)
        if not stat.S_ISDIR(st.st_mode):
            return (1, st.st_size) if _is_copyable(st) else (0, 0)
        files = size = 0
        with opened(open_dir_at(parent_fd, name, shown)) as fd:
            events = walk(fd, lambda rel: None)
            with contextlib.closing(events):
                for kind, entry in events:
                    if kind == "file":
                        files += 1
                        size += entry.st.st_size
        return files, size


# -- confined work for path-based libraries ----------------------------------------------------

# setgroups(2) numbers, to call the kernel directly: glibc's setgroups() changes the
# groups of every thread of the process, the raw system call only the calling thread's.
_SYS_SETGROUPS = {"x86_64": 116, "aarch64": 159, "arm64": 159, "riscv64": 159, "ppc64le": 81}
_CLONE_FS = 0x200  # unshare(2): own root directory and working directory for this thread


def _check(result: int, what: str) -> None:
    if result == -1:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _thread_ids(status_fd: int) -> dict[str, list[str]]:
    text = os.pread(status_fd, 8192, 0).decode()
    return {
        key: value.split()
        for key, _, value in (line.partition(":") for line in text.splitlines())
        if key in ("Uid", "Gid", "Groups")
    }


def _confine_thread(home_fd: int, owner: Owner) -> None:
    """Make the calling thread see ``home_fd`` as ``/`` and access files as ``owner``.

    * unshare(CLONE_FS) + chroot: this thread's root directory is the home, so no path
      it opens, links included, resolves outside it (unshare(2), chroot(2)). The rest of
      the hub keeps its own root: CLONE_FS gives this thread a private copy first.
    * setfsuid/setfsgid and no supplementary groups: permission checks and new files
      are the home owner's (setfsuid(2)); the kernel drops root's file capabilities for
      a non-zero fsuid, so a hard link to a foreign file is not writable either.
    The thread must end after the work: nothing here is undone.
    """
    c = _c()
    # This thread's status, opened before /proc is out of reach (proc(5)).
    status_fd = os.open("/proc/thread-self/status", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _check(c.unshare(_CLONE_FS), "unshare(CLONE_FS)")
        os.fchdir(home_fd)
        os.chroot(".")
        os.chdir("/")
        if owner.uid != 0 or owner.gid != 0:  # else a new home the hub made, nobody else's
            _take_fs_identity(c, owner, status_fd)
    finally:
        os.close(status_fd)


def _take_fs_identity(c, owner: Owner, status_fd: int) -> None:
    if os.getgroups():
        number = _SYS_SETGROUPS.get(platform.machine())
        if number is None:
            raise OSError(errno.ENOSYS, f"cannot drop groups per thread on {platform.machine()}")
        _check(c.syscall(number, 0, None), "setgroups")
    c.setfsgid(owner.gid)
    c.setfsuid(owner.uid)
    ids = _thread_ids(status_fd)
    # Uid:/Gid: list real, effective, saved and file-system ids (proc(5)).
    if ids["Uid"][3] != str(owner.uid) or ids["Gid"][3] != str(owner.gid) or ids.get("Groups"):
        raise OSError(errno.EPERM, f"could not take the file-system identity {owner}: {ids}")


def run_in_home(home: str | os.PathLike, work: Callable[[Path], T]) -> T:
    """Run ``work(root)`` with file access confined to ``home``, as the home's owner.

    For code that opens files by path itself (SQLite). ``root`` is the home as the work
    sees it: ``/`` when the hub runs as root (the work runs in its own thread, chrooted
    to the home with the owner's file-system uid/gid, see :func:`_confine_thread`), else
    the home's path (a hub that is not root can only reach what its own user can).

    Modules the work imports lazily must be imported before: inside the home the
    interpreter's files are out of reach. Child processes started by the work inherit
    the confinement.
    """
    home_fd = _open_base(home)
    try:
        if os.geteuid() != 0:
            return work(Path(home))
        owner = Owner.of(os.fstat(home_fd))
        outcome: dict = {}

        def confined():
            try:
                _confine_thread(home_fd, owner)
                outcome["value"] = work(Path("/"))
            except BaseException as exc:  # handed to the caller's thread
                outcome["error"] = exc

        thread = threading.Thread(target=confined, name="ananke-in-home", daemon=True)
        thread.start()
        thread.join()
        if "error" in outcome:
            raise outcome["error"]
        return outcome["value"]
    finally:
        os.close(home_fd)
