"""fsutil: what the hub writes into users' homes keeps their owner, is atomic, follows no link."""

import os
import stat
import threading
from pathlib import Path

import pytest

from ananke_hub import fsutil
from ananke_hub.fsutil import Owner, UnsafePath

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


def snapshot(directory: Path) -> dict:
    return {
        p.relative_to(directory).as_posix(): p.read_bytes()
        for p in directory.rglob("*")
        if p.is_file()
    }


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
