"""Schema migrations of the Ananke database (ananke_hub/courses/schema.py, `ananke upgrade-db`).

The fixtures in tests/fixtures/ were made by release 0.1.0.dev0, the last without
migrations (tests/fixtures/make_registry_fixture.py says how).
"""

import os
import shutil
import threading
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.command import upgrade as alembic_upgrade
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.pool import NullPool

import kore.models  # noqa: F401  (Kore's tables share the Base: compare all of them)
from ananke_hub import cli
from ananke_hub.courses import schema
from ananke_hub.courses.models import Base
from ananke_hub.courses.registry import CourseRegistry
from ananke_hub.courses.schema import SchemaOutOfDate, SchemaTooNew
from tests import pgserver
from tests.test_courses import info

FIXTURES = Path(__file__).parent / "fixtures"
SQLITE_FIXTURE = FIXTURES / "registry-0.1.0.dev0.sqlite"
PG_FIXTURE = FIXTURES / "registry-0.1.0.dev0.postgresql.sql"
COURSE = "c-d1003b3a8b283544"  # the fixture's course


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_db(request, tmp_path):
    """(dialect, URL) of an empty database."""
    if request.param == "sqlite":
        yield "sqlite", f"sqlite:///{tmp_path / 'courses.sqlite'}"
        return
    reason = pgserver.available()
    if reason and os.environ.get("CI"):
        pytest.fail(f"{reason}: scripts/test.sh installs it on CI")
    if reason:
        pytest.skip(reason)
    with pgserver.postgres_server() as url:
        yield "postgresql", url


@pytest.fixture
def old_db(empty_db, tmp_path):
    """A database as release 0.1.0.dev0 left it, with its data."""
    dialect, url = empty_db
    if dialect == "sqlite":
        shutil.copy(SQLITE_FIXTURE, tmp_path / "courses.sqlite")
        os.chmod(tmp_path / "courses.sqlite", 0o600)
    else:
        # pg_dump's output without psql's meta-commands (\restrict ...).
        sql = "\n".join(
            line for line in PG_FIXTURE.read_text().splitlines() if not line.startswith("\\")
        )
        engine = create_engine(url, poolclass=NullPool)
        with engine.begin() as db:
            db.exec_driver_sql(sql)
        engine.dispose()
    return url


def schema_differences(url: str) -> list:
    """What differs between the database at ``url`` and the models (alembic's comparison)."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as db:
            context = MigrationContext.configure(db, opts={"compare_type": True})
            return compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()


def revision_of(url: str) -> str | None:
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as db:
            return schema.current_revision(db)
    finally:
        engine.dispose()


def test_the_revisions_have_one_head():
    # Two branches that each added a revision make two heads: merge them.
    assert schema.head_revision() in {
        s.revision for s in schema.script_directory().walk_revisions()
    }


def test_the_revisions_from_nothing_make_the_models_schema(empty_db):
    # A model changed without a revision (or a revision unlike the model) fails here.
    _, url = empty_db
    alembic_upgrade(schema.alembic_config(url), "head")
    assert revision_of(url) == schema.head_revision()
    assert schema_differences(url) == []


def test_a_new_database_is_created_at_the_head_and_stamped(empty_db):
    _, url = empty_db
    registry = CourseRegistry(url=url)
    registry.check_schema()
    registry.record_launch(info(sub="2", role="Instructor"))
    registry.close()
    assert revision_of(url) == schema.head_revision()
    assert schema_differences(url) == []


def test_the_hub_and_kore_refuse_a_database_of_the_previous_release(old_db):
    registry = CourseRegistry(url=old_db)
    with pytest.raises(SchemaOutOfDate, match=r"run `ananke upgrade-db`") as refused:
        registry.check_schema()
    assert "made before Ananke used migrations" in str(refused.value)
    with pytest.raises(SchemaOutOfDate):  # any use, not only the check at start
        registry.get(COURSE)
    registry.close()
    # Refusing changed nothing.
    assert revision_of(old_db) is None


def test_upgrade_db_upgrades_a_database_of_the_previous_release(old_db, capsys):
    assert cli.main(["upgrade-db", "--url", old_db]) == 0
    assert "Upgraded the database from no version to" in capsys.readouterr().out
    assert revision_of(old_db) == schema.head_revision()
    assert schema_differences(old_db) == []
    registry = CourseRegistry(url=old_db)
    registry.check_schema()
    # The release's data is all there, and the registry works on it.
    course = registry.get(COURSE)
    assert (course.title, course.state) == ("Data Science 101 - Homework", "active")
    assert {(m.username, m.role) for m in registry.members(COURSE)} == {
        ("u1", "instructor"),
        ("u2", "learner"),
    }
    with registry.engine.connect() as db:
        counts = {
            t: db.execute(text(f"SELECT count(*) FROM {t}")).scalar()  # noqa: S608
            for t in ("sync_runs", "sync_locks", "backups", "audit_events")
        }
    assert counts == {"sync_runs": 1, "sync_locks": 1, "backups": 1, "audit_events": 1}
    assert registry.record_launch(info(sub="3")).course_id == COURSE
    registry.close()
    # Again: nothing to do.
    assert cli.main(["upgrade-db", "--url", old_db]) == 0
    assert "nothing to do" in capsys.readouterr().out


def test_upgrade_db_adds_the_columns_of_releases_before_it(tmp_path, capsys):
    # Databases older than 0.1.0.dev0 lacked courses.state and sync_runs.owner, which
    # that release added at start-up; upgrade-db adds them before stamping.
    path = tmp_path / "courses.sqlite"
    shutil.copy(SQLITE_FIXTURE, path)
    url = f"sqlite:///{path}"
    engine = create_engine(url, poolclass=NullPool)
    with engine.begin() as db:
        db.execute(text("ALTER TABLE sync_runs DROP COLUMN owner"))
        db.execute(text("ALTER TABLE courses DROP COLUMN state"))
    engine.dispose()
    with pytest.raises(SchemaOutOfDate):
        CourseRegistry(url=url).check_schema()
    assert cli.main(["upgrade-db", "--url", url]) == 0
    assert "courses.state, sync_runs.owner" in capsys.readouterr().out
    registry = CourseRegistry(url=url)
    assert registry.get(COURSE).state == "active"
    registry.close()


def test_a_database_from_a_newer_release_is_refused(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'courses.sqlite'}"
    CourseRegistry(url=url).check_schema()
    engine = create_engine(url, poolclass=NullPool)
    with engine.begin() as db:
        db.execute(text("UPDATE alembic_version SET version_num = 'ffffffffffff'"))
    engine.dispose()
    with pytest.raises(SchemaTooNew, match="a newer release upgraded it"):
        CourseRegistry(url=url).check_schema()
    assert cli.main(["upgrade-db", "--url", url]) == 1
    assert "a newer release upgraded it" in capsys.readouterr().err


def test_upgrade_db_refuses_a_database_that_is_not_anankes(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'other.sqlite'}"
    engine = create_engine(url, poolclass=NullPool)
    with engine.begin() as db:
        db.execute(text("CREATE TABLE users (id INTEGER)"))
    engine.dispose()
    assert cli.main(["upgrade-db", "--url", url]) == 1
    assert "not an Ananke database" in capsys.readouterr().err
    assert revision_of(url) is None


def test_upgrade_db_reads_the_url_from_the_fragments(tmp_path, monkeypatch, capsys):
    shutil.copy(SQLITE_FIXTURE, tmp_path / "old.sqlite")
    conf = tmp_path / "config.d"
    conf.mkdir()
    (conf / "40_db.py").write_text(
        f"c.CourseRegistry.url = 'sqlite:///{tmp_path / 'old.sqlite'}'\n"
    )
    monkeypatch.setenv("ANANKE_CONFIG_DIR", str(conf))
    assert cli.main(["upgrade-db"]) == 0
    assert revision_of(f"sqlite:///{tmp_path / 'old.sqlite'}") == schema.head_revision()


def test_the_hub_and_kore_opening_a_new_database_at_once_stamp_it_once(empty_db):
    _, url = empty_db
    registries = [CourseRegistry(url=url) for _ in range(4)]
    errors = []

    def open_it(registry):
        try:
            registry.check_schema()
        except Exception as exc:  # collected: the assert below shows them
            errors.append(exc)

    threads = [threading.Thread(target=open_it, args=(r,)) for r in registries]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in registries:
        r.close()
    assert errors == []
    engine = create_engine(url, poolclass=NullPool)
    with engine.connect() as db:
        assert db.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == [
            schema.head_revision()
        ]
        assert "courses" in inspect(db).get_table_names()
    engine.dispose()


def test_kore_does_not_start_on_an_old_database(tmp_path, monkeypatch):
    from kore.app import Kore, StartupError

    shutil.copy(SQLITE_FIXTURE, tmp_path / "courses.sqlite")
    kore = Kore()
    kore.config.CourseRegistry.url = f"sqlite:///{tmp_path / 'courses.sqlite'}"
    with pytest.raises(StartupError, match="run `ananke upgrade-db`"):
        kore.init_registry()


def test_the_hub_does_not_start_on_an_old_database(tmp_path):
    from traitlets.config import Config

    from ananke_hub.auth import AnankeLTI13Authenticator

    shutil.copy(SQLITE_FIXTURE, tmp_path / "courses.sqlite")
    config = Config()
    config.CourseRegistry.url = f"sqlite:///{tmp_path / 'courses.sqlite'}"
    authenticator = AnankeLTI13Authenticator(config=config)
    with pytest.raises(SystemExit, match="run `ananke upgrade-db`"):
        authenticator.get_handlers(app=None)


def test_the_demo_upgrades_its_own_database_of_an_earlier_release(tmp_path, capsys):
    from ananke_hub.testlms.demo import DemoStack

    stack = DemoStack(tmp_path / "demo")
    stack.layout.root.mkdir(parents=True)
    shutil.copy(SQLITE_FIXTURE, stack.layout.root / "courses.sqlite")
    stack.prepare()
    assert "demo: Upgraded the database" in capsys.readouterr().out
    url = f"sqlite:///{stack.layout.root / 'courses.sqlite'}"
    assert revision_of(url) == schema.head_revision()
    stack.prepare()  # at the head: says nothing
    assert "demo:" not in capsys.readouterr().out
