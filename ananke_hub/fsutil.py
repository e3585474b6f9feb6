"""Files the hub writes into users' homes, safely, while their labs may be running.

The hub runs as root; homes belong to systemd dynamic users whose uid is whatever
systemd picked at the last start of the unit (systemd.exec(5), "DynamicUser=",
"StateDirectory=": the state directory is chowned to that uid at every start). Three
rules follow, and every function here keeps them:

* **Ownership.** Whatever the hub creates in a home gets the home's *current* uid and
  gid, read from the home directory at write time. The hub never runs a second process
  as the user: starting a dynamic user's command would chown the whole home to a fresh
  uid and lock the running lab out of its own files (the seed's "Dynamic user details").
* **No link following.** A home belongs to its user, who can put symbolic links in it.
  Paths are walked one component at a time from a directory file descriptor with
  ``O_NOFOLLOW``; a link anywhere on the way is refused (:class:`UnsafePath`), so root
  never writes to ``/etc`` or into another user's home on a user's behalf.
* **Atomic writes.** Files are written to a temporary name in the same directory,
  fsynced, then renamed over the old one: a reader sees the old content or the new,
  never a partial file.

Relative paths are checked before use: absolute paths and ``..`` are refused.

:func:`run_in_home` is for libraries that take a path and open it themselves (SQLite,
for nbgrader's gradebook): the work runs in a thread confined to the home with the
home owner's file-system identity, so links in the home cannot lead it out.
"""

import contextlib
import ctypes
import errno
import os
import platform
import secrets
import stat
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TypeVar

T = TypeVar("T")

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class UnsafePath(PermissionError):
    """A path the hub refuses to use: absolute, with ``..``, or through a link."""


@dataclass(frozen=True)
class Owner:
    uid: int
    gid: int

    @classmethod
    def of(cls, st: os.stat_result) -> "Owner":
        return cls(st.st_uid, st.st_gid)


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


# -- directory descriptors -------------------------------------------------------------------


def _why_not_dir(name: str, dir_fd: int | None) -> str:
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        return "cannot be inspected"
    if stat.S_ISLNK(st.st_mode):
        return "is a symbolic link"
    return "is not a directory"


def _open_dir(name: str, dir_fd: int | None, where: str) -> int:
    """Open directory ``name`` (relative to ``dir_fd``) without following a link."""
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        # O_NOFOLLOW|O_DIRECTORY on a link gives ENOTDIR (or ELOOP): say which it was.
        if exc.errno in (errno.ENOTDIR, errno.ELOOP):
            raise UnsafePath(
                f"Refusing to use {where}: it {_why_not_dir(name, dir_fd)}. Ananke does not "
                "follow links in users' homes; remove it and try again."
            ) from None
        raise


def _open_base(path: str | os.PathLike) -> int:
    """Open a home (or the exchange root): an absolute path whose last component is no link."""
    path = os.fspath(path)
    if not os.path.isabs(path):
        raise ValueError(f"{path!r} must be an absolute path")
    return _open_dir(path, None, path)


@contextlib.contextmanager
def _opened(fd: int) -> Iterator[int]:
    try:
        yield fd
    finally:
        os.close(fd)


def _fix_owner(fd: int, owner: Owner) -> None:
    st = os.fstat(fd)
    if (st.st_uid, st.st_gid) != (owner.uid, owner.gid):
        os.fchown(fd, owner.uid, owner.gid)


def _fix_mode(fd: int, mode: int) -> None:
    if stat.S_IMODE(os.fstat(fd).st_mode) != mode:
        os.fchmod(fd, mode)


def _walk(
    base_fd: int,
    parts: tuple[str, ...],
    where: str,
    *,
    create_mode: int | None = None,
    owner: Owner | None = None,
) -> int:
    """A new descriptor of ``base/parts...``; missing directories created if create_mode is set.

    Created directories get ``owner`` and ``create_mode`` (umask does not apply); existing
    ones are left as they are.
    """
    fd = os.dup(base_fd)
    try:
        for i, name in enumerate(parts):
            shown = os.path.join(where, *parts[: i + 1])
            created = False
            if create_mode is not None:
                try:
                    os.mkdir(name, 0o700, dir_fd=fd)
                    created = True
                except FileExistsError:
                    pass
            next_fd = _open_dir(name, fd, shown)
            os.close(fd)
            fd = next_fd
            if created:
                if owner is not None:
                    _fix_owner(fd, owner)
                _fix_mode(fd, create_mode)
        return fd
    except BaseException:
        os.close(fd)
        raise


def _fsync_dir(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.fsync(fd)


# -- homes -----------------------------------------------------------------------------------


def home_owner(home: str | os.PathLike) -> Owner:
    """The home's current uid and gid (the home itself must not be a link)."""
    with _opened(_open_base(home)) as fd:
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
    home.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    created = False
    try:
        os.mkdir(home, 0o700)
        created = True
    except FileExistsError:
        pass
    with _opened(_open_base(home)) as fd:
        if created:
            _fix_mode(fd, mode)
        return Owner.of(os.fstat(fd))


def ensure_dir_in_home(
    home: str | os.PathLike, relpath: str | os.PathLike, mode: int = 0o755
) -> None:
    """Make sure ``home/relpath`` is a directory; new ones get the home's owner and ``mode``."""
    parts = split_relpath(relpath)
    with _opened(_open_base(home)) as home_fd:
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
    parts = split_relpath(relpath)
    with _opened(_open_base(home)) as home_fd:
        owner = Owner.of(os.fstat(home_fd))
        where = os.fspath(home)
        dir_fd = _walk(home_fd, parts[:-1], where, create_mode=0o755, owner=owner)
        with _opened(dir_fd):
            _write_at(dir_fd, parts[-1], data, mode, owner, replace)


def _write_at(dir_fd: int, name: str, data: bytes, mode: int, owner: Owner, replace: bool) -> None:
    tmp = f".{name[:200]}.{secrets.token_hex(6)}.tmp"
    fd = os.open(
        tmp,
        os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
        0o600,
        dir_fd=dir_fd,
    )
    try:
        with _opened(fd):
            # Owner and mode before content: the file is never readable by the wrong people.
            _fix_owner(fd, owner)
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        if replace:
            # rename(2) replaces the directory entry; a link there is replaced, not followed.
            os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        else:
            os.link(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=dir_fd)
    _fsync_dir(dir_fd)


def read_file_in_home(
    home: str | os.PathLike, relpath: str | os.PathLike, max_bytes: int = 1 << 20
) -> bytes | None:
    """The content of the regular file ``home/relpath``, or None if it does not exist.

    Links and special files (a FIFO would block the reader) are refused.
    """
    parts = split_relpath(relpath)
    with _opened(_open_base(home)) as home_fd:
        try:
            dir_fd = _walk(home_fd, parts[:-1], os.fspath(home))
        except FileNotFoundError:
            return None
        with _opened(dir_fd):
            try:
                fd = os.open(
                    parts[-1],
                    os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                    dir_fd=dir_fd,
                )
            except FileNotFoundError:
                return None
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise UnsafePath(
                        f"Refusing to read {home}/{relpath}: it is a symbolic link"
                    ) from None
                raise
            with _opened(fd):
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
    parts = split_relpath(relpath)
    with _opened(_open_base(home)) as home_fd:
        try:
            dir_fd = _walk(home_fd, parts[:-1], os.fspath(home))
        except FileNotFoundError:
            return False
        with _opened(dir_fd):
            try:
                os.stat(parts[-1], dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                return False
            return True


def chown_like_home(home: str | os.PathLike, relpath: str | os.PathLike) -> None:
    """Give the existing ``home/relpath`` the home's current owner (the entry itself, no link).

    A regular file with several hard links is refused: it may be a file from outside the
    home linked in, which root must not hand over.
    """
    parts = split_relpath(relpath)
    with _opened(_open_base(home)) as home_fd:
        owner = Owner.of(os.fstat(home_fd))
        with _opened(_walk(home_fd, parts[:-1], os.fspath(home))) as dir_fd:
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
    with _opened(_open_base(base)) as base_fd:
        where = os.fspath(base)
        with _opened(_walk(base_fd, parts[:-1], where)) as parent_fd:
            try:
                os.mkdir(parts[-1], 0o700, dir_fd=parent_fd)
                created = True
            except FileExistsError:
                created = False
            with _opened(_open_dir(parts[-1], parent_fd, os.path.join(where, *parts))) as fd:
                previous = None if created else Owner.of(os.fstat(fd))
                _fix_owner(fd, owner)
                # After chown: chown(2) may clear the setgid bit, which the mode sets again.
                _fix_mode(fd, mode)
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
    with _opened(_open_base(base)) as base_fd:
        stack = [_walk(base_fd, parts, os.fspath(base))]
        while stack:
            dir_fd = stack.pop()
            with _opened(dir_fd):
                for name in os.listdir(dir_fd):
                    st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                    if stat.S_ISLNK(st.st_mode) or st.st_uid == 0:
                        continue
                    if stat.S_ISDIR(st.st_mode):
                        try:
                            stack.append(_open_dir(name, dir_fd, name))
                        except UnsafePath:
                            continue  # replaced by a link meanwhile
                    elif not stat.S_ISREG(st.st_mode) or st.st_nlink > 1:
                        continue
                    if group_only:
                        if st.st_gid == old.gid and st.st_gid != new.gid:
                            os.chown(name, -1, new.gid, dir_fd=dir_fd, follow_symlinks=False)
                            changed += 1
                    elif st.st_uid == old.uid and (st.st_uid, st.st_gid) != (new.uid, new.gid):
                        os.chown(name, new.uid, new.gid, dir_fd=dir_fd, follow_symlinks=False)
                        changed += 1
    return changed


# -- confined work for path-based libraries ----------------------------------------------------

_libc = None

# setgroups(2) numbers, to call the kernel directly: glibc's setgroups() changes the
# groups of every thread of the process, the raw system call only the calling thread's.
_SYS_SETGROUPS = {"x86_64": 116, "aarch64": 159, "arm64": 159, "riscv64": 159, "ppc64le": 81}
_CLONE_FS = 0x200  # unshare(2): own root directory and working directory for this thread


def _c():
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


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
