"""The Ananke database's schema version: alembic migrations and ``ananke upgrade-db``.

One database holds the course registry and Kore's tables (``models.py``). Its schema
evolves through alembic revisions in ``alembic/versions/``, as JupyterHub's does:

- an empty database is made from the models (``create_all``) and stamped with the
  newest revision (the head), in one locked transaction;
- any other database must be at the head: the hub and Kore refuse to use it otherwise
  (:class:`SchemaOutOfDate`, which tells the admin to run ``ananke upgrade-db``);
- ``ananke upgrade-db`` (:func:`upgrade`) runs the missing revisions. A database made
  before migrations existed (release 0.1.0.dev0, no ``alembic_version`` table) first
  gets the columns that release added by hand, then the baseline stamp.

Revision scripts never import the models: each describes the schema as it was at its
revision, which later changes of the code (or its layout) must not alter. A test checks
that the revisions applied from an empty database give exactly the models' schema.
"""

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic.command import upgrade as alembic_upgrade
from alembic.config import Config as AlembicConfig
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.pool import NullPool

from ..persist import ensure_private_sqlite

#: The alembic script directory (env.py, versions/).
SCRIPT_LOCATION = Path(__file__).with_name("alembic")

#: The revision that describes the schema of release 0.1.0.dev0, the last one made
#: without migrations.
BASELINE = "3f2c9a1d5e07"

#: Columns releases before migrations added to existing tables at start-up (the baseline
#: has them): a database without ``alembic_version`` gets them before it is stamped.
LEGACY_ADDED_COLUMNS = (
    ("courses", "state", "VARCHAR(16) NOT NULL DEFAULT 'active'"),
    ("sync_runs", "owner", "VARCHAR(128) NOT NULL DEFAULT ''"),
)

#: A table every pre-migration database has: with it and without ``alembic_version``,
#: the database was made by release 0.1.0.dev0.
LEGACY_MARKER_TABLE = "courses"

VERSION_TABLE = "alembic_version"

#: Key of the PostgreSQL advisory lock held while the schema is checked or changed.
PG_LOCK_KEY = int.from_bytes(hashlib.sha256(b"ananke-schema").digest()[:4], "big")


class SchemaOutOfDate(RuntimeError):
    """The database's schema is not the one this release uses."""

    def __init__(self, url: str, found: str | None, head: str):
        self.found, self.head = found, head
        shown = make_url(url).render_as_string(hide_password=True)
        what = (
            f"schema version {found}"
            if found
            else "no schema version (it was made before Ananke used migrations)"
        )
        super().__init__(
            f"The Ananke database {shown} has {what}; this release needs {head}. Stop the "
            "hub (and with it Kore), back up the database, then run `ananke upgrade-db` "
            "as the hub's user and start the hub again."
        )


class SchemaTooNew(RuntimeError):
    """The database was upgraded by a newer release than this one."""

    def __init__(self, url: str, found: str):
        shown = make_url(url).render_as_string(hide_password=True)
        super().__init__(
            f"The Ananke database {shown} has schema version {found}, which this release "
            "does not know: a newer release upgraded it. Install that release again (or "
            "restore the backup made before the upgrade)."
        )


def alembic_config(url: str | None = None) -> AlembicConfig:
    """Alembic's configuration for the Ananke database (no alembic.ini needed)."""
    config = AlembicConfig()
    config.set_main_option("script_location", str(SCRIPT_LOCATION))
    if url:
        # ConfigParser interpolation: a % in a password must be doubled.
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def script_directory() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    """The newest revision. Two heads (revisions added on two branches) are an error
    that names them: the developer merges them with ``alembic merge``."""
    heads = script_directory().get_heads()
    if len(heads) != 1:
        raise RuntimeError(
            f"The migrations have {len(heads)} heads ({', '.join(sorted(heads))}): make one "
            "with `alembic merge` (docs/developer/migrations.md)."
        )
    return heads[0]


def current_revision(connection: Connection) -> str | None:
    """The revision the database is stamped with; None if it has none."""
    return MigrationContext.configure(connection).get_current_revision()


@contextmanager
def schema_lock(engine: Engine) -> Iterator[Connection]:
    """A connection in a transaction that holds the database's write lock (SQLite:
    ``BEGIN IMMEDIATE``; PostgreSQL: an advisory lock), so that the hub and Kore starting
    at the same moment neither both create the schema nor stamp it twice."""
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            # pysqlite starts transactions only before DML; take the lock ourselves.
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.exec_driver_sql("ROLLBACK")
                raise
            conn.exec_driver_sql("COMMIT")
            return
        with conn.begin():
            if engine.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_LOCK_KEY})
            yield conn


def _stamp(conn: Connection, revision: str) -> None:
    MigrationContext.configure(conn).stamp(script_directory(), revision)


def _check(engine: Engine, conn: Connection, head: str) -> None:
    found = current_revision(conn)
    if found == head:
        return
    if found is not None:
        _check_known(str(engine.url), found)
    raise SchemaOutOfDate(str(engine.url), found, head)


def _create(conn: Connection, url: str) -> None:
    """Make an empty database's tables by running every revision, not ``create_all``:
    the hub's process does not import Kore's models (``kore/models.py``), so a database
    the hub made from its metadata alone would be stamped without Kore's tables."""
    config = alembic_config(url)
    config.attributes["connection"] = conn
    alembic_upgrade(config, "head")


def ensure_current(engine: Engine) -> None:
    """Create an empty database at the head; refuse one that is not at the head.

    Raises :class:`SchemaOutOfDate` or :class:`SchemaTooNew` with a message for the admin.
    """
    head = head_revision()
    # The common case (every start after the first) needs no write lock.
    with engine.connect() as conn:
        if current_revision(conn) == head:
            return
    with schema_lock(engine) as conn:
        if not inspect(conn).get_table_names():
            _create(conn, engine.url.render_as_string(hide_password=False))
            return
        _check(engine, conn, head)


def migration_engine(url: str) -> Engine:
    """An engine for migrations: no pool, and (SQLite) foreign keys left off, so that a
    batch operation that rebuilds a table does not cascade deletes to other tables."""
    if ensure_private_sqlite(url) is not None:
        return create_engine(url, poolclass=NullPool, connect_args={"timeout": 30})
    return create_engine(url, poolclass=NullPool)


def _add_legacy_columns(conn: Connection) -> list[str]:
    added = []
    for table, column, ddl in LEGACY_ADDED_COLUMNS:
        if column not in {c["name"] for c in inspect(conn).get_columns(table)}:
            conn.execute(text(f"ALTER TABLE {table} ADD COLUMN {column} {ddl}"))
            added.append(f"{table}.{column}")
    return added


def upgrade(url: str, log=print) -> tuple:
    """Bring the database at ``url`` to the head; return (revision before, after).

    Idempotent. An empty database is created at the head, as the hub would.
    """
    head = head_revision()
    engine = migration_engine(url)
    try:
        with schema_lock(engine) as conn:
            tables = set(inspect(conn).get_table_names())
            before = current_revision(conn)
            if not tables:
                _create(conn, url)
                log(f"Created a new database at schema version {head}.")
                return None, head
            if before is None:
                if LEGACY_MARKER_TABLE not in tables:
                    raise RuntimeError(
                        f"{make_url(url).render_as_string(hide_password=True)} holds tables "
                        f"({', '.join(sorted(tables))}) but no Ananke registry: it is not an "
                        "Ananke database. Check c.CourseRegistry.url (or --url)."
                    )
                added = _add_legacy_columns(conn)
                if added:
                    log(f"Added the columns of earlier releases: {', '.join(added)}.")
                _stamp(conn, BASELINE)
                log(f"Stamped the database made before migrations as {BASELINE}.")
            elif before == head:
                log(f"The database is at schema version {head} already: nothing to do.")
                return before, head
            else:
                _check_known(url, before)
            config = alembic_config(url)
            config.attributes["connection"] = conn
            alembic_upgrade(config, "head")
            after = current_revision(conn)
            log(f"Upgraded the database from {before or 'no version'} to {after}.")
            return before, after
    finally:
        engine.dispose()


def _check_known(url: str, found: str) -> None:
    if found not in {s.revision for s in script_directory().walk_revisions()}:
        raise SchemaTooNew(url, found)
