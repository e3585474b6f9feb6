"""fsutil: what the hub, Kore and the labs write keeps its owner, is atomic, follows no link;
copies keep content and get their owner, removals and moves touch nothing outside."""

import errno
import os
import sqlite3
import stat
import threading
from pathlib import Path

import pytest
from fs_trees import owners, plant_traps, snapshot

from ananke_hub import fsutil
from ananke_hub.fsutil import CopyReport, Owner, UnsafePath

IS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(
    not IS_ROOT, reason="needs root to create homes owned by other uids (CI runs tests as root)"
)


@pytest.fixture
def homes(tmp_path):
    """A home, another user's home and a directory outside both, with a sentinel file each."""
    home, other, outside = tmp_path / "home", tmp_path / "other", tmp_path / "outside"
    for d in (home, other, outside):
        d.mkdir(mode=0o700)
        (d / "sentinel").write_text("untouched")
    return home, other, outside


GRADER = Owner(62010, 62010)


# -- paths ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "relpath", ["/etc/passwd", "..", "../other/x", "a/../../x", "a/..", "", "a\x00b"]
)
def test_paths_leaving_the_home_are_refused(homes, relpath):
    home, _, _ = homes
    with pytest.raises(UnsafePath):
        fsutil.write_file_in_home(home, relpath, b"x")


def test_relative_paths_are_split_into_components():
    assert fsutil.split_relpath("a/b/c.json") == ("a", "b", "c.json")
    assert fsutil.split_relpath(Path("a") / "b") == ("a", "b")


# -- links -----------------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["outside", "other", "/etc"])
def test_a_linked_directory_in_the_home_is_refused(homes, target):
    home, other, outside = homes
    dest = {"outside": outside, "other": other, "/etc": Path("/etc")}[target]
    (home / "config").symlink_to(dest)
    before = snapshot(outside), snapshot(other)
    with pytest.raises(UnsafePath, match="symbolic link"):
        fsutil.write_file_in_home(home, "config/ananke-test-must-not-exist", b"x")
    with pytest.raises(UnsafePath):
        fsutil.ensure_dir_in_home(home, "config/sub")
    with pytest.raises(UnsafePath):
        fsutil.read_file_in_home(home, "config/sentinel")
    assert (snapshot(outside), snapshot(other)) == before
    assert not Path("/etc/ananke-test-must-not-exist").exists()
    assert not (outside / "sub").exists() and not (other / "sub").exists()


def test_a_link_deeper_in_the_path_is_refused(homes):
    home, _, outside = homes
    (home / "a").mkdir()
    (home / "a" / "b").symlink_to(outside)
    with pytest.raises(UnsafePath):
        fsutil.write_file_in_home(home, "a/b/c/file", b"x")
    assert snapshot(outside) == {"sentinel": b"untouched"}


def test_a_link_as_the_file_is_replaced_not_followed(homes):
    home, other, _ = homes
    (home / "settings.json").symlink_to(other / "sentinel")
    fsutil.write_file_in_home(home, "settings.json", b"{}")
    assert not (home / "settings.json").is_symlink()
    assert (home / "settings.json").read_bytes() == b"{}"
    assert (other / "sentinel").read_text() == "untouched"


def test_reading_a_link_or_a_fifo_is_refused(homes):
    home, other, _ = homes
    (home / "link").symlink_to(other / "sentinel")
    os.mkfifo(home / "fifo")
    with pytest.raises(UnsafePath, match="symbolic link"):
        fsutil.read_file_in_home(home, "link")
    with pytest.raises(UnsafePath, match="regular file"):
        fsutil.read_file_in_home(home, "fifo")  # would block a plain open()
    assert fsutil.read_file_in_home(home, "missing") is None
    assert fsutil.read_file_in_home(home, "sentinel") == b"untouched"


def test_a_home_that_is_a_link_is_refused(homes, tmp_path):
    _, other, _ = homes
    (tmp_path / "linked-home").symlink_to(other)
    with pytest.raises(UnsafePath):
        fsutil.ensure_home(tmp_path / "linked-home")
    with pytest.raises(UnsafePath):
        fsutil.write_file_in_home(tmp_path / "linked-home", "x", b"x")
    assert snapshot(other) == {"sentinel": b"untouched"}


# -- writing -------------------------------------------------------------------------------------


def test_write_creates_parents_and_sets_the_mode(homes):
    home, _, _ = homes
    fsutil.write_file_in_home(home, "a/b/file.json", b"data", 0o600)
    assert (home / "a" / "b" / "file.json").read_bytes() == b"data"
    assert stat.S_IMODE((home / "a" / "b" / "file.json").stat().st_mode) == 0o600
    assert stat.S_IMODE((home / "a").stat().st_mode) == 0o755
    assert not [p for p in (home / "a" / "b").iterdir() if p.name.endswith(".tmp")]


def test_create_only_keeps_an_existing_file(homes):
    home, _, _ = homes
    fsutil.write_file_in_home(home, "db", b"first", replace=False)
    with pytest.raises(FileExistsError):
        fsutil.write_file_in_home(home, "db", b"second", replace=False)
    assert (home / "db").read_bytes() == b"first"
    assert sorted(p.name for p in home.iterdir()) == ["db", "sentinel"]


def test_a_failed_write_leaves_no_temporary_file(homes):
    home, _, _ = homes
    (home / "taken").mkdir()
    (home / "taken" / "x").write_text("x")
    with pytest.raises(OSError):
        fsutil.write_file_in_home(home, "taken", b"data")
    assert sorted(p.name for p in home.iterdir()) == ["sentinel", "taken"]


def test_readers_see_the_old_content_or_the_new_never_a_partial_file(homes):
    home, _, _ = homes
    old, new = b"A" * 4_000_000, b"B" * 4_000_000
    fsutil.write_file_in_home(home, "big", old)
    seen, stop = set(), threading.Event()

    def reader():
        while not stop.is_set():
            seen.add((home / "big").read_bytes())

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(20):
            fsutil.write_file_in_home(home, "big", new if i % 2 == 0 else old)
    finally:
        stop.set()
        thread.join()
    assert seen <= {old, new}, sorted(len(s) for s in seen)
    assert seen, "the reader never ran"


def test_ensure_home_creates_a_private_home_once(tmp_path):
    home = tmp_path / "homes" / "u1"
    owner = fsutil.ensure_home(home)
    assert owner == Owner(os.geteuid(), os.getegid())
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    home.chmod(0o755)  # systemd's StateDirectoryMode, say
    fsutil.ensure_home(home)
    assert stat.S_IMODE(home.stat().st_mode) == 0o755  # an existing home is left alone



def test_ensure_home_makes_missing_parents_traversable_and_the_last_private(tmp_path):
    """As ``mkdir -p`` and systemd: ``state/homes`` (state 0755, others' labs traverse
    it to the exchange) and ``homes`` 0700, like ``/var/lib/private``."""
    home = tmp_path / "state" / "homes" / "u1"
    old = os.umask(0o022)
    try:
        fsutil.ensure_home(home)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "state").stat().st_mode) == 0o755
    assert stat.S_IMODE(home.parent.stat().st_mode) == 0o700

# -- ownership (root) ----------------------------------------------------------------------------


@needs_root
def test_what_the_hub_writes_keeps_the_homes_current_owner(homes):
    home, _, _ = homes
    os.chown(home, 61234, 61235)
    assert fsutil.ensure_home(home) == Owner(61234, 61235)  # kept, not taken over
    fsutil.write_file_in_home(home, "nbgrader_config.json", b"{}")
    fsutil.ensure_dir_in_home(home, "source/ps1")
    for rel in ("nbgrader_config.json", "source", "source/ps1"):
        st = (home / rel).stat()
        assert (st.st_uid, st.st_gid) == (61234, 61235), rel
    # systemd gave the user a new uid at their lab's last start: new writes follow it.
    os.chown(home, 61236, 61236)
    fsutil.write_file_in_home(home, "nbgrader_config.json", b"{ }")
    st = (home / "nbgrader_config.json").stat()
    assert (st.st_uid, st.st_gid) == (61236, 61236)
    assert home.stat().st_uid == 61236  # the home itself is never chowned


@needs_root
def test_chown_like_home_refuses_a_hard_link_from_outside(homes):
    home, _, outside = homes
    os.chown(home, 61234, 61234)
    os.link(outside / "sentinel", home / "linked")
    with pytest.raises(UnsafePath, match="hard links"):
        fsutil.chown_like_home(home, "linked")
    assert (outside / "sentinel").stat().st_uid == 0
    (home / "mine").write_text("x")
    fsutil.chown_like_home(home, "mine")
    assert (home / "mine").stat().st_uid == 61234


@needs_root
def test_owned_dirs_and_reowning_a_tree(tmp_path):
    base = tmp_path / "exchange"
    base.mkdir()
    old, new = Owner(61234, 61234), Owner(61240, 61240)
    assert fsutil.ensure_owned_dir(base, "c", mode=0o755, owner=old) is None
    assert fsutil.ensure_owned_dir(base, "c/inbound", mode=0o3733, owner=old) is None
    st = (base / "c" / "inbound").stat()
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (61234, 0o3733)
    # A student's submission (their uid, the grader's group) and a root-owned file.
    sub = base / "c" / "inbound" / "s1"
    sub.mkdir()
    (sub / "nb").write_text("x")
    for p in (sub, sub / "nb"):
        os.chown(p, 62001, 61234)
    (base / "c" / "inbound" / "rootfile").write_text("x")
    assert fsutil.ensure_owned_dir(base, "c/inbound", mode=0o3733, owner=new) == old
    assert fsutil.reown_tree(base, "c/inbound", old=old, new=new, group_only=True) == 2
    assert (sub.stat().st_uid, sub.stat().st_gid) == (62001, 61240)
    assert ((sub / "nb").stat().st_uid, (sub / "nb").stat().st_gid) == (62001, 61240)
    # Root's own entries are left alone (they may be linked in from elsewhere).
    assert (base / "c" / "inbound" / "rootfile").stat().st_gid == 61234
    # A link put in place of a directory is refused, not followed.
    (base / "c" / "feedback").symlink_to(tmp_path)
    with pytest.raises(UnsafePath):
        fsutil.ensure_owned_dir(base, "c/feedback", mode=0o711, owner=new)
    assert tmp_path.stat().st_uid == 0


# -- confined work -------------------------------------------------------------------------------


@needs_root
def test_run_in_home_is_confined_to_the_home_as_its_owner(homes):
    home, other, outside = homes
    os.chown(home, 61234, 61234)
    (home / "escape").symlink_to(outside / "sentinel")
    (home / "to-etc").symlink_to("/etc/passwd")
    (home / "root-only").write_text("secret")
    os.chmod(home / "root-only", 0o600)
    cwd = os.getcwd()

    def work(root: Path):
        seen = {"root": str(root), "listing": sorted(os.listdir(root))}
        for name in ("escape", "to-etc"):
            try:
                (root / name).read_text()
                seen[name] = "read"
            except FileNotFoundError:
                seen[name] = "not found"  # the link resolved inside the home
        try:
            (root / "root-only").read_text()
            seen["root-only"] = "read"
        except PermissionError:
            seen["root-only"] = "denied"
        (root / "new").write_text("made")
        return seen

    seen = fsutil.run_in_home(home, work)
    assert seen["root"] == "/"
    assert "sentinel" in seen["listing"]
    assert (seen["escape"], seen["to-etc"], seen["root-only"]) == (
        "not found",
        "not found",
        "denied",
    )
    st = (home / "new").stat()
    assert (st.st_uid, st.st_gid) == (61234, 61234)
    # The rest of the process is not confined.
    assert os.getcwd() == cwd and Path("/etc/passwd").exists()
    assert snapshot(outside) == {"sentinel": b"untouched"}


@needs_root
def test_run_in_home_passes_errors_back(homes):
    home, _, _ = homes

    def work(root):
        raise KeyError("boom")

    with pytest.raises(KeyError, match="boom"):
        fsutil.run_in_home(home, work)


# -- trees (copy, remove, move aside, clear, size) ------------------------------------------------


# -- copy_tree ------------------------------------------------------------------------------------


@needs_root
def test_copy_tree_keeps_content_modes_and_sets_the_owner(course, tmp_path):
    dest = tmp_path / "target" / "copy"
    dest.parent.mkdir()
    (course / "source" / "hw1" / "p1.ipynb").chmod(0o4755)  # setuid is not copied

    report = fsutil.copy_tree(course, dest, owner=GRADER)

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
    fsutil.copy_tree(course, tmp_path / "copy")
    assert owners(tmp_path / "copy") == {(os.geteuid(), os.getegid())}


def test_links_fifos_and_hard_links_are_skipped_not_followed(course, outside, tmp_path):
    skipped = plant_traps(course, outside)
    before = snapshot(outside)

    report = fsutil.copy_tree(course, tmp_path / "copy")

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
        fsutil.copy_tree(link, tmp_path / "copy")
    assert not (tmp_path / "copy").exists()


@needs_root
def test_a_link_on_the_way_in_a_users_directory_is_refused(course, outside, tmp_path):
    """A home belongs to its user: a link the user put in it is never followed."""
    course.chmod(0o755)
    os.chown(course, GRADER.uid, GRADER.gid)
    (course / "ln").symlink_to(outside)
    with pytest.raises(UnsafePath, match="symbolic link"):
        fsutil.copy_tree(course / "ln" / "secret", tmp_path / "copy")
    with pytest.raises(UnsafePath):
        fsutil.copy_tree(course / "source", course / "ln" / "copy")
    assert not (tmp_path / "copy").exists()
    assert not (outside / "copy").exists()


def test_a_link_in_a_world_writable_directory_is_refused(course, tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    (shared / "ln").symlink_to(course)
    with pytest.raises(UnsafePath):
        fsutil.tree_size(shared / "ln" / "source")


def test_a_link_only_root_could_make_is_followed_on_the_way(course, tmp_path):
    """Like systemd's /var/lib/<user> -> private/<user>: root's link in root's directory."""
    (tmp_path / "trusted").mkdir(mode=0o755)
    (tmp_path / "trusted" / "home").symlink_to(course)
    fsutil.copy_tree(tmp_path / "trusted" / "home" / "source", tmp_path / "copy")
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
        fsutil.copy_tree(course, dest)
    assert not (outside / "new").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dest", "home", "outside"]


def test_copy_tree_needs_the_destinations_parent(course, tmp_path):
    with pytest.raises(FileNotFoundError):
        fsutil.copy_tree(course, tmp_path / "missing" / "copy")


@pytest.mark.parametrize("path", ["relative/dir", "/tmp/../etc", "/tmp/a\x00b"])
def test_paths_that_are_not_plain_absolute_paths_are_refused(course, path):
    with pytest.raises(UnsafePath):
        fsutil.copy_tree(Path(path) if "\x00" not in path else path, course / "x")


def test_a_failed_copy_leaves_nothing_behind(course, tmp_path, monkeypatch):
    real, calls = fsutil.write_file_at, []

    def failing(*args, **kwargs):
        calls.append(args)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(fsutil, "write_file_at", failing)
    with pytest.raises(OSError, match="No space"):
        fsutil.copy_tree(course, tmp_path / "copy")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home"]


def test_a_copy_into_its_own_source_does_not_recurse(course):
    report = fsutil.copy_tree(course / "source", course / "source" / "hw1" / "copy")
    assert (course / "source" / "hw1" / "copy" / "hw1" / "p1.ipynb").is_file()
    assert not (course / "source" / "hw1" / "copy" / "hw1" / "copy").exists()
    assert report.skipped == []


# -- copy_file ----------------------------------------------------------------------------------


@needs_root
def test_copy_file_copies_one_notebook_with_owner(course, tmp_path):
    src = course / "source" / "hw1" / "p1.ipynb"
    src.chmod(0o640)
    dest = tmp_path / "p1.ipynb"
    assert fsutil.copy_file(src, dest, owner=GRADER) == src.stat().st_size
    assert dest.read_bytes() == src.read_bytes()
    assert (dest.stat().st_uid, stat.S_IMODE(dest.stat().st_mode)) == (GRADER.uid, 0o640)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home", "p1.ipynb"]


def test_copy_file_refuses_links_fifos_and_existing_dests(course, outside, tmp_path):
    plant_traps(course, outside)
    hw1 = course / "source" / "hw1"
    for src in (hw1 / "relative", hw1 / "pipe", course / "source" / "hardlink", hw1 / "answers"):
        with pytest.raises((UnsafePath, IsADirectoryError)):
            fsutil.copy_file(src, tmp_path / "x")
    assert not (tmp_path / "x").exists()
    (tmp_path / "dangling").symlink_to(outside / "created")
    for dest in (hw1 / "p2 (extra).ipynb", tmp_path / "dangling"):
        with pytest.raises(FileExistsError):
            fsutil.copy_file(hw1 / "p1.ipynb", dest)
    assert not (outside / "created").exists()
    assert (hw1 / "p2 (extra).ipynb").read_text() == '{"cells": [1]}'


# -- remove_tree, move_aside, clear_dir, tree_size ----------------------------------------------


def test_remove_tree_removes_links_not_their_targets(course, outside, tmp_path):
    plant_traps(course, outside)
    before = snapshot(outside)
    assert fsutil.remove_tree(course) is True
    assert not course.exists()
    assert snapshot(outside) == before
    assert Path("/etc/passwd").exists()


def test_remove_tree_on_a_link_removes_the_link_only(outside, tmp_path):
    link = tmp_path / "link"
    link.symlink_to(outside)
    assert fsutil.remove_tree(link) is True
    assert not link.is_symlink()
    assert (outside / "sentinel").read_text() == "untouched"


def test_remove_tree_is_idempotent(course, tmp_path):
    assert fsutil.remove_tree(course / "gradebook.db") is True
    assert fsutil.remove_tree(course / "gradebook.db") is False
    assert fsutil.remove_tree(course / "source") is True
    assert fsutil.remove_tree(course / "source") is False
    assert fsutil.remove_tree(tmp_path / "no" / "such" / "dir") is False
    assert sorted(p.name for p in course.iterdir()) == ["nbgrader_config.json"]


@needs_root
def test_move_aside_makes_unique_names_in_an_owned_directory(course, tmp_path):
    aside = course / ".ananke" / "replaced"
    first = fsutil.move_aside(course / "source" / "hw1", aside, owner=GRADER)
    (course / "source" / "hw1").mkdir()
    (course / "source" / "hw1" / "new.ipynb").write_text("{}")
    second = fsutil.move_aside(course / "source" / "hw1", aside, owner=GRADER)

    assert first != second and first.parent == second.parent == aside
    assert first.name.startswith("hw1-") and first.name.endswith("Z")
    assert (first / "p1.ipynb").is_file() and (second / "new.ipynb").is_file()
    assert not (course / "source" / "hw1").exists()
    for directory in (aside, aside.parent):
        st = directory.stat()
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (GRADER.uid, 0o700)
    with pytest.raises(FileNotFoundError):
        fsutil.move_aside(course / "source" / "hw1", aside)


def test_move_aside_moves_a_link_as_a_link(course, outside):
    (course / "source" / "hw9").symlink_to(outside)
    moved = fsutil.move_aside(course / "source" / "hw9", course / "aside")
    assert moved.is_symlink()
    assert snapshot(outside)["sentinel"] == b"untouched"


def test_clear_dir_keeps_what_it_is_told_and_follows_nothing(course, outside):
    skipped = plant_traps(course, outside)
    before = snapshot(outside)
    top_level = {rel.split("/")[0] for rel in skipped}
    entries = {p.name for p in course.iterdir()} | top_level
    assert fsutil.clear_dir(course, keep={"source", "nbgrader_config.json"}) == len(entries) - 2
    assert sorted(p.name for p in course.iterdir()) == ["nbgrader_config.json", "source"]
    assert fsutil.clear_dir(course / "source") == 5
    assert list((course / "source").iterdir()) == []
    assert snapshot(outside) == before
    assert fsutil.clear_dir(course / "missing") == 0


def test_clear_dir_refuses_a_linked_directory(course, tmp_path):
    (tmp_path / "ln").symlink_to(course)
    with pytest.raises(UnsafePath):
        fsutil.clear_dir(tmp_path / "ln")
    assert (course / "gradebook.db").exists()


def test_tree_size_counts_what_a_copy_would_hold(course, outside):
    plant_traps(course, outside)
    expected = [p for p in course.rglob("*") if p.is_file() and not p.is_symlink()]
    expected = [p for p in expected if p.name != "hardlink"]
    assert fsutil.tree_size(course) == (len(expected), sum(p.stat().st_size for p in expected))
    assert fsutil.tree_size(course / "gradebook.db") == (
        1,
        (course / "gradebook.db").stat().st_size,
    )
    with pytest.raises(UnsafePath):
        fsutil.tree_size(course / "passwd")


def test_leftovers_of_a_crashed_copy_are_removed(course, tmp_path, monkeypatch):
    dest = tmp_path / "copy"
    monkeypatch.setattr(fsutil, "discard", lambda parent_fd, temp: None)  # as if killed
    monkeypatch.setattr(fsutil, "publish", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        fsutil.copy_tree(course, dest)
    monkeypatch.undo()
    left = [p.name for p in tmp_path.iterdir() if p.name.startswith(".copy.partial-")]
    assert len(left) == 1
    (tmp_path / ".copyright").write_text("not ours")
    assert fsutil.remove_leftovers(dest) == 1
    assert fsutil.remove_leftovers(dest) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [".copyright", "home"]
    fsutil.copy_tree(course, dest)
    assert (dest / "gradebook.db").is_file()


@needs_root
def test_nothing_is_removed_through_a_link_in_a_users_directory(course, outside):
    course.chmod(0o755)
    os.chown(course, GRADER.uid, GRADER.gid)
    (course / "ln").symlink_to(outside)
    before = snapshot(outside)
    for remove in (
        lambda: fsutil.remove_tree(course / "ln" / "secret"),
        lambda: fsutil.clear_dir(course / "ln" / "secret"),
        lambda: fsutil.move_aside(course / "ln" / "sentinel", course / "aside"),
        lambda: fsutil.move_aside(course / "gradebook.db", course / "ln" / "aside"),
    ):
        with pytest.raises(UnsafePath):
            remove()
    assert snapshot(outside) == before
    assert (course / "gradebook.db").is_file()


def test_too_deep_a_tree_is_refused_without_leftovers(tmp_path):
    deep = tmp_path / "deep"
    path = deep
    for _ in range(fsutil.MAX_DEPTH + 3):
        path = path / "d"
    path.mkdir(parents=True)
    with pytest.raises(UnsafePath, match="deep"):
        fsutil.copy_tree(deep, tmp_path / "copy")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deep"]


# -- one module for the hub, Kore and the labs -------------------------------------------------


def test_a_refusal_is_an_oserror_and_a_valueerror_wherever_it_comes_from(homes, course, tmp_path):
    """One UnsafePath: callers around file work catch OSError (Kore's settings route, the
    hub's provisioning), callers around data catch ValueError; both see every refusal,
    from the writes into homes as from the tree work."""
    home, other, _ = homes
    (home / "config").symlink_to(other)
    (tmp_path / "ln").symlink_to(course)
    refusals = [
        lambda: fsutil.write_file_in_home(home, "config/x", b"x"),
        lambda: fsutil.read_file_in_home(home, "../x"),
        lambda: fsutil.copy_tree(tmp_path / "ln", tmp_path / "copy"),
        lambda: fsutil.clear_dir(tmp_path / "ln"),
        lambda: fsutil.copy_file(course / "gradebook.db", Path("relative")),
    ]
    for refuse in refusals:
        with pytest.raises(OSError) as as_oserror:
            refuse()
        assert isinstance(as_oserror.value, ValueError)
        assert isinstance(as_oserror.value, PermissionError)
    assert not (tmp_path / "copy").exists() and snapshot(other) == {"sentinel": b"untouched"}


def planted_link(tmp_path: Path, target: Path) -> Path:
    """``shared/homes`` -> ``target``, a link another user made in a world-writable
    directory (as in /tmp): root must not follow it on the way to a home."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    link = shared / "homes"
    link.symlink_to(target)
    os.lchown(link, GRADER.uid, GRADER.gid)
    return link


@needs_root
def test_a_link_another_user_planted_above_a_home_is_not_followed(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "u1").mkdir(parents=True)
    link = planted_link(tmp_path, elsewhere)
    with pytest.raises(UnsafePath, match="symbolic link"):
        fsutil.write_file_in_home(link / "u1", "note", b"x")
    with pytest.raises(UnsafePath, match="symbolic link"):
        fsutil.ensure_home(link / "u2")
    with pytest.raises(UnsafePath, match="symbolic link"):
        fsutil.home_owner(link / "u1")
    assert sorted(p.name for p in elsewhere.iterdir()) == ["u1"]
    assert list((elsewhere / "u1").iterdir()) == []


@needs_root
def test_a_link_root_made_above_a_home_is_followed(tmp_path):
    """systemd's /var/lib/<user> -> /var/lib/private/<user>: root's link in root's
    directory that nobody else can write to."""
    real = tmp_path / "private"
    (real / "u1").mkdir(parents=True)
    trusted = tmp_path / "lib"
    trusted.mkdir(mode=0o755)
    (trusted / "homes").symlink_to(real)
    fsutil.write_file_in_home(trusted / "homes" / "u1", "note", b"x")
    assert (real / "u1" / "note").read_bytes() == b"x"


# -- the labs' copies (the exchange plugins, the sandbox) -------------------------------------


class Log:
    def __init__(self):
        self.warnings = []

    def warning(self, message, *args):
        self.warnings.append(message % args)


def test_the_exchange_copies_files_and_directories_only(course, outside, tmp_path):
    from ananke_hub.lab.exchange import copy_tree

    plant_traps(course, outside)
    (course / "source" / "hw1" / "data" / "x.csv").chmod(0o644)
    os.link(course / "nbgrader_config.json", course / "config-copy.json")  # the user's own
    seen = []

    def ignore(directory, names):
        seen.append(directory)
        return [n for n in names if n == "gradebook.db"]

    dest = tmp_path / "submission"
    dest.mkdir(mode=0o700)
    log = Log()
    copy_tree(str(course), str(dest), ignore=ignore, log=log)
    copied = snapshot(dest)
    assert not any(v == "special" or isinstance(v, tuple) for v in copied.values())
    assert "gradebook.db" not in copied and "source/hw1/answers" not in copied
    assert copied["config-copy.json"] == (course / "nbgrader_config.json").read_bytes()
    assert copied["source/hardlink"] == b"untouched"  # a hard link a user made is copied
    assert copied["source/hw1/data/x.csv"] == (course / "source/hw1/data/x.csv").read_bytes()
    assert seen[0] == str(course) and str(course / "source" / "hw1") in seen
    assert sorted(log.warnings) == sorted(
        f"Skipping {course / rel}: links and special files are not copied"
        for rel in (
            "passwd",
            "source/etc",
            "source/hw1/answers",
            "source/hw1/pipe",
            "source/hw1/relative",
        )
    )
    # Private until the plugin sets the final modes.
    modes = {stat.S_IMODE(p.lstat().st_mode) for p in dest.rglob("*")}
    assert modes == {0o700, 0o600}
    assert snapshot(outside) == {
        "secret": None,
        "secret/solution.ipynb": b"the answers",
        "sentinel": b"untouched",
    }


def test_the_exchange_refuses_a_linked_top_unless_told(course, tmp_path):
    from ananke_hub.lab.exchange import copy_tree

    (tmp_path / "ln").symlink_to(course / "source")
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(OSError) as refused:
        copy_tree(str(tmp_path / "ln"), str(dest))
    assert refused.value.errno in (errno.ELOOP, errno.ENOTDIR)  # what collect checks
    assert list(dest.iterdir()) == []
    copy_tree(str(tmp_path / "ln"), str(dest), follow_top=True)  # submit: the student's own
    assert (dest / "hw1" / "p1.ipynb").is_file()


def test_set_tree_modes_sets_every_directory_and_file(course, tmp_path):
    fsutil.set_tree_modes(course, 0o750, 0o640)
    for path in [course, *course.rglob("*")]:
        assert stat.S_IMODE(path.lstat().st_mode) == (0o750 if path.is_dir() else 0o640)


# -- files of the hub's and Kore's own (secrets, keys) -------------------------------------------


@pytest.mark.parametrize("where", ["home", "state"])
def test_created_once_without_hard_links_on_the_file_system(homes, tmp_path, monkeypatch, where):
    """Some file systems refuse link(2) (EPERM): a file made once is then created with
    O_EXCL under its name, and still never replaces one that exists."""
    from ananke_hub.persist import write_new_private_file

    home, _, _ = homes

    def no_hard_links(*args, **kwargs):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_hard_links)
    if where == "home":
        path = home / "db"
        write = lambda data: fsutil.write_file_in_home(home, "db", data, 0o600, replace=False)  # noqa: E731
    else:
        path = tmp_path / "secret"
        write = lambda data: write_new_private_file(path, data)  # noqa: E731
    write(b"first")
    with pytest.raises(FileExistsError):
        write(b"second")
    assert path.read_bytes() == b"first" and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in path.parent.iterdir() if p.name.startswith(".")) == []


@needs_root
def test_a_secret_is_not_written_through_a_link_another_user_planted(tmp_path):
    from ananke_hub.persist import write_new_private_file

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    link = planted_link(tmp_path, elsewhere)
    with pytest.raises(UnsafePath, match="symbolic link"):
        write_new_private_file(link / "cookie_secret", b"s3cret")
    assert list(elsewhere.iterdir()) == []
