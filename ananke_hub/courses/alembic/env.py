"""Alembic's environment for the Ananke database (see ananke_hub/courses/schema.py).

``ananke upgrade-db`` passes its locked connection in ``config.attributes``; the
``alembic`` command (developers: docs/developer/migrations.md) passes the URL with
``-x url=...``. The models are imported only to autogenerate a revision; the
revisions themselves never import them.
"""

from alembic import context
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool

config = context.config


def target_metadata():
    cmd = getattr(config, "cmd_opts", None)
    if cmd is not None and getattr(cmd, "autogenerate", False):
        # Kore's tables (kore/models.py) share the hub's Base: import them so that
        # autogenerate sees every table of the one database.
        import kore.models  # noqa: F401
        from ananke_hub.courses.models import Base

        return Base.metadata
    return None


def run(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata(),
        # SQLite changes columns by rebuilding the table: op.batch_alter_table does it.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("Offline (--sql) migrations are not supported: run `ananke upgrade-db`.")

connection = config.attributes.get("connection")
if connection is not None:
    run(connection)
else:
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option(
        "sqlalchemy.url"
    )
    if not url:
        raise SystemExit("Give the database: alembic -x url=sqlite:////tmp/scratch.sqlite ...")
    engine = create_engine(url, poolclass=NullPool)
    with engine.connect() as conn:
        run(conn)
        conn.commit()
