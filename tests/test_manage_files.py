"""Course backups (kore.manage.archive): archives round-trip without following a link, and
a malicious archive is refused whole with nothing written. The tree work they build on
(copies, removals, moves aside) is tested with fsutil in tests/test_fsutil.py."""

import io
import json
import os
import stat
import tarfile
from pathlib import Path

import pytest
from fs_trees import owners, plant_traps, snapshot

from ananke_hub.fsutil import Owner, UnsafePath
from kore.manage import archive
from kore.manage.archive import ArchiveTooLarge, BadArchive, NotInArchive

IS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not IS_ROOT, reason="needs root to give files to other uids")

GRADER = Owner(62010, 62010)


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
