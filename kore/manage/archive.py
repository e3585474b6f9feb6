"""Course backups as ``tar.gz`` archives with a manifest, written and read without trust.

An archive holds, in this order:

1. ``manifest.json``: what the backup is (course id, title, time, contents), as the
   course manager wrote it; :func:`read_manifest` reads only this first member, so
   listing backups does not decompress them;
2. trees under an arcname prefix each (``course/...`` for the grader's home,
   ``exchange/...`` for the course's exchange directory): directories and regular
   files only, read through ``O_NOFOLLOW`` descriptors (:mod:`ananke_hub.fsutil`), so a
   link planted in a home is left out (and reported), never followed;
3. files given as bytes (``course/gradebook.db`` from SQLite's online backup: a
   consistent copy, which replaces the live file of the tree, and whose
   ``-journal``/``-wal``/``-shm`` companions are left out so that no stale journal is
   ever restored next to it).

Members are owned by uid/gid 0 with no names and have relative names. The archive is
written to a temporary name, fsynced, and renamed (mode 0600, in a 0700 directory:
backups hold students' work).

Reading refuses a whole archive (:class:`BadArchive`) before anything is written if
any member is not a plain directory or regular file, has an absolute name or a
``..``/``.``/empty component, appears twice, lies below a file member, fails
:func:`tarfile.data_filter`, or if the manifest is missing or too big. Extraction then
writes through descriptors into a new temporary directory, never by path, so nothing
in the archive and nothing a user does meanwhile can place a file outside it.
"""

import contextlib
import gzip
import json
import os
import stat
import tarfile
import time
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ananke_hub import fsutil
from ananke_hub.fsutil import CopyReport, Owner, UnsafePath

__all__ = [
    "MANIFEST_NAME",
    "ArchiveReport",
    "ArchiveTooLarge",
    "BadArchive",
    "NotInArchive",
    "UnsafePath",
    "extract_file",
    "extract_tree",
    "list_members",
    "read_manifest",
    "write_archive",
]

MANIFEST_NAME = "manifest.json"
#: A manifest bigger than this is refused (it lists contents, not data).
MAX_MANIFEST_BYTES = 1 << 20
#: Archives with more members are refused (a course has thousands of files, not millions).
MAX_MEMBERS = 500_000
ARCHIVE_MODE = 0o600
#: Mode recorded for an in-memory file that replaces no file of a tree.
PRIVATE_FILE_MODE = 0o600
ARCHIVE_DIR_MODE = 0o700
_SQLITE_COMPANIONS = ("-journal", "-wal", "-shm")
# Only for tarfile.data_filter's lexical checks: never created, never resolved.
_CHECK_DEST = "/nonexistent/ananke-archive-check"


class BadArchive(ValueError):
    """Not a backup Kore can use: not a tar.gz, no manifest, or unsafe members."""


class NotInArchive(LookupError):
    """The archive is fine but holds no such tree or file."""


class ArchiveTooLarge(ValueError):
    """The content to archive is bigger than the limit given."""


@dataclass
class ArchiveReport:
    """What :func:`write_archive` stored.

    ``files``/``bytes``: regular files and their (uncompressed) bytes; ``skipped``:
    arcnames of links, special and hard-linked files left out; ``changed``: files that
    shrank or grew while being read (stored with their size at the start, a shrunk
    one padded with zeros); ``archive_bytes``: the size of the archive file.
    """

    files: int = 0
    bytes: int = 0
    skipped: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    archive_bytes: int = 0


# -- names -----------------------------------------------------------------------------------------


def _name_parts(name) -> tuple[str, ...] | None:
    """The components of a relative member name, or None if it is not a safe one."""
    if not isinstance(name, str) or not name or "\x00" in name or name.startswith("/"):
        return None
    parts = tuple(name.split("/"))
    if any(part in ("", ".", "..") for part in parts):
        return None
    return parts


def _check_arcname(name: str) -> str:
    if _name_parts(name) is None:
        raise ValueError(
            f"{name!r} is not a usable name inside an archive (relative, '/'-separated, "
            "no '.', '..' or empty components)"
        )
    return name


# -- writing ----------------------------------------------------------------------------------------


class _ExactReader:
    """Exactly ``size`` bytes of a file that may change while it is read (a lab runs)."""

    def __init__(self, fd: int, size: int):
        self.fd, self.left, self.short = fd, size, False

    def read(self, n: int = -1) -> bytes:
        want = self.left if n is None or n < 0 else min(n, self.left)
        chunks, got = [], 0
        while got < want and not self.short:
            chunk = os.read(self.fd, want - got)
            if not chunk:
                self.short = True
                break
            chunks.append(chunk)
            got += len(chunk)
        if got < want:  # the file shrank: tar needs the size announced in the header
            chunks.append(bytes(want - got))
        self.left -= want
        return b"".join(chunks)

    def grew(self) -> bool:
        return not self.short and bool(os.read(self.fd, 1))


def _tarinfo(name: str, *, type_: bytes, mode: int, mtime: float, size: int = 0):
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime, info.size = type_, mode, int(mtime), size
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


class _Writer:
    def __init__(self, tar: tarfile.TarFile, report: ArchiveReport, max_bytes: int | None):
        self.tar, self.report, self.max_bytes = tar, report, max_bytes
        #: Modes of tree files that an in-memory file replaces (the gradebook's copy).
        self.replaced_modes: dict[str, int] = {}

    def _count(self, name: str, size: int) -> None:
        self.report.files += 1
        self.report.bytes += size
        if self.max_bytes is not None and self.report.bytes > self.max_bytes:
            raise ArchiveTooLarge(
                f"The backup would hold more than {self.max_bytes} bytes (at {name}); "
                "raise CourseManager.max_backup_bytes or make the course smaller."
            )

    def add_bytes(self, name: str, data: bytes) -> None:
        self._count(name, len(data))
        # The mode of the file it stands for (a gradebook is 0600: students' names and
        # e-mails), private if there is none; a restore gives the file this mode back.
        mode = self.replaced_modes.get(name, PRIVATE_FILE_MODE)
        info = _tarinfo(name, type_=tarfile.REGTYPE, mode=mode, mtime=time.time(), size=len(data))
        self.tar.addfile(info, _BytesReader(data))

    def add_tree(self, prefix: str, top: Path, leave_out: set[str]) -> None:
        with fsutil.opened(fsutil.open_dir(top)) as top_fd:
            st = os.fstat(top_fd)
            self.tar.addfile(
                _tarinfo(prefix, type_=tarfile.DIRTYPE, mode=_plain(st), mtime=st.st_mtime)
            )
            events = fsutil.walk(top_fd, lambda rel: self.report.skipped.append(f"{prefix}/{rel}"))
            with contextlib.closing(events):
                for kind, entry in events:
                    name = f"{prefix}/{entry.rel}"
                    if kind == "dir":
                        self.tar.addfile(
                            _tarinfo(
                                name,
                                type_=tarfile.DIRTYPE,
                                mode=_plain(entry.st),
                                mtime=entry.st.st_mtime,
                            )
                        )
                    elif kind == "file" and name not in leave_out:
                        self._add_file(name, entry)
                    elif kind == "file":
                        self.replaced_modes[name] = _plain(entry.st)

    def _add_file(self, name: str, entry: fsutil.Entry) -> None:
        fd = fsutil.open_regular_at(entry.parent_fd, entry.name, name)
        if fd is None:  # turned into something else meanwhile
            self.report.skipped.append(name)
            return
        with fsutil.opened(fd):
            st = os.fstat(fd)
            self._count(name, st.st_size)
            reader = _ExactReader(fd, st.st_size)
            info = _tarinfo(
                name, type_=tarfile.REGTYPE, mode=_plain(st), mtime=st.st_mtime, size=st.st_size
            )
            self.tar.addfile(info, reader)
            if reader.short or reader.grew():
                self.report.changed.append(name)


class _BytesReader:
    def __init__(self, data: bytes):
        self.view, self.pos = memoryview(data), 0

    def read(self, n: int = -1) -> bytes:
        end = len(self.view) if n is None or n < 0 else self.pos + n
        chunk = bytes(self.view[self.pos : end])
        self.pos += len(chunk)
        return chunk


def _plain(st: os.stat_result) -> int:
    return fsutil.plain_mode(st.st_mode)


def write_archive(
    archive: Path,
    manifest: dict,
    trees: Mapping[str, Path],
    files: Mapping[str, bytes] | None = None,
    *,
    max_bytes: int | None = None,
) -> ArchiveReport:
    """Write the backup ``archive`` (a new ``.tar.gz``): manifest, trees, in-memory files.

    ``trees`` maps an arcname prefix (``"course"``) to a real directory; ``files``
    maps arcnames to content, which replaces a same-named file of a tree (and leaves
    out its SQLite ``-journal``/``-wal``/``-shm`` companions). ``archive`` must not exist
    (FileExistsError); its directory is made 0700 if missing. ``max_bytes`` bounds the
    uncompressed content (ArchiveTooLarge; nothing is left behind then).
    """
    extra = dict(files or {})
    prefixes = [_check_arcname(prefix) for prefix in trees]
    if any(prefix.split("/")[0] == MANIFEST_NAME for prefix in prefixes):
        raise ValueError(f"{MANIFEST_NAME} cannot be the name of a tree in a backup")
    for a in prefixes:
        for b in prefixes:
            if a != b and (b + "/").startswith(a + "/"):
                raise ValueError(f"Archive trees {a!r} and {b!r} overlap")
    for name in extra:
        _check_arcname(name)
        if name == MANIFEST_NAME or name in prefixes or name.split("/")[0] == MANIFEST_NAME:
            raise ValueError(f"{name!r} cannot be an in-memory file of a backup")
    leave_out = set(extra) | {name + suffix for name in extra for suffix in _SQLITE_COMPANIONS}
    manifest_data = json.dumps(manifest, indent=2, sort_keys=True).encode()
    if len(manifest_data) > MAX_MANIFEST_BYTES:
        raise ValueError(f"The manifest is larger than {MAX_MANIFEST_BYTES} bytes")

    archive = Path(archive)
    report = ArchiveReport()
    with fsutil.opened(fsutil.ensure_dir(archive.parent, mode=ARCHIVE_DIR_MODE)) as dir_fd:
        if stat.S_IMODE(os.fstat(dir_fd).st_mode) & 0o077:
            os.fchmod(dir_fd, ARCHIVE_DIR_MODE)  # backups hold students' work
        name = archive.name
        fsutil.refuse_existing(dir_fd, name, str(archive))

        def fill(fd: int) -> int:
            with (
                os.fdopen(fd, "wb", closefd=False) as raw,
                tarfile.open(
                    fileobj=raw, mode="w:gz", compresslevel=6, format=tarfile.PAX_FORMAT
                ) as tar,
            ):
                writer = _Writer(tar, report, max_bytes)
                info = _tarinfo(
                    MANIFEST_NAME,
                    type_=tarfile.REGTYPE,
                    mode=0o644,
                    mtime=time.time(),
                    size=len(manifest_data),
                )
                tar.addfile(info, _BytesReader(manifest_data))
                for prefix, top in trees.items():
                    writer.add_tree(prefix, Path(top), leave_out)
                for arcname, data in extra.items():
                    writer.add_bytes(arcname, bytes(data))
            return os.fstat(fd).st_size

        report.archive_bytes = fsutil.write_new_file(
            dir_fd, name, fill, mode=ARCHIVE_MODE, owner=None
        )
    return report


# -- reading -----------------------------------------------------------------------------------------

_READ_ERRORS = (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, UnicodeError)


@contextlib.contextmanager
def _open_tar(archive: Path) -> Iterator[tarfile.TarFile]:
    fd = fsutil.open_regular(archive)
    with os.fdopen(fd, "rb") as raw:
        try:
            tar = tarfile.open(fileobj=raw, mode="r:gz")
        except _READ_ERRORS as exc:
            raise BadArchive(f"{archive} is not a tar.gz archive: {exc}") from None
        with tar:
            yield tar


def _check_manifest_member(archive: Path, info: tarfile.TarInfo | None) -> None:
    if info is None or info.name != MANIFEST_NAME or not info.isreg():
        raise BadArchive(f"{archive} is not a backup: its first member is not {MANIFEST_NAME}")
    if info.size > MAX_MANIFEST_BYTES:
        raise BadArchive(
            f"{archive}: the manifest is larger than {MAX_MANIFEST_BYTES} bytes; not a backup "
            "Kore made"
        )


def read_manifest(archive: Path) -> dict:
    """The manifest of backup ``archive`` (its first member only is read).

    BadArchive if the file is not a tar.gz, or its first member is not a JSON object
    named ``manifest.json`` of at most MAX_MANIFEST_BYTES.
    """
    with _open_tar(archive) as tar:
        try:
            info = tar.next()
            _check_manifest_member(archive, info)
            data = tar.extractfile(info).read(MAX_MANIFEST_BYTES + 1)
        except _READ_ERRORS as exc:
            raise BadArchive(f"{archive} is damaged: {exc}") from None
    try:
        manifest = json.loads(data)
    except ValueError:
        raise BadArchive(f"{archive}: the manifest is not JSON") from None
    if not isinstance(manifest, dict):
        raise BadArchive(f"{archive}: the manifest is not a JSON object")
    return manifest


def _scan(archive: Path, tar: tarfile.TarFile, max_bytes: int | None) -> list[tarfile.TarInfo]:
    """Every member, after the checks that refuse the whole archive (see the module doc)."""
    members: list[tarfile.TarInfo] = []
    seen: dict[str, bool] = {}  # name -> is a directory
    total = 0
    try:
        while (info := tar.next()) is not None:
            if not members:
                _check_manifest_member(archive, info)
            members.append(info)
            if len(members) > MAX_MEMBERS:
                raise BadArchive(f"{archive} has more than {MAX_MEMBERS} members")
            _check_member(archive, info)
            if info.name in seen:
                raise BadArchive(f"{archive}: member {info.name!r} appears twice")
            seen[info.name] = info.isdir()
            if info.isreg():
                total += info.size
                if max_bytes is not None and total > max_bytes:
                    raise BadArchive(f"{archive} holds more than {max_bytes} bytes")
    except _READ_ERRORS as exc:
        raise BadArchive(f"{archive} is damaged: {exc}") from None
    if not members:
        _check_manifest_member(archive, None)
    for name in seen:
        parts = name.split("/")
        for i in range(1, len(parts)):
            if seen.get("/".join(parts[:i])) is False:
                raise BadArchive(f"{archive}: member {name!r} lies below a file")
    return members


def _check_member(archive: Path, info: tarfile.TarInfo) -> None:
    if _name_parts(info.name) is None:
        raise BadArchive(
            f"{archive}: member {info.name!r} has an absolute name or a '..', '.' or empty "
            "component; the archive is refused"
        )
    if not (info.isreg() or info.isdir()):
        raise BadArchive(
            f"{archive}: member {info.name!r} is a link or a special file; the archive is refused"
        )
    data_filter = getattr(tarfile, "data_filter", None)  # Python >= 3.11.4
    if data_filter is not None:
        try:
            data_filter(info, _CHECK_DEST)
        except tarfile.FilterError as exc:
            raise BadArchive(f"{archive}: {exc}; the archive is refused") from None


def _mtime_ns(info: tarfile.TarInfo) -> int:
    """The member's time for utime(2), whatever a header says (NaN, negative, far future)."""
    try:
        seconds = float(info.mtime)
    except (TypeError, ValueError):
        return 0
    if not 0 <= seconds < 1 << 34:  # also false for NaN
        return 0
    return int(seconds * 1_000_000_000)


def _file_mode(info: tarfile.TarInfo) -> int:
    # tarfile's 'data' filter: no group/other write, no special bits, owner may read and
    # write, no execute at all unless the owner may execute.
    mode = info.mode & 0o755
    if not mode & 0o100:
        mode &= ~0o111
    return mode | 0o600


def _dir_mode(info: tarfile.TarInfo | None) -> int:
    return 0o755 if info is None else (info.mode & 0o755) | 0o700


def list_members(archive: Path, prefix: str, *, kind: str | None = None) -> list[str]:
    """Names below ``prefix/``, relative to it (``"hw1"``, ``"hw1/p1.ipynb"``), sorted.

    ``kind`` ``"file"`` or ``"dir"`` keeps only regular files or directories. The whole
    archive is checked first (BadArchive as for extraction).
    """
    if kind not in (None, "file", "dir"):
        raise ValueError(f"kind must be 'file', 'dir' or None, not {kind!r}")
    _check_arcname(prefix)
    start = prefix + "/"
    with _open_tar(archive) as tar:
        members = _scan(archive, tar, None)
    return sorted(
        info.name[len(start) :]
        for info in members
        if info.name.startswith(start)
        and (kind is None or (info.isdir() if kind == "dir" else info.isreg()))
    )


def _read_member(archive: Path, tar: tarfile.TarFile, info: tarfile.TarInfo, fd: int) -> int:
    source = tar.extractfile(info)
    written = 0
    try:
        while written < info.size:
            chunk = source.read(min(1 << 20, info.size - written))
            if not chunk:
                raise BadArchive(f"{archive}: member {info.name!r} is cut short")
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view) :]
            written += len(chunk)
    except _READ_ERRORS as exc:
        raise BadArchive(f"{archive} is damaged at {info.name!r}: {exc}") from None
    return written


def _open_or_make(top_fd: int, parts: tuple[str, ...], owner: Owner | None, made: set) -> int:
    """A descriptor of ``top/parts...`` (inside the private temporary tree), made if missing."""
    return fsutil.descend(
        top_fd,
        parts,
        lambda i: "/".join(parts[: i + 1]),
        create_mode=0o700,
        owner=owner,
        on_made=lambda i: made.add(parts[: i + 1]),
    )


def extract_tree(
    archive: Path,
    prefix: str,
    dest: Path,
    *,
    owner: Owner | None = None,
    max_bytes: int | None = None,
) -> CopyReport:
    """Extract the members below ``prefix/`` into the new directory ``dest``.

    The whole archive is checked first (BadArchive, nothing written); NotInArchive if
    it holds nothing below ``prefix``. ``dest`` must not exist (FileExistsError); it
    appears complete or not at all, everything in it owned by ``owner``. Modes follow
    tarfile's 'data' filter. ``max_bytes`` bounds the archive's uncompressed content.
    """
    _check_arcname(prefix)
    start = prefix + "/"
    report = CopyReport()
    with _open_tar(archive) as tar:
        members = _scan(archive, tar, max_bytes)
        top_info = next((m for m in members if m.name == prefix), None)
        chosen = [m for m in members if m.name.startswith(start)]
        if top_info is not None and not top_info.isdir():
            raise NotInArchive(f"{archive}: {prefix!r} is a file, not a directory")
        if top_info is None and not chosen:
            raise NotInArchive(f"{archive} holds nothing under {prefix}/")
        with fsutil.parent_dir(dest) as (parent_fd, name, shown):
            fsutil.refuse_existing(parent_fd, name, shown)
            temp = fsutil.temp_name(name)
            top_fd = fsutil.make_private_top(parent_fd, temp, shown)
            try:
                with fsutil.opened(top_fd):
                    _extract_into(archive, tar, chosen, len(start), top_fd, owner, report)
                    fsutil.set_owner(top_fd, owner)
                    os.fchmod(top_fd, _dir_mode(top_info))
                    fsutil.fsync_quietly(top_fd)
                    fsutil.publish(parent_fd, temp, top_fd, name)
            except BaseException:
                fsutil.discard(parent_fd, temp)
                raise
    return report


def _extract_into(archive, tar, chosen, skip: int, top_fd: int, owner, report) -> None:
    made: set[tuple[str, ...]] = set()
    dirs: dict[tuple[str, ...], tarfile.TarInfo] = {}
    for info in chosen:
        parts = tuple(info.name[skip:].split("/"))
        if info.isdir():
            os.close(_open_or_make(top_fd, parts, owner, made))
            dirs[parts] = info
            continue
        with fsutil.opened(_open_or_make(top_fd, parts[:-1], owner, made)) as dir_fd:
            size = fsutil.write_file_at(
                dir_fd,
                parts[-1],
                lambda fd, info=info: _read_member(archive, tar, info, fd),
                mode=_file_mode(info),
                owner=owner,
                times_ns=(_mtime_ns(info),) * 2,
            )
        report.files += 1
        report.bytes += size
    # Directory modes last, deepest first: a read-only directory is filled before.
    for parts in sorted(made | set(dirs), key=len, reverse=True):
        with fsutil.opened(_open_or_make(top_fd, parts, owner, made)) as fd:
            os.fchmod(fd, _dir_mode(dirs.get(parts)))
            if parts in dirs:
                mtime_ns = _mtime_ns(dirs[parts])
                os.utime(fd, ns=(mtime_ns, mtime_ns))
            fsutil.fsync_quietly(fd)


def extract_file(archive: Path, member: str, dest: Path, *, owner: Owner | None = None) -> int:
    """Extract the regular file ``member`` (full arcname) to the new file ``dest``.

    The whole archive is checked first (BadArchive); NotInArchive if ``member`` is not
    a regular file of it. ``dest`` must not exist (FileExistsError); it is written to a
    temporary name, fsynced and renamed, owned by ``owner``. Returns the bytes written.
    """
    _check_arcname(member)
    with _open_tar(archive) as tar:
        members = _scan(archive, tar, None)
        info = next((m for m in members if m.name == member), None)
        if info is None or not info.isreg():
            raise NotInArchive(f"{archive} has no file {member}")
        with fsutil.parent_dir(dest) as (parent_fd, name, shown):
            fsutil.refuse_existing(parent_fd, name, shown)
            return fsutil.write_new_file(
                parent_fd,
                name,
                lambda fd: _read_member(archive, tar, info, fd),
                mode=_file_mode(info),
                owner=owner,
                times_ns=(_mtime_ns(info),) * 2,
            )
