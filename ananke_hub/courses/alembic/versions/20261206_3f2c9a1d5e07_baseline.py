"""Baseline: the schema of release 0.1.0.dev0, the last one made without migrations.

Revision ID: 3f2c9a1d5e07
Revises:
Created: 2026-12-06

Never import ananke_hub or kore here: write the schema as it is at this revision.
A database made by 0.1.0.dev0 has these tables already; ``ananke upgrade-db`` stamps it
with this revision (after adding the two columns that release added at start-up).
"""

import sqlalchemy as sa
from alembic import op

revision = "3f2c9a1d5e07"
down_revision = None
branch_labels = None
depends_on = None


def _at(name: str = "created_at", nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "courses",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("issuer", sa.String(255), nullable=False),
        sa.Column("client_id", sa.String(255), nullable=False),
        sa.Column("deployment_id", sa.String(255), nullable=False),
        sa.Column("resource_link_id", sa.String(255), nullable=False),
        sa.Column("context_id", sa.String(255), nullable=False),
        sa.Column("context_label", sa.String(255), nullable=False),
        sa.Column("context_title", sa.String(255), nullable=False),
        sa.Column("link_title", sa.String(255), nullable=False),
        sa.Column("title", sa.String(512), nullable=False),
        sa.Column("lineitems_url", sa.String(1024), nullable=False),
        sa.Column("lineitem_url", sa.String(1024), nullable=False),
        sa.Column("ags_scopes", sa.JSON(), nullable=False),
        sa.Column("memberships_url", sa.String(1024), nullable=False),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("provisioned", sa.Integer(), nullable=False),
        _at("created_at"),
        _at("updated_at"),
        sa.Column("state", sa.String(16), server_default="active", nullable=False),
        sa.UniqueConstraint("issuer", "client_id", "deployment_id", "resource_link_id"),
    )
    op.create_table(
        "members",
        sa.Column(
            "course_id",
            sa.String(32),
            sa.ForeignKey("courses.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("username", sa.String(64), primary_key=True),
        sa.Column("role", sa.String(32), nullable=False),
        sa.Column("lms_user_id", sa.String(255), nullable=False),
        sa.Column("given_name", sa.String(255), nullable=False),
        sa.Column("family_name", sa.String(255), nullable=False),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("in_gradebook", sa.Boolean(), nullable=False),
        _at("first_launch", nullable=True),
        _at("last_launch", nullable=True),
    )
    op.create_table(
        "used_nonces",
        sa.Column("digest", sa.String(64), primary_key=True),
        _at("expires_at"),
    )
    op.create_index("ix_used_nonces_expires_at", "used_nonces", ["expires_at"])
    op.create_table(
        "sync_runs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column(
            "course_id",
            sa.String(32),
            sa.ForeignKey("courses.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("started_by", sa.String(64), nullable=False),
        _at("started_at"),
        _at("finished_at", nullable=True),
        _at("heartbeat_at"),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("done", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.Column("counts", sa.JSON(), nullable=False),
        sa.Column("options", sa.JSON(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("warnings", sa.JSON(), nullable=False),
        sa.Column("owner", sa.String(128), nullable=False),
    )
    op.create_index("ix_sync_runs_course_id", "sync_runs", ["course_id"])
    op.create_table(
        "sync_results",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "run_id",
            sa.String(32),
            sa.ForeignKey("sync_runs.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("course_id", sa.String(32), nullable=False),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("lms_user_id", sa.String(255), nullable=False),
        sa.Column("item_key", sa.String(300), nullable=False),
        sa.Column("item_label", sa.String(300), nullable=False),
        sa.Column("lineitem_url", sa.String(1024), nullable=False),
        sa.Column("score_given", sa.Float(), nullable=True),
        sa.Column("score_maximum", sa.Float(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        _at("at"),
    )
    op.create_index("ix_sync_results_run", "sync_results", ["run_id", "id"])
    for table, extra in (
        (
            "sync_deliveries",
            [
                sa.Column("score_given", sa.Float(), nullable=True),
                sa.Column("score_maximum", sa.Float(), nullable=True),
                _at("sent_at"),
                sa.Column("run_id", sa.String(32), nullable=False),
            ],
        ),
        (
            "sync_intents",
            [sa.Column("run_id", sa.String(32), nullable=False), _at("at")],
        ),
    ):
        op.create_table(
            table,
            sa.Column(
                "course_id",
                sa.String(32),
                sa.ForeignKey("courses.id", ondelete="CASCADE"),
                primary_key=True,
            ),
            sa.Column("username", sa.String(64), primary_key=True),
            sa.Column("item_key", sa.String(300), primary_key=True),
            sa.Column("lineitem_url", sa.String(1024), nullable=False),
            sa.Column("fingerprint", sa.String(64), nullable=False),
            *extra,
        )
    op.create_table(
        "sync_locks",
        sa.Column(
            "course_id",
            sa.String(32),
            sa.ForeignKey("courses.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("kind", sa.String(16), primary_key=True),
        sa.Column("run_id", sa.String(32), nullable=False),
        _at("heartbeat_at"),
    )
    op.create_table(
        "backups",
        sa.Column("id", sa.String(34), primary_key=True),
        sa.Column("course_id", sa.String(32), nullable=False),
        sa.Column("course_title", sa.String(512), nullable=False),
        _at("created_at"),
        sa.Column("created_by", sa.String(80), nullable=False),
        sa.Column("reason", sa.String(16), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("contents", sa.JSON(), nullable=False),
        sa.Column("owners", sa.JSON(), nullable=False),
        _at("deleted_at", nullable=True),
    )
    op.create_index("ix_backups_course_id", "backups", ["course_id"])
    op.create_table(
        "course_operations",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("course_id", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("backup_id", sa.String(34), nullable=False),
        sa.Column("started_by", sa.String(80), nullable=False),
        _at("started_at"),
        _at("updated_at"),
        _at("finished_at", nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
    )
    op.create_index("ix_course_operations_course_id", "course_operations", ["course_id"])
    op.create_index(
        "ux_course_operations_running",
        "course_operations",
        ["course_id"],
        unique=True,
        sqlite_where=sa.text("state = 'running'"),
        postgresql_where=sa.text("state = 'running'"),
    )
    op.create_table(
        "audit_events",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        _at("at"),
        sa.Column("actor", sa.String(80), nullable=False),
        sa.Column("course_id", sa.String(32), nullable=False),
        sa.Column("action", sa.String(40), nullable=False),
        sa.Column("target", sa.JSON(), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
    )
    op.create_index("ix_audit_events_course", "audit_events", ["course_id", "id"])


def downgrade() -> None:
    raise NotImplementedError("Restore the backup made before the upgrade instead.")
