"""A course on disk: course directory, settings, gradebook, exchange directories, enrolment."""

import json
import os
import stat
import threading
from pathlib import Path

import pytest
from traitlets.config import Config, PyFileConfigLoader

from ananke_hub import fsutil
from ananke_hub.courses import nbgrader_setup
from ananke_hub.courses.layout import CourseLayout, grader_username
from ananke_hub.courses.nbgrader_setup import StudentRecord
from ananke_hub.courses.settings import CourseSettings, SettingsError
from ananke_hub.lab import exchange
from ananke_hub.lab.sandbox import EXECUTE_CLASS as SANDBOXED_EXECUTE

COURSE = "c-0123456789abcdef"
IS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(
    not IS_ROOT, reason="needs root to own homes by other uids (CI runs tests as root)"
)
LAB_CONFIG = Path(exchange.__file__).parent / "jupyter" / "nbgrader_config.py"


@pytest.fixture
def paths(tmp_path):
    layout = CourseLayout(
        homes_root=str(tmp_path / "homes"), exchange_root=str(tmp_path / "exchange")
    )
    return layout.course(COURSE)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def gradebook(paths):
    from nbgrader.api import Gradebook

    return Gradebook(paths.gradebook_url, COURSE)


# -- settings ------------------------------------------------------------------------------------


def test_default_settings_map_to_nbgrader_config():
    config = CourseSettings().nbgrader_config(COURSE)
    assert config["CourseDirectory"] == {"course_id": COURSE}
    assert config["GenerateFeedback"]["preprocessors"] == [
        "nbgrader.preprocessors.GetGrades",
        "nbconvert.preprocessors.CSSHTMLHeaderPreprocessor",
        "ananke_hub.lab.nbgrader_preprocessors.ClearHiddenTests",
    ]
    assert config["Execute"] == {"timeout": 30}
    assert config["SandboxProvisioner"] == {
        "time_limit": 600,
        "memory_mb": 2048,
        "cpu_seconds": 600,
        "tasks_max": 128,
    }
    json.dumps(config)  # data, not code


def test_sandbox_limits_reach_the_provisioner_through_nbgrader_config():
    """The course's limits, as nbgrader's executor hands its config to the kernel manager
    and the kernel manager to the provisioner."""
    from ananke_hub.lab.sandbox.execute import SandboxedExecute, SandboxKernelManager
    from ananke_hub.lab.sandbox.provisioner import SandboxProvisioner

    settings = CourseSettings(sandbox_time_limit=42, sandbox_memory_mb=512, sandbox_tasks=64)
    executor = SandboxedExecute(config=Config(settings.nbgrader_config(COURSE)))
    assert executor.kernel_manager_class is SandboxKernelManager
    km = executor.kernel_manager_class(config=executor.config)
    assert km.kernel_spec.metadata["kernel_provisioner"]["provisioner_name"] == "ananke-sandbox"
    provisioner = SandboxProvisioner(kernel_id="k", kernel_spec=km.kernel_spec, parent=km)
    assert (provisioner.time_limit, provisioner.memory_mb, provisioner.tasks_max) == (42, 512, 64)
    assert provisioner.cpu_seconds == 600


def test_the_lab_config_autogrades_with_the_sandboxed_executor():
    from nbgrader.converters import Autograde
    from nbgrader.preprocessors import Execute

    from ananke_hub.lab.sandbox.execute import SandboxedExecute

    config = PyFileConfigLoader("nbgrader_config.py", path=str(LAB_CONFIG.parent)).load_config()
    autograde = Autograde(config=config)
    assert SandboxedExecute in autograde.autograde_preprocessors
    assert Execute not in autograde.autograde_preprocessors
    # The rest of nbgrader's list, in nbgrader's order.
    default = Autograde.class_traits()["autograde_preprocessors"].default()
    assert [p for p in autograde.autograde_preprocessors if p is not SandboxedExecute] == [
        p for p in default if p is not Execute
    ]


@pytest.mark.parametrize(
    ("remove", "rerun", "extra"),
    [
        (False, False, []),
        (False, True, []),  # re-running only makes sense without hidden tests
        (True, False, ["ananke_hub.lab.nbgrader_preprocessors.ClearHiddenTests"]),
        (True, True, ["ananke_hub.lab.nbgrader_preprocessors.ClearHiddenTests", SANDBOXED_EXECUTE]),
    ],
)
def test_feedback_preprocessors_follow_the_settings(remove, rerun, extra):
    settings = CourseSettings(remove_hidden_tests_in_feedback=remove, reexecute_for_feedback=rerun)
    assert settings.feedback_preprocessors()[2:] == extra


def test_settings_round_trip_through_data():
    settings = CourseSettings(reexecute_for_feedback=True, execute_timeout=120)
    assert CourseSettings.from_dict(settings.to_dict()) == settings
    assert CourseSettings.from_dict({}) == CourseSettings()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"remove_hidden_tests": True}, "Unknown course setting"),
        ({"remove_hidden_tests_in_feedback": "yes"}, "true or false"),
        ({"execute_timeout": True}, "whole number"),
        ({"execute_timeout": "30"}, "whole number"),
        ({"execute_timeout": 0}, "between 1 and"),
        ({"sandbox_memory_mb": 100}, "'sandbox_memory_mb' must be between 256 and 65536 MiB"),
        ({"sandbox_tasks": 10**6}, "'sandbox_tasks' must be between 16 and 4096"),
        ({"sandbox_time_limit": 1.5}, "whole number"),
        ([], "must be an object"),
    ],
)
def test_bad_settings_are_refused_with_the_setting_named(data, message):
    with pytest.raises(SettingsError, match=message):
        CourseSettings.from_dict(data)


def test_nbgrader_reads_the_feedback_preprocessors_from_the_json():
    from nbgrader.converters import GenerateFeedback

    config = Config(CourseSettings(reexecute_for_feedback=True).nbgrader_config(COURSE))
    converter = GenerateFeedback(config=config)
    assert converter.preprocessors[-1] == SANDBOXED_EXECUTE


# -- ensure_course_files -------------------------------------------------------------------------


def test_course_files_are_created_and_idempotent(paths):
    nbgrader_setup.ensure_course_files(paths, COURSE, CourseSettings())
    config = json.loads(paths.nbgrader_config.read_text())
    assert config == CourseSettings().nbgrader_config(COURSE)
    assert paths.source.is_dir() and paths.gradebook.is_file()
    assert mode(paths.home) == 0o700
    before = {
        p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (paths.nbgrader_config, paths.gradebook)
    }
    nbgrader_setup.ensure_course_files(paths, COURSE, CourseSettings())
    after = {
        p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (paths.nbgrader_config, paths.gradebook)
    }
    assert after == before  # nothing rewritten
    assert sorted(p.name for p in paths.home.iterdir()) == [
        "gradebook.db",
        "nbgrader_config.json",
        "source",
    ]


def test_changed_settings_rewrite_the_config(paths):
    nbgrader_setup.ensure_course_files(paths, COURSE, CourseSettings())
    nbgrader_setup.ensure_course_files(paths, COURSE, CourseSettings(execute_timeout=99))
    assert json.loads(paths.nbgrader_config.read_text())["Execute"] == {"timeout": 99}


def test_exchange_directories_have_the_private_exchange_modes(paths):
    nbgrader_setup.ensure_course_files(paths, COURSE, CourseSettings())
    owner = fsutil.home_owner(paths.home)
    assert mode(paths.exchange.parent) == 0o755
    expected = {
        paths.exchange: 0o755,
        paths.outbound: 0o755,
        paths.inbound: 0o3733,
        paths.feedback: 0o711,
    }
    for path, want in expected.items():
        assert oct(mode(path)) == oct(want), path
        st = path.stat()
        assert (st.st_uid, st.st_gid) == (owner.uid, owner.gid), path


def test_a_world_writable_exchange_root_is_made_the_hubs(paths):
    paths.exchange.parent.mkdir(mode=0o777)
    paths.exchange.parent.chmod(0o777)  # as nbgrader's docs tell admins to make it
    nbgrader_setup.ensure_course_files(paths, COURSE, CourseSettings())
    assert mode(paths.exchange.parent) == 0o755


def test_the_gradebook_knows_the_course(paths):
    from nbgrader.api import Course

    nbgrader_setup.ensure_course_files(paths, COURSE, CourseSettings())
    with gradebook(paths) as gb:
        assert [c.id for c in gb.db.query(Course).all()] == [COURSE]
    assert mode(paths.gradebook) == 0o600


def test_our_new_gradebook_is_the_one_nbgrader_makes(paths, tmp_path, monkeypatch):
    """Made without the alembic command, yet identical to nbgrader's own new gradebook."""
    import sqlite3
    import sys

    from nbgrader.api import Gradebook

    def dump(path):
        db = sqlite3.connect(path)
        try:
            return (
                sorted(db.execute("SELECT type, name, sql FROM sqlite_master")),
                db.execute("SELECT * FROM alembic_version").fetchall(),
                db.execute("SELECT id FROM course").fetchall(),
            )
        finally:
            db.close()

    nbgrader_setup.ensure_course_files(paths, COURSE, CourseSettings())
    monkeypatch.setenv("PATH", os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    Gradebook(f"sqlite:///{tmp_path / 'nbgrader.db'}", COURSE).close()  # runs `alembic heads`
    assert dump(paths.gradebook) == dump(tmp_path / "nbgrader.db")


def test_paths_of_another_course_are_refused(paths):
    with pytest.raises(ValueError, match="not 'c-"):
        nbgrader_setup.ensure_course_files(paths, "c-fedcba9876543210", CourseSettings())


# -- students ------------------------------------------------------------------------------------


def test_students_are_enrolled_and_kept_up_to_date(paths):
    nbgrader_setup.ensure_course_files(paths, COURSE, CourseSettings())
    nbgrader_setup.enrol_students(
        paths,
        [
            StudentRecord("u1", "sub-1", "Ada", "Lovelace", "ada@example.edu"),
            StudentRecord("u2", "sub-2"),
        ],
    )
    nbgrader_setup.enrol_students(
        paths,
        [
            StudentRecord("u1", "sub-1", "Ada", "King", "ada.king@example.edu"),
            StudentRecord("u2", "sub-2", "Bo", "", ""),
        ],
    )
    # A later launch without names (privacy settings in the LMS) erases nothing.
    nbgrader_setup.enrol_students(paths, [StudentRecord("u1", "sub-1")])
    with gradebook(paths) as gb:
        ada, bo = gb.find_student("u1"), gb.find_student("u2")
        assert (ada.first_name, ada.last_name, ada.email, ada.lms_user_id) == (
            "Ada",
            "King",
            "ada.king@example.edu",
            "sub-1",
        )
        assert (bo.first_name, bo.last_name, bo.email, bo.lms_user_id) == (
            "Bo",
            None,
            None,
            "sub-2",
        )
        assert len(gb.students) == 2


def test_a_batch_of_students_is_one_gradebook_commit(paths):
    """A class arriving together is enrolled as one batch (provision.GradebookEnrolments):
    the batch waits for the gradebook's disk once, not once per student as nbgrader's
    own update_or_create_student would (a commit each)."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    nbgrader_setup.ensure_course_files(paths, COURSE, CourseSettings())
    nbgrader_setup.enrol_students(paths, [StudentRecord("u1", "sub-1", "Ada")])
    writes, commits = [], []  # commits that write (opening the gradebook commits too)

    def gradebook_of(conn) -> bool:
        return str(conn.engine.url.database).endswith(nbgrader_setup.GRADEBOOK_FILE)

    def written(conn, cursor, statement, *args):
        if gradebook_of(conn) and statement.split(None, 1)[0].upper() in ("INSERT", "UPDATE"):
            writes.append(statement)

    def committed(conn):
        if gradebook_of(conn) and writes:
            commits.append(list(writes))
            writes.clear()

    event.listen(Engine, "before_cursor_execute", written)
    event.listen(Engine, "commit", committed)
    try:
        nbgrader_setup.enrol_students(
            paths,
            [StudentRecord("u1", "sub-1", "Ada", "King")]  # known: updated
            + [StudentRecord(f"u{i}", f"sub-{i}", f"N{i}") for i in range(2, 7)],  # new
        )
    finally:
        event.remove(Engine, "before_cursor_execute", written)
        event.remove(Engine, "commit", committed)
    assert len(commits) == 1 and not writes
    with gradebook(paths) as gb:
        assert sorted(s.id for s in gb.students) == [f"u{i}" for i in range(1, 7)]
        assert gb.find_student("u1").last_name == "King"
        assert gb.find_student("u4").first_name == "N4"


def test_concurrent_enrolments_lose_nobody(paths):
    nbgrader_setup.ensure_course_files(paths, COURSE, CourseSettings())
    errors = []

    def enrol(i):
        try:
            nbgrader_setup.enrol_students(paths, [StudentRecord(f"u{i}", f"sub-{i}", f"N{i}")])
        except Exception as exc:  # collected for the assert below
            errors.append(exc)

    threads = [threading.Thread(target=enrol, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with gradebook(paths) as gb:
        assert sorted(s.id for s in gb.students) == sorted(f"u{i}" for i in range(12))


@pytest.mark.parametrize("name", ["", "a/b", "a+b"])
def test_names_that_cannot_be_student_ids_are_refused(paths, name):
    nbgrader_setup.ensure_course_files(paths, COURSE, CourseSettings())
    with pytest.raises(ValueError):
        nbgrader_setup.enrol_students(paths, [StudentRecord(name)])


def test_enrolling_before_the_course_exists_says_what_to_do(paths):
    with pytest.raises(FileNotFoundError, match="ensure_course_files"):
        nbgrader_setup.enrol_students(paths, [StudentRecord("u1")])


# -- ownership and links (root) ------------------------------------------------------------------


def give(home: Path, uid: int) -> None:
    """What systemd does when the user's unit starts: the whole state directory is theirs."""
    for dirpath, dirnames, filenames in os.walk(home):
        for name in dirnames + filenames:
            os.chown(os.path.join(dirpath, name), uid, uid, follow_symlinks=False)
    os.chown(home, uid, uid)


@needs_root
def test_a_home_owned_by_another_uid_keeps_its_owner(paths):
    nbgrader_setup.ensure_course_files(paths, COURSE, CourseSettings())
    assert paths.home.stat().st_uid == 0  # new homes are the hub's until systemd hands them over
    give(paths.home, 61234)
    nbgrader_setup.ensure_course_files(paths, COURSE, CourseSettings(execute_timeout=5))
    nbgrader_setup.enrol_students(paths, [StudentRecord("u1", "sub-1", "Ada")])
    for p in [paths.home, *paths.home.rglob("*")]:
        assert (p.stat().st_uid, p.stat().st_gid) == (61234, 61234), p
    for p in (paths.exchange, paths.outbound, paths.inbound, paths.feedback):
        assert p.stat().st_uid == 61234, p


@needs_root
def test_a_new_grader_uid_takes_over_the_exchange(paths):
    nbgrader_setup.ensure_course_files(paths, COURSE, CourseSettings())
    give(paths.home, 61234)
    nbgrader_setup.sync_exchange_owner(paths)
    # The grader released an assignment; a student (62001) submitted into inbound.
    (paths.outbound / "ps1").mkdir()
    (paths.outbound / "ps1" / "ps1.ipynb").write_text("{}")
    submission = paths.inbound / "u1+ps1+2026-01-01 00:00:00.000000 UTC+x"
    submission.mkdir()
    (submission / "ps1.ipynb").write_text("{}")
    give(paths.outbound / "ps1", 61234)
    for p in (submission, submission / "ps1.ipynb"):
        os.chown(p, 62001, 61234)
    # systemd gives the grader another uid at its next start.
    give(paths.home, 61300)
    nbgrader_setup.sync_exchange_owner(paths)
    assert (paths.outbound / "ps1" / "ps1.ipynb").stat().st_uid == 61300
    st = (submission / "ps1.ipynb").stat()
    assert (st.st_uid, st.st_gid) == (62001, 61300)  # still the student's, readable by the grader
    assert oct(mode(paths.inbound)) == oct(0o3733)


@pytest.fixture
def planted(paths, tmp_path):
    """A course whose grader account (an instructor) has put links where the hub writes."""
    nbgrader_setup.ensure_course_files(paths, COURSE, CourseSettings())
    give(paths.home, 61234)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim.json").write_text("victim")
    paths.nbgrader_config.unlink()
    paths.nbgrader_config.symlink_to(outside / "victim.json")
    (paths.home / ".ananke").symlink_to(outside)
    return outside


@needs_root
def test_links_planted_in_the_grader_home_lead_nowhere(paths, planted):
    nbgrader_setup.ensure_course_files(paths, COURSE, CourseSettings())
    # The student is enrolled; their uid record (in .ananke) is refused, not followed.
    nbgrader_setup.enrol_students(paths, [StudentRecord("u1", "sub-1", "Ada")])
    assert sorted(p.name for p in planted.iterdir()) == ["victim.json"]
    assert (planted / "victim.json").read_text() == "victim"
    assert not paths.nbgrader_config.is_symlink()
    with gradebook(paths) as gb:
        assert gb.find_student("u1").first_name == "Ada"


@needs_root
def test_sqlite_follows_no_link_out_of_the_grader_home(paths, planted):
    # SQLite opens its journal by path; as root it would create files anywhere.
    (paths.home / "gradebook.db-journal").symlink_to(planted / "journal")
    (paths.home / "escape.db").symlink_to("/etc/ananke-test-must-not-exist")
    with pytest.raises(Exception, match="unable to open database file"):
        nbgrader_setup.enrol_students(paths, [StudentRecord("u1", "sub-1", "Ada")])
    assert sorted(p.name for p in planted.iterdir()) == ["victim.json"]

    def open_escape(root):
        import sqlite3

        sqlite3.connect(root / "escape.db").execute("CREATE TABLE t (x)")

    with pytest.raises(Exception, match="unable to open database file"):
        fsutil.run_in_home(paths.home, open_escape)
    assert not Path("/etc/ananke-test-must-not-exist").exists()


@needs_root
def test_student_uids_are_recorded_for_collect(paths):
    nbgrader_setup.ensure_course_files(paths, COURSE, CourseSettings())
    give(paths.home, 61234)
    student_home = paths.home.parent / "u1"
    fsutil.ensure_home(student_home)
    give(student_home, 62001)
    nbgrader_setup.enrol_students(
        paths, [StudentRecord("u1", "sub-1"), StudentRecord("u2", "sub-2")]
    )
    give(student_home, 62005)  # a new uid at a later start
    nbgrader_setup.enrol_students(paths, [StudentRecord("u1", "sub-1")])
    recorded = json.loads((paths.home / exchange.STUDENT_UIDS_FILE).read_text())
    assert recorded["students"] == {"u1": [62001, 62005]}  # u2 has no home yet
    assert (paths.home / exchange.STUDENT_UIDS_FILE).stat().st_uid == 61234


# -- the labs' global config ---------------------------------------------------------------------


def load_lab_config(monkeypatch, **env) -> Config:
    for key in ("JUPYTERHUB_USER", "ANANKE_EXCHANGE_ROOT"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return PyFileConfigLoader(LAB_CONFIG.name, path=str(LAB_CONFIG.parent)).load_config()


def test_students_are_their_hub_user_and_use_the_private_exchange(monkeypatch):
    config = load_lab_config(monkeypatch, JUPYTERHUB_USER="u123", ANANKE_EXCHANGE_ROOT="/srv/x")
    assert config.CourseDirectory.student_id == "u123"
    assert config.Exchange.root == "/srv/x"
    assert config.Exchange.path_includes_course is True
    assert config.Authenticator.plugin_class == "nbgrader.auth.JupyterHubAuthPlugin"
    from nbgrader.exchange import ExchangeFactory

    factory = ExchangeFactory(config=config)
    assert factory.submit is exchange.ExchangeSubmit
    assert factory.collect is exchange.ExchangeCollect
    assert factory.release_assignment is exchange.ExchangeReleaseAssignment


def test_grader_accounts_keep_all_students(monkeypatch):
    config = load_lab_config(monkeypatch, JUPYTERHUB_USER=grader_username(COURSE))
    assert "student_id" not in config.CourseDirectory
    assert config.Exchange.root == "/opt/nbgrader_exchange"
    assert exchange.lab_student_id({"JUPYTERHUB_USER": "grader-x"}) == "grader-x"  # not a course


@needs_root
def test_the_exchange_root_is_not_made_through_a_link_another_user_planted(tmp_path):
    """The hub (root) creates the exchange root at start: a link in its path that a user
    made (here in a world-writable directory) is refused, nothing is made where it points."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (shared / "ananke").symlink_to(elsewhere)
    os.lchown(shared / "ananke", 62011, 62011)
    with pytest.raises(OSError, match="symbolic link"):
        nbgrader_setup.ensure_exchange_root(shared / "ananke" / "exchange")
    assert list(elsewhere.iterdir()) == []


def test_new_courses_copy_one_empty_gradebook(tmp_path, monkeypatch):
    """nbgrader makes its tables once per hub process: each new course's gradebook is
    a copy of an empty one, which knows its own course only."""
    from nbgrader.api import Course, Gradebook
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    monkeypatch.setattr(nbgrader_setup, "_empty", None, raising=False)  # a hub just started
    layout = CourseLayout(homes_root=str(tmp_path / "homes"), exchange_root=str(tmp_path / "ex"))
    created = []

    def count(conn, cursor, statement, *args):
        if statement.lstrip().upper().startswith("CREATE TABLE"):
            created.append(statement)

    event.listen(Engine, "before_cursor_execute", count)
    try:
        courses = ["c-0000000000000001", "c-0000000000000002", "c-0000000000000003"]
        made = []
        for course_id in courses:
            created.clear()
            paths = layout.course(course_id)
            nbgrader_setup.ensure_course_files(paths, course_id, CourseSettings())
            made.append(len(created))
    finally:
        event.remove(Engine, "before_cursor_execute", count)
    assert made[0] > 0 and made[1:] == [0, 0]
    for course_id in courses:
        paths = layout.course(course_id)
        nbgrader_setup.enrol_students(paths, [StudentRecord("u1", "1", "A", "B", "a@b")])
        with Gradebook(paths.gradebook_url, course_id) as gb:
            assert [c.id for c in gb.db.query(Course).all()] == [course_id]
            assert [s.id for s in gb.students] == ["u1"]
