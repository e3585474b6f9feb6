"""Course-management file work: copies keep content and get their owner, nothing is followed,
backups round-trip, and a malicious archive is refused whole with nothing written."""

import io
import json
import os
import sqlite3
import stat
import tarfile
from pathlib import Path

import pytest

from ananke_hub import fsutil as files
from ananke_hub.fsutil import CopyReport, Owner, UnsafePath
from kore.manage import archive
from kore.manage.archive import ArchiveTooLarge, BadArchive, NotInArchive

IS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not IS_ROOT, reason="needs root to give files to other uids")

GRADER = Owner(62010, 62010)
OTHER = Owner(62011, 62011)


def snapshot(top: Path) -> dict[str, bytes | None]:
    """Every entry below ``top`` (links not followed): file content, None for directories."""
    out = {}
    for path in sorted(top.rglob("*")):
        rel = path.relative_to(top).as_posix()
        if path.is_symlink():
            out[rel] = ("link", os.readlink(path))
        elif path.is_dir():
            out[rel] = None
        elif path.is_file():
            out[rel] = path.read_bytes()
        else:
            out[rel] = "special"
    return out


def owners(top: Path) -> set[tuple[int, int]]:
    entries = [top, *top.rglob("*")]
    return {(p.lstat().st_uid, p.lstat().st_gid) for p in entries}


@pytest.fixture
def course(tmp_path) -> Path:
    """A grader's home as nbgrader leaves it: source notebooks, a gradebook, a config."""
    home = tmp_path / "home"
    (home / "source" / "hw1" / "data").mkdir(parents=True)
    (home / "source" / "hw 2").mkdir(parents=True)
    (home / "source" / "hw1" / "p1.ipynb").write_text(json.dumps({"cells": [], "nbformat": 4}))
    (home / "source" / "hw1" / "p2 (extra).ipynb").write_text('{"cells": [1]}')
    (home / "source" / "hw1" / "data" / "x.csv").write_bytes(b"a,b\n" * 50_000)
    (home / "source" / "hw 2" / "run.sh").write_text("#!/bin/sh\n")
    (home / "source" / "hw 2" / "run.sh").chmod(0o755)
    (home / "source" / "empty").mkdir()
    (home / "nbgrader_config.json").write_text('{"CourseDirectory": {}}')
    with sqlite3.connect(home / "gradebook.db") as db:
        db.execute("create table student (id text primary key)")
        db.execute("insert into student values ('alice'), ('bob')")
    db.close()
    return home


@pytest.fixture
def outside(tmp_path) -> Path:
    """Somebody else's files, which nothing may read into a copy or touch."""
    other = tmp_path / "outside"
    (other / "secret").mkdir(parents=True)
    (other / "secret" / "solution.ipynb").write_text("the answers")
    (other / "sentinel").write_text("untouched")
    return other


def plant_traps(home: Path, outside: Path) -> list[str]:
    """Links and special files a user could leave in their home; their relative paths."""
    (home / "passwd").symlink_to("/etc/passwd")
    (home / "source" / "hw1" / "answers").symlink_to(outside / "secret")  # a linked directory
    (home / "source" / "etc").symlink_to("/etc")
    (home / "source" / "hw1" / "relative").symlink_to("../../../outside/sentinel")
    os.mkfifo(home / "source" / "hw1" / "pipe")
    os.link(outside / "sentinel", home / "source" / "hardlink")
    return [
        "passwd",
        "source/etc",
        "source/hardlink",
        "source/hw1/answers",
        "source/hw1/pipe",
        "source/hw1/relative",
    ]


# -- copy_tree ------------------------------------------------------------------------------------


@needs_root
def test_copy_tree_keeps_content_modes_and_sets_the_owner(course, tmp_path):
    dest = tmp_path / "target" / "copy"
    dest.parent.mkdir()
    (course / "source" / "hw1" / "p1.ipynb").chmod(0o4755)  # setuid is not copied

    report = files.copy_tree(course, dest, owner=GRADER)

    assert snapshot(dest) == snapshot(course)
    assert owners(dest) == {(GRADER.uid, GRADER.gid)}
    assert stat.S_IMODE((dest / "source" / "hw 2" / "run.sh").stat().st_mode) == 0o755
    assert stat.S_IMODE((dest / "source" / "hw1" / "p1.ipynb").stat().st_mode) == 0o755
    assert (dest / "source" / "empty").is_dir()
    expected_files = [p for p in course.rglob("*") if p.is_file()]
    assert report == CopyReport(
        files=len(expected_files), bytes=sum(p.stat().st_size for p in expected_files), skipped=[]
    )
    with sqlite3.connect(dest / "gradebook.db") as db:
        assert db.execute("select id from student order by id").fetchall() == [("alice",), ("bob",)]
    db.close()
    assert [p.name for p in dest.parent.iterdir()] == ["copy"]  # no temporary left


def test_copy_tree_without_owner_keeps_ours(course, tmp_path):
    files.copy_tree(course, tmp_path / "copy")
    assert owners(tmp_path / "copy") == {(os.geteuid(), os.getegid())}


def test_links_fifos_and_hard_links_are_skipped_not_followed(course, outside, tmp_path):
    skipped = plant_traps(course, outside)
    before = snapshot(outside)

    report = files.copy_tree(course, tmp_path / "copy")

    assert sorted(report.skipped) == skipped
    copied = snapshot(tmp_path / "copy")
    for rel in skipped:
        assert rel not in copied
    assert all(v not in (b"untouched", b"the answers") for v in copied.values())
    assert not any(isinstance(v, tuple) or v == "special" for v in copied.values())
    assert snapshot(outside) == before


def test_a_linked_top_directory_is_refused(course, tmp_path):
    link = tmp_path / "link"
    link.symlink_to(course)
    with pytest.raises(UnsafePath, match="symbolic link"):
        files.copy_tree(link, tmp_path / "copy")
    assert not (tmp_path / "copy").exists()


@needs_root
def test_a_link_on_the_way_in_a_users_directory_is_refused(course, outside, tmp_path):
    """A home belongs to its user: a link the user put in it is never followed."""
    course.chmod(0o755)
    os.chown(course, GRADER.uid, GRADER.gid)
    (course / "ln").symlink_to(outside)
    with pytest.raises(UnsafePath, match="symbolic link"):
        files.copy_tree(course / "ln" / "secret", tmp_path / "copy")
    with pytest.raises(UnsafePath):
        files.copy_tree(course / "source", course / "ln" / "copy")
    assert not (tmp_path / "copy").exists()
    assert not (outside / "copy").exists()


def test_a_link_in_a_world_writable_directory_is_refused(course, tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    (shared / "ln").symlink_to(course)
    with pytest.raises(UnsafePath):
        files.tree_size(shared / "ln" / "source")


def test_a_link_only_root_could_make_is_followed_on_the_way(course, tmp_path):
    """Like systemd's /var/lib/<user> -> private/<user>: root's link in root's directory."""
    (tmp_path / "trusted").mkdir(mode=0o755)
    (tmp_path / "trusted" / "home").symlink_to(course)
    files.copy_tree(tmp_path / "trusted" / "home" / "source", tmp_path / "copy")
    assert (tmp_path / "copy" / "hw1" / "p1.ipynb").is_file()


@pytest.mark.parametrize("kind", ["dir", "file", "dangling link"])
def test_copy_tree_refuses_an_existing_dest(course, outside, tmp_path, kind):
    dest = tmp_path / "dest"
    if kind == "dir":
        dest.mkdir()
    elif kind == "file":
        dest.write_text("keep")
    else:
        dest.symlink_to(outside / "new")
    with pytest.raises(FileExistsError):
        files.copy_tree(course, dest)
    assert not (outside / "new").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dest", "home", "outside"]


def test_copy_tree_needs_the_destinations_parent(course, tmp_path):
    with pytest.raises(FileNotFoundError):
        files.copy_tree(course, tmp_path / "missing" / "copy")


@pytest.mark.parametrize("path", ["relative/dir", "/tmp/../etc", "/tmp/a\x00b"])
def test_paths_that_are_not_plain_absolute_paths_are_refused(course, path):
    with pytest.raises(UnsafePath):
        files.copy_tree(Path(path) if "\x00" not in path else path, course / "x")


def test_a_failed_copy_leaves_nothing_behind(course, tmp_path, monkeypatch):
    real, calls = files.write_file_at, []

    def failing(*args, **kwargs):
        calls.append(args)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(files, "write_file_at", failing)
    with pytest.raises(OSError, match="No space"):
        files.copy_tree(course, tmp_path / "copy")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home"]


def test_a_copy_into_its_own_source_does_not_recurse(course):
    report = files.copy_tree(course / "source", course / "source" / "hw1" / "copy")
    assert (course / "source" / "hw1" / "copy" / "hw1" / "p1.ipynb").is_file()
    assert not (course / "source" / "hw1" / "copy" / "hw1" / "copy").exists()
    assert report.skipped == []


# -- copy_file ----------------------------------------------------------------------------------


@needs_root
def test_copy_file_copies_one_notebook_with_owner(course, tmp_path):
    src = course / "source" / "hw1" / "p1.ipynb"
    src.chmod(0o640)
    dest = tmp_path / "p1.ipynb"
    assert files.copy_file(src, dest, owner=GRADER) == src.stat().st_size
    assert dest.read_bytes() == src.read_bytes()
    assert (dest.stat().st_uid, stat.S_IMODE(dest.stat().st_mode)) == (GRADER.uid, 0o640)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home", "p1.ipynb"]


def test_copy_file_refuses_links_fifos_and_existing_dests(course, outside, tmp_path):
    plant_traps(course, outside)
    hw1 = course / "source" / "hw1"
    for src in (hw1 / "relative", hw1 / "pipe", course / "source" / "hardlink", hw1 / "answers"):
        with pytest.raises((UnsafePath, IsADirectoryError)):
            files.copy_file(src, tmp_path / "x")
    assert not (tmp_path / "x").exists()
    (tmp_path / "dangling").symlink_to(outside / "created")
    for dest in (hw1 / "p2 (extra).ipynb", tmp_path / "dangling"):
        with pytest.raises(FileExistsError):
            files.copy_file(hw1 / "p1.ipynb", dest)
    assert not (outside / "created").exists()
    assert (hw1 / "p2 (extra).ipynb").read_text() == '{"cells": [1]}'


# -- remove_tree, move_aside, clear_dir, tree_size ----------------------------------------------


def test_remove_tree_removes_links_not_their_targets(course, outside, tmp_path):
    plant_traps(course, outside)
    before = snapshot(outside)
    assert files.remove_tree(course) is True
    assert not course.exists()
    assert snapshot(outside) == before
    assert Path("/etc/passwd").exists()


def test_remove_tree_on_a_link_removes_the_link_only(outside, tmp_path):
    link = tmp_path / "link"
    link.symlink_to(outside)
    assert files.remove_tree(link) is True
    assert not link.is_symlink()
    assert (outside / "sentinel").read_text() == "untouched"


def test_remove_tree_is_idempotent(course, tmp_path):
    assert files.remove_tree(course / "gradebook.db") is True
    assert files.remove_tree(course / "gradebook.db") is False
    assert files.remove_tree(course / "source") is True
    assert files.remove_tree(course / "source") is False
    assert files.remove_tree(tmp_path / "no" / "such" / "dir") is False
    assert sorted(p.name for p in course.iterdir()) == ["nbgrader_config.json"]


@needs_root
def test_move_aside_makes_unique_names_in_an_owned_directory(course, tmp_path):
    aside = course / ".ananke" / "replaced"
    first = files.move_aside(course / "source" / "hw1", aside, owner=GRADER)
    (course / "source" / "hw1").mkdir()
    (course / "source" / "hw1" / "new.ipynb").write_text("{}")
    second = files.move_aside(course / "source" / "hw1", aside, owner=GRADER)

    assert first != second and first.parent == second.parent == aside
    assert first.name.startswith("hw1-") and first.name.endswith("Z")
    assert (first / "p1.ipynb").is_file() and (second / "new.ipynb").is_file()
    assert not (course / "source" / "hw1").exists()
    for directory in (aside, aside.parent):
        st = directory.stat()
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (GRADER.uid, 0o700)
    with pytest.raises(FileNotFoundError):
        files.move_aside(course / "source" / "hw1", aside)


def test_move_aside_moves_a_link_as_a_link(course, outside):
    (course / "source" / "hw9").symlink_to(outside)
    moved = files.move_aside(course / "source" / "hw9", course / "aside")
    assert moved.is_symlink()
    assert snapshot(outside)["sentinel"] == b"untouched"


def test_clear_dir_keeps_what_it_is_told_and_follows_nothing(course, outside):
    skipped = plant_traps(course, outside)
    before = snapshot(outside)
    top_level = {rel.split("/")[0] for rel in skipped}
    entries = {p.name for p in course.iterdir()} | top_level
    assert files.clear_dir(course, keep={"source", "nbgrader_config.json"}) == len(entries) - 2
    assert sorted(p.name for p in course.iterdir()) == ["nbgrader_config.json", "source"]
    assert files.clear_dir(course / "source") == 5
    assert list((course / "source").iterdir()) == []
    assert snapshot(outside) == before
    assert files.clear_dir(course / "missing") == 0


def test_clear_dir_refuses_a_linked_directory(course, tmp_path):
    (tmp_path / "ln").symlink_to(course)
    with pytest.raises(UnsafePath):
        files.clear_dir(tmp_path / "ln")
    assert (course / "gradebook.db").exists()


def test_tree_size_counts_what_a_copy_would_hold(course, outside):
    plant_traps(course, outside)
    expected = [p for p in course.rglob("*") if p.is_file() and not p.is_symlink()]
    expected = [p for p in expected if p.name != "hardlink"]
    assert files.tree_size(course) == (len(expected), sum(p.stat().st_size for p in expected))
    assert files.tree_size(course / "gradebook.db") == (1, (course / "gradebook.db").stat().st_size)
    with pytest.raises(UnsafePath):
        files.tree_size(course / "passwd")


# -- archives -----------------------------------------------------------------------------------


@pytest.fixture
def exchange(tmp_path) -> Path:
    ex = tmp_path / "exchange"
    (ex / "outbound" / "hw1").mkdir(parents=True)
    (ex / "outbound" / "hw1" / "p1.ipynb").write_text("released")
    (ex / "inbound").mkdir()
    return ex


MANIFEST = {"course_id": "c-0123456789abcdef", "title": "Data 101", "contents": {"n": 2}}


@needs_root
def test_archive_round_trip(course, exchange, outside, tmp_path):
    traps = plant_traps(course, outside)
    (course / "gradebook.db-journal").write_bytes(b"stale journal")
    consistent = (course / "gradebook.db").read_bytes()
    (course / "gradebook.db").write_bytes(b"live file, maybe mid-write")
    path = tmp_path / "backups" / "b-1.tar.gz"

    report = archive.write_archive(
        path,
        MANIFEST,
        {"course": course, "exchange": exchange},
        {"course/gradebook.db": consistent},
    )

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert report.archive_bytes == path.stat().st_size
    assert sorted(report.skipped) == [f"course/{rel}" for rel in traps]
    with tarfile.open(path) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names[0] == "manifest.json"
    assert names.count("course/gradebook.db") == 1 and names[-1] == "course/gradebook.db"
    assert "course/gradebook.db-journal" not in names
    assert {"exchange/outbound/hw1/p1.ipynb", "course/source/hw1/data/x.csv"} <= set(names)
    assert all(m.uid == 0 and m.gid == 0 and m.uname == "" for m in members)
    assert all(m.isreg() or m.isdir() for m in members)

    assert archive.read_manifest(path) == MANIFEST
    assert archive.list_members(path, "course/source", kind="dir") == [
        "empty",
        "hw 2",
        "hw1",
        "hw1/data",
    ]
    assert "hw1/p2 (extra).ipynb" in archive.list_members(path, "course/source", kind="file")

    restored = tmp_path / "restored"
    result = archive.extract_tree(path, "course", restored, owner=GRADER)
    assert (restored / "gradebook.db").read_bytes() == consistent
    assert not (restored / "gradebook.db-journal").exists()
    left_out = [*traps, "gradebook.db-journal"]
    expected = {k: v for k, v in snapshot(course).items() if k not in left_out}
    expected["gradebook.db"] = consistent
    assert snapshot(restored) == expected
    assert owners(restored) == {(GRADER.uid, GRADER.gid)}
    assert stat.S_IMODE((restored / "source" / "hw 2" / "run.sh").stat().st_mode) == 0o755
    assert result.files == sum(1 for v in expected.values() if isinstance(v, bytes))

    archive.extract_tree(path, "exchange", tmp_path / "ex2")
    assert (tmp_path / "ex2" / "outbound" / "hw1" / "p1.ipynb").read_text() == "released"
    assert (tmp_path / "ex2" / "inbound").is_dir()

    one = tmp_path / "target" / "p1.ipynb"
    one.parent.mkdir()
    size = archive.extract_file(path, "course/source/hw1/p1.ipynb", one, owner=GRADER)
    assert one.read_bytes() == (course / "source" / "hw1" / "p1.ipynb").read_bytes()
    assert (size, one.stat().st_uid) == (one.stat().st_size, GRADER.uid)
    assert [p.name for p in one.parent.iterdir()] == ["p1.ipynb"]


def test_archive_refuses_to_replace_or_to_grow_beyond_its_limit(course, tmp_path):
    path = tmp_path / "b.tar.gz"
    archive.write_archive(path, MANIFEST, {"course": course})
    with pytest.raises(FileExistsError):
        archive.write_archive(path, MANIFEST, {"course": course})
    with pytest.raises(ArchiveTooLarge, match="max_backup_bytes"):
        archive.write_archive(tmp_path / "big.tar.gz", MANIFEST, {"course": course}, max_bytes=1000)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.tar.gz", "home"]


def test_extract_refuses_an_existing_dest_and_missing_content(course, tmp_path):
    path = tmp_path / "b.tar.gz"
    archive.write_archive(path, MANIFEST, {"course": course})
    (tmp_path / "dest").mkdir()
    with pytest.raises(FileExistsError):
        archive.extract_tree(path, "course", tmp_path / "dest")
    assert list((tmp_path / "dest").iterdir()) == []
    with pytest.raises(NotInArchive):
        archive.extract_tree(path, "exchange", tmp_path / "ex")
    with pytest.raises(NotInArchive):
        archive.extract_file(path, "course/source/hw1", tmp_path / "nb.ipynb")
    with pytest.raises(FileExistsError):
        archive.extract_file(path, "course/source/hw1/p1.ipynb", course / "gradebook.db")
    assert not (tmp_path / "ex").exists() and not (tmp_path / "nb.ipynb").exists()


def test_a_linked_archive_is_not_read(course, tmp_path):
    path = tmp_path / "b.tar.gz"
    archive.write_archive(path, MANIFEST, {"course": course})
    (tmp_path / "ln.tar.gz").symlink_to(path)
    with pytest.raises(UnsafePath):
        archive.read_manifest(tmp_path / "ln.tar.gz")


# -- malicious archives --------------------------------------------------------------------------


def build(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]], manifest=True) -> Path:
    with tarfile.open(path, "w:gz", format=tarfile.PAX_FORMAT) as tar:
        if manifest:
            data = json.dumps(MANIFEST).encode()
            info = tarfile.TarInfo("manifest.json")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def member(name: str, type_=tarfile.REGTYPE, data: bytes | None = b"evil", **attrs):
    info = tarfile.TarInfo(name)
    info.type = type_
    for key, value in attrs.items():
        setattr(info, key, value)
    return info, (data if type_ == tarfile.REGTYPE else None)


def good_members():
    return [member("course", tarfile.DIRTYPE), member("course/ok.ipynb", data=b"{}")]


MALICIOUS = {
    "dotdot": lambda tmp: [member("../evil")],
    "course/../../x": lambda tmp: [member("course/../../evil")],
    "absolute": lambda tmp: [member(str(tmp / "evil"))],
    "absolute in course": lambda tmp: [member("/course/evil")],
    "dot component": lambda tmp: [member("course/./evil")],
    "symlink": lambda tmp: [member("course/evil", tarfile.SYMTYPE, linkname="/etc/passwd")],
    "relative symlink": lambda tmp: [member("course/evil", tarfile.SYMTYPE, linkname="ok.ipynb")],
    "hardlink": lambda tmp: [member("course/evil", tarfile.LNKTYPE, linkname="course/ok.ipynb")],
    "hardlink outside": lambda tmp: [
        member("course/evil", tarfile.LNKTYPE, linkname="/etc/passwd")
    ],
    "char device": lambda tmp: [member("course/evil", tarfile.CHRTYPE, devmajor=1, devminor=3)],
    "block device": lambda tmp: [member("course/evil", tarfile.BLKTYPE, devmajor=8, devminor=0)],
    "fifo": lambda tmp: [member("course/evil", tarfile.FIFOTYPE)],
    "duplicate": lambda tmp: [member("course/ok.ipynb", data=b"second")],
    "duplicate manifest": lambda tmp: [member("manifest.json", data=b"{}")],
    "below a file": lambda tmp: [member("course/ok.ipynb/evil")],
    "pax path": lambda tmp: [member("course/fine", pax_headers={"path": "../pax-evil"})],
}


@pytest.mark.parametrize("case", sorted(MALICIOUS))
def test_malicious_archives_are_refused_whole(tmp_path, case):
    work = tmp_path / "work"
    work.mkdir()
    path = build(tmp_path / "bad.tar.gz", good_members() + MALICIOUS[case](tmp_path))
    before = snapshot(tmp_path)

    with pytest.raises(BadArchive):
        archive.extract_tree(path, "course", work / "dest", owner=None)
    with pytest.raises(BadArchive):
        archive.extract_file(path, "course/ok.ipynb", work / "ok.ipynb")
    with pytest.raises(BadArchive):
        archive.list_members(path, "course")

    assert snapshot(tmp_path) == before  # nothing written: not dest, not a temporary, not outside
    assert not Path("/course").exists()


@pytest.mark.parametrize(
    "case", ["no manifest", "manifest not first", "oversize manifest", "not json", "not a list"]
)
def test_archives_without_a_proper_manifest_are_refused(tmp_path, case):
    path = tmp_path / "bad.tar.gz"
    if case == "no manifest":
        build(path, good_members(), manifest=False)
    elif case == "manifest not first":
        build(path, good_members() + [member("manifest.json", data=b"{}")], manifest=False)
    elif case == "oversize manifest":
        big = json.dumps({"x": "a" * (archive.MAX_MANIFEST_BYTES + 1)}).encode()
        build(path, [member("manifest.json", data=big)], manifest=False)
    elif case == "not json":
        build(path, [member("manifest.json", data=b"{not json")], manifest=False)
    else:
        build(path, [member("manifest.json", data=b"[1, 2]")], manifest=False)
    with pytest.raises(BadArchive):
        archive.read_manifest(path)
    if case != "not json" and case != "not a list":
        with pytest.raises(BadArchive):
            archive.extract_tree(path, "course", tmp_path / "dest")
    assert not (tmp_path / "dest").exists()


@pytest.mark.parametrize("content", [b"", b"plain text, not gzip", b"\x1f\x8b\x08\x00garbage"])
def test_files_that_are_not_tar_gz_are_refused(tmp_path, content):
    path = tmp_path / "bad.tar.gz"
    path.write_bytes(content)
    with pytest.raises(BadArchive):
        archive.read_manifest(path)
    with pytest.raises(BadArchive):
        archive.extract_tree(path, "course", tmp_path / "dest")


def test_a_truncated_archive_is_refused_without_leftovers(course, tmp_path):
    path = tmp_path / "b.tar.gz"
    archive.write_archive(path, MANIFEST, {"course": course})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(BadArchive):
        archive.extract_tree(path, "course", tmp_path / "dest")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.tar.gz", "home"]


def test_odd_member_times_do_not_break_extraction(tmp_path):
    odd = [
        member("course/nan.ipynb", data=b"{}", pax_headers={"mtime": "nan"}),
        member("course/old.ipynb", data=b"{}", mtime=-5),
        member("course/far.ipynb", data=b"{}", mtime=1 << 40),
    ]
    path = build(tmp_path / "odd.tar.gz", good_members() + odd)
    report = archive.extract_tree(path, "course", tmp_path / "dest")
    assert report.files == 4
    assert sorted(p.name for p in (tmp_path / "dest").iterdir()) == [
        "far.ipynb",
        "nan.ipynb",
        "ok.ipynb",
        "old.ipynb",
    ]


def test_files_changing_while_archived_are_reported(course, tmp_path, monkeypatch):
    """A running lab may write while a backup reads: the size at the start is stored."""
    big = course / "source" / "hw1" / "data" / "x.csv"

    class Shrinking(archive._ExactReader):
        def __init__(self, fd, size):
            super().__init__(fd, size)
            if os.path.samestat(os.fstat(fd), big.stat()):
                os.truncate(big, 10)  # after its size went into the member's header

    monkeypatch.setattr(archive, "_ExactReader", Shrinking)
    path = tmp_path / "b.tar.gz"
    report = archive.write_archive(path, MANIFEST, {"course": course})
    assert report.changed == ["course/source/hw1/data/x.csv"]
    with tarfile.open(path) as tar:
        data = tar.extractfile("course/source/hw1/data/x.csv").read()
    assert data[:10] == b"a,b\n" * 2 + b"a," and set(data[10:]) == {0}


def test_leftovers_of_a_crashed_copy_are_removed(course, tmp_path, monkeypatch):
    dest = tmp_path / "copy"
    monkeypatch.setattr(files, "discard", lambda parent_fd, temp: None)  # as if killed
    monkeypatch.setattr(files, "publish", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        files.copy_tree(course, dest)
    monkeypatch.undo()
    left = [p.name for p in tmp_path.iterdir() if p.name.startswith(".copy.partial-")]
    assert len(left) == 1
    (tmp_path / ".copyright").write_text("not ours")
    assert files.remove_leftovers(dest) == 1
    assert files.remove_leftovers(dest) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [".copyright", "home"]
    files.copy_tree(course, dest)
    assert (dest / "gradebook.db").is_file()


@needs_root
def test_nothing_is_removed_through_a_link_in_a_users_directory(course, outside):
    course.chmod(0o755)
    os.chown(course, GRADER.uid, GRADER.gid)
    (course / "ln").symlink_to(outside)
    before = snapshot(outside)
    for remove in (
        lambda: files.remove_tree(course / "ln" / "secret"),
        lambda: files.clear_dir(course / "ln" / "secret"),
        lambda: files.move_aside(course / "ln" / "sentinel", course / "aside"),
        lambda: files.move_aside(course / "gradebook.db", course / "ln" / "aside"),
    ):
        with pytest.raises(UnsafePath):
            remove()
    assert snapshot(outside) == before
    assert (course / "gradebook.db").is_file()


def test_too_deep_a_tree_is_refused_without_leftovers(tmp_path):
    deep = tmp_path / "deep"
    path = deep
    for _ in range(files.MAX_DEPTH + 3):
        path = path / "d"
    path.mkdir(parents=True)
    with pytest.raises(UnsafePath, match="deep"):
        files.copy_tree(deep, tmp_path / "copy")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deep"]
