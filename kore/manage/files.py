"""The file work of course management: copy, remove, move aside, clear and measure trees.

Kore runs as root and works in graders' homes and in the exchange, where users can
put symbolic links, FIFOs and hard links while their labs run. Every function here
keeps the same rules (the ones of :mod:`ananke_hub.fsutil`, for whole trees):

* **No link is followed.** Paths are opened one component at a time from a directory
  descriptor with ``O_NOFOLLOW``. Above the entry a function is given, a link is
  accepted only where nobody but root (or Kore's own user) could have made it: the
  link and its directory belong to root and the directory is not writable by others
  (systemd's ``/var/lib/<user>`` links to ``/var/lib/private/<user>`` are such links).
  The entry itself and everything below it is never followed: links, devices, FIFOs
  and sockets found in a tree are skipped and reported, never copied nor opened.
* **Nothing half-made is visible.** Copies are built in a temporary sibling
  (``.<name>.partial-<hex>``), fsynced, and renamed to their name in one step,
  refusing to replace anything already there (``renameat2(RENAME_NOREPLACE)``).
* **New files get their owner through their descriptor** (``fchown``) before anybody
  else can reach them: the temporary top directory stays root's (0700) until it is
  complete.
* Regular files with several hard links are not copied: in a user's home such a file
  may be a file from elsewhere linked in (compare ``fsutil.reown_tree``).

Callers pass paths derived from :class:`~ananke_hub.courses.layout.CourseLayout`, never
from a request. No subprocess is started: ``os`` and ``shutil`` only (``shutil.rmtree``
works on descriptors on Linux and does not follow links, see its
``avoids_symlink_attacks``).
"""

import contextlib
import ctypes
import errno
import os
import secrets
import shutil
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from ananke_hub.fsutil import Owner

__all__ = [
    "CopyReport",
    "Owner",
    "UnsafePath",
    "clear_dir",
    "copy_file",
    "copy_tree",
    "move_aside",
    "remove_leftovers",
    "remove_tree",
    "tree_size",
]

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: a FIFO put in place of a checked file must not block the reader.
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_SPECIAL_BITS = stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX
_CHUNK = 1 << 20

#: Deeper trees are refused (a course tree is a few levels deep; this bounds recursion).
MAX_DEPTH = 128


class UnsafePath(ValueError):
    """A path Kore refuses to use: a link, a device, a path leaving its root, a ``..``."""


@dataclass
class CopyReport:
    """What a copy (or an extraction) made: regular files, their bytes, what it left out.

    ``skipped`` holds paths relative to the copied tree ('/'-separated) of links,
    special files and hard-linked files, which are never copied.
    """

    files: int = 0
    bytes: int = 0
    skipped: list[str] = field(default_factory=list)


# -- opening paths -------------------------------------------------------------------------------


def _components(path: str | os.PathLike) -> tuple[str, ...]:
    text = os.fspath(path)
    if not isinstance(text, str):
        raise TypeError(f"{path!r} is not a text path")
    if "\x00" in text:
        raise UnsafePath(f"{text!r} contains a NUL character")
    if not text.startswith("/"):
        raise UnsafePath(f"{text!r} is not an absolute path; Kore only works on absolute paths")
    parts = PurePosixPath(text).parts[1:]
    if ".." in parts:
        raise UnsafePath(f"Refusing {text}: it contains '..'")
    return parts


def _shown(parts: tuple[str, ...]) -> str:
    return "/" + "/".join(parts)


def _trusted_uids() -> set[int]:
    return {0, os.geteuid()}


def _link_is_trusted(dir_fd: int, link_st: os.stat_result) -> bool:
    """Whether a link was put there by root (or by Kore's user): it may then be followed."""
    dir_st = os.fstat(dir_fd)
    trusted = _trusted_uids()
    return (
        link_st.st_uid in trusted
        and dir_st.st_uid in trusted
        and not dir_st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    )


def _refuse_link(shown: str) -> UnsafePath:
    return UnsafePath(
        f"Refusing to use {shown}: it is a symbolic link. Kore does not follow links in "
        "homes or the exchange; remove the link and try again."
    )


def open_dir_at(dir_fd: int, name: str, shown: str, *, trust_links: bool = False) -> int:
    """Open directory ``name`` below ``dir_fd``; a link is refused unless root's own."""
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
            raise
    st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    if not stat.S_ISLNK(st.st_mode):
        raise NotADirectoryError(errno.ENOTDIR, f"{shown} is not a directory")
    if trust_links and _link_is_trusted(dir_fd, st):
        return os.open(name, _DIR_FLAGS & ~os.O_NOFOLLOW, dir_fd=dir_fd)
    raise _refuse_link(shown)


def _open_parent(path: str | os.PathLike) -> tuple[int, str, str]:
    """A descriptor of the directory holding ``path``, the last name, and ``path`` to show."""
    parts = _components(path)
    if not parts:
        raise UnsafePath("Refusing to work on / itself")
    fd = os.open("/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for i, name in enumerate(parts[:-1]):
            next_fd = open_dir_at(fd, name, _shown(parts[: i + 1]), trust_links=True)
            os.close(fd)
            fd = next_fd
    except BaseException:
        os.close(fd)
        raise
    return fd, parts[-1], _shown(parts)


@contextlib.contextmanager
def parent_dir(path: str | os.PathLike) -> Iterator[tuple[int, str, str]]:
    """(descriptor of the directory holding ``path``, last name, ``path`` to show), closed after."""
    fd, name, shown = _open_parent(path)
    try:
        yield fd, name, shown
    finally:
        os.close(fd)


@contextlib.contextmanager
def opened(fd: int) -> Iterator[int]:
    """``fd``, closed at the end of the block."""
    try:
        yield fd
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


def open_regular_at(dir_fd: int, name: str, shown: str) -> int | None:
    """A read descriptor of regular file ``name``; None for anything else (or a hard link).

    The entry is looked at before it is opened (opening a device can have effects) and
    again through the descriptor (it may have been swapped meanwhile).
    """
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        if not _is_copyable(st):
            return None
        fd = os.open(name, _READ_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return None
        raise
    st = os.fstat(fd)
    if not _is_copyable(st):
        os.close(fd)
        return None
    os.set_blocking(fd, True)
    return fd


def _is_copyable(st: os.stat_result) -> bool:
    return stat.S_ISREG(st.st_mode) and st.st_nlink == 1


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
    """The temporary top directory of a copy: root's, 0700, so nobody reaches inside."""
    fd = make_dir_at(parent_fd, name, None, 0o700)
    st = os.fstat(fd)
    if st.st_uid != os.geteuid():  # swapped for somebody else's directory before we opened it
        os.close(fd)
        raise UnsafePath(f"{shown} was replaced while Kore created it; try again")
    return fd


def temp_name(name: str) -> str:
    return f".{name[:150]}.partial-{secrets.token_hex(6)}"


def ensure_dir(path: str | os.PathLike, *, owner: Owner | None = None, mode: int = 0o700) -> int:
    """A descriptor of directory ``path``, made (with its missing parents) if missing.

    Directories made get ``owner`` and ``mode``; existing ones are left as they are.
    A link in the way is refused as everywhere else.
    """
    parts = _components(path)
    fd = os.open("/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for i, name in enumerate(parts):
            last = i == len(parts) - 1
            shown = _shown(parts[: i + 1])
            try:
                next_fd = open_dir_at(fd, name, shown, trust_links=not last)
            except FileNotFoundError:
                try:
                    next_fd = make_dir_at(fd, name, owner, mode)
                except FileExistsError:  # made meanwhile
                    next_fd = open_dir_at(fd, name, shown, trust_links=not last)
                else:
                    fsync_quietly(fd)
            os.close(fd)
            fd = next_fd
    except BaseException:
        os.close(fd)
        raise
    return fd


# -- renaming without replacing ------------------------------------------------------------------

_RENAME_NOREPLACE = 1  # renameat2(2)
_libc = None


def _renameat2():
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return getattr(_libc, "renameat2", None)


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
            errno.EEXIST, f"{shown} already exists; Kore does not replace it", shown
        )


def publish(parent_fd: int, temp: str, top_fd: int, name: str) -> None:
    """Rename the finished temporary ``temp`` (open as ``top_fd``) to ``name``, durably."""
    st, top = os.stat(temp, dir_fd=parent_fd, follow_symlinks=False), os.fstat(top_fd)
    if (st.st_dev, st.st_ino) != (top.st_dev, top.st_ino):
        raise UnsafePath(f"{temp} was replaced while Kore filled it; nothing was published")
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
    rel: str = "",
    depth: int = 0,
) -> Iterator[tuple[str, Entry]]:
    """Events ("dir", e), then its content, then ("end", e); ("file", e) for regular files.

    Names are visited in sorted order. Links, special files and hard-linked files are
    passed to ``skipped`` (their relative path). ``avoid`` is a (dev, ino) not to enter
    (the copy being made, when it lies inside the tree).
    """
    if depth > MAX_DEPTH:
        raise UnsafePath(f"{rel} is more than {MAX_DEPTH} directories deep; not copied")
    for name in sorted(os.listdir(top_fd)):
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
                yield from walk(fd, skipped, avoid=avoid, rel=path, depth=depth + 1)
                yield "end", entry
        elif _is_copyable(st):
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
        view = memoryview(chunk)
        while view:
            view = view[os.write(dest_fd, view) :]
        copied += len(chunk)
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
    and sticky bits) and times; everything made gets ``owner`` (else Kore's user).
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
                _copy_into(src_fd, top_fd, owner, report, avoid=(top_st.st_dev, top_st.st_ino))
                _finish_dir(top_fd, os.fstat(src_fd), owner)
                publish(parent_fd, temp, top_fd, name)
        except BaseException:
            discard(parent_fd, temp)
            raise
    return report


def _copy_into(
    src_fd: int, dest_fd: int, owner: Owner | None, report: CopyReport, *, avoid
) -> None:
    dests = [dest_fd]
    events = walk(src_fd, report.skipped.append, avoid=avoid)
    try:
        with contextlib.closing(events):
            for kind, entry in events:
                if kind == "dir":
                    dests.append(make_dir_at(dests[-1], entry.name, owner, 0o700))
                elif kind == "end":
                    fd = dests.pop()
                    with opened(fd):
                        _finish_dir(fd, entry.st, owner)
                else:
                    _copy_entry(entry, dests[-1], owner, report)
    finally:
        for fd in dests[1:]:
            os.close(fd)


def _copy_entry(entry: Entry, dest_dir_fd: int, owner: Owner | None, report: CopyReport) -> None:
    src_fd = open_regular_at(entry.parent_fd, entry.name, entry.rel)
    if src_fd is None:  # changed into something else meanwhile
        report.skipped.append(entry.rel)
        return
    with opened(src_fd):
        st = os.fstat(src_fd)
        size = write_file_at(
            dest_dir_fd,
            entry.name,
            lambda fd: _copy_data(src_fd, fd),
            mode=plain_mode(st.st_mode),
            owner=owner,
            times_ns=(st.st_atime_ns, st.st_mtime_ns),
        )
    report.files += 1
    report.bytes += size


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


def write_new_file(
    parent_fd: int,
    name: str,
    fill: Callable[[int], int],
    *,
    mode: int,
    owner: Owner | None,
    times_ns: tuple[int, int] | None = None,
) -> int:
    """Make file ``name`` in ``parent_fd`` complete or not at all (temp, fsync, rename)."""
    temp = temp_name(name)
    try:
        size = write_file_at(parent_fd, temp, fill, mode=mode, owner=owner, times_ns=times_ns)
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
    raise UnsafePath(f"{shown} keeps changing while Kore removes it; try again")


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
